//! Disks that require TLS: the URI and the credentials a client needs.

use std::process::Command;

use nbdkit_test::CaptiveDisk;

/// nbdinfo's answer for `uri`, or None without nbdinfo (a failure under
/// CI=true).
fn nbdinfo_size(uri: &str) -> Option<String> {
    let out = Command::new("nbdinfo").args(["--size", uri]).env("PATH", "/usr/bin:/bin").output();
    match out {
        Ok(o) => {
            assert!(o.status.success(), "nbdinfo: {}", String::from_utf8_lossy(&o.stderr));
            Some(String::from_utf8_lossy(&o.stdout).into_owned())
        }
        Err(_) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("nbdinfo is required under CI=true")
        }
        Err(_) => None,
    }
}

#[test]
fn a_psk_the_crate_makes_serves_tls_clients_and_goes_with_the_guard() {
    let disk = CaptiveDisk::builder("memory").arg("size=1M").tls_psk_new().start().unwrap();
    let tls = disk.tls().expect("a TLS disk");
    let psk = tls.psk_file().unwrap().to_path_buf();
    assert_eq!(tls.username(), Some(nbdkit_test::PSK_USERNAME));
    let line = std::fs::read_to_string(&psk).unwrap();
    let (user, key) = line.trim_end().split_once(':').unwrap();
    assert_eq!((user, key.len()), ("nbdkit-test", 64));
    assert!(disk.uri().starts_with("nbds+unix://nbdkit-test@/?socket="), "{}", disk.uri());
    assert!(disk.uri().ends_with(&format!("&tls-psk-file={}", psk.display())), "{}", disk.uri());
    if let Some(size) = nbdinfo_size(disk.uri()) {
        assert_eq!(size, "1048576\n");
    }
    // The crate's client does not speak TLS, and says so.
    let e = disk.connect().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::Unsupported);
    drop(disk);
    assert!(!psk.exists() && !psk.parent().unwrap().exists());
}

#[test]
fn a_psk_file_the_test_made_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mine.psk");
    std::fs::write(&file, "bob:000102030405060708090a0b0c0d0e0f\n").unwrap();
    let disk =
        CaptiveDisk::builder("pattern").arg("size=64K").tcp().tls_psk(&file).start().unwrap();
    assert_eq!(disk.tls().unwrap().username(), Some("bob"));
    let port = disk.port().unwrap();
    assert!(disk.uri().starts_with(&format!("nbds://bob@localhost:{port}/?tls-psk-file=")));
    if let Some(size) = nbdinfo_size(disk.uri()) {
        assert_eq!(size, "65536\n");
    }
    // A plain disk has no credentials.
    assert!(CaptiveDisk::new(["null"]).unwrap().tls().is_none());
}

#[test]
fn certificates_the_crate_makes_with_client_verification() {
    let disk = CaptiveDisk::builder("memory")
        .arg("size=1M")
        .tls_certificates_new()
        .server_arg("--tls-verify-peer")
        .start()
        .unwrap();
    let dir = disk.tls().unwrap().certificates().unwrap().to_path_buf();
    for f in
        ["ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem"]
    {
        assert!(dir.join(f).exists(), "{f}");
    }
    assert!(
        disk.uri().ends_with(&format!("&tls-certificates={}", dir.display())),
        "{}",
        disk.uri()
    );
    // libnbd checks the server's name and shows the client's certificate.
    if let Some(size) = nbdinfo_size(disk.uri()) {
        assert_eq!(size, "1048576\n");
    }
    drop(disk);
    assert!(!dir.exists());
}
