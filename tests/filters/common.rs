//! Helpers for the filter tests.

use crate::util::*;

/// A captive disk: `plugin` `args...` under the filters, on our binary.
pub fn start(filters: &[&str], plugin: &str, args: &[&str]) -> nbdkit_test::CaptiveDisk {
    let mut b = nbdkit_test::CaptiveDisk::builder(plugin);
    for f in filters {
        b = b.filter(f);
    }
    b.args(args).binary(bin()).start().unwrap_or_else(|e| panic!("{e}"))
}

/// Run `nbdkit -U - ARGS --run 'SCRIPT'` on `nbdkit`: its stdout.
pub fn run_with(nbdkit: &std::path::Path, args: &str, script: &str) -> String {
    let out = sh(&format!("{} -U - {args} --run '{script}' 2>/dev/null", nbdkit.display()));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The same command on our nbdkit and C's (when installed) prints the
/// same; returns ours.
pub fn same_as_c(args: &str, script: &str) -> String {
    let ours = run_with(&bin(), args, script);
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run_with(&c, args, script), "{args}");
    }
    ours
}

/// Start-up fails: exit 1 and one line on stderr containing `msg`.
pub fn refuses(args: &[&str], msg: &str) {
    let out = nbdkit().args(["-U", "-"]).args(args).args(["--run", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(msg), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
