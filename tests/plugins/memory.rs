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
