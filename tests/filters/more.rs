//! extentlist, ddrescue, retry and pause.

use std::io::{Read, Write};
use std::time::Duration;

use crate::util::*;

use super::common::start_one as start;

#[test]
fn extentlist_serves_the_listed_extents_like_c() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("extents");
    std::fs::write(&list, "1M 1M hole,zero\n0 64K\n3M 1M 2\n").unwrap();
    let d = start("extentlist", &["null", "4M"], &[&format!("extentlist={}", list.display())]);
    let ext: Vec<(u64, u64, u32)> = d
        .connect()
        .unwrap()
        .extents(0, 4 << 20)
        .unwrap()
        .iter()
        .map(|e| (e.offset, e.length, e.flags))
        .collect();
    assert_eq!(ext, [(0, 65536, 0), (65536, (3 << 20) - 65536, 3), (3 << 20, 1 << 20, 2)]);
    if have("nbdinfo") {
        if let Some(c) = c_nbdkit() {
            let map = |n: &std::path::Path| {
                sh(&format!(
                    "{} -U - -r --filter=extentlist null 4M extentlist={} --run 'nbdinfo --map \"$uri\"'",
                    n.display(),
                    list.display()
                ))
                .stdout
            };
            assert_eq!(map(&bin()), map(&c));
        }
    }
}

#[test]
fn ddrescue_fails_reads_of_unrescued_areas() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map");
    std::fs::write(
        &map,
        "# mapfile\n0x0 +\n0x00000000 0x00000200 +\n0x00000200 0x00000200 -\n0x00000400 0x000FFC00 +\n",
    )
    .unwrap();
    let d =
        start("ddrescue", &["pattern", "1M"], &[&format!("ddrescue-mapfile={}", map.display())]);
    let mut c = d.connect().unwrap();
    assert!(c.info().read_only());
    assert_eq!(c.read(0, 8).unwrap(), 0u64.to_be_bytes());
    assert_eq!(c.read(512, 8).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(c.read(256, 512).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(c.read(1024, 8).unwrap(), 1024u64.to_be_bytes());
}

#[test]
fn retry_reopens_the_plugin_after_a_failure() {
    // Reads fail on the first handle, work on any later one.
    let flaky = [
        "eval",
        "get_size=echo 1M",
        "open=n=$(cat $tmpdir/n 2>/dev/null || echo 0); echo $((n+1)) > $tmpdir/n; echo h$n",
        r#"pread=[ "$2" = h0 ] && { echo "EIO first handle" >&2; exit 1; }; dd if=/dev/zero count=$3 iflag=count_bytes status=none"#,
    ];
    let d = start("retry", &flaky, &["retry-delay=50ms"]);
    assert_eq!(d.connect().unwrap().read(0, 4).unwrap(), [0; 4]);
    let d = start("retry", &flaky, &["retries=0"]);
    assert_eq!(d.connect().unwrap().read(0, 4).unwrap_err().raw_os_error(), Some(libc::EIO));
}

#[test]
fn pause_holds_requests_until_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let d = start("pause", &["memory", "1M"], &[&format!("pause-control={}", ctl.display())]);
    let mut s = std::os::unix::net::UnixStream::connect(&ctl).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ask = |c: u8| {
        s.write_all(&[c]).unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).unwrap();
        b[0]
    };
    assert_eq!(ask(b'p'), b'P');
    let mut c = d.connect().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || tx.send(c.read(0, 4).unwrap()).unwrap());
    assert!(rx.recv_timeout(Duration::from_millis(500)).is_err(), "a read went through a pause");
    assert_eq!(ask(b'r'), b'R');
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), [0; 4]);
    reader.join().unwrap();
    assert_eq!(ask(b'?'), b'X');
}

#[test]
fn cacheextents_answers_from_the_last_reply() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let extents = format!("extents=echo $4 >> {}; echo 0 1M", log.display());
    let d = start(
        "cacheextents",
        &[
            "eval",
            "get_size=echo 1M",
            "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
            "pwrite=cat >/dev/null",
            &extents,
        ],
        &[],
    );
    let mut c = d.connect().unwrap();
    let calls = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    c.block_status(0, 4096).unwrap();
    c.block_status(8192, 4096).unwrap();
    assert_eq!(calls(), 1, "the second was answered from the cache");
    c.write(0, b"x").unwrap();
    c.block_status(8192, 4096).unwrap();
    assert_eq!(calls(), 2, "a write forgets the cache");
}

