use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

#[test]
fn background_mode_returns_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let out = nbdkit()
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["--print-uri", "memory", "1M"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("nbd+unix://?socket={}\n", sock.display())
    );
    // Ready means: a client connects now, and the pidfile names the server.
    let pid: i32 = slurp(&pidfile).trim().parse().unwrap();
    assert!(alive(pid));
    let (mut c, size, _) = Raw::open(UnixStream::connect(&sock).unwrap(), false);
    assert_eq!(size, 1 << 20);
    c.call(CMD_WRITE, 0, 0, 3, b"abc");
    assert_eq!(c.call(CMD_READ, 0, 0, 3, b"").data, b"abc");
    drop(c);
    signal(pid, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    assert!(!sock.exists(), "socket removed at exit");
}

#[test]
fn background_failure_is_reported() {
    // A pidfile that cannot be written: the child fails after the fork, and
    // the parent reports failure instead of claiming success.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let out = nbdkit()
        .arg("-U")
        .arg(&sock)
        .args(["-P", "/nonexistent/dir/pid", "-v", "memory", "1M"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/dir/pid"));
}

#[test]
fn pidfile_fifo_is_a_readiness_signal() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let mut child = Command::new(bin())
        .arg("-f")
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&fifo)
        .args(["memory", "1M"])
        .spawn()
        .unwrap();
    // Opening the FIFO blocks until the server writes it, in place.
    let pid: i32 = slurp(&fifo).trim().parse().unwrap();
    assert_eq!(pid, child.id() as i32);
    UnixStream::connect(&sock).expect("connectable once the pidfile is written");
    signal(pid, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
}

#[test]
fn print_uri_with_kernel_chosen_port() {
    let mut c = Command::new(bin());
    c.args(["-f", "-p", "0", "-i", "127.0.0.1", "--print-uri", "memory", "1M"]);
    let srv = Server::spawn(c, tempfile::tempdir().unwrap());
    let port: u16 = srv
        .uri
        .strip_prefix("nbd://localhost:")
        .unwrap_or_else(|| panic!("{}", srv.uri))
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert!(srv.stop().success());
}

#[test]
fn default_tcp_listens_on_ipv4_and_ipv6() {
    let mut c = Command::new(bin());
    c.args(["-f", "-p", "0", "--print-uri", "null"]);
    let srv = Server::spawn(c, tempfile::tempdir().unwrap());
    let port: u16 = srv.uri.rsplit(':').next().unwrap().parse().unwrap();
    std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        std::net::TcpStream::connect(("::1", port)).unwrap();
    }
    assert!(srv.stop().success());
}

#[rstest::rstest]
#[case(libc::SIGTERM)]
#[case(libc::SIGINT)]
#[case(libc::SIGQUIT)]
#[case(libc::SIGHUP)]
fn signals_exit_cleanly(#[case] sig: i32) {
    let srv = Server::start(&["memory", "1M"]);
    let sock = srv.socket.clone().unwrap();
    let _c = Raw::open(srv.connect(), true);
    let start = Instant::now();
    let mut srv = srv;
    signal(srv.pid(), sig);
    let st = srv.child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    // An idle client gets a grace period, not forever.
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(!sock.exists());
}

#[test]
fn private_socket_is_removed_after_a_signal() {
    let mut c = Command::new(bin());
    c.args(["-f", "-U", "-", "--print-uri", "memory", "1M"]);
    let srv = Server::spawn(c, tempfile::tempdir().unwrap());
    let sock = srv.uri.split("socket=").nth(1).unwrap().to_string();
    assert!(Path::new(&sock).exists());
    assert!(srv.stop().success());
    assert!(!Path::new(&sock).exists());
    assert!(!Path::new(&sock).parent().unwrap().exists());
}

#[test]
fn single_client_on_stdin() {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs2 = theirs.try_clone().unwrap();
    let mut child = Command::new(bin())
        .args(["-s", "memory", "1M"])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs2)))
        .spawn()
        .unwrap();
    let mut c = Raw::new(ours);
    c.hello();
    let (size, _) = c.go("", true);
    assert_eq!(size, 1 << 20);
    c.call(CMD_WRITE, 0, 4096, 5, b"hello");
    assert_eq!(c.call(CMD_READ, 0, 4096, 5, b"").data, b"hello");
    c.request(CMD_DISC, 0, 9, 0, 0, b"");
    drop(c);
    // The client left: the server exits.
    assert!(child.wait().unwrap().success());
}

