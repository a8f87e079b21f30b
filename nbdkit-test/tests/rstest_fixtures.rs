//! The rstest examples from the crate docs, run for real.

use nbdkit_test::CaptiveDisk;
use rstest::{fixture, rstest};

#[fixture]
fn disk() -> CaptiveDisk {
    CaptiveDisk::new(["memory", "size=1M"]).expect("nbdkit starts")
}

// Started once, by whichever test needs it first; never dropped, so it is
// stopped by the parent-death path when the test binary exits.
#[fixture]
#[once]
fn shared() -> CaptiveDisk {
    CaptiveDisk::new(["pattern", "size=1M"]).expect("nbdkit starts")
}

#[rstest]
fn writes_stick(disk: CaptiveDisk) {
    let mut nbd = disk.connect().unwrap();
    nbd.write(0, b"abc").unwrap();
    assert_eq!(nbd.read(0, 3).unwrap(), b"abc");
}

#[rstest]
fn pattern_is_shared(shared: &CaptiveDisk) {
    assert_eq!(shared.connect().unwrap().read(8, 8).unwrap(), 8u64.to_be_bytes());
}

#[rstest]
fn pattern_is_shared_again(shared: &CaptiveDisk) {
    // Same server whichever test started it.
    assert_eq!(shared.connect().unwrap().read(1 << 19, 8).unwrap(), (1u64 << 19).to_be_bytes());
}

#[rstest]
fn every_plugin_has_a_size(#[values("memory", "null", "pattern")] plugin: &str) {
    let disk = CaptiveDisk::new([plugin, "size=4K"]).unwrap();
    assert_eq!(disk.connect().unwrap().size(), 4096);
}
