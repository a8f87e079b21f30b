//! The full plugin: zeroes to read, ENOSPC for every write, compared with
//! C nbdkit.

use crate::util::*;

#[rstest::rstest]
#[case(&["full", "1M"])]
#[case(&["full", "size=12345"])]
#[case(&["full", "0"])]
fn same_as_c_nbdkit(#[case] args: &[&str]) {
    assert_same_as_c(args, DESCRIBE, &["nbdinfo", "nbdcopy"]);
}

#[test]
fn writes_fail_like_c_nbdkit() {
    let script = format!(
        r#"nbdsh -u "$uri" -c "{NBDSH_TRY}
t('write', lambda: h.pwrite(b'x', 0))
t('trim', lambda: h.trim(512, 0))
t('zero', lambda: h.zero(512, 0))
t('fast zero', lambda: h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO))
t('cache', lambda: h.cache(512, 0))
print(h.pread(4, 100))
""#
    );
    assert_same_as_c(&["full", "1M"], &script, &["nbdsh"]);
}

#[test]
fn writes_trims_and_zeroes_fail_with_enospc() {
    let d = disk(&["full", "1M"]);
    let mut c = d.connect().unwrap();
    assert!(c.info().can_fast_zero() && !c.info().can_flush());
    assert_eq!(c.read(0, 4096).unwrap(), vec![0u8; 4096]);
    for e in
        [c.write(0, b"x").unwrap_err(), c.trim(0, 512).unwrap_err(), c.zero(0, 512).unwrap_err()]
    {
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    }
    let fast = nbdkit_test::client::ZeroFlags { fast: true, ..Default::default() };
    let e = c.zero_with(0, 512, fast).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTSUP));
    let ext = c.extents(0, 1 << 20).unwrap();
    assert_eq!(ext.len(), 1);
    assert!(ext[0].is_hole() && ext[0].is_zero());
}

#[rstest::rstest]
#[case(&["full"], "full: size parameter is required")]
#[case(&["full", "size=junk"], "full: size")]
#[case(&["full", "1M", "seed=1"], "full: unknown parameter 'seed'")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    assert_refused(args, msg);
}
