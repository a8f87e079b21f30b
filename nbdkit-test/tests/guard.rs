//! Starting a disk, what it reports, how it fails, and how it stops.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nbdkit_test::{CaptiveDisk, ErrorKind};

use crate::util::{alive, child_mode, fake_nbdkit, fake_pid, run_child};

#[test]
fn ready_on_return_and_serves_data() {
    let disk = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let socket = disk.socket().expect("a Unix socket by default").to_path_buf();
    assert!(socket.exists());
    assert_eq!(disk.port(), None);
    assert_eq!(disk.export_name(), "");
    assert_eq!(disk.uri(), format!("nbd+unix://?socket={}", socket.display()));
    assert!(alive(disk.pid()));
    // No retry: the first connect must succeed.
    let mut nbd = disk.connect().unwrap();
    assert_eq!(nbd.size(), 1 << 20);
    nbd.write(1000, b"written").unwrap();
    assert_eq!(nbd.read(1000, 7).unwrap(), b"written");
}

#[test]
fn private_socket_directory_is_0700_and_ours_alone() {
    let disk = CaptiveDisk::new(["null"]).unwrap();
    let dir = disk.socket().unwrap().parent().unwrap();
    let mode = std::fs::metadata(dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert_eq!(entries.len(), 1, "only the socket in {}", dir.display());
}

#[test]
fn drop_stops_reaps_and_removes_socket_and_directory() {
    let disk = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let pid = disk.pid();
    let socket = disk.socket().unwrap().to_path_buf();
    let dir = socket.parent().unwrap().to_path_buf();
    let mut nbd = disk.connect().unwrap();
    nbd.write(0, b"x").unwrap();
    drop(nbd);
    drop(disk);
    // Reaped, not a zombie: /proc has no entry at all.
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "pid {pid} remains");
    assert!(!socket.exists());
    assert!(!dir.exists());
}

#[test]
fn shutdown_reports_a_clean_exit() {
    let disk = CaptiveDisk::new(["null", "size=1K"]).unwrap();
    let status = disk.shutdown().unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn builder_sets_export_name_readonly_and_quotes_the_uri() {
    let disk = CaptiveDisk::builder("memory")
        .arg("size=64K")
        .export_name("my disk/ä")
        .readonly()
        .start()
        .unwrap();
    assert_eq!(disk.export_name(), "my disk/ä");
    let socket = disk.socket().unwrap().display().to_string();
    assert_eq!(disk.uri(), format!("nbd+unix:///my%20disk/%C3%A4?socket={socket}"));
    let mut nbd = disk.connect().unwrap();
    assert!(nbd.info().read_only());
    let err = nbd.write(0, b"no").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EPERM), "{err}");
    assert!(disk.command_line().contains(" -r "), "{}", disk.command_line());
}

#[test]
fn tcp_on_loopback_with_a_kernel_chosen_port() {
    let disk =
        CaptiveDisk::builder("pattern").arg("size=1M").export_name("e").tcp().start().unwrap();
    let port = disk.port().expect("a port on TCP");
    assert_ne!(port, 0);
    assert_eq!(disk.socket(), None);
    assert_eq!(disk.uri(), format!("nbd://127.0.0.1:{port}/e"));
    let mut nbd = disk.connect().unwrap();
    assert_eq!(nbd.read(16, 8).unwrap(), 16u64.to_be_bytes());
    let pid = disk.pid();
    drop(nbd);
    drop(disk);
    assert!(!alive(pid));
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn environment_reaches_the_server() {
    // TMPDIR decides where `-U -` makes its directory.
    let tmp = tempfile::tempdir().unwrap();
    let disk = CaptiveDisk::builder("null").env("TMPDIR", tmp.path()).start().unwrap();
    assert!(disk.socket().unwrap().starts_with(tmp.path()), "{:?}", disk.socket());
    assert!(disk.command_line().starts_with("TMPDIR="));
}

#[test]
fn server_arg_goes_before_the_plugin() {
    let disk = CaptiveDisk::builder("null").arg("size=1M").server_arg("--no-sr").start().unwrap();
    let cmd = disk.command_line();
    assert!(cmd.find("--no-sr").unwrap() < cmd.find(" null size=1M").unwrap(), "{cmd}");
    assert_eq!(disk.connect().unwrap().read(0, 4).unwrap(), [0; 4]);
}

#[test]
fn a_failed_start_says_why_with_command_and_stderr() {
    let err = CaptiveDisk::new(["memory", "size=banana"]).unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Exited(s) if s.code() == Some(1)), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("nbdkit exited before it was ready"), "{text}");
    assert!(text.contains("command: "), "{text}");
    assert!(text.contains("memory size=banana"), "{text}");
    assert!(err.stderr().unwrap().contains("banana"), "{text}");
}

