//! The nbd plugin: a proxy to another NBD server.

use std::time::{Duration, Instant};

use crate::util::*;

/// A backend server of ours.
fn backend(args: &[&str]) -> nbdkit_test::CaptiveDisk {
    disk(args)
}

fn proxy(args: &[&str]) -> nbdkit_test::CaptiveDisk {
    let mut all = vec!["nbd"];
    all.extend_from_slice(args);
    disk(&all)
}

#[test]
fn serves_what_the_backend_serves_like_c_nbdkit() {
    if !have("nbdinfo") || !have("nbdsh") || !have("nbdcopy") {
        return;
    }
    let cmd = r#"nbdinfo "$uri" | grep -v uri:
nbdsh -u "$uri" -c "h.pwrite(b'abc'*1000, 4096); print(h.pread(6, 4096)); h.zero(4096, 8192); h.trim(4096, 65536); h.flush()"
nbdinfo --map "$uri"
nbdcopy "$uri" - | sha256sum"#;
    let run = |nbdkit: &std::path::Path| {
        let back = backend(&["memory", "64M"]);
        let out = sh(&format!(
            "{} -U - nbd socket={} --run '{}'",
            nbdkit.display(),
            back.socket().unwrap().display(),
            cmd.replace('\'', "'\\''")
        ));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = run(&bin());
    assert!(ours.contains("bytearray(b'abcabc')"), "{ours}");
    if let Some(c) = c_nbdkit() {
        assert_eq!(ours, run(&c));
    }
}

#[test]
fn uri_hostname_and_export() {
    let back = nbdkit_test::CaptiveDisk::builder("pattern")
        .arg("1M")
        .export_name("e")
        .tcp()
        .binary(bin())
        .start()
        .unwrap();
    let port = back.port().unwrap().to_string();
    for args in [
        vec![back.uri().to_string()],
        vec!["hostname=127.0.0.1".into(), format!("port={port}"), "export=e".into()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let p = proxy(&args);
        let mut c = p.connect().unwrap();
        assert_eq!(c.size(), 1 << 20, "{args:?}");
        assert_eq!(c.read(800, 8).unwrap(), 800u64.to_be_bytes(), "{args:?}");
    }
}

#[test]
fn requests_stay_parallel_on_one_server_connection() {
    // Every read takes a second at the backend; two clients share one
    // backend connection (shared=true), so both reads are in flight on it
    // at once.
    let back = backend(&[
        "eval",
        "thread_model=echo parallel",
        "get_size=echo 1M",
        "pread=sleep 1; dd if=/dev/zero count=$3 iflag=count_bytes status=none",
    ]);
    let p = proxy(&[&format!("socket={}", back.socket().unwrap().display()), "shared=true"]);
    let mut a = p.connect().unwrap();
    let mut b = p.connect().unwrap();
    let t = Instant::now();
    let ta = std::thread::spawn(move || a.read(0, 512).unwrap());
    let tb = std::thread::spawn(move || b.read(512, 512).unwrap());
    assert_eq!(ta.join().unwrap(), vec![0; 512]);
    assert_eq!(tb.join().unwrap(), vec![0; 512]);
    assert!(t.elapsed() < Duration::from_millis(1900), "{:?}", t.elapsed());
}

#[test]
fn errors_come_through_with_their_errno() {
    let back = backend(&[
        "eval",
        "get_size=echo 1M",
        "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none",
        "pwrite=echo ENOSPC full >&2; exit 1",
    ]);
    let p = proxy(&[&format!("socket={}", back.socket().unwrap().display())]);
    let mut c = p.connect().unwrap();
    let e = c.write(0, b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(c.read(0, 2).unwrap(), [0, 0]);
}

#[test]
fn retry_waits_for_the_server_to_appear() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("later.sock");
    let p = nbdkit_test::CaptiveDisk::builder("nbd")
        .arg(format!("socket={}", sock.display()))
        .arg("retry=30")
        .verbose()
        .binary(bin())
        .start()
        .unwrap();
    let s = p.socket().unwrap().to_path_buf();
    let client = std::thread::spawn(move || {
        nbdkit_test::Client::connect_unix(s, "").map(|mut c| c.read(8, 8).unwrap())
    });
    // The proxy has failed at least once before the backend exists.
    assert!(wait_until(Duration::from_secs(20), || p.log().contains("retrying")), "{}", p.log());
    let _back = nbdkit_test::CaptiveDisk::builder("pattern")
        .arg("1M")
        .server_arg(format!("--unix={}", sock.display()))
        .binary(bin())
        .start();
    assert_eq!(client.join().unwrap().unwrap(), 8u64.to_be_bytes());
}

#[rstest::rstest]
#[case(&["nbd"], "exactly one of uri=, socket= or hostname= must be given")]
#[case(&["nbd", "socket=/a", "hostname=b"], "exactly one of uri=, socket= or hostname= must be given")]
#[case(&["nbd", "nbds://h/"], "TLS (nbds://) is not supported")]
#[case(&["nbd", "uri=nbd://h:x/"], "bad port")]
#[case(&["nbd", "socket=/a", "tls=on"], "this nbd plugin does not connect with TLS")]
#[case(&["nbd", "command=qemu-nbd"], "command= is not supported")]
#[case(&["nbd", "socket=/a", "retry=soon"], "retry=soon: not a number of seconds")]
#[case(&["nbd", "socket=/a", "shared=true", "dynamic-export=true"], "cannot be used together")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-"], args, msg);
}

/// `dynamic-export=true` passes the server's export list (and its name for
/// the default export) through; without it only `export=` is listed.
#[test]
fn dynamic_export_lists_the_servers_exports() {
    if !have("nbdinfo") || !have("jq") {
        return;
    }
    let back = backend(&[
        "eval",
        "list_exports=printf 'INTERLEAVED\\nfirst\\nthe first\\nsecond\\n\\n'",
        "default_export=echo first",
        "get_size=echo \"$2\" | wc -c",
        "open=echo \"$3\"",
    ]);
    let socket = format!("socket={}", back.socket().unwrap().display());
    let list = "nbdinfo --list --json \"$uri\" | jq -c '[.exports[] | [.\"export-name\", .description, .\"export-size\"]]'";
    let out = run_captive(&bin(), &["nbd", &socket, "dynamic-export=true"], list);
    assert_eq!(out, "status Some(0)\n[[\"first\",\"the first\",6],[\"second\",null,7]]\n");
    // The default export is the server's "first".
    let info = "nbdinfo --no-content \"$uri\" | grep export=";
    let out = run_captive(&bin(), &["nbd", &socket, "dynamic-export=true"], info);
    assert_eq!(out, "status Some(0)\nexport=\"first\":\n");
    // Without dynamic-export, just ours.
    let out = run_captive(&bin(), &["nbd", &socket, "export=second"], list);
    assert_eq!(out, "status Some(0)\n[[\"second\",null,7]]\n");
    // A server that lists only its default export.
    let plain = backend(&["memory", "1M"]);
    let socket = format!("socket={}", plain.socket().unwrap().display());
    let out = run_captive(&bin(), &["nbd", &socket, "dynamic-export=true"], list);
    assert_eq!(out, "status Some(0)\n[[\"\",null,1048576]]\n");
}
