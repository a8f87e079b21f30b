//! The swab filter's extents: whole words, as C nbdkit gives them. (Its
//! data and parameters are tested in `small.rs`.)

use crate::util::*;

/// A 48-byte disk of fine-grained runs: data 0-15, zero 15-23,
/// zero+hole 23-31, hole 31-33, zero 33-35, zero+hole 35-39, hole 39-47,
/// data 47-48. With `one`, the plugin reports only the run at the offset
/// asked for.
fn runs(one: bool) -> String {
    let all = [
        (0, 7, ""),
        (7, 8, ""),
        (15, 8, "zero"),
        (23, 8, "zero,hole"),
        (31, 2, "hole"),
        (33, 2, "zero"),
        (35, 4, "zero,hole"),
        (39, 8, "hole"),
        (47, 1, ""),
    ];
    if !one {
        let lines: Vec<String> = all.iter().map(|(o, l, t)| format!("echo {o} {l} {t}")).collect();
        return format!("extents={}", lines.join("; "));
    }
    let arms: Vec<String> = all
        .iter()
        .map(|(o, l, t)| format!("[ $4 -lt {} ] && {{ echo {o} {l} {t}; exit 0; }}", o + l))
        .collect();
    format!("extents={}", arms.join("; "))
}

/// (length, flags) of each run the client sees, over the whole disk.
fn seen(bits: u32, one: bool) -> Vec<(u64, u32)> {
    let d = nbdkit_test::CaptiveDisk::builder("eval")
        .args(["get_size=echo 48", "pread=exit 1", &runs(one)])
        .filter("swab")
        .arg(format!("swab-bits={bits}"))
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    c.extents(0, 48).unwrap().iter().map(|e| (e.length, e.flags)).collect()
}

#[rstest::rstest]
#[case(8, &[(15, 0), (8, 2), (8, 3), (2, 1), (2, 2), (4, 3), (8, 1), (1, 0)])]
#[case(16, &[(16, 0), (8, 2), (6, 3), (2, 1), (2, 0), (2, 2), (2, 3), (8, 1), (2, 0)])]
#[case(32, &[(16, 0), (8, 2), (4, 3), (4, 1), (4, 0), (8, 1), (4, 0)])]
#[case(64, &[(16, 0), (8, 2), (8, 1), (16, 0)])]
fn extents_come_in_whole_words(#[case] bits: u32, #[case] want: &[(u64, u32)]) {
    assert_eq!(seen(bits, false), want, "all runs at once");
    assert_eq!(seen(bits, true), want, "one run per call");
}

#[test]
fn unaligned_cache_is_refused() {
    let d = nbdkit_test::CaptiveDisk::builder("memory")
        .arg("1M")
        .filter("swab")
        .arg("swab-bits=32")
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    c.cache(0, 8).unwrap();
    assert_eq!(c.cache(2, 8).unwrap_err().raw_os_error(), Some(libc::EINVAL));
}
