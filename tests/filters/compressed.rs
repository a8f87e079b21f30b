//! gzip and xz: serving the decompressed bytes of a compressed image.

use crate::util::*;

#[test]
fn gzip_and_xz_serve_the_plain_bytes_like_c() {
    if !have("nbdcopy") || !have("gzip") || !have("xz") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("d.img");
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i / 4096) as u8 ^ (i as u8)).collect();
    std::fs::write(&img, &data).unwrap();
    let out = sh(&format!("cd '{}' && gzip -k d.img && xz -k d.img", d.path().display()));
    assert!(out.status.success());
    for (filter, ext) in [("gzip", "gz"), ("xz", "xz")] {
        let disk = nbdkit_test::CaptiveDisk::builder("file")
            .arg(format!("{}.{ext}", img.display()))
            .filter(filter)
            .env("TMPDIR", d.path())
            .binary(bin())
            .start()
            .unwrap();
        let mut c = disk.connect().unwrap();
        assert!(c.info().read_only());
        assert_eq!(c.size(), data.len() as u64);
        assert!(c.read(0, data.len()).unwrap() == data, "{filter}");
        if let Some(cn) = c_nbdkit() {
            let run = |n: &std::path::Path| {
                sh(&format!(
                    "{} -U - --filter={filter} file {}.{ext} --run 'nbdinfo \"$uri\" | grep -v uri: | grep -v block_size; nbdcopy \"$uri\" - | sha256sum'",
                    n.display(),
                    img.display()
                ))
                .stdout
            };
            let (ours, theirs) = (run(&bin()), run(&cn));
            // C's xz filter advertises its block cache's sizes; the rest
            // (flags and bytes) must agree.
            assert_eq!(
                String::from_utf8_lossy(&ours).lines().last(),
                String::from_utf8_lossy(&theirs).lines().last(),
                "{filter}"
            );
        }
    }
}

#[test]
fn a_corrupt_stream_refuses_clients() {
    let d = tempfile::tempdir().unwrap();
    let bad = d.path().join("bad.gz");
    std::fs::write(&bad, b"this is not gzip at all").unwrap();
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .arg(bad.display().to_string())
        .filter("gzip")
        .env("TMPDIR", d.path())
        .binary(bin())
        .start()
        .unwrap();
    assert!(disk.connect().is_err());
    assert!(disk.log().contains("gzip:"), "{}", disk.log());
}
