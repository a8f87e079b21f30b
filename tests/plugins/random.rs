//! The random plugin: bytes, extents and flags compared with C nbdkit for
//! several seeds, writes that check, trim and zero that fail, parameters.

use crate::util::*;

#[rstest::rstest]
#[case(&["random", "100k", "seed=1"])]
#[case(&["random", "size=1M", "seed=0x10"])]
#[case(&["random", "12345", "seed=4294967295"])]
#[case(&["random", "4097", "seed=010"])]
#[case(&["random", "0", "seed=5"])]
#[case(&["random"])]
fn same_as_c_nbdkit(#[case] args: &[&str]) {
    assert_same_as_c(args, DESCRIBE, &["nbdinfo", "nbdcopy"]);
}

#[test]
fn unaligned_reads_writes_trim_and_zero_same_as_c_nbdkit() {
    let script = format!(
        r#"nbdsh -u "$uri" -c "{NBDSH_TRY}
import hashlib
for off, n in [(0, 1), (1, 7), (4095, 3), (65530, 70000)]:
    print(off, n, hashlib.sha256(h.pread(n, off)).hexdigest())
same = h.pread(5000, 3000)
t('write same', lambda: h.pwrite(same, 3000))
t('write other', lambda: h.pwrite(bytes(5000), 3000))
t('trim', lambda: h.trim(4096, 0))
t('zero', lambda: h.zero(4096, 0))
""#
    );
    assert_same_as_c(&["random", "1M", "seed=77"], &script, &["nbdsh"]);
}

#[test]
fn writes_must_match_and_trim_and_zero_fail() {
    let disk = disk(&["random", "1M", "seed=3"]);
    let mut c = disk.connect().unwrap();
    let info = c.info().clone();
    assert!(!info.read_only() && info.can_trim() && info.can_zero());
    assert!(!info.can_flush() && !info.can_fua() && !info.can_fast_zero());
    assert!(info.can_multi_conn() && info.can_cache());
    let data = c.read(1000, 9000).unwrap();
    assert!(data.iter().any(|b| *b != 0));
    c.write(1000, &data).unwrap();
    c.write(1001, &data[1..2]).unwrap();
    let e = c.write(1000, &data[1..]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let e = c.trim(0, 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    let e = c.zero(0, 4096).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO));
    // The whole disk is data.
    let ext = c.extents(0, 1 << 20).unwrap();
    assert_eq!(ext.len(), 1);
    assert!(!ext[0].is_hole() && !ext[0].is_zero());
}

#[test]
fn the_seed_decides_the_bytes() {
    let read = |seed: &str| {
        let d = disk(&["random", "64k", seed]);
        let mut c = d.connect().unwrap();
        c.read(0, 65536).unwrap()
    };
    assert_eq!(read("seed=42"), read("seed=0x2a"));
    assert_ne!(read("seed=42"), read("seed=43"));
    // seed + offset is what counts: seed 43 is seed 42 one byte on.
    assert_eq!(read("seed=42")[1..], read("seed=43")[..65535]);
}

#[test]
fn the_default_seed_is_the_time() {
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let d = disk(&["random", "4k"]);
    let after =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let got = d.connect().unwrap().read(0, 4096).unwrap();
    let matches = (before..=after).any(|t| {
        let seeded = disk(&["random", "4k", &format!("seed={}", t as u32)]);
        seeded.connect().unwrap().read(0, 4096).unwrap() == got
    });
    assert!(matches, "no seed in {before}..={after} gives these bytes");
}

#[rstest::rstest]
#[case(&["random", "1M", "seed=abc"], "random: seed: empty string where we expected a number")]
#[case(&["random", "1M", "seed=-1"], "random: seed: negative numbers are not allowed")]
#[case(&["random", "1M", "seed=12abc"], "seed: could not parse number: \"12abc\": trailing garbage")]
#[case(&["random", "1M", "seed=08"], "trailing garbage")]
#[case(&["random", "1M", "seed=4294967296"], "Numerical result out of range")]
#[case(&["random", "size=junk"], "random: size")]
#[case(&["random", "1M", "percent=5"], "random: unknown parameter 'percent'")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    assert_refused(args, msg);
}
