use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::util::*;

/// A shell that starts nbdkit in the background and then waits on its
/// stdin: closing stdin (or killing it) ends the parent.
struct Parent {
    sh: Child,
    server: i32,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

fn start(extra: &[&str]) -> Parent {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let fifo = dir.path().join("ready");
    mkfifo(&fifo);
    let mut args = vec!["-f".to_string()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let sh = Command::new("sh")
        .arg("-c")
        .arg(r#"exe=$1; shift; "$exe" "$@" & read x"#)
        .arg("sh")
        .arg(bin())
        .args(&args)
        .arg("-U")
        .arg(&socket)
        .arg("-P")
        .arg(&fifo)
        .args(["memory", "1M"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    // The pidfile is a FIFO: reading it waits for the server to be ready.
    let server: i32 = slurp(&fifo).trim().parse().unwrap();
    let _ = pidfile;
    assert!(alive(server));
    assert!(socket.exists());
    Parent { sh, server, socket, _dir: dir }
}

fn gone_within_a_second(p: &Parent) {
    assert!(
        wait_until(Duration::from_millis(1500), || !alive(p.server)),
        "server {} still running",
        p.server
    );
    assert!(wait_until(Duration::from_millis(500), || !p.socket.exists()), "socket left behind");
}

#[test]
fn parent_exits() {
    let mut p = start(&["--exit-with-parent"]);
    p.sh.stdin.take().unwrap().write_all(b"\n").unwrap();
    p.sh.wait().unwrap();
    gone_within_a_second(&p);
}

#[test]
fn parent_is_sigkilled() {
    let mut p = start(&["--exit-with-parent"]);
    p.sh.kill().unwrap();
    p.sh.wait().unwrap();
    gone_within_a_second(&p);
}

#[test]
fn without_the_flag_the_server_outlives_its_parent() {
    let mut p = start(&[]);
    p.sh.kill().unwrap();
    p.sh.wait().unwrap();
    // There is no event for "did not die": give it a moment that would
    // be ample for a parent-death signal.
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(p.server));
    signal(p.server, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(5), || !alive(p.server)));
}

#[test]
fn the_parents_spawning_thread_may_exit() {
    // We are the parent process; the thread that spawns nbdkit ends right
    // away. PR_SET_PDEATHSIG would kill the server now; we must not.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let s2 = sock.clone();
    let mut srv = std::thread::spawn(move || {
        let mut c = Command::new(bin());
        c.args(["--exit-with-parent", "-U"]).arg(&s2).args(["--print-uri", "memory", "1M"]);
        Server::spawn(c, tempfile::tempdir().unwrap())
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(srv.pid()), "server died with the thread that spawned it");
    let (mut c, size, _) =
        Raw::open(std::os::unix::net::UnixStream::connect(&sock).unwrap(), false);
    assert_eq!(size, 1 << 20);
    c.request(CMD_DISC, 0, 1, 0, 0, b"");
    assert!(srv.child.try_wait().unwrap().is_none());
    let st = srv.stop();
    assert!(st.success());
}
