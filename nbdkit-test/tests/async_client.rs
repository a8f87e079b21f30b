//! The async client: many requests in flight, errors with their errno.

use nbdkit_test::nbdkit::Errno;
use nbdkit_test::{AsyncClient, CaptiveDisk, MemoryDisk, RustDisk};

#[tokio::test]
async fn many_requests_in_flight_against_the_embedded_server() {
    let disk = CaptiveDisk::new(["memory", "size=1M"]).unwrap();
    let nbd =
        std::sync::Arc::new(AsyncClient::connect_unix(disk.socket().unwrap(), "").await.unwrap());
    assert_eq!(nbd.size(), 1 << 20);
    assert!(!nbd.read_only());
    // 64 writes sent at once, from as many tasks.
    let writes: Vec<_> = (0..64u64)
        .map(|i| {
            let nbd = nbd.clone();
            tokio::spawn(async move { nbd.write(i * 4096, &[i as u8; 4096]).await })
        })
        .collect();
    for w in writes {
        w.await.unwrap().unwrap();
    }
    nbd.flush().await.unwrap();
    for i in [0u64, 17, 63] {
        assert_eq!(nbd.read(i * 4096, 4096).await.unwrap(), vec![i as u8; 4096]);
    }
    nbd.zero(0, 4096).await.unwrap();
    assert_eq!(nbd.read(0, 8).await.unwrap(), vec![0; 8]);
    // The memory plugin reports the trimmed range as a hole.
    nbd.trim(1 << 19, 1 << 19).await.unwrap();
    let ext = nbd.block_status(1 << 19, 1 << 19).await.unwrap();
    assert_eq!(ext[0].1 & 1, 1, "{ext:?}");
    // The blocking client sees the same disk.
    assert_eq!(disk.connect().unwrap().read(17 * 4096, 1).unwrap(), [17]);
    std::sync::Arc::into_inner(nbd).unwrap().disconnect().await;
}

#[tokio::test]
async fn errors_come_back_with_their_errno_from_a_rust_disk() {
    let disk = RustDisk::new(MemoryDisk::new(8192).on_write(|offset, _| {
        if offset >= 4096 {
            Err(Errno::NoSpc)
        } else {
            Ok(())
        }
    }))
    .unwrap();
    let nbd = AsyncClient::connect_unix(disk.socket(), "").await.unwrap();
    let (a, b) = tokio::join!(nbd.write(0, b"fits"), nbd.write(4096, b"full"));
    a.unwrap();
    assert_eq!(b.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(nbd.read(0, 4).await.unwrap(), b"fits");
    // Past the end: the server refuses it before the plugin.
    assert!(nbd.read(8190, 4).await.is_err());
}

#[tokio::test]
async fn extended_headers_carry_64_bit_lengths() {
    let disk = CaptiveDisk::new(["memory", "size=8G"]).unwrap();
    let nbd = AsyncClient::connect_unix(disk.socket().unwrap(), "").await.unwrap();
    assert!(nbd.export().extended);
    nbd.write(6 << 30, &[5; 512]).await.unwrap();
    nbd.zero(0, 6 << 30).await.unwrap();
    let ext = nbd.block_status(0, 8 << 30).await.unwrap();
    assert_eq!(ext[0], (6 << 30, 3), "{ext:?}"); // hole and zero, past 4 GiB
    assert_eq!(nbd.read(6 << 30, 512).await.unwrap(), vec![5; 512]);
    nbd.disconnect().await;
}
