use super::common::*;
use crate::util::*;

#[test]
fn cache_is_hidden_by_default() {
    let disk = start(&["nocache"], "memory", &["1M"]);
    let c = disk.connect().unwrap();
    assert!(!c.info().can_cache());
}

#[rstest::rstest]
#[case("cachemode=emulate")]
#[case("cachemode=nop")]
#[case("cachemode=no-op")]
fn advertised_modes(#[case] mode: &str) {
    let disk = start(&["nocache"], "memory", &["1M", mode]);
    let mut c = disk.connect().unwrap();
    assert!(c.info().can_cache());
    c.cache(0, 1 << 20).unwrap();
}

#[test]
fn emulate_reads_and_nop_does_not() {
    // Reads below fail; only emulation reads.
    let disk =
        start(&["nocache", "error"], "memory", &["1M", "cachemode=emulate", "error-pread-rate=1"]);
    assert!(disk.connect().unwrap().cache(0, 4096).is_err());
    let disk =
        start(&["nocache", "error"], "memory", &["1M", "cachemode=nop", "error-pread-rate=1"]);
    disk.connect().unwrap().cache(0, 4096).unwrap();
}

#[test]
fn flags_as_c() {
    if have("nbdinfo") {
        for m in ["none", "emulate", "nop"] {
            same_as_c(
                &format!("--filter=nocache memory 1M cachemode={m}"),
                "nbdinfo \"$uri\" | grep can_cache",
            );
        }
    }
}

#[test]
fn unknown_mode() {
    refuses(
        &["--filter=nocache", "memory", "1M", "cachemode=always"],
        "nocache: unknown cachemode 'always'",
    );
}
