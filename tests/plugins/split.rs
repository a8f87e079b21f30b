//! The split plugin: files joined end to end, compared with C nbdkit where
//! C 1.32 gets it right (its writes past the first file and its CACHE are
//! broken, so those are checked against the files themselves).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::util::*;

/// Three files: 10 bytes, 3000 bytes, and 1 MiB that is a hole but for
/// "hello" at 500000. Also an empty one, to put in between.
fn pieces() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("a"), b"0123456789").unwrap();
    std::fs::write(p("b"), (0..3000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>()).unwrap();
    let c = std::fs::File::create(p("c")).unwrap();
    c.set_len(1 << 20).unwrap();
    c.write_all_at(b"hello", 500_000).unwrap();
    std::fs::write(p("empty"), b"").unwrap();
    let files = ["a", "b", "c", "empty"].map(p).to_vec();
    (dir, files)
}

fn args<'a>(files: &'a [PathBuf], names: &[usize]) -> Vec<&'a str> {
    let mut v = vec!["split"];
    v.extend(names.iter().map(|&i| files[i].to_str().unwrap()));
    v
}

fn concat(files: &[&Path]) -> Vec<u8> {
    files.iter().flat_map(|f| std::fs::read(f).unwrap()).collect()
}

#[test]
fn reads_the_files_in_order() {
    let (_d, f) = pieces();
    // The empty file in the middle is skipped.
    let joined = disk(&args(&f, &[0, 3, 1, 2]));
    let mut c = joined.connect().unwrap();
    let whole = concat(&[&f[0], &f[1], &f[2]]);
    assert_eq!(c.size(), whole.len() as u64);
    assert_eq!(c.read(0, whole.len()).unwrap(), whole);
    // Reads across each boundary, and one inside the last file.
    assert_eq!(c.read(5, 10).unwrap(), whole[5..15]);
    assert_eq!(c.read(3000, 20).unwrap(), whole[3000..3020]);
    assert_eq!(c.read(3010 + 500_000, 5).unwrap(), b"hello");
    // The order of file= is the order on the disk.
    let swapped = disk(&args(&f, &[1, 0]));
    assert_eq!(
        swapped.connect().unwrap().read(2995, 10).unwrap(),
        concat(&[&f[1], &f[0]])[2995..3005]
    );
}

#[test]
fn writes_land_in_their_own_file_at_their_own_offset() {
    let (_d, f) = pieces();
    let disk = disk(&args(&f, &[0, 1, 2]));
    let mut c = disk.connect().unwrap();
    // Across all three files: the last 2 bytes of a, all of b, 3 of c.
    let mut data = vec![b'x'; 3005];
    data[0] = b'A';
    data[3004] = b'Z';
    c.write(8, &data).unwrap();
    // Inside c, far from its start (C 1.32 writes this 3010 bytes too far).
    c.write(3010 + 100, b"XYZ").unwrap();
    c.flush().unwrap();
    assert_eq!(std::fs::read(&f[0]).unwrap(), b"01234567Ax");
    assert_eq!(std::fs::read(&f[1]).unwrap(), vec![b'x'; 3000]);
    let mut got = [0u8; 3];
    let cf = std::fs::File::open(&f[2]).unwrap();
    cf.read_exact_at(&mut got, 0).unwrap();
    assert_eq!(&got, b"xxZ");
    cf.read_exact_at(&mut got, 100).unwrap();
    assert_eq!(&got, b"XYZ");
    cf.read_exact_at(&mut got, 3110).unwrap();
    assert_eq!(got, [0; 3]);
    assert_eq!(std::fs::metadata(&f[2]).unwrap().len(), 1 << 20);
    // Zeroes are written (no fast zero, no trim), FUA works by a flush.
    c.zero(3010 + 100, 3).unwrap();
    cf.read_exact_at(&mut got, 100).unwrap();
    assert_eq!(got, [0; 3]);
    let fast = nbdkit_test::client::ZeroFlags { fast: true, ..Default::default() };
    let e = c.zero_with(0, 4, fast).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTSUP));
    c.write_fua(0, b"F").unwrap();
    assert_eq!(std::fs::read(&f[0]).unwrap()[0], b'F');
    let info = c.info();
    assert!(info.can_flush() && info.can_fua() && info.can_zero() && info.can_fast_zero());
    assert!(!info.can_trim() && !info.can_multi_conn() && info.can_cache());
    // CACHE returns (C 1.32 spins forever).
    c.cache(0, 3010 + (1 << 20)).unwrap();
}

