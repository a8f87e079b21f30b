//! example1: a 100 MiB read-only disk, an MBR with one Linux partition
//! holding an ext2 filesystem.

use crate::util::*;

#[test]
fn flags_and_extents_match_c_nbdkit() {
    if !have("nbdinfo") {
        return;
    }
    let info = |nbdkit: &std::path::Path| {
        let out = sh(&format!(
            "{} -U - example1 --run 'nbdinfo \"$uri\" | grep -v \"uri:\\|content:\"; nbdinfo --map \"$uri\"'",
            nbdkit.display()
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = info(&bin());
    assert!(ours.contains("export-size: 104857600"), "{ours}");
    assert!(ours.contains("is_read_only: true"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, info(&c));
    }
}

#[test]
fn the_captive_example_copies_a_disk_with_a_real_filesystem() {
    if !have("qemu-img") || !have("debugfs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = sh(&format!(
        "cd '{}' && {} -U - example1 --run 'qemu-img convert \"$nbd\" disk.img' && \
         dd if=disk.img of=part.img bs=512 skip=2048 status=none && \
         debugfs -R 'cat /hello.txt' part.img 2>/dev/null",
        dir.path().display(),
        bin().display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hello from the nbdkit example1 disk.\n");
    let disk = std::fs::read(dir.path().join("disk.img")).unwrap();
    assert_eq!(disk.len(), 100 << 20);
    // One Linux partition from sector 2048 to the end, and the signature.
    assert_eq!(disk[446 + 4], 0x83);
    assert_eq!(&disk[446 + 8..446 + 12], &2048u32.to_le_bytes());
    assert_eq!(&disk[446 + 12..446 + 16], &(204800u32 - 2048).to_le_bytes());
    assert_eq!(&disk[510..512], &[0x55, 0xaa]);
}

#[test]
fn writes_are_refused_and_parameters_too() {
    let d = disk(&["example1"]);
    let mut c = d.connect().unwrap();
    let e = c.write(0, b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EPERM));
    let out = nbdkit().args(["-U", "-", "example1", "foo=bar", "--run", "true"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("foo"));
}
