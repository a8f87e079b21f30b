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
    let disk = disk(&["file", img.to_str().unwrap()]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert_eq!(c.read(100_000, 10).unwrap(), b"0123456789");
    c.write_fua(4096, b"hello").unwrap();
    c.flush().unwrap();
    let mut back = [0u8; 5];
    std::fs::File::open(&img)
        .unwrap()
        .read_exact_at(&mut back, 4096)
        .unwrap();
    assert_eq!(&back, b"hello");
    // Zero and trim read back as zeroes, in the file too.
    c.zero(100_000, 4).unwrap();
    c.trim(4096, 5).unwrap();
    assert_eq!(c.read(100_000, 10).unwrap(), b"\x00\x00\x00\x00456789");
    assert_eq!(c.read(4096, 5).unwrap(), [0u8; 5]);
    // Past the end.
    let e = c.read(1 << 20, 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let e = c.write((1 << 20) - 1, b"xy").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
}

#[test]
fn extents_show_holes() {
    let (_d, img) = image(1 << 20);
    let disk = disk(&["file", &format!("file={}", img.display())]);
    let ext = disk.connect().unwrap().extents(0, 1 << 20).unwrap();
    assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), 1 << 20);
    assert!(
        ext[0].is_hole() && ext[0].is_zero(),
        "starts with a hole: {ext:?}"
    );
    // The data written at 100000 is in an allocated extent.
    let at = ext
        .iter()
        .find(|e| e.offset <= 100_000 && 100_000 < e.offset + e.length)
        .unwrap();
    assert!(!at.is_hole() && !at.is_zero(), "{ext:?}");
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
