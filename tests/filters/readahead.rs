//! The readahead filter: which prefetches it asks for, and when it gives
//! up. (A first look is in `small.rs`.)

use std::time::Duration;

use crate::util::*;

fn start(plugin: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder(plugin[0])
        .args(&plugin[1..])
        .filter("readahead")
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A 1 MiB eval disk whose CACHE calls ("OFFSET COUNT" lines) go to a log
/// file, with can_cache answering `can_cache`.
fn logging_cache(
    can_cache: &str,
) -> (tempfile::TempDir, std::path::PathBuf, nbdkit_test::CaptiveDisk) {
    let dir = scratch();
    let log = dir.path().join("cache.log");
    let cache = format!("cache=echo $4 $3 >> {}", log.display());
    let can = format!("can_cache=echo {can_cache}");
    let d = start(&[
        "eval",
        "get_size=echo 1M",
        "thread_model=echo parallel",
        "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
        &can,
        &cache,
    ]);
    (dir, log, d)
}

#[test]
fn the_window_grows_on_skips_and_shrinks_on_going_back() {
    let (_dir, log, d) = logging_cache("native");
    let mut c = d.connect().unwrap();
    for at in [0, 100000, 200000, 0, 512] {
        c.read(at, 512).unwrap();
    }
    let want = "512 32768\n100512 32768\n200512 65536\n512 131072\n1024 32768\n";
    assert!(wait_until(Duration::from_secs(10), || slurp(&log) == want), "{}", slurp(&log));
    // Nothing past the end: a read of the last bytes asks for nothing
    // (but, having skipped ahead, doubles the window for the next).
    c.read((1 << 20) - 512, 512).unwrap();
    c.read(0, 512).unwrap();
    let want = format!("{want}512 65536\n");
    assert!(wait_until(Duration::from_secs(10), || slurp(&log) == want), "{}", slurp(&log));
}

#[test]
fn without_native_cache_it_warns_and_does_nothing() {
    let (_dir, log, d) = logging_cache("emulate");
    let mut c = d.connect().unwrap();
    c.read(0, 512).unwrap();
    c.read(512, 512).unwrap();
    assert!(
        d.log().contains(
            "readahead: warning: underlying plugin does not support NBD_CMD_CACHE or PARALLEL \
             thread model, so the filter won't do anything"
        ),
        "{}",
        d.log()
    );
    assert!(d.log().contains("readahead: try adding --filter=cache after this filter"));
    assert!(!log.exists());
}
