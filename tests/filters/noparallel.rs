use std::time::{Duration, Instant};

use crate::util::*;

/// Two clients each read once from a backend whose reads take 600 ms.
fn two_reads(extra: &[&str]) -> Duration {
    let mut b = nbdkit_test::CaptiveDisk::builder("eval")
        .args([
            "thread_model=echo parallel",
            "get_size=echo 1M",
            "pread=sleep 0.6; dd if=/dev/zero count=$3 iflag=count_bytes status=none",
        ])
        .binary(bin());
    if !extra.is_empty() {
        b = b.filter("noparallel").args(extra);
    }
    let disk = b.start().unwrap();
    let mut x = disk.connect().unwrap();
    let mut y = disk.connect().unwrap();
    let t = Instant::now();
    let tx = std::thread::spawn(move || x.read(0, 512).unwrap());
    y.read(512, 512).unwrap();
    tx.join().unwrap();
    t.elapsed()
}

#[test]
fn all_requests_serializes_across_clients() {
    assert!(two_reads(&[]) < Duration::from_millis(1150));
    assert!(two_reads(&["serialize=all-requests"]) >= Duration::from_millis(1200));
}

#[test]
fn connections_mode_drops_multi_conn() {
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("noparallel")
        .args(["1M", "serialize=connections"])
        .binary(bin())
        .start()
        .unwrap();
    assert!(!disk.connect().unwrap().info().can_multi_conn());
    let plain = disk_plain();
    assert!(plain.connect().unwrap().info().can_multi_conn());
}

fn disk_plain() -> nbdkit_test::CaptiveDisk {
    disk(&["memory", "1M"])
}

#[test]
fn bad_mode_is_refused() {
    let out = nbdkit()
        .args(["-U", "-", "--filter=noparallel", "memory", "1M", "serialize=some", "--run", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("serialize=some"));
}
