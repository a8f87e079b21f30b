use std::os::unix::fs::FileExt;

use crate::util::*;

fn image(len: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(b"0123456789", 100_000).unwrap();
    (dir, p)
}

#[test]
fn reads_and_writes_reach_the_file() {
    let (_d, img) = image(1 << 20);
    let srv = Server::start(&["file", img.to_str().unwrap()]);
    let (mut c, size, _) = Raw::open(srv.connect(), true);
    assert_eq!(size, 1 << 20);
    assert_eq!(c.call(CMD_READ, 0, 100_000, 10, b"").data, b"0123456789");
    assert_eq!(c.call(CMD_WRITE, FLAG_FUA, 4096, 5, b"hello").error, 0);
    assert_eq!(c.call(CMD_FLUSH, 0, 0, 0, b"").error, 0);
    let mut back = [0u8; 5];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut back, 4096)
        .unwrap();
    assert_eq!(&back, b"hello");
    // Zero and trim read back as zeroes, in the file too.
    assert_eq!(c.call(CMD_WRITE_ZEROES, 0, 100_000, 4, b"").error, 0);
    assert_eq!(c.call(CMD_TRIM, 0, 4096, 5, b"").error, 0);
    assert_eq!(
        c.call(CMD_READ, 0, 100_000, 10, b"").data,
        b"\x00\x00\x00\x00456789"
    );
    assert_eq!(c.call(CMD_READ, 0, 4096, 5, b"").data, [0u8; 5]);
    // Past the end.
    assert_eq!(c.call(CMD_READ, 0, 1 << 20, 1, b"").error, EINVAL);
    assert_eq!(c.call(CMD_WRITE, 0, (1 << 20) - 1, 2, b"xy").error, ENOSPC);
}

#[test]
fn extents_show_holes() {
    let (_d, img) = image(1 << 20);
    let srv = Server::start(&["file", &format!("file={}", img.display())]);
    let (mut c, _, _) = Raw::open(srv.connect(), true);
    let r = c.call(CMD_BLOCK_STATUS, 0, 0, 1 << 20, b"");
    assert_eq!(r.error, 0);
    let pairs: Vec<(u32, u32)> = r
        .data
        .chunks(8)
        .map(|p| {
            (
                u32::from_be_bytes(p[0..4].try_into().unwrap()),
                u32::from_be_bytes(p[4..8].try_into().unwrap()),
            )
        })
        .collect();
    assert_eq!(pairs.iter().map(|p| u64::from(p.0)).sum::<u64>(), 1 << 20);
    assert_eq!(pairs[0].1, 3, "starts with a hole: {pairs:?}");
    assert!(pairs.iter().any(|p| p.1 == 0), "has data: {pairs:?}");
}

#[test]
fn read_only() {
    let (_d, img) = image(1 << 20);
    let srv = Server::start(&["-r", "file", img.to_str().unwrap()]);
    let (mut c, _, _) = Raw::open(srv.connect(), false);
    assert_eq!(c.call(CMD_WRITE, 0, 0, 1, b"x").error, EPERM);
    assert_eq!(c.call(CMD_READ, 0, 1 << 20, 1, b"").error, EINVAL);
    assert_eq!(c.call(CMD_READ, 0, 0, 4, b"").data, [0u8; 4]);
}

#[rstest::rstest]
#[case(&["file"], "you must supply the file=<FILENAME> parameter")]
#[case(&["file", "/nonexistent/disk.img"], "/nonexistent/disk.img")]
#[case(&["file", "/tmp"], "is a directory")]
#[case(&["file", "file=/a", "file=/b"], "can only appear once")]
#[case(&["file", "dir=/tmp"], "dir= is not supported yet")]
#[case(&["file", "/dev/null", "cache=bogus"], "unknown cache mode")]
#[case(&["file", "/dev/null", "fadvise=bogus"], "unknown fadvise mode")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    let out = nbdkit()
        .args(["-U", "-"])
        .args(args)
        .args(["--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(msg), "{err}");
    assert_eq!(err.lines().count(), 1);
}
