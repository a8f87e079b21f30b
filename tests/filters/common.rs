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

/// A captive disk: `filter` over `plugin[0]` with `plugin[1..]`, then the
/// filter's `args`.
pub fn start_one(filter: &str, plugin: &[&str], args: &[&str]) -> nbdkit_test::CaptiveDisk {
    let mut all = plugin[1..].to_vec();
    all.extend_from_slice(args);
    start(&[filter], plugin[0], &all)
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

/// Eight clients at once write 25-byte pieces into the first 4000 bytes,
/// interleaved: every piece must land (a filter's read-modify-write of a
/// block must see the others' results).
pub fn concurrent_partial_writes_all_land(disk: &nbdkit_test::CaptiveDisk) {
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let mut c = disk.connect().unwrap();
            std::thread::spawn(move || {
                for round in 0..20u64 {
                    let off = (round * 8 + u64::from(t)) * 25;
                    c.write(off, &[t + 1; 25]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = disk.connect().unwrap();
    let got = c.read(0, 4000).unwrap();
    for (i, chunk) in got.chunks(25).enumerate() {
        assert_eq!(chunk, [(i % 8) as u8 + 1; 25], "chunk {i}");
    }
}
