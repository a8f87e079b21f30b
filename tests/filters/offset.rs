use super::common::*;
use crate::util::*;

#[test]
fn serves_the_window_only() {
    let disk = start(&["offset"], "memory", &["1M", "offset=4096", "range=8192"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 8192);
    c.write(0, b"abc").unwrap();
    c.write(8190, b"yz").unwrap();
    c.zero(100, 10).unwrap();
    c.trim(4096, 4096).unwrap();
    c.cache(0, 8192).unwrap();
    drop(c);
    let raw = start(&["offset"], "memory", &["1M"]);
    assert_eq!(raw.connect().unwrap().size(), 1 << 20);
}

#[test]
fn offsets_reach_the_plugin_shifted() {
    // The data plugin shows where each byte really came from.
    let disk = start(&["offset"], "data", &["\"abcdefgh\"", "offset=2", "range=4"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(0, 4).unwrap(), b"cdef");
}

#[test]
fn extents_are_shifted_back() {
    if !have("nbdinfo") {
        return;
    }
    let out = same_as_c(
        "--filter=offset data \"1 @0x10000 2\" size=196608 offset=32768 range=100000",
        "nbdinfo --map \"$uri\"",
    );
    assert!(out.contains("hole,zero"), "{out}");
}

#[test]
fn a_window_past_the_end_cannot_be_opened() {
    let disk = start(&["offset"], "memory", &["1M", "offset=1M", "range=1"]);
    assert!(disk.connect().is_err());
    let disk = start(&["offset"], "memory", &["1M", "offset=2M"]);
    assert!(disk.connect().is_err());
}

#[test]
fn bad_sizes_are_refused() {
    refuses(&["--filter=offset", "memory", "1M", "offset=lots"], "offset");
    refuses(&["--filter=offset", "memory", "1M", "range=-1"], "range");
}
