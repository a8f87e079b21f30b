use std::os::unix::fs::FileExt;

use crate::util::*;

fn image(len: u64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("disk.img");
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(b"0123456789", 100_000).unwrap();
    (dir, p)
}

#[test]
fn reads_and_writes_reach_the_file() {
    let (_d, img) = image(1 << 20);
    let disk = disk(&["file", img.to_str().unwrap()]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert_eq!(c.read(100_000, 10).unwrap(), b"0123456789");
    c.write_fua(4096, b"hello").unwrap();
    c.flush().unwrap();
    let mut back = [0u8; 5];
    std::fs::File::open(&img).unwrap().read_exact_at(&mut back, 4096).unwrap();
    assert_eq!(&back, b"hello");
    // Zero and trim read back as zeroes, in the file too.
    c.zero(100_000, 4).unwrap();
    c.trim(4096, 5).unwrap();
    assert_eq!(c.read(100_000, 10).unwrap(), b"\x00\x00\x00\x00456789");
    assert_eq!(c.read(4096, 5).unwrap(), [0u8; 5]);
    // Past the end.
    let e = c.read(1 << 20, 1).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL));
    let e = c.write((1 << 20) - 1, b"xy").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
}

/// A zero that may trim punches a hole, as C does (the space is freed); one
/// with NO_HOLE leaves the blocks allocated.
#[test]
fn zero_punches_a_hole_only_when_it_may_trim() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::write(&img, vec![0x55u8; 1 << 20]).unwrap();
    let blocks = || std::fs::metadata(&img).unwrap().blocks();
    let full = blocks();
    let disk = disk(&["file", img.to_str().unwrap()]);
    let mut c = disk.connect().unwrap();
    let no_hole = nbdkit_test::client::ZeroFlags { no_hole: true, ..Default::default() };
    c.zero_with(0, 256 << 10, no_hole).unwrap();
    c.flush().unwrap();
    assert_eq!(blocks(), full, "NO_HOLE keeps the blocks");
    c.zero(512 << 10, 256 << 10).unwrap();
    c.flush().unwrap();
    assert!(
        blocks() <= full - (256 << 10) / 512,
        "a hole was punched: {} of {full} blocks left",
        blocks()
    );
    assert_eq!(c.read(0, 4).unwrap(), [0; 4]);
    assert_eq!(c.read(512 << 10, 4).unwrap(), [0; 4]);
    assert_eq!(c.read(256 << 10, 1).unwrap(), [0x55]);
}

#[test]
fn extents_show_holes() {
    let (_d, img) = image(1 << 20);
    let disk = disk(&["file", &format!("file={}", img.display())]);
    let ext = disk.connect().unwrap().extents(0, 1 << 20).unwrap();
    assert_eq!(ext.iter().map(|e| e.length).sum::<u64>(), 1 << 20);
    assert!(ext[0].is_hole() && ext[0].is_zero(), "starts with a hole: {ext:?}");
    // The data written at 100000 is in an allocated extent.
    let at = ext.iter().find(|e| e.offset <= 100_000 && 100_000 < e.offset + e.length).unwrap();
    assert!(!at.is_hole() && !at.is_zero(), "{ext:?}");
}

#[test]
fn read_only() {
    let (_d, img) = image(1 << 20);
    let srv = Server::start(&["-r", "file", img.to_str().unwrap()]);
    let (mut c, _, _) = Raw::open(srv.connect(), false);
    assert_eq!(c.call(CMD_WRITE, 0, 0, 1, b"x").error, EPERM);
    assert_eq!(c.call(CMD_READ, 0, 1 << 20, 1, b"").error, EINVAL);
    assert_eq!(c.call(CMD_READ, 0, 0, 4, b"").data, [0u8; 4]);
}

#[rstest::rstest]
#[case(&["file"], "you must supply [file=]<FILENAME>, dir=<DIRNAME>, fd=<FD> or dirfd=<FD>")]
#[case(&["file", "/nonexistent/disk.img"], "/nonexistent/disk.img")]
#[case(&["file", "/tmp"], "is a directory (use dir=)")]
#[case(&["file", "dir=/nonexistent"], "dir=/nonexistent: No such file or directory")]
#[case(&["file", "dir=/dev/null"], "dir=/dev/null: not a directory")]
#[case(&["file", "dir=/tmp", "file=/dev/null"], "file= and dir= cannot be used together")]
#[case(&["file", "fd=x"], "fd=x: not a file descriptor number")]
#[case(&["file", "fd=1"], "fd=1: must be above 2")]
#[case(&["file", "fd=987"], "fd=987: Bad file descriptor")]
#[case(&["file", "dirfd=987"], "dirfd=987: Bad file descriptor")]
#[case(&["file", "file=/a", "file=/b"], "can only appear once")]
#[case(&["file", "/dev/null", "cache=bogus"], "unknown cache mode")]
#[case(&["file", "/dev/null", "fadvise=bogus"], "unknown fadvise mode")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-"], args, msg);
}

