use super::common::*;
use crate::util::*;

#[test]
fn everything_is_data() {
    let disk = start(&["noextents"], "memory", &["1M"]);
    let mut c = disk.connect().unwrap();
    let e = c.extents(0, 1 << 20).unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!((e[0].length, e[0].flags), (1 << 20, 0));
    // Without the filter, an empty memory disk is a hole.
    let bare = start(&[], "memory", &["1M"]);
    assert_ne!(bare.connect().unwrap().extents(0, 4096).unwrap()[0].flags, 0);
}

#[test]
fn same_map_as_c() {
    if have("nbdinfo") {
        same_as_c("--filter=noextents data \"1 @0x10000 2\" size=1M", "nbdinfo --map \"$uri\"");
    }
}