/// `-s` with regular files, as C nbdkit takes them: a recorded client
/// session on stdin, the server's side of it written to stdout.
#[test]
fn single_client_from_regular_files() {
    let dir = scratch();
    let mut session = Vec::new();
    session.extend(3u32.to_be_bytes()); // fixed newstyle, no zeroes
    session.extend(IHAVEOPT.to_be_bytes());
    session.extend(OPT_EXPORT_NAME.to_be_bytes());
    session.extend(0u32.to_be_bytes());
    let mut req = |ty: u16, handle: u64, len: u32, payload: &[u8]| {
        session.extend(REQUEST_MAGIC.to_be_bytes());
        session.extend(0u16.to_be_bytes());
        session.extend(ty.to_be_bytes());
        session.extend(handle.to_be_bytes());
        session.extend(4096u64.to_be_bytes());
        session.extend(len.to_be_bytes());
        session.extend(payload);
    };
    req(CMD_WRITE, 1, 5, b"hello");
    req(CMD_READ, 2, 5, b"");
    req(CMD_DISC, 3, 0, b"");
    let input = dir.path().join("in");
    let output = dir.path().join("out");
    std::fs::write(&input, &session).unwrap();
    let status = Command::new(bin())
        .args(["-s", "memory", "1M"])
        .stdin(std::fs::File::open(&input).unwrap())
        .stdout(std::fs::File::create(&output).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::fs::read(&output).unwrap();
    // Greeting (18 bytes), export size and flags (10), the write's reply
    // (16), then the read's reply and its data.
    assert_eq!(out.len(), 18 + 10 + 16 + 16 + 5, "{out:?}");
    assert_eq!(&out[18..26], &(1u64 << 20).to_be_bytes());
    let read_reply = &out[44..];
    assert_eq!(&read_reply[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
    assert_eq!(&read_reply[4..8], &0u32.to_be_bytes(), "no error");
    assert_eq!(&read_reply[8..16], &2u64.to_be_bytes());
    assert_eq!(&read_reply[16..], b"hello");
    // /dev/null on both ends: the client is gone at once, exit 0.
    let status = Command::new(bin())
        .args(["-s", "null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// In the background, a sh script read from stdin (`sh -`) keeps serving
/// after the parent exits, and `-v` debug output still reaches stderr.
#[test]
fn background_sh_script_and_verbose_output() {
    let dir = scratch();
    let sock = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let errfile = dir.path().join("stderr");
    let script = "case \"$1\" in get_size) echo 512 ;; \
                  pread) printf 'x%.0s' $(seq $3) ;; *) exit 2 ;; esac\n";
    let mut child = Command::new(bin())
        .arg("-v")
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["sh", "-"])
        .stdin(Stdio::piped())
        .stderr(std::fs::File::create(&errfile).unwrap())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "the parent reports success");
    let pid: i32 = slurp(&pidfile).trim().parse().unwrap();
    let (mut c, size, _) = Raw::open(UnixStream::connect(&sock).unwrap(), false);
    assert_eq!(size, 512);
    assert_eq!(c.call(CMD_READ, 0, 0, 4, b"").data, b"xxxx");
    drop(c);
    signal(pid, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
    let err = slurp(&errfile);
    assert!(err.contains("debug: accepted connection"), "{err}");
}

#[test]
fn startup_is_fast() {
    // Not a benchmark: a guard against something slow creeping into
    // start-up (the bench compares properly).
    let start = Instant::now();
    for _ in 0..10 {
        nbdkit().args(["-U", "-", "memory", "1M", "--run", "true"]).assert().success();
    }
    let each = start.elapsed() / 10;
    assert!(each < Duration::from_millis(500), "{each:?} per start");
}

#[test]
fn user_and_group_switch_keeps_cleanup_working() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: -u/-g need root");
        return;
    }
    let out = nbdkit()
        .args(["-u", "nobody", "-g", "nogroup", "-U", "-", "memory", "1M", "--run"])
        .arg(r#"stat -c %U /proc/$PPID; echo "$unixsocket""#)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let l: Vec<&str> = text.lines().collect();
    assert_eq!(l[0], "nobody", "the server runs as the new user");
    assert!(!Path::new(l[1]).exists(), "socket removed");
    assert!(!Path::new(l[1]).parent().unwrap().exists(), "private directory removed");
}

/// Socket activation as client libraries use it (`nbdinfo -- [ nbdkit ... ]`):
/// the server must not fork, so when the client is done nothing is left.
#[test]
fn socket_activation_leaves_no_process_behind() {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let dir = scratch();
    let pidfile = dir.path().join("pid");
    let script = format!(
        "nbdinfo --size -- [ {bin} -P {pid} memory 1M ] && \
         nbdcopy -- [ {bin} -P {pid}2 pattern 1M ] null:",
        bin = bin().display(),
        pid = pidfile.display()
    );
    let out = sh(&script);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1048576\n");
    for p in [pidfile.clone(), dir.path().join("pid2")] {
        let pid: i32 = slurp(&p).trim().parse().expect("pidfile written");
        assert!(
            wait_until(Duration::from_secs(5), || !alive(pid)),
            "server {pid} outlived its client"
        );
    }
}

/// Under socket activation the listening options are errors, and
/// LISTEN_FDS must be 1 to 16, as in C nbdkit.
#[test]
fn socket_activation_refuses_listening_options() {
    let run = |env: &str, opts: &str| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!("{env} exec {} {opts} memory 1M", bin().display()))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    for (opt, flag) in [
        ("-U /nonexistent/s", "-U"),
        ("-p 10809", "-p"),
        ("-i 127.0.0.1", "-i"),
        ("-s", "-s"),
        ("--run true", "--run"),
    ] {
        let (code, err) = run("LISTEN_PID=$$ LISTEN_FDS=1", opt);
        assert_eq!(code, Some(1), "{opt}: {err}");
        assert!(
            err.contains(&format!("cannot use socket activation with {flag} flag")),
            "{opt}: {err}"
        );
    }
    let (code, err) = run("LISTEN_PID=$$ LISTEN_FDS=17", "-f");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("LISTEN_FDS=17 out of range"), "{err}");
}

/// The LISTEN_* variables are not passed on to what the server runs.
#[test]
fn socket_activation_unsets_its_variables() {
    let dir = scratch();
    let sock = dir.path().join("sock");
    let seen = dir.path().join("env");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // The sh plugin's script runs at start-up (config_complete) and records
    // whether it saw the variables.
    let script = format!(
        "case \"$1\" in get_size) echo 1M ;; config_complete) \
         echo \"[${{LISTEN_PID-}}${{LISTEN_FDS-}}]\" > {} ;; pread) exit 1 ;; *) exit 2 ;; esac",
        seen.display()
    );
    let s = dir.path().join("plugin.sh");
    std::fs::write(&s, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&s, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut child = {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = listener.as_raw_fd();
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!(
                "LISTEN_PID=$$ LISTEN_FDS=1 exec {} -P {}/pid sh {}",
                bin().display(),
                dir.path().display(),
                s.display()
            ))
            .stdin(Stdio::null());
        // SAFETY: dup2 is async-signal-safe.
        unsafe {
            c.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec set.
                if fd == 3 {
                    if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                } else if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        c.spawn().unwrap()
    };
    // The server is ready once a client is served on the passed socket.
    let (c, size, _) = Raw::open(UnixStream::connect(&sock).unwrap(), false);
    assert_eq!(size, 1 << 20);
    drop(c);
    // It stayed in the foreground: the process we started is the server.
    let pid: i32 = slurp(&dir.path().join("pid")).trim().parse().unwrap();
    assert_eq!(pid, child.id() as i32);
    assert_eq!(slurp(&seen), "[]\n");
    signal(pid, libc::SIGTERM);
    assert!(child.wait().unwrap().success());
}

/// A signal whose default is to kill (SIGUSR1, SIGUSR2, SIGALRM) still
/// kills the server, but only after it has cleaned up: the `-U -`
/// directory is gone, and under `--run` the command is stopped and nbdkit
/// dies of the signal (the shell sees 128+N, as with C nbdkit).
#[test]
fn fatal_signals_clean_up_first() {
    use std::os::unix::process::ExitStatusExt;
    let dir = scratch();
    let pidfile = dir.path().join("pid");
    let mut child = Command::new(bin())
        .args(["-f", "-U", "-", "--print-uri", "-P"])
        .arg(&pidfile)
        .args(["memory", "1M"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let sock = line.trim().split("socket=").nth(1).unwrap().to_string();
    assert!(Path::new(&sock).exists());
    signal(child.id() as i32, libc::SIGUSR1);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGUSR1), "{st:?}");
    assert!(!Path::new(&sock).parent().unwrap().exists(), "private directory removed");

    // Captive: the command is stopped (at once: not after its 10 s), and
    // nbdkit dies of the signal.
    let t = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} -U - -P {} memory 1M --run 'kill -USR2 $(cat {}); exec sleep 10'; echo status=$?",
            bin().display(),
            pidfile.display(),
            pidfile.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("status={}", 128 + libc::SIGUSR2)), "{text}");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
}