/// A directory with two images, a symlink to one, and things that are not
/// served: a subdirectory and a FIFO.
fn image_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let a = std::fs::File::create(d.path().join("a.img")).unwrap();
    a.set_len(1 << 20).unwrap();
    a.write_all_at(b"in a", 0).unwrap();
    let b = std::fs::File::create(d.path().join("b c.img")).unwrap();
    b.set_len(2 << 20).unwrap();
    b.write_all_at(b"in b", 0).unwrap();
    std::os::unix::fs::symlink("a.img", d.path().join("link.img")).unwrap();
    std::fs::create_dir(d.path().join("sub")).unwrap();
    mkfifo(&d.path().join("fifo"));
    d
}

fn dir_disk(dir: &std::path::Path, export: &str) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("file")
        .arg(format!("dir={}", dir.display()))
        .export_name(export)
        .binary(bin())
        .start()
        .unwrap()
}

#[test]
fn dir_serves_each_file_by_export_name() {
    let d = image_dir();
    for (name, size, data) in
        [("a.img", 1 << 20, b"in a"), ("b c.img", 2 << 20, b"in b"), ("link.img", 1 << 20, b"in a")]
    {
        let disk = dir_disk(d.path(), name);
        let mut c = disk.connect().unwrap();
        assert_eq!(c.size(), size, "{name}");
        assert_eq!(c.read(0, 4).unwrap(), data, "{name}");
    }
    // Writes reach the file.
    let disk = dir_disk(d.path(), "b c.img");
    disk.connect().unwrap().write_fua(100, b"written").unwrap();
    let mut back = [0u8; 7];
    std::fs::File::open(d.path().join("b c.img")).unwrap().read_exact_at(&mut back, 100).unwrap();
    assert_eq!(&back, b"written");
    // directory= is dir= under another name.
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .arg(format!("directory={}", d.path().display()))
        .export_name("a.img")
        .binary(bin())
        .start()
        .unwrap();
    assert_eq!(disk.connect().unwrap().read(0, 4).unwrap(), b"in a");
}

#[rstest::rstest]
#[case("")]
#[case("../a.img")]
#[case("sub")]
#[case("fifo")]
#[case(".")]
#[case("missing.img")]
fn dir_refuses_what_it_does_not_serve(#[case] export: &str) {
    let d = image_dir();
    let disk = dir_disk(d.path(), "a.img");
    // The same server, asked for another name: refused at the handshake,
    // and (for the FIFO) without hanging.
    let err = nbdkit_test::Client::connect_unix(disk.socket().unwrap(), export).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound, "{export:?}: {err}");
    // The server is fine afterwards.
    assert_eq!(disk.connect().unwrap().read(0, 4).unwrap(), b"in a");
}

#[test]
fn dir_lists_the_same_exports_as_c_nbdkit() {
    if !have("nbdinfo") {
        return;
    }
    let d = image_dir();
    let list = |nbdkit: &std::path::Path| {
        let out = sh(&format!(
            "{} -U - file dir='{}' --run 'nbdinfo --list --json \"$uri\"'",
            nbdkit.display(),
            d.path().display()
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let mut names: Vec<String> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("\"export-name\": \""))
            .map(|n| n.trim_end_matches("\",").to_string())
            .collect();
        names.sort();
        names
    };
    let ours = list(&bin());
    assert_eq!(ours, ["a.img", "b c.img", "link.img"]);
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, list(&c));
    }
}

