//! The small filters: nofilter, swab, checkwrite, readahead, multi-conn.

use crate::util::*;

use super::common::start_one as start;

/// What clients see, ours and C's, for one command line.
fn compare_with_c(args: &str, cmd: &str) {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let run = |nbdkit: &std::path::Path| {
        let out = sh(&format!("{} -U - {args} --run '{cmd}'", nbdkit.display()));
        assert!(out.status.success(), "{args}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = run(&bin());
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run(&c), "{args}");
    }
}

const SEEN: &str =
    "nbdinfo \"$uri\" | grep -v uri:; nbdinfo --map \"$uri\"; nbdcopy \"$uri\" - | sha256sum";

#[test]
fn nofilter_changes_nothing() {
    compare_with_c("--filter=nofilter pattern 1M", SEEN);
    compare_with_c("--filter=nofilter memory 1M", SEEN);
}

#[test]
fn swab_swaps_words_like_c() {
    for bits in ["16", "32", "64"] {
        compare_with_c(&format!("--filter=swab pattern 1M swab-bits={bits}"), SEEN);
    }
    // 64-bit swaps make the pattern little-endian.
    let d = start("swab", &["pattern", "1M"], &["swab-bits=64"]);
    let mut c = d.connect().unwrap();
    assert_eq!(c.read(64, 8).unwrap(), 64u64.to_le_bytes());
    assert_eq!(c.read(3, 8).unwrap_err().raw_os_error(), Some(libc::EINVAL));
    // Writes are swapped on the way down.
    let d = start("swab", &["memory", "1M"], &[]);
    let mut c = d.connect().unwrap();
    c.write(0, b"abcd").unwrap();
    assert_eq!(c.read(0, 4).unwrap(), b"abcd");
}

#[test]
fn checkwrite_accepts_the_same_data_only() {
    compare_with_c(
        "--filter=checkwrite data \"@32768 1\"",
        "nbdcopy \"$uri\" \"$uri\" && echo copied",
    );
    let d = start("checkwrite", &["data", "1 2 3 @4096"], &[]);
    let mut c = d.connect().unwrap();
    assert!(!c.info().read_only());
    c.write(0, &[1, 2, 3]).unwrap();
    c.zero(100, 100).unwrap();
    assert_eq!(c.write(0, &[9]).unwrap_err().raw_os_error(), Some(libc::EIO));
    assert_eq!(c.zero(0, 10).unwrap_err().raw_os_error(), Some(libc::EIO));
    // Nothing was written.
    assert_eq!(c.read(0, 3).unwrap(), [1, 2, 3]);
}

#[test]
fn readahead_prefetches_when_reading_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("cache.log");
    let d = start(
        "readahead",
        &[
            "eval",
            "get_size=echo 64M",
            "thread_model=echo parallel",
            "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
            "can_cache=echo native",
            &format!("cache=echo $4 $3 >> {}", log.display()),
        ],
        &[],
    );
    let mut c = d.connect().unwrap();
    for i in 0..4 {
        assert_eq!(c.read(i * 65536, 65536).unwrap(), vec![0; 65536]);
    }
    assert!(
        wait_until(std::time::Duration::from_secs(10), || log.exists()),
        "no prefetch was asked for"
    );
    let first: u64 =
        std::fs::read_to_string(&log).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(first >= 65536, "prefetch starts after what was read: {first}");
}

#[test]
fn multi_conn_modes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("flush.log");
    let eval = [
        "eval",
        "get_size=echo 1M",
        "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
        "pwrite=cat >/dev/null",
        "open=echo h$$",
    ];
    let flush = format!("flush=echo $2 >> {}", log.display());
    let mut plugin = eval.to_vec();
    plugin.push(&flush);
    // auto, on a plugin without multi-conn: emulated.
    let d = start("multi-conn", &plugin, &[]);
    let mut a = d.connect().unwrap();
    let mut b = d.connect().unwrap();
    assert!(a.info().can_multi_conn() && b.info().can_multi_conn());
    a.write(0, b"a").unwrap();
    b.write(0, b"b").unwrap();
    a.flush().unwrap();
    let lines = std::fs::read_to_string(&log).unwrap();
    assert_eq!(lines.lines().count(), 2, "a flush reaches both connections: {lines}");
    // disable, on a plugin with it.
    let d = start("multi-conn", &["memory", "1M"], &["multi-conn-mode=disable"]);
    assert!(!d.connect().unwrap().info().can_multi_conn());
    let d = start("multi-conn", &plugin, &["multi-conn-mode=plugin"]);
    assert!(!d.connect().unwrap().info().can_multi_conn());
}

#[rstest::rstest]
#[case("--filter=swab", "swab-bits=12", "swab-bits=12")]
#[case("--filter=multi-conn", "multi-conn-mode=maybe", "unknown multi-conn mode 'maybe'")]
fn bad_parameters(#[case] filter: &str, #[case] arg: &str, #[case] msg: &str) {
    let out =
        nbdkit().args(["-U", "-", filter, "memory", "1M", arg, "--run", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(msg));
}
