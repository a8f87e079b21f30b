use crate::util::*;

/// A backend whose reads fail twice, then work.
fn flaky(extra: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("eval")
        .filter("retry-request")
        .args([
            "get_size=echo 1M",
            r#"pread=n=$(cat $tmpdir/n 2>/dev/null || echo 0); echo $((n+1)) > $tmpdir/n
                   [ $n -lt 2 ] && { echo "EIO flaky" >&2; exit 1; }
                   dd if=/dev/zero count=$3 iflag=count_bytes status=none"#,
            "retry-request-delay=50ms",
        ])
        .args(extra)
        .binary(bin())
        .start()
        .unwrap()
}

#[test]
fn a_request_is_retried_until_it_works() {
    let disk = flaky(&["retry-request-retries=3"]);
    assert_eq!(disk.connect().unwrap().read(0, 4).unwrap(), [0; 4]);
}

#[test]
fn it_gives_up_after_the_retries() {
    let disk = flaky(&["retry-request-retries=1"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(0, 4).unwrap_err().raw_os_error(), Some(libc::EIO));
    // The third try (the next request) works.
    assert_eq!(c.read(0, 4).unwrap(), [0; 4]);
}
