//! Which nbdkit runs, and the same guard over C nbdkit.

use std::path::PathBuf;

use nbdkit_test::{CaptiveDisk, ErrorKind};

use crate::util::{alive, c_nbdkit, child_mode, run_child};

#[test]
fn by_default_the_server_compiled_into_this_test_runs() {
    let disk = CaptiveDisk::new(["null"]).unwrap();
    assert!(disk.command_line().starts_with("nbdkit -f "), "{}", disk.command_line());
    let exe = std::fs::read_link(format!("/proc/{}/exe", disk.pid())).unwrap();
    assert_eq!(exe, std::env::current_exe().unwrap());
    // The request is not passed on to what the server runs.
    let t = tempfile::tempdir().unwrap();
    let env = t.path().join("env");
    let disk = CaptiveDisk::builder("eval")
        .arg(format!("get_size=env > {}; echo 512", env.display()))
        .arg("pread=head -c $3 /dev/zero")
        .start()
        .unwrap();
    assert_eq!(disk.connect().unwrap().size(), 512);
    let seen = std::fs::read_to_string(&env).unwrap();
    assert!(seen.contains("PATH=") && !seen.contains("NBDKIT_TEST_EMBEDDED"), "{seen}");
}

#[test]
#[ignore = "run in a child process by the NBDKIT_TEST_BIN tests"]
fn child_reports_its_binary() {
    if child_mode("NBDKIT_TEST_BIN").is_none() {
        return;
    }
    match CaptiveDisk::new(["null"]) {
        Ok(d) => println!("COMMAND {}", d.command_line()),
        Err(e) => println!("ERROR {e}"),
    }
}

#[test]
fn nbdkit_test_bin_chooses_the_binary() {
    let Some(c) = c_nbdkit() else { return };
    let out =
        run_child("binary::child_reports_its_binary", &[("NBDKIT_TEST_BIN", c.to_str().unwrap())]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("COMMAND {} ", c.display())),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn nbdkit_test_bin_pointing_nowhere_is_an_error() {
    let out =
        run_child("binary::child_reports_its_binary", &[("NBDKIT_TEST_BIN", "/no/such/nbdkit")]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ERROR NBDKIT_TEST_BIN=/no/such/nbdkit is not an executable file"),
        "{text}"
    );
}

#[test]
fn an_explicit_binary_that_is_missing_is_an_error() {
    let err = CaptiveDisk::builder("null").binary("/no/such/nbdkit").start().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::BinaryNotFound), "{err}");
    assert!(err.to_string().contains("/no/such/nbdkit"));
}

fn c_disk(c: &PathBuf, tcp: bool) -> CaptiveDisk {
    let mut b = CaptiveDisk::builder("memory").arg("size=1M").export_name("c side").binary(c);
    if tcp {
        b = b.tcp();
    }
    b.start().unwrap()
}

#[test]
fn c_nbdkit_on_a_unix_socket() {
    let Some(c) = c_nbdkit() else { return };
    let disk = c_disk(&c, false);
    assert!(disk.command_line().starts_with(&c.display().to_string()));
    let socket = disk.socket().unwrap().to_path_buf();
    let dir = socket.parent().unwrap().to_path_buf();
    assert_eq!(disk.uri(), format!("nbd+unix:///c%20side?socket={}", socket.display()));
    let mut nbd = disk.connect().unwrap();
    nbd.write(512, b"C wrote").unwrap();
    assert_eq!(nbd.read(512, 7).unwrap(), b"C wrote");
    // Ready means ready for C too: a second client right away.
    assert_eq!(disk.connect().unwrap().read(512, 7).unwrap(), b"C wrote");
    let pid = disk.pid();
    drop(nbd);
    drop(disk);
    assert!(!alive(pid));
    assert!(!socket.exists());
    assert!(!dir.exists());
}

#[test]
fn c_nbdkit_on_tcp_by_socket_activation() {
    let Some(c) = c_nbdkit() else { return };
    let disk = c_disk(&c, true);
    let port = disk.port().unwrap();
    assert_eq!(disk.uri(), format!("nbd://127.0.0.1:{port}/c%20side"));
    assert!(disk.command_line().starts_with("LISTEN_FDS=1 "), "{}", disk.command_line());
    let mut nbd = disk.connect().unwrap();
    assert_eq!(nbd.size(), 1 << 20);
    nbd.write(0, b"tcp").unwrap();
    assert_eq!(nbd.read(0, 3).unwrap(), b"tcp");
}

#[test]
fn c_nbdkit_start_failure_carries_its_stderr() {
    let Some(c) = c_nbdkit() else { return };
    let err = CaptiveDisk::builder("memory").arg("size=banana").binary(&c).start().unwrap_err();
    assert!(matches!(err.kind(), ErrorKind::Exited(_)), "{err}");
    assert!(err.stderr().unwrap().contains("banana"), "{err}");
}
