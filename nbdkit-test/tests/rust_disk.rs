//! Disks written in Rust, served inside the test process.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use nbdkit_test::nbdkit::backend::{ExtentFlags, Extents, Flags, Handle, OpenArgs, Plugin};
use nbdkit_test::nbdkit::{async_trait, Caps, Errno};
use nbdkit_test::{MemoryDisk, RustDisk};

#[test]
fn the_third_read_at_an_offset_fails() {
    let reads = Arc::new(AtomicUsize::new(0));
    let seen = reads.clone();
    let disk = RustDisk::new(MemoryDisk::new(1 << 20).on_read(move |offset, _| {
        if offset == 4096 && seen.fetch_add(1, Ordering::SeqCst) == 2 {
            Err(Errno::Io)
        } else {
            Ok(())
        }
    }))
    .unwrap();
    let mut nbd = disk.connect().unwrap();
    for _ in 0..2 {
        assert_eq!(nbd.read(4096, 512).unwrap(), vec![0; 512]);
    }
    let e = nbd.read(4096, 512).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EIO), "{e}");
    // Other offsets, and later reads, are untouched.
    assert_eq!(nbd.read(0, 512).unwrap(), vec![0; 512]);
    assert_eq!(nbd.read(4096, 512).unwrap(), vec![0; 512]);
}

/// What a disk saw: (kind, offset, length).
type Requests = Vec<(&'static str, u64, usize)>;

#[test]
fn every_request_is_recorded_and_writes_reach_the_tests_vec() {
    let log: Arc<Mutex<Requests>> = Arc::default();
    let (r, w) = (log.clone(), log.clone());
    let mem = MemoryDisk::from_vec(vec![7; 8192])
        .on_read(move |o, n| {
            r.lock().unwrap().push(("read", o, n));
            Ok(())
        })
        .on_write(move |o, n| {
            w.lock().unwrap().push(("write", o, n));
            if o >= 4096 {
                Err(Errno::NoSpc)
            } else {
                Ok(())
            }
        });
    let data = mem.data();
    let disk = RustDisk::new(mem).unwrap();
    let mut nbd = disk.connect().unwrap();
    nbd.write(100, b"abc").unwrap();
    assert_eq!(nbd.write(5000, b"no").unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(nbd.read(99, 5).unwrap(), [7, b'a', b'b', b'c', 7]);
    assert_eq!(*log.lock().unwrap(), [("write", 100, 3), ("write", 5000, 2), ("read", 99, 5)]);
    assert_eq!(&data.lock().unwrap()[100..103], b"abc");
    assert_eq!(data.lock().unwrap()[5000], 7, "a refused write changes nothing");
}

/// A disk whose block status is whatever the test says.
struct Mapped(Vec<(u64, u64, ExtentFlags)>);

#[async_trait]
impl Plugin for Mapped {
    async fn open(
        &self, _: &OpenArgs<'_>,
    ) -> nbdkit_test::nbdkit::backend::Result<Arc<dyn Handle>> {
        Ok(Arc::new(Mapped(self.0.clone())))
    }
}

#[async_trait]
impl Handle for Mapped {
    async fn size(&self) -> nbdkit_test::nbdkit::backend::Result<u64> {
        Ok(1 << 20)
    }
    async fn caps(&self) -> nbdkit_test::nbdkit::backend::Result<Caps> {
        let mut c = Caps::READ_ONLY;
        c.extents = true;
        Ok(c)
    }
    async fn pread(
        &self, buf: &mut [u8], _: u64, _: Flags,
    ) -> nbdkit_test::nbdkit::backend::Result<()> {
        buf.fill(0);
        Ok(())
    }
    async fn extents(
        &self, _count: u64, _offset: u64, _: Flags, ext: &mut Extents,
    ) -> nbdkit_test::nbdkit::backend::Result<()> {
        for &(o, n, f) in &self.0 {
            ext.add(o, n, f);
        }
        Ok(())
    }
}

#[test]
fn block_status_is_what_the_test_chose() {
    let map =
        vec![(0, 65536, ExtentFlags::DATA), (65536, 983040, ExtentFlags::HOLE | ExtentFlags::ZERO)];
    let disk = RustDisk::new(Mapped(map)).unwrap();
    let ext = disk.connect().unwrap().extents(0, 1 << 20).unwrap();
    let got: Vec<(u64, u64, bool, bool)> =
        ext.iter().map(|e| (e.offset, e.length, e.is_hole(), e.is_zero())).collect();
    assert_eq!(got, [(0, 65536, false, false), (65536, 983040, true, true)]);
}

#[test]
fn filters_stack_on_a_rust_disk() {
    let bytes: Vec<u8> = (0..4096u32).map(|i| (i / 512) as u8).collect();
    let disk = RustDisk::builder(MemoryDisk::from_vec(bytes))
        .filter("offset")
        .arg("offset=1024")
        .filter("readonly-not-a-filter")
        .start();
    assert!(disk.unwrap_err().to_string().contains("unknown filter 'readonly-not-a-filter'"));
    let disk =
        RustDisk::builder(MemoryDisk::from_vec((0..4096u32).map(|i| (i / 512) as u8).collect()))
            .filter("offset")
            .arg("offset=1024")
            .readonly()
            .start()
            .unwrap();
    let mut nbd = disk.connect().unwrap();
    assert_eq!(nbd.size(), 3072);
    assert!(nbd.info().read_only());
    assert_eq!(nbd.read(0, 1).unwrap(), [2]);
    let e = RustDisk::builder(MemoryDisk::new(512)).filter("offset").arg("bogus=1").start();
    assert!(e.unwrap_err().to_string().contains("unknown parameter 'bogus'"));
}

#[test]
fn drop_stops_the_server_and_removes_its_directory() {
    let disk = RustDisk::new(MemoryDisk::new(512)).unwrap();
    let socket = disk.socket().to_path_buf();
    let dir = socket.parent().unwrap().to_path_buf();
    let name = dir.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with(&format!("{}-", std::process::id())), "{name}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let client = disk.connect().unwrap();
    drop(disk);
    assert!(!socket.exists() && !dir.exists());
    // A client still connected is disconnected, not left hanging.
    drop(client);
    assert!(std::os::unix::net::UnixStream::connect(&socket).is_err());
}

#[test]
fn directories_of_dead_processes_are_swept() {
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let base = std::env::temp_dir().join(format!("nbdkit-test-rs-{uid}"));
    let stale = base.join(format!("{dead}-stale"));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("socket"), b"").unwrap();
    let _disk = RustDisk::new(MemoryDisk::new(512)).unwrap();
    assert!(!stale.exists());
}

#[test]
fn real_clients_read_a_rust_disk() {
    let pattern: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
    let disk = RustDisk::new(MemoryDisk::from_vec(pattern.clone())).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("copy.raw");
    let run = |cmd: &mut Command| match cmd.env("PATH", "/usr/bin:/bin").output() {
        Ok(o) => {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => panic!("{cmd:?} is required"),
        Err(_) => None,
    };
    if let Some(size) = run(Command::new("nbdinfo").args(["--size", disk.uri()])) {
        assert_eq!(size, "1048576\n");
    }
    let src = format!("driver=nbd,path={}", disk.socket().display());
    let converted = run(Command::new("qemu-img")
        .args(["convert", "--image-opts", &src, "-O", "raw"])
        .arg(&out));
    if converted.is_some() {
        assert!(std::fs::read(&out).unwrap() == pattern, "qemu-img read other bytes");
    }
}
