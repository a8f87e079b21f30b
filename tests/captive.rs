use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use predicates::prelude::*;

use crate::util::*;

#[test]
fn variables_on_a_private_unix_socket() {
    let out = nbdkit()
        .args(["-U", "-", "-e", "my exp", "memory", "1M", "--run"])
        .arg(r#"printf '%s\n' "$uri" "$nbd" "$exportname" "[$port]" "$unixsocket" "${tls-unset}"; test -S "$unixsocket" && echo socket-exists"#)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<&str> = text.lines().collect();
    let sock = l[4];
    assert!(sock.starts_with("/") && sock.ends_with("/socket"), "{sock}");
    assert_eq!(l[0], format!("nbd+unix:///my%20exp?socket={sock}"));
    assert_eq!(l[1], l[0]);
    assert_eq!(l[2], "my exp");
    assert_eq!(l[3], "[]");
    // Without TLS, $tls is not set at all (C nbdkit 1.32).
    assert_eq!(l[5], "unset");
    assert_eq!(l[6], "socket-exists");
    // The socket and its private directory are gone afterwards.
    assert!(!Path::new(sock).exists());
    assert!(!Path::new(sock).parent().unwrap().exists());
}

#[test]
fn private_directory_is_private() {
    nbdkit()
        .args(["-U", "-", "null", "--run", r#"stat -c %a "$(dirname "$unixsocket")""#])
        .assert()
        .success()
        .stdout("700\n");
}

#[test]
fn variables_are_not_exported() {
    nbdkit()
        .args(["-U", "-", "null", "--run", r#"sh -c 'echo "[$uri][$port]"'"#])
        .assert()
        .success()
        .stdout("[][]\n");
}

#[test]
fn variables_on_tcp() {
    let out = nbdkit()
        .args(["-p", "0", "-i", "127.0.0.1", "-e", "a/b", "memory", "1M", "--run"])
        .arg(r#"echo "$port"; echo "$uri"; echo "[$unixsocket]""#)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<&str> = text.lines().collect();
    let port: u16 = l[0].parse().unwrap();
    assert_ne!(port, 0, "-p 0 shows the bound port");
    // Always localhost, whatever -i says, as in C nbdkit.
    assert_eq!(l[1], format!("nbd://localhost:{port}/a/b"));
    assert_eq!(l[2], "[]");
}

#[test]
fn the_server_is_listening_when_the_command_runs() {
    // The command's first act is to connect: it must find a server.
    if !have("nbdinfo") {
        return;
    }
    let out = Command::new(bin())
        .args(["-U", "-", "memory", "1M", "--run", r#"nbdinfo --size "$uri""#])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1048576\n");
}

#[rstest::rstest]
#[case("true", 0)]
#[case("false", 1)]
#[case("exit 42", 42)]
#[case("kill -9 $$", 137)]
#[case("kill -TERM $$", 143)]
fn exit_status_is_the_commands(#[case] cmd: &str, #[case] code: i32) {
    nbdkit().args(["-U", "-", "null", "--run", cmd]).assert().code(code);
}

#[test]
fn killed_command_is_reported() {
    nbdkit()
        .args(["-U", "-", "null", "--run", "kill -9 $$"])
        .assert()
        .code(137)
        .stderr(predicate::str::contains("killed by signal 9"));
}

#[test]
fn command_uses_nbdkits_stdin_and_stdout() {
    nbdkit()
        .args(["-U", "-", "null", "--run", "cat; echo done"])
        .write_stdin("hello\n")
        .assert()
        .success()
        .stdout("hello\ndone\n");
}

#[test]
fn unix_socket_we_created_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    nbdkit()
        .arg("-U")
        .arg(&sock)
        .args(["null", "--run", r#"test -S "$unixsocket""#])
        .assert()
        .success();
    assert!(!sock.exists());
}

/// Start `nbdkit --run CMD` where CMD records its pid in `pidfile` and then
/// execs a long sleep. Returns (nbdkit child, command pid).
fn start_sleeping(dir: &Path) -> (std::process::Child, i32) {
    let pidfile = dir.join("cmd.pid");
    // A SIGKILLed server cannot remove its `-U -` directory: keep it in
    // the test's own directory (our `-U -` honours $TMPDIR).
    let child = Command::new(bin())
        .args(["-U", "-", "null", "--run"])
        .arg(format!("echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 60", pidfile.display()))
        .env("TMPDIR", dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || pidfile.exists()));
    let pid: i32 = slurp(&pidfile).trim().parse().unwrap();
    (child, pid)
}

#[test]
fn sigkill_on_nbdkit_leaves_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, cmd) = start_sleeping(dir.path());
    assert!(alive(cmd));
    child.kill().unwrap();
    child.wait().unwrap();
    // The server was in the killed process; the command gets SIGTERM.
    assert!(wait_until(Duration::from_secs(5), || !alive(cmd)), "command {cmd} survived");
}

#[rstest::rstest]
#[case(libc::SIGTERM)]
#[case(libc::SIGINT)]
fn signal_to_nbdkit_stops_the_command(#[case] sig: i32) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, cmd) = start_sleeping(dir.path());
    signal(child.id() as i32, sig);
    let st = child.wait().unwrap();
    // The command (sleep) was terminated: its status is ours.
    assert_eq!(st.code(), Some(128 + libc::SIGTERM));
    assert!(!alive(cmd));
}

#[test]
fn a_signal_from_the_command_at_once_is_handled_not_fatal() {
    // The command starts before the server's runtime (and its signal
    // handlers) exists: a SIGTERM it sends at once must still be handled
    // as one sent later is (the command is stopped, its status becomes
    // ours), not kill nbdkit by the default action.
    let start = std::time::Instant::now();
    let out = nbdkit()
        .args(["-U", "-", "null", "--run", "kill -TERM $PPID; exec sleep 10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("killed by signal 15"));
    assert!(start.elapsed() < Duration::from_secs(8));
}

#[test]
fn the_command_is_stopped_when_a_later_start_up_step_fails() {
    // The command runs before the plugin's after_fork hook, as in C: when
    // the hook fails, nbdkit stops the command and waits for it before it
    // exits (the command's SIGTERM on our death would come only after).
    // The hook fails once the command has set its trap.
    let dir = tempfile::tempdir().unwrap();
    let (ready, stopped) = (dir.path().join("ready"), dir.path().join("stopped"));
    let cmd = format!(
        "exec 2>/dev/null; trap 'echo > {}; exit 0' TERM; echo > {}; \
         while :; do sleep 0.01; done",
        stopped.display(),
        ready.display()
    );
    let hook = format!(
        "after_fork=while [ ! -e {} ]; do sleep 0.01; done; echo boom >&2; exit 1",
        ready.display()
    );
    let out = Command::new(bin())
        .args(["-U", "-", "eval", "get_size=echo 1M", "pread=exit 1", &hook, "--run", &cmd])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("after_fork: boom"), "{out:?}");
    assert!(stopped.exists(), "the command was still running when nbdkit exited");
}