#[test]
fn extents_come_from_each_file() {
    let (_d, f) = pieces();
    let disk = disk(&args(&f, &[0, 1, 2]));
    let size = 3010 + (1 << 20);
    let ext = disk.connect().unwrap().extents(0, size).unwrap();
    assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), size);
    let at = |off: u64| *ext.iter().find(|e| e.offset <= off && off < e.offset + e.length).unwrap();
    assert!(!at(0).is_hole() && !at(3009).is_hole(), "{ext:?}");
    assert!(at(3010 + 200_000).is_hole() && at(3010 + 200_000).is_zero(), "{ext:?}");
    assert!(!at(3010 + 500_000).is_hole(), "{ext:?}");
}

/// `nbdinfo --map` and the flags, from both servers.
fn info(nbdkit: &Path, extra: &[&str], files: &[PathBuf]) -> (String, String) {
    let list = files.iter().map(|f| format!("'{}'", f.display())).collect::<Vec<_>>().join(" ");
    let run = |cmd: &str| {
        let out = sh(&format!(
            "{} -U - {} split {list} --run '{cmd}'",
            nbdkit.display(),
            extra.join(" ")
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let flags = run("nbdinfo \"$uri\"")
        .lines()
        .filter(|l| l.contains("can_") || l.contains("is_") || l.contains("size"))
        .collect::<Vec<_>>()
        .join("\n");
    (flags, run("nbdinfo --map \"$uri\""))
}

#[test]
fn map_and_flags_match_c_nbdkit() {
    let Some(c) = c_nbdkit() else { return };
    if !have("nbdinfo") {
        return;
    }
    let (_d, f) = pieces();
    for extra in [&[][..], &["-r"][..]] {
        let (our_flags, our_map) = info(&bin(), extra, &f);
        let (c_flags, c_map) = info(&c, extra, &f);
        assert_eq!(our_map, c_map);
        assert!(our_map.contains("hole,zero"), "{our_map}");
        // All the same but flush (and FUA, done by a flush), which C's
        // split plugin lacks.
        let c_flags = if extra.is_empty() {
            assert!(c_flags.contains("can_fua: false"), "{c_flags}");
            c_flags
                .replace("can_flush: false", "can_flush: true")
                .replace("can_fua: false", "can_fua: true")
        } else {
            c_flags.replace("can_flush: false", "can_flush: true")
        };
        assert_eq!(our_flags, c_flags, "{extra:?}");
    }
}

#[test]
fn a_file_that_cannot_be_written_needs_r() {
    // The running server's own executable is busy (ETXTBSY) for writing.
    let exe = bin();
    let exe = exe.to_str().unwrap();
    let srv = nbdkit_test::CaptiveDisk::builder("split").arg(exe).binary(bin()).start().unwrap();
    assert!(srv.connect().is_err());
    let srv = nbdkit_test::CaptiveDisk::builder("split")
        .arg(exe)
        .readonly()
        .binary(bin())
        .start()
        .unwrap();
    let mut c = srv.connect().unwrap();
    assert_eq!(c.size(), std::fs::metadata(exe).unwrap().len());
    assert_eq!(c.read(0, 4).unwrap(), b"\x7fELF");
    assert!(c.info().read_only());
}

#[test]
fn no_files_is_an_empty_disk() {
    let disk = disk(&["split"]);
    assert_eq!(disk.connect().unwrap().size(), 0);
}

#[rstest::rstest]
#[case(&["split", "/nonexistent/a"], "split: /nonexistent/a: No such file or directory")]
#[case(&["split", "/dev/null", "foo=bar"], "unknown parameter 'foo'")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-"], args, msg);
}
