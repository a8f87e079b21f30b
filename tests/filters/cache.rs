use crate::util::*;

/// A disk over a file the test can look at, with every pread and pwrite
/// that reaches it logged.
struct Backend {
    dir: tempfile::TempDir,
}

impl Backend {
    fn new() -> Backend {
        let dir = tempfile::tempdir().unwrap();
        std::fs::File::create(dir.path().join("disk")).unwrap().set_len(1 << 20).unwrap();
        Backend { dir }
    }
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
    fn count(&self, what: &str) -> usize {
        self.log().lines().filter(|l| l.starts_with(what)).count()
    }
    fn start(&self, args: &[&str]) -> nbdkit_test::CaptiveDisk {
        let d = self.dir.path().display();
        nbdkit_test::CaptiveDisk::builder("eval")
            .args([
                "get_size=echo 1M".to_string(),
                format!("pread=echo pread $4 >> {d}/log; dd if={d}/disk skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none"),
                format!("pwrite=echo pwrite $4 >> {d}/log; dd of={d}/disk seek=$4 conv=notrunc oflag=seek_bytes status=none"),
                format!("flush=echo flush >> {d}/log"),
            ])
            .filter("cache")
            .args(args)
            .env("TMPDIR", self.dir.path())
            .binary(bin())
            .start()
            .unwrap()
    }
}

#[test]
fn reads_are_served_from_the_cache() {
    let b = Backend::new();
    let d = b.start(&[]);
    let mut c = d.connect().unwrap();
    c.read(0, 512).unwrap();
    c.read(4096, 512).unwrap();
    assert_eq!(b.count("pread"), 1, "{}", b.log());
    let b2 = Backend::new();
    let d = b2.start(&["cache-on-read=false"]);
    let mut c = d.connect().unwrap();
    c.read(0, 512).unwrap();
    c.read(0, 512).unwrap();
    assert_eq!(b2.count("pread"), 2, "{}", b2.log());
}

#[test]
fn writeback_waits_for_a_flush_writethrough_does_not() {
    let b = Backend::new();
    let d = b.start(&[]);
    let mut c = d.connect().unwrap();
    c.write(100, b"cached").unwrap();
    assert_eq!(b.count("pwrite"), 0, "{}", b.log());
    assert_eq!(c.read(100, 6).unwrap(), b"cached");
    c.flush().unwrap();
    assert_eq!(b.count("pwrite"), 1, "{}", b.log());
    let on_disk = std::fs::read(b.dir.path().join("disk")).unwrap();
    assert_eq!(&on_disk[100..106], b"cached");
    // FUA writes back at once.
    c.write_fua(70000, b"now").unwrap();
    assert_eq!(b.count("pwrite"), 2, "{}", b.log());

    let b = Backend::new();
    let d = b.start(&["cache=writethrough"]);
    let mut c = d.connect().unwrap();
    c.write(100, b"through").unwrap();
    assert_eq!(b.count("pwrite"), 1, "{}", b.log());

    let b = Backend::new();
    let d = b.start(&["cache=unsafe"]);
    let mut c = d.connect().unwrap();
    c.write(100, b"unsafe").unwrap();
    c.flush().unwrap();
    assert_eq!(b.count("pwrite"), 0, "{}", b.log());
    // Written back when the client says goodbye.
    c.disconnect().unwrap();
    assert!(
        wait_until(std::time::Duration::from_secs(10), || b.count("pwrite") == 1),
        "{}",
        b.log()
    );
}

#[test]
fn a_size_limit_evicts() {
    let b = Backend::new();
    let d = b.start(&["cache-max-size=64K"]);
    let mut c = d.connect().unwrap();
    c.write(0, b"dirty").unwrap();
    // Reading another block pushes the dirty one out, written back.
    c.read(65536, 512).unwrap();
    assert_eq!(b.count("pwrite"), 1, "{}", b.log());
    c.read(0, 512).unwrap();
    assert_eq!(c.read(0, 5).unwrap(), b"dirty");
    assert!(b.count("pread") >= 3, "{}", b.log());
}

#[test]
fn data_stays_right_under_mixed_requests() {
    let d = nbdkit_test::CaptiveDisk::builder("memory")
        .arg("4M")
        .filter("cache")
        .arg("cache-max-size=256K")
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    let mut model = vec![0u8; 4 << 20];
    let mut x: u64 = 12345;
    for i in 0..300u32 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let off = (x >> 33) % ((4 << 20) - 9000);
        let len = 1 + (x >> 20) as usize % 8000;
        match i % 4 {
            0 | 1 => {
                let data: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
                c.write(off, &data).unwrap();
                model[off as usize..off as usize + len].copy_from_slice(&data);
            }
            2 => {
                c.zero(off, len as u64).unwrap();
                model[off as usize..off as usize + len].fill(0);
            }
            _ => assert!(
                c.read(off, len).unwrap() == model[off as usize..off as usize + len],
                "at {i}"
            ),
        }
    }
    c.flush().unwrap();
    assert!(c.read(0, 4 << 20).unwrap() == model);
}

#[test]
fn bad_parameters() {
    for arg in ["cache=sometimes", "cache-min-block-size=1000", "cache-on-read=maybe"] {
        let out = nbdkit()
            .args(["-U", "-", "--filter=cache", "memory", "1M", arg, "--run", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{arg}");
    }
}

#[test]
fn each_export_has_its_own_cache() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("a"), vec![b'A'; 65536]).unwrap();
    std::fs::write(d.path().join("b"), vec![b'B'; 65536]).unwrap();
    let disk = nbdkit_test::CaptiveDisk::builder("file")
        .arg(format!("dir={}", d.path().display()))
        .filter("cache")
        .env("TMPDIR", d.path())
        .binary(bin())
        .start()
        .unwrap();
    let sock = disk.socket().unwrap();
    let mut a = nbdkit_test::Client::connect_unix(sock, "a").unwrap();
    assert_eq!(a.read(0, 4).unwrap(), b"AAAA");
    let mut b = nbdkit_test::Client::connect_unix(sock, "b").unwrap();
    assert_eq!(b.read(0, 4).unwrap(), b"BBBB");
}

#[test]
fn flush_is_offered_only_where_the_plugin_has_it() {
    let d = tempfile::tempdir().unwrap();
    let start = |mode: &str| {
        nbdkit_test::CaptiveDisk::builder("eval")
            .args([
                "get_size=echo 1M",
                "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
                "pwrite=cat >/dev/null",
            ])
            .filter("cache")
            .arg(format!("cache={mode}"))
            .env("TMPDIR", d.path())
            .binary(bin())
            .start()
            .unwrap()
    };
    assert!(!start("writeback").connect().unwrap().info().can_flush());
    assert!(start("unsafe").connect().unwrap().info().can_flush());
}
