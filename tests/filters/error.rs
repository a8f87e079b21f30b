use nbdkit_test::client::ZeroFlags;

use crate::util::*;

fn start(args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder("memory")
        .filter("error")
        .arg("1M")
        .args(args)
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn does_nothing_until_a_rate_is_set() {
    let disk = start(&["error=ENOSPC"]);
    let mut c = disk.connect().unwrap();
    c.write(0, b"abc").unwrap();
    assert_eq!(c.read(0, 3).unwrap(), b"abc");
}

#[test]
fn each_method_can_be_targeted() {
    let errno = |r: std::io::Result<()>| r.unwrap_err().raw_os_error();
    for (m, e, n) in [
        ("pread", "EPERM", libc::EPERM),
        ("pwrite", "ENOSPC", libc::ENOSPC),
        ("trim", "ENOMEM", libc::ENOMEM),
        ("zero", "EINVAL", libc::EINVAL),
        ("extents", "ESHUTDOWN", libc::ESHUTDOWN),
        ("cache", "EIO", libc::EIO),
        ("flush", "ENOSPC", libc::ENOSPC),
    ] {
        let disk = start(&[&format!("error-{m}-rate=100%"), &format!("error-{m}={e}")]);
        let mut c = disk.connect().unwrap();
        let got = match m {
            "pread" => errno(c.read(0, 1).map(drop)),
            "pwrite" => errno(c.write(0, b"x")),
            "trim" => errno(c.trim(0, 4096)),
            "zero" => errno(c.zero_with(0, 4096, ZeroFlags::default())),
            "extents" => errno(c.block_status(0, 4096).map(drop)),
            "cache" => errno(c.cache(0, 4096)),
            _ => errno(c.flush()),
        };
        assert_eq!(got, Some(n), "{m}");
        // Only that method fails.
        if m != "pread" {
            c.read(0, 1).unwrap();
        }
        if m != "pwrite" {
            c.write(0, b"y").unwrap();
        }
    }
}

/// As in C: the general settings never reach flush, and extents errors
/// come only from a layer below that has extents (pattern has none).
#[test]
fn flush_and_extents_only_where_c_injects() {
    let disk = start(&["error-rate=100%"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(0, 1).unwrap_err().raw_os_error(), Some(libc::EIO));
    c.flush().unwrap();
    let disk = nbdkit_test::CaptiveDisk::builder("pattern")
        .filter("error")
        .args(["1M", "error-extents-rate=100%"])
        .binary(bin())
        .start()
        .unwrap();
    let ext = disk.connect().unwrap().block_status(0, 4096).unwrap();
    assert_eq!(ext.len(), 1, "{ext:?}");
}

#[test]
fn the_error_file_switches_errors_on_and_off() {
    let dir = tempfile::tempdir().unwrap();
    let trigger = dir.path().join("trigger");
    let disk = start(&["error-rate=1", &format!("error-file={}", trigger.display())]);
    let mut c = disk.connect().unwrap();
    c.write(0, b"ok").unwrap();
    std::fs::write(&trigger, b"").unwrap();
    assert_eq!(c.read(0, 2).unwrap_err().raw_os_error(), Some(libc::EIO));
    std::fs::remove_file(&trigger).unwrap();
    assert_eq!(c.read(0, 2).unwrap(), b"ok");
}

#[test]
fn a_rate_of_one_half_fails_about_half() {
    let disk = start(&["error-pread-rate=0.5"]);
    let mut c = disk.connect().unwrap();
    let failed = (0..400).filter(|_| c.read(0, 512).is_err()).count();
    assert!((120..=280).contains(&failed), "{failed} of 400");
}

#[test]
fn injects_like_c_nbdkit() {
    if !have("nbdsh") {
        return;
    }
    let run = |nbdkit: &std::path::Path| {
        let out = sh(&format!(
            "{} -U - --filter=error memory 1M error-pread-rate=1 error-pread=ENOSPC --run 'nbdsh -u \"$uri\" -c \"
try:
    h.pread(1, 0)
except nbd.Error as e:
    print(e.errno)
h.pwrite(b\\\"x\\\", 0)
print(h.pread(1, 1))
\"' 2>/dev/null",
            nbdkit.display()
        ));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = run(&bin());
    assert!(ours.starts_with("ENOSPC\n"), "{ours}");
    if let Some(c) = c_nbdkit() {
        // C's pread after the write fails too (the rate is 1); so do ours.
        assert_eq!(ours, run(&c));
    }
}

#[rstest::rstest]
#[case(&["error=EFOO"], "error: error=EFOO: expected EPERM, EIO, ENOMEM, EINVAL, ENOSPC or ESHUTDOWN")]
#[case(&["error-rate=2"], "error: error-rate=2: expected a rate from 0 to 1, or 0% to 100%")]
#[case(&["error-zero-rate=often"], "error-zero-rate=often")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-", "--filter=error", "memory", "1M"], args, msg);
}
