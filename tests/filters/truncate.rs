use nbdkit_test::client::ZeroFlags;

use super::common::*;
use crate::util::*;

#[test]
fn shrinks_and_grows() {
    let disk = start(&["truncate"], "data", &["\"abcdef\"", "truncate=4"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 4);
    assert_eq!(c.read(0, 4).unwrap(), b"abcd");
    drop(c);
    let disk = start(&["truncate"], "memory", &["1000", "truncate=3000"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 3000);
    c.write(990, &[7; 20]).unwrap_err();
    // Zeroes past the end are fine, and so is the part inside.
    c.write(990, &[[7u8; 10], [0u8; 10]].concat()).unwrap();
    assert_eq!(c.read(990, 20).unwrap(), [[7u8; 10], [0u8; 10]].concat());
    assert_eq!(c.write(2000, b"x").unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    c.zero(500, 2000).unwrap();
    c.trim(0, 3000).unwrap();
    c.cache(0, 3000).unwrap();
    assert!(c.info().can_fast_zero());
    // The layer below (memory) can fast zero, so a fast zero works.
    c.zero_with(0, 3000, ZeroFlags { fast: true, ..Default::default() }).unwrap();
}

#[test]
fn fast_zero_fails_when_the_plugin_cannot() {
    // Under the nozero filter there is no fast zero; past the end it
    // succeeds.
    let disk = start(
        &["truncate", "nozero"],
        "memory",
        &["3", "truncate=1000", "zeromode=emulate", "fastzeromode=none"],
    );
    let mut c = disk.connect().unwrap();
    assert!(c.info().can_fast_zero());
    let fast = ZeroFlags { fast: true, ..Default::default() };
    assert_eq!(c.zero_with(0, 10, fast).unwrap_err().raw_os_error(), Some(libc::ENOTSUP));
    c.zero_with(100, 10, fast).unwrap();
}

#[rstest::rstest]
#[case("round-up=512", "1001", 1024)]
#[case("round-down=512", "1001", 512)]
#[case("round-up=512", "1024", 1024)]
#[case("truncate=100", "1001", 100)]
fn rounding(#[case] arg: &str, #[case] size: &str, #[case] want: u64) {
    let disk = start(&["truncate"], "memory", &[size, arg]);
    assert_eq!(disk.connect().unwrap().size(), want);
}

#[test]
fn the_extra_space_reads_as_holes_like_c() {
    if !have("nbdinfo") {
        return;
    }
    let out = same_as_c(
        "--filter=truncate data \"1 @0x10000 2\" truncate=196608",
        "nbdinfo --size \"$uri\"; nbdinfo --map \"$uri\"",
    );
    assert!(out.starts_with("196608\n"), "{out}");
}

#[rstest::rstest]
#[case("round-up=3", "truncate: the round-up parameter must be a power of 2")]
#[case("round-up=0", "truncate: if set, the round-up parameter must be > 0")]
#[case("round-down=8G", "truncate: the round-down parameter is too large")]
#[case("truncate=big", "truncate")]
fn bad_parameters(#[case] arg: &str, #[case] msg: &str) {
    refuses(&["--filter=truncate", "memory", "1M", arg], msg);
}
