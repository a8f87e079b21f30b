//! The zero plugin: an empty read-only disk that takes no parameters, as
//! in C nbdkit 1.32.

use crate::util::*;

#[test]
fn same_as_c_nbdkit() {
    assert_same_as_c(&["zero"], DESCRIBE, &["nbdinfo", "nbdcopy"]);
}

#[test]
fn empty_and_read_only() {
    let d = disk(&["zero"]);
    let c = d.connect().unwrap();
    assert_eq!(c.size(), 0);
    assert!(c.info().read_only() && c.info().can_multi_conn() && c.info().can_cache());
}

#[rstest::rstest]
#[case(&["zero", "size=1M"], "zero: this plugin does not need command line configuration")]
#[case(&["zero", "1M"], "zero: expecting key=value on the command line but got: 1M")]
fn parameters_are_refused(#[case] args: &[&str], #[case] msg: &str) {
    assert_refused(args, msg);
}