/// A fatal signal inherited as ignored stays ignored, as in C: the server
/// goes on serving.
#[test]
fn ignored_signals_stay_ignored() {
    let dir = scratch();
    let sock = dir.path().join("sock");
    let pidfile = dir.path().join("pid");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "trap '' USR1; exec {} -U {} -P {} memory 1M",
            bin().display(),
            sock.display(),
            pidfile.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    let pid: i32 = slurp(&pidfile).trim().parse().unwrap();
    signal(pid, libc::SIGUSR1);
    let (c, size, _) = Raw::open(UnixStream::connect(&sock).unwrap(), false);
    assert_eq!(size, 1 << 20);
    drop(c);
    assert!(alive(pid), "still serving");
    signal(pid, libc::SIGTERM);
    assert!(wait_until(Duration::from_secs(5), || !alive(pid)));
}

#[test]
fn connections_past_the_limit_are_refused_clearly() {
    // With 100 descriptors (soft and hard), the limit is (100 - 64) / 2.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("sock");
    let log = dir.path().join("stderr");
    let mut c = Command::new("sh");
    c.arg("-c").arg(format!(
        "ulimit -n 100 && exec {} -f -U {} --print-uri null 2>{}",
        bin().display(),
        sock.display(),
        log.display()
    ));
    let srv = Server::spawn(c, dir);
    let greeted = |s: &mut std::os::unix::net::UnixStream| {
        use std::io::Read;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut hello = [0u8; 18];
        s.read_exact(&mut hello).is_ok()
    };
    let mut held = Vec::new();
    for _ in 0..18 {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        assert!(greeted(&mut s));
        held.push(s);
    }
    // One more: closed before the greeting.
    let mut extra = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    assert!(!greeted(&mut extra));
    // A client that leaves makes room.
    held.pop();
    assert!(wait_until(Duration::from_secs(10), || {
        let mut s = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        greeted(&mut s)
    }));
    drop(held);
    let err = slurp(&log);
    assert!(err.contains("too many connections (limit 18)"), "{err}");
    assert!(srv.stop().success());
}

