use std::time::{Duration, Instant};

use crate::util::*;

fn read_mib(args: &[&str]) -> Duration {
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("rate")
        .arg("4M")
        .args(args)
        .binary(bin())
        .start()
        .unwrap();
    let mut c = disk.connect().unwrap();
    let t = Instant::now();
    for i in 0..16 {
        c.read(i * 65536, 65536).unwrap();
    }
    t.elapsed()
}

#[test]
fn a_rate_limits_throughput() {
    // 8 Mbit/s is 1 MiB/s (near enough); with a 0.1 s burst, 1 MiB takes
    // at least 0.8 s.
    assert!(read_mib(&[]) < Duration::from_millis(500));
    assert!(read_mib(&["rate=8M", "burstiness=0.1"]) >= Duration::from_millis(800));
    assert!(read_mib(&["connection-rate=8M", "burstiness=0.1"]) >= Duration::from_millis(800));
}

#[test]
fn the_rate_file_changes_the_rate() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rate");
    std::fs::write(&f, "1G").unwrap();
    let fast = read_mib(&[&format!("rate-file={}", f.display()), "burstiness=0.1"]);
    assert!(fast < Duration::from_millis(500), "{fast:?}");
    std::fs::write(&f, "8M").unwrap();
    let slow = read_mib(&[&format!("rate-file={}", f.display()), "burstiness=0.1"]);
    assert!(slow >= Duration::from_millis(800), "{slow:?}");
}

#[test]
fn bad_rates() {
    for arg in ["rate=fast", "burstiness=0"] {
        let out = nbdkit()
            .args(["-U", "-", "--filter=rate", "memory", "1M", arg, "--run", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{arg}");
    }
}
