//! A disk shared by many tests is forked by a thread that lives as long
//! as the process, so it outlives the test thread that happened to create
//! it (PR_SET_PDEATHSIG follows the forking thread, not the process).

use std::sync::OnceLock;

use nbdkit_test::CaptiveDisk;

use crate::util::alive;

static SHARED: OnceLock<CaptiveDisk> = OnceLock::new();

fn shared() -> &'static CaptiveDisk {
    SHARED.get_or_init(|| CaptiveDisk::new(["memory", "size=1M"]).unwrap())
}

#[test]
fn a_shared_disk_outlives_the_thread_that_created_it() {
    // Create it on a thread that then exits, as libtest's test threads do.
    let pid = std::thread::spawn(|| {
        let d = shared();
        d.connect()
            .unwrap()
            .write(0, b"from a dead thread")
            .unwrap();
        d.pid()
    })
    .join()
    .unwrap();
    // The server would have had SIGTERM by now if it followed that thread;
    // a round trip on a fresh connection proves it is still serving.
    let mut nbd = shared().connect().unwrap();
    assert_eq!(nbd.read(0, 18).unwrap(), b"from a dead thread");
    assert!(alive(pid));
}

#[test]
fn many_threads_share_one_disk() {
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            std::thread::spawn(move || {
                let mut nbd = shared().connect().unwrap();
                let off = 4096 + i * 512;
                nbd.write(off, &i.to_le_bytes()).unwrap();
                assert_eq!(nbd.read(off, 8).unwrap(), i.to_le_bytes());
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}
