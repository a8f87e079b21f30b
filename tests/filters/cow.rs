use std::os::unix::fs::FileExt;

use nbdkit_test::client::ZeroFlags;

use crate::util::*;

fn start(plugin: &str, args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder(plugin)
        .filter("cow")
        .args(args)
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A file served by the file plugin under the cow filter.
fn file_disk(args: &[&str]) -> (tempfile::TempDir, std::path::PathBuf, nbdkit_test::CaptiveDisk) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let mut data = vec![b'o'; 1 << 20];
    data[..3].copy_from_slice(b"old");
    std::fs::write(&path, &data).unwrap();
    let mut all = vec![path.to_str().unwrap().to_string()];
    all.extend(args.iter().map(|s| s.to_string()));
    let disk = start("file", &all.iter().map(String::as_str).collect::<Vec<_>>());
    (dir, path, disk)
}

/// Change the file behind the server's back (in place, same size).
fn change_file(path: &std::path::Path, data: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(data, 0).unwrap();
}

#[test]
fn writes_go_to_the_overlay_never_to_the_plugin() {
    let (_dir, path, disk) = file_disk(&[]);
    let mut c = disk.connect().unwrap();
    c.write(1, b"NEW").unwrap();
    c.write(70000, &[7u8; 100000]).unwrap();
    c.flush().unwrap();
    assert_eq!(c.read(0, 5).unwrap(), b"oNEWo");
    assert_eq!(c.read(69999, 3).unwrap(), [b'o', 7, 7]);
    let file = std::fs::read(&path).unwrap();
    assert_eq!(&file[..5], b"oldoo");
    assert!(file[69999..170001].iter().all(|&b| b == b'o'));
    // Every connection sees the same overlay.
    let mut other = disk.connect().unwrap();
    assert_eq!(other.read(0, 5).unwrap(), b"oNEWo");
}

#[test]
fn a_read_only_plugin_becomes_writable() {
    let disk = start("pattern", &["1M"]);
    let mut c = disk.connect().unwrap();
    let info = c.info().clone();
    assert!(!info.read_only());
    assert!(info.can_trim() && info.can_flush() && info.can_fua());
    assert!(info.can_zero() && info.can_fast_zero() && info.can_cache());
    assert!(info.can_multi_conn());
    let b = info.block_size.unwrap();
    assert_eq!((b.minimum, b.preferred, b.maximum), (1, 65536, u32::MAX));
    c.write_fua(8, b"written!").unwrap();
    assert_eq!(c.read(0, 16).unwrap(), b"\0\0\0\0\0\0\0\0written!");
}

#[test]
fn dash_r_still_serves_read_only() {
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("cow")
        .arg("1M")
        .readonly()
        .binary(bin())
        .start()
        .unwrap();
    let mut c = disk.connect().unwrap();
    assert!(c.info().read_only());
    assert!(c.write(0, b"x").is_err());
}

#[test]
fn the_block_size_is_the_preferred_size() {
    let disk = start("memory", &["1M", "cow-block-size=4K"]);
    let c = disk.connect().unwrap();
    assert_eq!(c.info().block_size.unwrap().preferred, 4096);
}

#[test]
fn trim_and_zero_read_as_zeroes() {
    let disk = start("pattern", &["1M"]);
    let mut c = disk.connect().unwrap();
    // Trim: whole blocks become holes, partial ones are zeroed.
    c.trim(65536 + 14, 3 * 65536).unwrap();
    assert_eq!(c.read(65536 + 8, 8).unwrap(), [0, 0, 0, 0, 0, 1, 0, 0]);
    assert!(c.read(65536 + 14, 3 * 65536).unwrap().iter().all(|&b| b == 0));
    assert_eq!(c.read(4 * 65536 + 8, 8).unwrap(), [0, 0, 0, 0, 0, 0, 0, 8]);
    let ext = c.extents(0, 1 << 20).unwrap();
    let flags: Vec<_> = ext.iter().map(|e| (e.offset, e.length, e.flags)).collect();
    assert_eq!(flags, [(0, 131072, 0), (131072, 131072, 3), (262144, 786432, 0)]);
    // Zero: all data, all zeroes.
    c.zero(500000, 100000).unwrap();
    assert!(c.read(500000, 100000).unwrap().iter().all(|&b| b == 0));
    assert_eq!(c.read(600000, 8).unwrap(), [0, 0, 0, 0, 0, 0x09, 0x27, 0xc0]);
    let err = c.zero_with(0, 65536, ZeroFlags { fast: true, ..ZeroFlags::default() }).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTSUP));
}

#[test]
fn extents_combine_overlay_and_plugin() {
    let disk = start("memory", &["1M"]);
    let mut c = disk.connect().unwrap();
    c.write(200000, b"x").unwrap();
    let ext = c.extents(0, 1 << 20).unwrap();
    let got: Vec<_> = ext.iter().map(|e| (e.offset, e.length, e.flags)).collect();
    assert_eq!(got, [(0, 196608, 3), (196608, 65536, 0), (262144, 786432, 3)]);
}

