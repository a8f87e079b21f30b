//! 200 guards started and dropped across parallel tests: no collision,
//! no leak.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Mutex;

use nbdkit_test::CaptiveDisk;
use rstest::rstest;

static SEEN: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Start `n` disks one after another on each of `threads` threads; each
/// disk gets a marker written and read back, then is dropped and checked.
fn churn(case: u64, threads: u64, n: u64) {
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..n {
                    let marker = format!("{case}/{t}/{i}");
                    let disk = CaptiveDisk::new(["memory", "size=64K"]).unwrap();
                    let socket = disk.socket().unwrap().to_path_buf();
                    let fresh = SEEN
                        .lock()
                        .unwrap()
                        .get_or_insert_with(HashSet::new)
                        .insert(socket.clone());
                    assert!(fresh, "socket path {} used twice", socket.display());
                    let mut nbd = disk.connect().unwrap();
                    assert_eq!(nbd.read(0, marker.len()).unwrap(), vec![0; marker.len()]);
                    nbd.write(0, marker.as_bytes()).unwrap();
                    assert_eq!(nbd.read(0, marker.len()).unwrap(), marker.as_bytes());
                    drop(nbd);
                    let status = disk.shutdown().unwrap();
                    assert!(status.success(), "{status}");
                    assert!(!socket.exists(), "{} left behind", socket.display());
                    assert!(!socket.parent().unwrap().exists());
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[rstest]
fn two_hundred_guards(#[values(0, 1, 2, 3)] case: u64) {
    // 4 tests x 5 threads x 10 disks.
    churn(case, 5, 10);
}