#[test]
fn a_private_socket_directory_outlives_no_sigkill() {
    // `-U -`: even SIGKILL, which the server cannot clean up after, leaves
    // no socket and no directory (a reaper process removes them).
    let mut c = Command::new(bin());
    c.args(["-f", "-U", "-", "--print-uri", "null"]);
    let mut srv = Server::spawn(c, tempfile::tempdir().unwrap());
    let sock = PathBuf::from(srv.uri.split("socket=").nth(1).unwrap());
    let dir = sock.parent().unwrap().to_path_buf();
    assert!(sock.exists());
    UnixStream::connect(&sock).unwrap();
    signal(srv.pid(), libc::SIGKILL);
    srv.child.wait().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !dir.exists()), "{} left", dir.display());
}

#[test]
fn a_background_servers_private_socket_directory_outlives_no_sigkill() {
    // The same for a server that forks into the background: the reaper
    // follows the server process that serves, not the parent that exits.
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let out = Command::new(bin())
        .args(["-U", "-", "--print-uri", "-P"])
        .arg(&pidfile)
        .arg("null")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let uri = String::from_utf8(out.stdout).unwrap();
    let sock = PathBuf::from(uri.trim().split("socket=").nth(1).unwrap());
    let sockdir = sock.parent().unwrap().to_path_buf();
    assert!(wait_until(Duration::from_secs(10), || pidfile.exists()));
    let pid: i32 = slurp(&pidfile).trim().parse().unwrap();
    UnixStream::connect(&sock).unwrap();
    signal(pid, libc::SIGKILL);
    assert!(
        wait_until(Duration::from_secs(10), || !sockdir.exists()),
        "{} left",
        sockdir.display()
    );
}

#[test]
fn a_private_socket_stays_while_the_server_runs_with_stdin_closed() {
    // The reaper's pipe must not land on fd 0 when stdin is closed (it
    // would then close its own pipe and remove a live server's socket).
    // The pause only gives a misbehaving reaper time to act.
    if !have("nbdinfo") {
        return;
    }
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            r#"exec {} -U - null 512 --run 'nbdinfo --size "$uri" && sleep 0.3 && test -S "$unixsocket" && nbdinfo --size "$uri"' <&-"#,
            bin().display()
        ))
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "512\n512\n");
}
