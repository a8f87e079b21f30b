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
    assert_same_as_c(
        &["data", "1*40000 @100000 2*5", "size=2M"],
        script,
        &["nbdsh"],
    );
}