#[test]
fn fd_serves_an_inherited_descriptor_read_only_if_opened_so() {
    if !have("nbdinfo") {
        return;
    }
    let (_d, img) = image(1 << 20);
    let run = |redirect: &str| {
        let out = sh(&format!(
            "{} -U - file fd=3 --run 'nbdinfo --json \"$uri\"' 3{redirect}'{}'",
            bin().display(),
            img.display()
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ro = run("<");
    assert!(ro.contains("\"is_read_only\": true"), "{ro}");
    assert!(ro.contains("\"export-size\": 1048576"), "{ro}");
    let rw = run("<>");
    assert!(rw.contains("\"is_read_only\": false"), "{rw}");
}

#[test]
fn dirfd_serves_a_directory_descriptor() {
    if !have("nbdinfo") {
        return;
    }
    let d = image_dir();
    let out = sh(&format!(
        "{} -U - file dirfd=3 --run 'nbdinfo --size \"nbd+unix:///b%20c.img?socket=$unixsocket\" && \
         nbdinfo --list \"$uri\" | grep -c ^export=' 3<'{}'",
        bin().display(),
        d.path().display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "2097152\n3\n");
}

#[test]
fn flags_and_extents_match_c_nbdkit() {
    if !have("nbdinfo") {
        return;
    }
    let Some(c) = c_nbdkit() else { return };
    let (_d, img) = image(1 << 20);
    for extra in ["", "-r"] {
        let info = |nbdkit: &std::path::Path| {
            let out = sh(&format!(
                "{} -U - {extra} file '{}' --run 'nbdinfo \"$uri\" | grep -v uri:; nbdinfo --map \"$uri\"'",
                nbdkit.display(),
                img.display()
            ));
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        assert_eq!(info(&bin()), info(&c), "{extra}");
    }
}

/// (chunk type, length) of each chunk of the structured reply to one read.
fn read_chunks(srv: &Server, offset: u64, len: u32) -> Vec<(bool, usize)> {
    let (mut r, _, _) = Raw::open(srv.connect(), true);
    r.request(CMD_READ, 0, 1, offset, len, &[]);
    let mut out = Vec::new();
    loop {
        // A hole's data is zeroes the client made up; a data chunk's came
        // from the file. Tell them apart by the bytes on the wire.
        let (done, c) = r.chunk(0);
        out.push((c.data.iter().any(|&b| b != 0), c.data.len()));
        if done {
            return out;
        }
    }
}

#[test]
fn holes_in_a_sparse_file_are_read_as_hole_chunks() {
    let (_d, img) = image(1 << 20);
    let srv = Server::start(&["file", img.to_str().unwrap()]);
    // The data sits in one block of a file that is otherwise a hole.
    let chunks = read_chunks(&srv, 0, 1 << 20);
    assert_eq!(chunks.len(), 3, "{chunks:?}");
    assert_eq!(chunks[0], (false, 98304), "{chunks:?}");
    assert!(chunks[1].0 && chunks[1].1 >= 4096, "{chunks:?}");
    assert_eq!(chunks.iter().map(|c| c.1).sum::<usize>(), 1 << 20);
    let mut c = Raw::open(srv.connect(), true).0;
    c.request(CMD_READ, 0, 1, 99_995, 20, &[]);
    assert_eq!(c.reply(0).data, b"\0\0\0\0\x000123456789\0\0\0\0\0");
}

#[test]
fn a_file_with_no_holes_is_read_as_data() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("full.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let srv = Server::start(&["file", img.to_str().unwrap()]);
    // An allocated file of zeroes: one data chunk (its reads look for no
    // holes).
    let (mut r, _, _) = Raw::open(srv.connect(), true);
    r.request(CMD_READ, 0, 1, 0, 1 << 20, &[]);
    let mut hdr = [0u8; 8];
    std::io::Read::read_exact(&mut r.s, &mut hdr).unwrap();
    assert_eq!(u16::from_be_bytes([hdr[6], hdr[7]]), REPLY_TYPE_OFFSET_DATA);
    drop(r);
    // Once a trim punches a hole, reads find it.
    let (mut r, _, _) = Raw::open(srv.connect(), true);
    r.request(CMD_TRIM, 0, 2, 0, 512 << 10, &[]);
    assert_eq!(r.reply(0).error, 0);
    r.request(CMD_READ, 0, 3, 0, 1 << 20, &[]);
    let (done, first) = r.chunk(0);
    assert!(!done && first.data.len() >= 256 << 10, "the punched hole comes first");
}

/// Whether all of `f` is in the page cache (`cachestat`, Linux 6.5); None
/// where the kernel cannot say. Large reads of cached files are sent
/// straight from the page cache.
fn all_cached(f: &std::fs::File) -> Option<bool> {
    use std::os::fd::AsRawFd;
    let len = f.metadata().unwrap().len();
    let range = [0u64, len];
    let mut stat = [0u64; 5];
    // SAFETY: cachestat reads `range` and fills `stat`, both alive.
    let r = unsafe { libc::syscall(451, f.as_raw_fd(), range.as_ptr(), stat.as_mut_ptr(), 0) };
    (r == 0).then(|| stat[0] >= len.div_ceil(4096))
}

/// A file of `len` bytes of varied data, all allocated.
fn data_file(len: usize) -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data.img");
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    std::fs::write(&p, &data).unwrap();
    (dir, p, data)
}

#[test]
fn large_reads_of_a_cached_file_go_from_the_page_cache_in_every_reply_style() {
    let (_d, img, data) = data_file(4 << 20);
    let zero_copy = all_cached(&std::fs::File::open(&img).unwrap()).is_some();
    let (srv, log) = Server::start_verbose(&["file", img.to_str().unwrap()]);
    // Unaligned, with a small read between large ones.
    let reads: [(u64, u32); 4] = [(123_457, 1 << 20), (5, 4096), (2 << 20, 2 << 20), (0, 65536)];
    for style in ["simple", "structured", "extended"] {
        let (mut c, _, _) = match style {
            "extended" => Raw::open_extended(srv.connect()),
            s => Raw::open(srv.connect(), s == "structured"),
        };
        let want = |r: &Reply| {
            let (off, len) = reads[r.cookie as usize];
            assert_eq!(r.error, 0, "{style}");
            assert!(r.data == data[off as usize..(off + u64::from(len)) as usize], "{style}");
        };
        if style == "simple" {
            // Simple replies do not say their length: one at a time.
            for (i, &(off, len)) in reads.iter().enumerate() {
                c.request(CMD_READ, 0, i as u64, off, len, &[]);
                want(&c.reply(len as usize));
            }
        } else {
            // Pipelined: the replies may come in any order.
            for (i, &(off, len)) in reads.iter().enumerate() {
                c.request(CMD_READ, 0, i as u64, off, len, &[]);
            }
            for _ in reads {
                want(&c.reply(0));
            }
        }
    }
    let err = slurp(&log);
    let sent = err.matches("(sent from the page cache)").count();
    // The three large reads of each style, not the 4 KiB one.
    assert_eq!(sent, if zero_copy { 9 } else { 0 }, "{err}");
}

#[test]
fn a_read_of_pages_not_in_the_page_cache_is_a_copy() {
    use std::os::fd::AsRawFd;
    let (_d, img, data) = data_file(1 << 20);
    let f = std::fs::File::open(&img).unwrap();
    f.sync_all().unwrap();
    // SAFETY: advice on our own descriptor: drop the (clean) cached pages.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    // (On tmpfs the pages stay: then even the first read is sent from them.)
    let first_cached = all_cached(&f).unwrap_or(false);
    let zero_copy = all_cached(&f).is_some();
    let (srv, log) = Server::start_verbose(&["file", img.to_str().unwrap()]);
    let (mut c, _, _) = Raw::open(srv.connect(), true);
    // The first read finds nothing cached and reads the file (which
    // caches it); the second is sent from the page cache.
    for cookie in 1..=2 {
        let r = c.call(CMD_READ, 0, 0, 1 << 20, &[]);
        assert_eq!(r.error, 0);
        assert!(r.data == data, "read {cookie}");
    }
    let err = slurp(&log);
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("pread count=1048576")).collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(lines[0].contains("(sent from the page cache)"), first_cached, "{err}");
    assert_eq!(lines[1].contains("(sent from the page cache)"), zero_copy, "{err}");
}

#[test]
fn reads_through_a_filter_are_copies() {
    // A filter may change what it reads: the plugin's page cache is not
    // sent past it.
    let (_d, img, data) = data_file(1 << 20);
    let (srv, log) =
        Server::start_verbose(&["--filter=offset", "file", img.to_str().unwrap(), "offset=4096"]);
    let (mut c, _, _) = Raw::open(srv.connect(), true);
    let r = c.call(CMD_READ, 0, 0, 512 << 10, &[]);
    assert!(r.data == data[4096..4096 + (512 << 10)]);
    assert!(!slurp(&log).contains("page cache"));
}

#[test]
fn large_reads_over_tcp_go_from_the_page_cache_too() {
    if !have("nbdcopy") {
        return;
    }
    let (_d, img, _) = data_file(4 << 20);
    let zero_copy = all_cached(&std::fs::File::open(&img).unwrap()).is_some();
    let out = nbdkit()
        .args(["-v", "-p", "0", "-i", "127.0.0.1", "file", img.to_str().unwrap(), "--run"])
        .arg(format!("nbdcopy \"$uri\" - | cmp - {} && echo same", img.display()))
        .env("PATH", path_env())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "same\n", "{err}");
    assert_eq!(err.contains("(sent from the page cache)"), zero_copy, "{err}");
}
