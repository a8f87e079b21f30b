use std::time::Duration;

use crate::util::*;

#[test]
fn exits_when_the_last_client_leaves() {
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("exitlast")
        .arg("1M")
        .binary(bin())
        .start()
        .unwrap();
    let pid = disk.pid() as i32;
    let a = disk.connect().unwrap();
    let b = disk.connect().unwrap();
    a.disconnect().unwrap();
    // One left: still serving.
    assert!(!wait_until(Duration::from_millis(300), || !alive(pid)));
    b.disconnect().unwrap();
    assert!(wait_until(Duration::from_secs(10), || !alive(pid)));
    assert!(disk.shutdown().unwrap().success());
}