#[test]
fn filters_are_passed_on() {
    let disk = CaptiveDisk::builder("memory")
        .arg("size=1M")
        .filter("error")
        .arg("error-pread-rate=1")
        .start()
        .unwrap();
    assert!(disk.command_line().contains("--filter=error memory"), "{}", disk.command_line());
    let mut c = disk.connect().unwrap();
    c.write(0, b"x").unwrap();
    let e = c.read(0, 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
}

#[test]
fn an_empty_argument_list_is_an_error_not_a_panic() {
    let err = CaptiveDisk::new(Vec::<String>::new()).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Usage);
    assert!(err.to_string().contains("plugin"), "{err}");
}

#[test]
fn a_server_that_never_gets_ready_times_out_and_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_nbdkit(dir.path(), "echo stuck >&2\nexec sleep 600");
    let t = Instant::now();
    let err = CaptiveDisk::builder("memory")
        .binary(&bin)
        .start_timeout(Duration::from_secs(2))
        .start()
        .unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Timeout), "{err}");
    assert!(t.elapsed() < Duration::from_secs(10));
    assert!(err.stderr().unwrap().contains("stuck"), "{err}");
    let pid = fake_pid(dir.path());
    assert!(!alive(pid), "the stuck server {pid} was left running");
}

#[test]
fn drop_kills_a_server_that_ignores_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_nbdkit(dir.path(), "trap '' TERM\necho 'nbd://127.0.0.1:9'\nexec sleep 600");
    let disk = CaptiveDisk::builder("memory")
        .binary(&bin)
        .stop_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let pid = disk.pid();
    assert_eq!(disk.port(), Some(9));
    let t = Instant::now();
    drop(disk);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn log_debug_and_output_never_reach_the_test() {
    let disk = CaptiveDisk::builder("memory").arg("size=1M").verbose().start().unwrap();
    drop(disk.connect().unwrap());
    let log = disk.log();
    assert!(log.contains("nbdkit"), "{log}");
    let dbg = format!("{disk:?}");
    assert!(dbg.contains("CaptiveDisk"), "{dbg}");
    assert!(dbg.contains(disk.command_line()), "{dbg}");
    assert!(dbg.contains("debug"), "{dbg}");
    // The server's stdout and stderr are not ours.
    let fd = |pid: &str, n| std::fs::read_link(format!("/proc/{pid}/fd/{n}")).unwrap();
    let pid = disk.pid().to_string();
    assert_ne!(fd(&pid, 1), fd("self", 1));
    assert_ne!(fd(&pid, 2), fd("self", 2));
    assert!(fd(&pid, 2).to_string_lossy().ends_with("(deleted)"));
}

#[test]
#[ignore = "run in a child process by drop_during_a_panic_shows_the_servers_stderr"]
fn child_panics_holding_a_disk() {
    if child_mode("NBDKIT_TEST_PANIC").is_none() {
        return;
    }
    let _disk = CaptiveDisk::builder("memory").arg("size=1M").verbose().start().unwrap();
    panic!("deliberate");
}

#[test]
fn drop_during_a_panic_shows_the_servers_stderr() {
    let out = run_child("guard::child_panics_holding_a_disk", &[("NBDKIT_TEST_PANIC", "1")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let all = format!("{err}{}", String::from_utf8_lossy(&out.stdout));
    assert!(all.contains("deliberate"), "{all}");
    assert!(all.contains("its stderr ends"), "{all}");
    assert!(all.contains("debug"), "{all}");
}

#[test]
fn server_stdout_is_drained_into_the_log() {
    // 300 kB on stdout after the URI: without a reader the pipe fills and
    // the server blocks before it reaches the FIFO.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    crate::util::mkfifo(&fifo);
    let bin = fake_nbdkit(
        dir.path(),
        "echo 'nbd://127.0.0.1:9'\nhead -c 300000 /dev/zero | tr '\\0' x\n\
         echo past-the-output > \"$FIFO\"\nexec sleep 600",
    );
    let disk = CaptiveDisk::builder("memory").binary(&bin).env("FIFO", &fifo).start().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(std::fs::read_to_string(fifo).unwrap()));
    let got = rx.recv_timeout(Duration::from_secs(20));
    assert_eq!(got.as_deref().map(str::trim), Ok("past-the-output"));
    disk.shutdown().unwrap();
}