#[test]
fn scan_prefetches_the_whole_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cached");
    let cache = format!("cache=echo $4 >> {}", log.display());
    let d = start(
        "scan",
        &[
            "eval",
            "get_size=echo 8M",
            "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
            "can_cache=echo native",
            &cache,
        ],
        &["scan-size=1M"],
    );
    let _c = d.connect().unwrap();
    let offsets = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || offsets().lines().count() >= 8),
        "{}",
        offsets()
    );
    let mut got: Vec<u64> = offsets().lines().map(|l| l.trim().parse().unwrap()).collect();
    got.sort();
    assert_eq!(got, (0..8).map(|i| i << 20).collect::<Vec<u64>>());
}

#[test]
fn pause_removes_its_socket_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = dir.path().join("ctl");
    let out = sh(&format!(
        "{} -U - --filter=pause memory 1M pause-control={} --run 'test -S {}'",
        bin().display(),
        ctl.display(),
        ctl.display()
    ));
    assert!(out.status.success(), "the socket exists while serving");
    assert!(!ctl.exists(), "and is gone after");
}

#[test]
fn cacheextents_forgets_what_another_connection_wrote_over() {
    let d = start("cacheextents", &["memory", "1M"], &[]);
    let mut a = d.connect().unwrap();
    let mut b = d.connect().unwrap();
    assert!(a.block_status(65536, 4096).unwrap()[0].is_hole());
    b.write(65536, b"data").unwrap();
    b.flush().unwrap();
    assert!(!a.block_status(65536, 4096).unwrap()[0].is_hole());
}

#[test]
fn retry_readonly_keeps_refusing_writes() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("fail");
    std::fs::write(&trigger, b"").unwrap();
    let d = nbdkit_test::CaptiveDisk::builder("memory")
        .arg("1M")
        .filter("retry")
        .filter("error")
        .args([
            "retry-readonly=yes".to_string(),
            "retry-delay=10ms".to_string(),
            "retries=1".to_string(),
            "error-pwrite-rate=1".to_string(),
            format!("error-file={}", trigger.display()),
        ])
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    assert!(c.write(0, b"x").is_err());
    std::fs::remove_file(&trigger).unwrap();
    // Reopened read-only: writes stay refused for this connection.
    assert_eq!(c.write(0, b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(c.read(0, 1).unwrap(), [0]);
}

#[test]
fn ip_refuses_before_the_handshake() {
    if !have("nbdinfo") {
        return;
    }
    let out = sh(&format!(
        "{} -U - --filter=ip memory 1M deny=all --run 'nbdinfo --list \"$uri\"'",
        bin().display()
    ));
    assert!(!out.status.success(), "a denied client listed the exports");
}

#[test]
fn exitwhen_and_pause_work_in_the_background_too() {
    let dir = tempfile::tempdir().unwrap();
    let (sock, pidf, stop, ctl) = (
        dir.path().join("s"),
        dir.path().join("pid"),
        dir.path().join("stop"),
        dir.path().join("ctl"),
    );
    let st = nbdkit()
        .args(["-U", sock.to_str().unwrap(), "-P", pidf.to_str().unwrap()])
        .args(["--filter=exitwhen", "--filter=pause", "memory", "1M"])
        .arg(format!("exit-when-file-created={}", stop.display()))
        .arg("exit-when-poll=1")
        .arg(format!("pause-control={}", ctl.display()))
        .output()
        .unwrap();
    assert!(st.status.success());
    let pid: i32 = std::fs::read_to_string(&pidf).unwrap().trim().parse().unwrap();
    // The pause control thread answers in the forked server.
    let mut s = std::os::unix::net::UnixStream::connect(&ctl).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"?").unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"X");
    // And the exitwhen thread polls there.
    std::fs::write(&stop, b"").unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)), "still running");
}
