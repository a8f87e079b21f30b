//! The sparse-random plugin: the same bytes and the same extents as C
//! nbdkit for many seeds, sizes, percentages and run lengths; writes,
//! trims and zeroes that check; parameters.

use crate::util::*;

#[rstest::rstest]
#[case(&["sparse-random", "64M", "seed=1", "runlength=65536"])]
#[case(&["sparse-random", "64M", "seed=7", "percent=50", "runlength=40000"])]
#[case(&["sparse-random", "64M", "seed=7", "percent=50", "runlength=40000", "random-content=true"])]
#[case(&["sparse-random", "10000000", "seed=9", "percent=30", "runlength=5000"])]
#[case(&["sparse-random", "size=3M", "seed=0x20", "percent=90", "runlength=1"])]
#[case(&["sparse-random", "1000000", "seed=11", "percent=2.5", "runlength=8192", "random-content=yes"])]
#[case(&["sparse-random", "64M", "seed=2", "percent=100"])]
#[case(&["sparse-random", "100001", "seed=2", "percent=100"])]
#[case(&["sparse-random", "64M", "seed=2", "percent=0"])]
#[case(&["sparse-random", "1G", "seed=3"])]
#[case(&["sparse-random", "1G", "seed=4", "percent=1e1", "runlength=0x100000"])]
#[case(&["sparse-random", "32M", "seed=5", "percent=40x", "runlength=020000"])]
#[case(&["sparse-random", "32M", "seed=5", "percent=nan"])]
#[case(&["sparse-random", "0"])]
fn same_as_c_nbdkit(#[case] args: &[&str]) {
    assert_same_as_c(args, DESCRIBE, &["nbdinfo", "nbdcopy"]);
}

/// nbdsh: reads that start inside a block (whose bytes, as in C, depend
/// on where the read starts), writes, trims and zeroes on data and holes.
fn probe() -> String {
    format!(
        r#"nbdsh -u "$uri" -c "{NBDSH_TRY}
import hashlib
for off, n in [(0, 4096), (100, 5000), (4095, 2), (12295, 9000), (40000, 123), (65535, 70000), (110000, 20000)]:
    print(off, n, hashlib.sha256(h.pread(n, off)).hexdigest())
for off, n in [(28672, 4096), (28700, 100), (40000, 123), (0, 28672), (110592, 16384)]:
    same = h.pread(n, off)
    t('write same %d %d' % (off, n), lambda: h.pwrite(same, off))
    t('write other %d %d' % (off, n), lambda: h.pwrite(bytes([1]) * n, off))
    t('trim %d %d' % (off, n), lambda: h.trim(n, off))
    t('zero %d %d' % (off, n), lambda: h.zero(n, off))
t('trim over data', lambda: h.trim(200000, 0))
t('flush', lambda: h.flush())
""#
    )
}

#[rstest::rstest]
#[case("random-content=false")]
#[case("random-content=true")]
fn reads_writes_trim_and_zero_same_as_c_nbdkit(#[case] content: &str) {
    let args = ["sparse-random", "64M", "seed=7", "percent=50", "runlength=40000", content];
    let out = assert_same_as_c(&args, &probe(), &["nbdsh"]);
    if let Some(out) = out {
        // The probe did see both outcomes.
        assert!(out.contains("write same 28672 4096 ok"), "{out}");
        assert!(out.contains("write other 28672 4096 EIO"), "{out}");
        assert!(out.contains("trim 0 28672 ok"), "{out}");
    }
}

#[test]
fn a_copy_onto_itself_checks_out() {
    let script = r#"nbdcopy "$uri" "$uri" && echo copied"#;
    assert_same_as_c(
        &["sparse-random", "64M", "seed=8", "percent=30", "runlength=100000"],
        script,
        &["nbdcopy"],
    );
}

#[test]
fn extents_writes_and_zeroes() {
    let d = disk(&["sparse-random", "16M", "seed=7", "percent=50", "runlength=40000"]);
    let mut c = d.connect().unwrap();
    let info = c.info().clone();
    assert!(!info.read_only() && info.can_flush() && info.can_fua());
    assert!(info.can_trim() && info.can_zero() && !info.can_fast_zero());
    assert!(info.can_multi_conn() && info.can_cache());
    let ext = c.extents(0, 16 << 20).unwrap();
    assert!(ext.len() > 10, "{ext:?}");
    for e in &ext {
        assert_eq!(e.offset % 4096, 0);
        assert_eq!(e.is_hole(), e.is_zero());
        let data = c.read(e.offset, e.length.min(1 << 20) as usize).unwrap();
        if e.is_hole() {
            assert!(data.iter().all(|b| *b == 0));
            c.zero(e.offset, e.length).unwrap();
            c.trim(e.offset, e.length).unwrap();
        } else {
            // One non-zero byte per block, repeated.
            for block in data.chunks(4096) {
                assert!(block[0] != 0 && block.iter().all(|b| *b == block[0]));
            }
            let e2 = c.zero(e.offset, 1).unwrap_err();
            assert_eq!(e2.raw_os_error(), Some(libc::EIO));
            c.write(e.offset, &data[..4096]).unwrap();
            let e3 = c.write(e.offset, &[0]).unwrap_err();
            assert_eq!(e3.raw_os_error(), Some(libc::EIO));
        }
    }
    c.flush().unwrap();
    // Extents from an unaligned offset start there.
    let part = c.block_status(5, 4096).unwrap();
    assert_eq!(part[0].offset, 5);
}

#[test]
fn percent_0_and_100_and_the_last_partial_block() {
    let read_all = |args: &[&str]| {
        let d = disk(args);
        let mut c = d.connect().unwrap();
        (c.read(0, c.size() as usize).unwrap(), c.extents(0, c.size()).unwrap())
    };
    let (bytes, ext) = read_all(&["sparse-random", "10000", "seed=1", "percent=0"]);
    assert!(bytes.iter().all(|b| *b == 0));
    assert_eq!(ext.len(), 1);
    assert!(ext[0].is_hole());
    let (bytes, ext) = read_all(&["sparse-random", "10000", "seed=1", "percent=100"]);
    assert!(bytes.iter().all(|b| *b != 0));
    assert_eq!(ext.len(), 1);
    assert_eq!(ext[0].length, 10000);
    assert!(!ext[0].is_hole());
}

#[rstest::rstest]
#[case(&["sparse-random", "1M", "percent=abc"], "sparse-random: cannot parse percent parameter: abc")]
#[case(&["sparse-random", "1M", "percent=101"], "cannot parse percent parameter: 101")]
#[case(&["sparse-random", "1M", "percent=-1"], "cannot parse percent parameter: -1")]
#[case(&["sparse-random", "1M", "percent=inf"], "cannot parse percent parameter: inf")]
#[case(&["sparse-random", "1M", "percent="], "cannot parse percent parameter: ")]
#[case(&["sparse-random", "1M", "runlength=0"], "sparse-random: runlength parameter must be > 0")]
#[case(&["sparse-random", "1M", "runlength=16M"], "runlength: could not parse number: \"16M\": trailing garbage")]
#[case(&["sparse-random", "1M", "runlength=-1"], "runlength: negative numbers are not allowed")]
#[case(&["sparse-random", "1M", "random-content=maybe"], "could not decipher boolean (maybe)")]
#[case(&["sparse-random", "1M", "seed=x"], "seed: empty string where we expected a number")]
#[case(&["sparse-random", "1M", "mode=x"], "sparse-random: unknown parameter 'mode'")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    assert_refused(args, msg);
}
