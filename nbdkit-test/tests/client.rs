//! The crate's blocking client against real servers.

use nbdkit_test::client::{Client, ZeroFlags};
use nbdkit_test::CaptiveDisk;

fn memory(size: &str) -> CaptiveDisk {
    CaptiveDisk::new(["memory", size]).unwrap()
}

#[test]
fn export_info_reports_size_and_flags() {
    let disk = memory("size=3M");
    let nbd = disk.connect().unwrap();
    let info = nbd.info();
    assert_eq!(info.size, 3 << 20);
    assert_eq!(info.name, "");
    assert!(!info.read_only());
    assert!(info.can_flush() && info.can_fua() && info.can_trim() && info.can_zero());
    assert!(info.can_multi_conn());
    // Neither nbdkit sends NBD_INFO_BLOCK_SIZE for a plugin without
    // block-size constraints.
    assert_eq!(info.block_size, None);
}

#[test]
fn write_read_flush_trim_zero_cache() {
    let disk = memory("size=1M");
    let mut nbd = disk.connect().unwrap();
    let data: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    nbd.write(4096, &data).unwrap();
    nbd.write_fua(0, b"fua").unwrap();
    nbd.flush().unwrap();
    assert_eq!(nbd.read(4096, data.len()).unwrap(), data);
    assert_eq!(nbd.read(0, 3).unwrap(), b"fua");
    nbd.trim(4096, 32768).unwrap();
    assert_eq!(nbd.read(4096, 32768).unwrap(), vec![0; 32768]);
    nbd.zero(4096 + 32768, 1000).unwrap();
    assert_eq!(nbd.read(4096 + 32768, 1000).unwrap(), vec![0; 1000]);
    nbd.zero_with(0, 3, ZeroFlags { no_hole: true, fua: true, ..Default::default() }).unwrap();
    assert_eq!(nbd.read(0, 3).unwrap(), [0; 3]);
    nbd.cache(0, 65536).unwrap();
    let mut buf = [1u8; 10];
    nbd.read_into(4096 + 32768 + 1000, &mut buf).unwrap();
    assert_eq!(buf[..], data[32768 + 1000..32768 + 1010]);
}

#[test]
fn block_status_shows_holes_and_data() {
    let disk = memory("size=1M");
    let mut nbd = disk.connect().unwrap();
    nbd.write(256 << 10, &[7u8; 4096]).unwrap();
    let ext = nbd.extents(0, 1 << 20).unwrap();
    assert_eq!(ext.first().unwrap().offset, 0);
    let end = ext.last().map(|e| e.offset + e.length).unwrap();
    assert!(end >= 1 << 20, "{ext:?}");
    for w in ext.windows(2) {
        assert_eq!(w[0].offset + w[0].length, w[1].offset, "{ext:?}");
    }
    let at = |off: u64| *ext.iter().find(|e| e.offset <= off && off < e.offset + e.length).unwrap();
    assert!(at(0).is_hole() && at(0).is_zero(), "{ext:?}");
    assert!(!at(256 << 10).is_hole() && !at(256 << 10).is_zero(), "{ext:?}");
}

