//! When the test process dies without running its drops, every server it
//! started exits (within milliseconds; the tests allow 10 s for a loaded
//! machine) and removes its socket and directory.
//!
//! Each case runs `child_starts_disks_then_dies` in a child process. It
//! starts five disks: one plain, one on TCP, one created on a thread that
//! has exited by the time the process dies, one held in a `static`, and a
//! fake server that only the parent-death signal can stop.
//! It writes what it started to a file, keeps a client connected to the
//! first, and dies as told.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nbdkit_test::CaptiveDisk;
use rstest::rstest;

use crate::util::{alive, child_mode, fake_nbdkit, run_child, wait_gone};

static KEPT: OnceLock<CaptiveDisk> = OnceLock::new();

#[test]
#[ignore = "run in a child process by the crash tests"]
fn child_starts_disks_then_dies() {
    let Some(how) = child_mode("NBDKIT_TEST_CRASH") else {
        return;
    };
    let report = PathBuf::from(std::env::var("NBDKIT_TEST_REPORT").unwrap());
    let plain = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let tcp = CaptiveDisk::builder("null").tcp().start().unwrap();
    let threaded = std::thread::spawn(|| CaptiveDisk::new(["null"]).unwrap()).join().unwrap();
    let kept = KEPT.get_or_init(|| CaptiveDisk::new(["pattern", "size=1M"]).unwrap());
    // A fake server that ignores --exit-with-parent and SIGTERM's default
    // is all that stops it: only the parent-death signal can.
    // It lives in the parent test's temporary directory, which outlives us.
    let fake = fake_nbdkit(report.parent().unwrap(), "echo 'nbd://127.0.0.1:9'\nexec sleep 600");
    let fake = CaptiveDisk::builder("null").binary(fake).start().unwrap();
    let mut lines = String::new();
    for d in [&plain, &tcp, &threaded, kept, &fake] {
        let place = match d.socket() {
            Some(s) => s.display().to_string(),
            None if d.port() == Some(9) => "fake".to_string(),
            None => format!("port:{}", d.port().unwrap()),
        };
        lines.push_str(&format!("{} {place}\n", d.pid()));
    }
    std::fs::write(&report, lines).unwrap();
    let mut nbd = plain.connect().unwrap();
    nbd.write(0, b"in use").unwrap();
    match how.as_str() {
        "abort" => std::process::abort(),
        "exit" => std::process::exit(3),
        "sigkill" => unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        },
        // The test returns normally: statics are never dropped, and the
        // locals are leaked to make the point.
        "return" => {
            std::mem::forget((plain, tcp, threaded, fake, nbd));
        }
        other => panic!("unknown crash mode {other}"),
    }
}

#[rstest]
#[case::abort("abort")]
#[case::exit("exit")]
#[case::sigkill("sigkill")]
#[case::normal_exit_with_leaked_guards("return")]
fn every_server_goes_when_the_test_process_dies(#[case] how: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let report = tmp.path().join("report");
    let out = run_child(
        "crash::child_starts_disks_then_dies",
        &[("NBDKIT_TEST_CRASH", how), ("NBDKIT_TEST_REPORT", report.to_str().unwrap())],
    );
    let died = Instant::now();
    let text = std::fs::read_to_string(&report).unwrap_or_else(|e| {
        panic!("the child wrote no report ({e}); stderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    assert_eq!(out.status.success(), how == "return", "{:?}", out.status);
    let servers: Vec<(u32, String)> = text
        .lines()
        .map(|l| {
            let (pid, place) = l.split_once(' ').unwrap();
            (pid.parse().unwrap(), place.to_string())
        })
        .collect();
    assert_eq!(servers.len(), 5);
    // They go within milliseconds; the limit only allows for a loaded CI.
    for (pid, place) in &servers {
        assert!(
            wait_gone(*pid, Duration::from_secs(10).saturating_sub(died.elapsed())),
            "{how}: server {pid} ({place}) still running 10 s after its parent died"
        );
        assert!(!alive(*pid));
    }
    eprintln!("{how}: all servers gone {:?} after the test process", died.elapsed());
    for (_, place) in &servers {
        if place == "fake" {
            continue;
        }
        if let Some(port) = place.strip_prefix("port:") {
            let port: u16 = port.parse().unwrap();
            assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
            continue;
        }
        let socket = PathBuf::from(place);
        let dir = socket.parent().unwrap();
        // The process is gone; its last act was removing these.
        assert!(!socket.exists(), "{how}: {} left behind", socket.display());
        assert!(!dir.exists(), "{how}: {} left behind", dir.display());
    }
}
