use std::time::Duration;

use crate::util::*;

#[test]
fn exits_when_the_last_client_leaves() {
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("exitlast")
        .arg("1M")
        .binary(bin())
        .start()
        .unwrap();
    let pid = disk.pid() as i32;
    let a = disk.connect().unwrap();
    let b = disk.connect().unwrap();
    a.disconnect().unwrap();
    // One left: still serving.
    assert!(!wait_until(Duration::from_millis(300), || !alive(pid)));
    b.disconnect().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    assert!(disk.shutdown().unwrap().success());
}

/// A client that asks about the export (NBD_OPT_INFO, which opens and
/// closes it, so exitlast asks for shutdown) and then opens it
/// (NBD_OPT_GO) is still served, as by C; then the server exits.
#[test]
fn info_then_go_is_still_served() {
    let dir = scratch();
    let sock = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let status = std::process::Command::new(bin())
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["--filter=exitlast", "memory", "1M"])
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i32 = slurp(&pidfile).trim().parse().unwrap();
    let mut c = Raw::new(std::os::unix::net::UnixStream::connect(&sock).unwrap());
    c.hello();
    let mut info = 0u32.to_be_bytes().to_vec();
    info.extend_from_slice(&0u16.to_be_bytes());
    c.option(OPT_INFO, &info);
    while c.opt_reply(OPT_INFO).0 != REP_ACK {}
    // The INFO open has closed: shutdown begins, and the listener closes.
    assert!(wait_until(Duration::from_secs(5), || {
        std::os::unix::net::UnixStream::connect(&sock).is_err()
    }));
    // The client in its handshake still gets its export.
    let (size, _) = c.go("", false);
    assert_eq!(size, 1 << 20);
    drop(c);
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
}