#[test]
fn server_errors_carry_the_errno() {
    let disk = memory("size=1M");
    let mut nbd = disk.connect().unwrap();
    let err = nbd.read((1 << 20) - 1, 2).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    // The connection goes on after an error.
    assert_eq!(nbd.read(0, 2).unwrap(), [0, 0]);
    let ro = CaptiveDisk::builder("memory").arg("size=1M").readonly().start().unwrap();
    let mut nbd = ro.connect().unwrap();
    assert_eq!(nbd.write(0, b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
}

#[test]
fn large_requests_are_split() {
    let disk = memory("size=100M");
    let mut nbd = disk.connect().unwrap();
    let big: Vec<u8> = (0..(70u32 << 20)).map(|i| (i >> 12) as u8).collect();
    nbd.write(1 << 20, &big).unwrap();
    assert!(nbd.read(1 << 20, big.len()).unwrap() == big);
    nbd.zero(0, 100 << 20).unwrap();
    assert!(nbd.read(50 << 20, 1 << 20).unwrap().iter().all(|&b| b == 0));
}

#[test]
fn simple_replies_without_structured_reply() {
    let disk =
        CaptiveDisk::builder("pattern").arg("size=1M").server_arg("--no-sr").start().unwrap();
    let mut nbd = disk.connect().unwrap();
    assert_eq!(nbd.read(64, 8).unwrap(), 64u64.to_be_bytes());
    assert!(nbd.block_status(0, 4096).is_err());
}

#[test]
fn oldstyle_servers_work() {
    let disk = CaptiveDisk::builder("pattern")
        .arg("size=1M")
        .server_arg("--oldstyle")
        .tcp()
        .start()
        .unwrap();
    let mut nbd = disk.connect().unwrap();
    assert_eq!(nbd.size(), 1 << 20);
    assert_eq!(nbd.read(8, 8).unwrap(), 8u64.to_be_bytes());
}

#[test]
fn connect_by_uri_unix_and_tcp() {
    let unix = CaptiveDisk::builder("pattern").arg("size=1M").export_name("x y").start().unwrap();
    let mut a = Client::connect_uri(unix.uri()).unwrap();
    assert_eq!(a.info().name, "x y");
    assert_eq!(a.read(24, 8).unwrap(), 24u64.to_be_bytes());
    let tcp = CaptiveDisk::builder("pattern").arg("size=1M").tcp().start().unwrap();
    let mut b = Client::connect_uri(tcp.uri()).unwrap();
    assert_eq!(b.read(32, 8).unwrap(), 32u64.to_be_bytes());
    b.disconnect().unwrap();
    assert!(Client::connect_uri("nbds://127.0.0.1/").is_err());
}

#[test]
fn extended_headers_make_one_request_of_any_length() {
    let disk = memory("size=8G");
    let mut nbd = disk.connect().unwrap();
    assert!(nbd.extended_headers());
    nbd.write(0, &[9u8; 4096]).unwrap();
    nbd.write((6 << 30) - 4096, &[9u8; 4096]).unwrap();
    // One request each, far past what a 32-bit length can say.
    nbd.zero(4096, 5 << 30).unwrap();
    let ext = nbd.block_status(0, 8 << 30).unwrap();
    assert!(ext.iter().any(|e| e.length > u64::from(u32::MAX)), "{ext:?}");
    assert_eq!(nbd.read(0, 4096).unwrap(), vec![9; 4096]);
    assert_eq!(nbd.read((6 << 30) - 4096, 4096).unwrap(), vec![9; 4096]);
    // Reads of holes come back as zeroes.
    assert_eq!(nbd.read(1 << 30, 1 << 20).unwrap(), vec![0; 1 << 20]);

    // Compact headers on request, against the same server.
    let options = nbdkit_test::ClientOptions { extended_headers: false };
    let mut compact = Client::connect_unix_with(disk.socket().unwrap(), "", &options).unwrap();
    assert!(!compact.extended_headers());
    assert_eq!(compact.read((6 << 30) - 4096, 4096).unwrap(), vec![9; 4096]);
    let ext = compact.block_status(0, 8 << 30).unwrap();
    assert!(ext.iter().all(|e| e.length <= u64::from(u32::MAX)), "{ext:?}");
}

#[test]
fn c_nbdkit_gets_compact_headers() {
    if !std::path::Path::new("/usr/bin/nbdkit").exists() {
        assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "C nbdkit is required under CI");
        return;
    }
    let disk =
        CaptiveDisk::builder("memory").arg("size=1M").binary("/usr/bin/nbdkit").start().unwrap();
    let mut nbd = disk.connect().unwrap();
    assert!(!nbd.extended_headers());
    nbd.zero(0, 1 << 20).unwrap();
    assert_eq!(nbd.read(0, 512).unwrap(), vec![0; 512]);
}
