//! A disk shared by many tests is forked by a thread that lives as long
//! as the process, so it outlives the test thread that happened to create
//! it (PR_SET_PDEATHSIG follows the forking thread, not the process).

use std::sync::OnceLock;

use nbdkit_test::CaptiveDisk;

use std::time::Duration;

use crate::util::{alive, c_nbdkit, fake_nbdkit, wait_gone};

static SHARED: OnceLock<CaptiveDisk> = OnceLock::new();

fn shared() -> &'static CaptiveDisk {
    SHARED.get_or_init(|| CaptiveDisk::new(["memory", "size=1M"]).unwrap())
}

#[test]
fn a_shared_disk_outlives_the_thread_that_created_it() {
    // Create it on a thread that then exits, as libtest's test threads do.
    let pid = std::thread::spawn(|| {
        let d = shared();
        d.connect().unwrap().write(0, b"from a dead thread").unwrap();
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

#[test]
fn the_exit_of_the_creating_thread_does_not_stop_a_server() {
    // A fake server that ignores --exit-with-parent: only the parent-death
    // signal could stop it, and that follows the thread that forked it.
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_nbdkit(dir.path(), "echo 'nbd://127.0.0.1:9'\nexec sleep 600");
    let disk = std::thread::spawn(move || CaptiveDisk::builder("null").binary(&bin).start())
        .join()
        .unwrap()
        .unwrap();
    // The signal would come as the thread exits, maybe just after join.
    assert!(
        !wait_gone(disk.pid(), Duration::from_millis(500)),
        "the server died with the thread that created it"
    );
    let status = disk.shutdown().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
}

#[test]
fn c_nbdkit_made_on_a_finished_thread_keeps_serving() {
    // C nbdkit's --exit-with-parent follows the thread that forked it.
    let Some(c) = c_nbdkit() else { return };
    let disk = std::thread::spawn(move || {
        CaptiveDisk::builder("memory").arg("size=1M").binary(c).start().unwrap()
    })
    .join()
    .unwrap();
    assert!(!wait_gone(disk.pid(), Duration::from_millis(500)));
    let mut nbd = disk.connect().unwrap();
    nbd.write(0, b"still here").unwrap();
    assert_eq!(nbd.read(0, 10).unwrap(), b"still here");
}
