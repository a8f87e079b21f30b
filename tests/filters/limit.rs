use crate::util::*;

#[test]
fn clients_beyond_the_limit_are_refused_until_one_leaves() {
    let disk = nbdkit_test::CaptiveDisk::builder("memory")
        .filter("limit")
        .args(["1M", "limit=2"])
        .binary(bin())
        .start()
        .unwrap();
    let a = disk.connect().unwrap();
    let _b = disk.connect().unwrap();
    assert!(disk.connect().is_err(), "a third client");
    a.disconnect().unwrap();
    // The slot is given back when the server has closed a's connection.
    assert!(wait_until(std::time::Duration::from_secs(5), || disk.connect().is_ok()));
}

#[test]
fn the_default_limit_is_one() {
    let disk = disk_with_limit();
    let _a = disk.connect().unwrap();
    assert!(disk.connect().is_err());
}

fn disk_with_limit() -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("memory")
        .filter("limit")
        .arg("1M")
        .binary(bin())
        .start()
        .unwrap()
}
