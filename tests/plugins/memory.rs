use crate::util::*;

#[test]
fn extents_tell_zeroed_pages_from_holes_and_data() {
    // As C nbdkit's sparse array: a written page that holds only zeroes is
    // "zero" but not a hole.
    let disk = disk(&["memory", "1M"]);
    let mut c = disk.connect().unwrap();
    c.write(0, &[0u8; 4096]).unwrap();
    c.write(65536, b"x").unwrap();
    let ext: Vec<(u64, u64, bool, bool)> = c
        .extents(0, 1 << 20)
        .unwrap()
        .iter()
        .map(|e| (e.offset, e.length, e.is_hole(), e.is_zero()))
        .collect();
    assert_eq!(
        ext,
        [
            (0, 32768, false, true),
            (32768, 32768, true, true),
            (65536, 32768, false, false),
            (98304, (1 << 20) - 98304, true, true),
        ]
    );
}

/// Block status extents as C nbdkit reports them: whole 32 KiB pages, so
/// the last extent may reach past the request; REQ_ONE clipped to the
/// request; partial pages judged on the bytes from the offset on.
#[test]
fn block_status_matches_c() {
    let script = r#"nbdsh --base-allocation -u "$uri" -c "
h.pwrite(b'\x03' * 65536, 65536)
h.pwrite(b'\x01', 140000)
def cb(meta, off, ents, err):
    print(off, list(ents))
for off, ln, fl in [(0, 1 << 20, 0), (65636, 200, 0), (0, 1000, 8), (200000, 4096, 8),
                    (65636, 200, 8), (1000, 500, 0), (140001, 10, 0), (139000, 10, 0),
                    (2097052, 100, 0), (2097052, 100, 8)]:
    h.block_status(ln, off, cb, fl)
""#;
    assert_same_as_c(&["memory", "2M"], script, &["nbdsh"]);
    assert_same_as_c(&["data", "1*40000 @100000 2*5", "size=2M"], script, &["nbdsh"]);
}

/// The locked memory (`VmLck`, in kB) of the server running `args`, seen
/// from its `--run` command (whose parent it is).
fn locked_kb(args: &[&str]) -> u64 {
    let out = run_captive(&bin(), args, "grep VmLck /proc/$PPID/status");
    assert!(out.starts_with("status Some(0)"), "{args:?}: {out}");
    out.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{out}"))
}

#[test]
fn mlock_locks_the_disk_in_ram() {
    assert_eq!(locked_kb(&["memory", "1M"]), 0);
    assert_eq!(locked_kb(&["memory", "1M", "allocator=malloc"]), 0);
    assert_eq!(locked_kb(&["memory", "1M", "allocator=malloc,mlock=false"]), 0);
    assert!(locked_kb(&["memory", "1M", "allocator=malloc,mlock=true"]) >= 1024);
    assert!(locked_kb(&["data", "1 @1048576", "allocator=malloc,mlock=yes"]) >= 1024);
    // And the disk still works.
    let d = disk(&["memory", "100000", "allocator=malloc,mlock=true"]);
    let mut c = d.connect().unwrap();
    c.write(99990, b"0123456789").unwrap();
    c.zero(99990, 5).unwrap();
    assert_eq!(c.read(99988, 12).unwrap(), [&[0u8; 7][..], b"56789"].concat());
    for plugin in ["memory", "data"] {
        let out = nbdkit().args(["--dump-plugin", plugin]).output().unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).contains("\nmlock=yes\n"));
    }
}

#[test]
fn mlock_over_the_limit_is_a_clear_error() {
    // Without CAP_IPC_LOCK (root has it), under a 64 KiB limit.
    let cmd = format!(
        "setpriv --bounding-set -ipc_lock prlimit --memlock=65536 {} -U - memory 1M allocator=malloc,mlock=true --run true",
        bin().display()
    );
    let out = sh(&cmd);
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("setpriv:") || err.contains("prlimit:") {
        eprintln!("skipping: cannot drop CAP_IPC_LOCK here: {err}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        "nbdkit: error: memory: allocator=malloc: mlock: cannot lock 1048576 bytes in RAM: \
         Cannot allocate memory (at most 65536 bytes may be locked: see ulimit -l)\n"
    );
}

#[rstest::rstest]
#[case("allocator=sparse,mlock=true", "allocator=sparse does not take extra parameters")]
#[case("allocator=malloc,mlock=maybe", "mlock: could not decipher boolean (maybe)")]
#[case("allocator=malloc,foo=1", "allocator=malloc: unknown parameter foo")]
fn bad_allocator_parameters(#[case] arg: &str, #[case] msg: &str) {
    assert_refused(&["memory", "1M", arg], msg);
}