#[test]
fn cow_on_read_copies_what_is_read() {
    let (_dir, path, disk) = file_disk(&["cow-on-read=true"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(0, 3).unwrap(), b"old");
    change_file(&path, b"new");
    assert_eq!(c.read(0, 3).unwrap(), b"old");

    let (_dir, path, disk) = file_disk(&[]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(0, 3).unwrap(), b"old");
    change_file(&path, b"new");
    assert_eq!(c.read(0, 3).unwrap(), b"new");
}

#[test]
fn cow_on_read_with_a_path_copies_only_while_it_exists() {
    let flag = tempfile::tempdir().unwrap();
    let switch = flag.path().join("on");
    let (_dir, path, disk) = file_disk(&[&format!("cow-on-read={}", switch.display())]);
    let mut c = disk.connect().unwrap();
    c.read(0, 3).unwrap();
    change_file(&path, b"new");
    assert_eq!(c.read(0, 3).unwrap(), b"new");
    std::fs::write(&switch, b"").unwrap();
    c.read(0, 3).unwrap();
    std::fs::remove_file(&switch).unwrap();
    change_file(&path, b"end");
    assert_eq!(c.read(0, 3).unwrap(), b"new");
}

#[test]
fn cow_on_cache_copies_what_is_cached() {
    let (_dir, path, disk) = file_disk(&["cow-on-cache=true"]);
    let mut c = disk.connect().unwrap();
    c.cache(0, 4096).unwrap();
    change_file(&path, b"new");
    assert_eq!(c.read(0, 3).unwrap(), b"old");

    let (_dir, path, disk) = file_disk(&[]);
    let mut c = disk.connect().unwrap();
    c.cache(0, 4096).unwrap();
    change_file(&path, b"new");
    assert_eq!(c.read(0, 3).unwrap(), b"new");
}

#[test]
fn the_overlay_is_an_unlinked_file_in_tmpdir() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("cow")
        .arg("1M")
        .env("TMPDIR", tmp.path())
        .binary(bin())
        .start()
        .unwrap();
    let mut c = disk.connect().unwrap();
    c.write(0, &[1u8; 65536]).unwrap();
    // Nothing but the test harness's socket directory is left to see.
    let files = std::fs::read_dir(tmp.path()).unwrap().flatten();
    assert_eq!(files.filter(|e| e.path().is_file()).count(), 0);
    let fds = std::fs::read_dir(format!("/proc/{}/fd", disk.pid())).unwrap();
    let prefix = tmp.path().to_str().unwrap().to_string();
    assert!(fds.flatten().any(|fd| {
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let t = target.to_string_lossy();
        t.starts_with(&prefix) && t.ends_with("(deleted)")
    }));
}

/// Writes, trims and zeroes (as writes: C does not offer WRITE_ZEROES
/// here), then the map and every byte.
const SCRIPT: &str = r#"nbdsh -u "$uri" -c '
size = h.get_size()
h.pwrite(b"A" * 5000, 60000)
h.pwrite(b"B" * 70000, 100)
h.trim(140000, 65536 * 2 + 100)
h.pwrite(bytes(3000), 262144 - 1000)
h.pwrite(b"E", size - 1)
h.trim(65536, 393216)
h.cache(size - 5000, 5000)
' && nbdinfo --map "$uri" && nbdcopy "$uri" - | od -An -tx1 -v | sha256sum"#;

#[rstest::rstest]
#[case(&["memory", "1M"])]
#[case(&["memory", "500001"])]
#[case(&["pattern", "1M", "cow-block-size=4096"])]
#[case(&["data", "1 2 3 @300000 4 5 @600000 6", "cow-on-read=true"])]
#[case(&["pattern", "600000", "cow-on-cache=true"])]
fn serves_what_c_nbdkit_serves(#[case] args: &[&str]) {
    if !have("nbdsh") || !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let mut all = vec!["--filter=cow"];
    all.extend_from_slice(args);
    let ours = run_captive(&bin(), &all, SCRIPT);
    assert!(ours.starts_with("status Some(0)"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run_captive(&c, &all, SCRIPT), "{args:?}");
    }
}

#[rstest::rstest]
#[case(&["cow-block-size=2048"], "cow: cow-block-size=2048: must be a power of 2 from 4096 to 2G")]
#[case(&["cow-block-size=96K"], "must be a power of 2")]
#[case(&["cow-block-size=4G"], "must be a power of 2")]
#[case(&["cow-block-size=big"], "cow-block-size")]
#[case(&["cow-on-cache=maybe"], "cow-on-cache: could not decipher boolean (maybe)")]
#[case(&["cow-on-read=maybe"], "cow-on-read: could not decipher boolean (maybe)")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=cow", "memory", "1M"], args, msg);
}

#[test]
fn an_unusable_tmpdir_is_a_start_up_error() {
    let out = nbdkit()
        .env("TMPDIR", "/nonexistent/dir")
        .args(["-U", "-", "--filter=cow", "memory", "1M", "--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cow: cannot make the overlay in /nonexistent/dir"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Partial-block writes from many clients at once into the same blocks:
/// each read-modify-write must see the others' results.
#[test]
fn concurrent_partial_writes_to_one_block_all_land() {
    let disk = start("memory", &["1M", "cow-block-size=4K"]);
    super::common::concurrent_partial_writes_all_land(&disk);
}
