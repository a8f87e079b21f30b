//! The info plugin: every mode compared with C nbdkit (export names plain
//! and base64, client addresses over Unix, TCP and `-s`, time stamps).

use std::process::Command;

use crate::util::*;

/// nbdsh: open each export name on its own connection and print what the
/// disk holds (or that the server refused the name).
fn open_each(names: &str) -> String {
    format!(
        r#"nbdsh -c "
for name in {names}:
    g = nbd.NBD()
    g.set_export_name(name)
    try:
        g.connect_unix('$unixsocket')
    except nbd.Error:
        print(repr(name), 'refused')
        continue
    n = g.get_size()
    print(repr(name), n, g.pread(n, 0) if n else b'', g.can_multi_conn(), g.is_read_only())
""#
    )
}

#[test]
fn export_names_same_as_c_nbdkit() {
    let names = r#"['', 'hello', 'a/b c', 'h\u00e9llo \u2713', 'x' * 4096]"#;
    for mode in ["mode=exportname", "export-name", "EXPORTNAME"] {
        let out = assert_same_as_c(&["info", mode], &open_each(names), &["nbdsh"]);
        if let Some(out) = out {
            assert!(out.contains("'hello' 5 bytearray(b'hello') True True"), "{out}");
        }
    }
    assert_same_as_c(&["info"], DESCRIBE, &["nbdinfo", "nbdcopy"]);
}

#[test]
fn base64_export_names_same_as_c_nbdkit() {
    let names = r#"['', 'aGVsbG8=', 'aGVsbA==', 'YWJj', 'AAEC/w==', 'aGVs\nbG8=', 'aGVs bG8=',
        'aGVs\tbG8=', 'aGVs\x0bbG8=', '\r\naGVsbG8=\n', 'aGVsbG8=-junk', 'aGVsbG8', 'aGVsbA=',
        'aGVsbG8==', 'aGVsbB==', 'YQ=', 'Y=Q=', 'YQ==YQ==', 'aGVsbG8=x', '!!!!', 'a', '-aGVs',
        '\n', '====', 'a-b', '_-']"#;
    for mode in ["mode=base64exportname", "base64-export-name"] {
        let out = assert_same_as_c(&["info", mode], &open_each(names), &["nbdsh"]);
        if let Some(out) = out {
            assert!(out.contains("'AAEC/w==' 4 bytearray(b'\\x00\\x01\\x02\\xff')"), "{out}");
            assert!(out.contains("'aGVsbG8' refused"), "{out}");
        }
    }
}

#[test]
fn base64_names_that_do_not_decode_are_refused() {
    let d = nbdkit_test::CaptiveDisk::builder("info")
        .arg("mode=base64exportname")
        .export_name("aGVsbG8=")
        .binary(bin())
        .start()
        .unwrap();
    let mut c = d.connect().unwrap();
    assert_eq!(c.read(0, 5).unwrap(), b"hello");
    let sock = d.socket().unwrap();
    assert!(nbdkit_test::Client::connect_unix(sock, "aGVsbG8").is_err());
    assert!(nbdkit_test::Client::connect_unix(sock, "YWJj").is_ok());
}

#[test]
fn address_over_a_unix_socket_and_stdio_same_as_c_nbdkit() {
    let script = r#"nbdcopy "$uri" - && echo && nbdinfo "$uri" | grep multi_conn"#;
    let out = assert_same_as_c(&["info", "address"], script, &["nbdinfo", "nbdcopy"]);
    if let Some(out) = out {
        assert!(out.contains("unix\n"), "{out}");
    }
    // -s: libnbd runs the server on a socketpair, a Unix socket too.
    if !have("nbdsh") {
        return;
    }
    for nbdkit in [Some(bin()), c_nbdkit()].into_iter().flatten() {
        let cmd = format!(
            r#"nbdsh -c "h.connect_command(['{}', '-s', 'info', 'mode=address']); print(h.pread(h.get_size(), 0))""#,
            nbdkit.display()
        );
        let out = sh(&cmd);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "bytearray(b'unix')\n",
            "{}: {}",
            nbdkit.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Serve `info address` on TCP at `host` with `nbdkit`; connect from
/// Python and check the disk holds the client's own address.
fn tcp_address(nbdkit: &std::path::Path, host: &str) -> String {
    let port = std::net::TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port();
    let script = format!(
        r#"nbdsh -c "
import socket
s = socket.create_connection(('{host}', {port}))
me = s.getsockname()
want = ('[%s]:%d' if ':' in me[0] else '%s:%d') % (me[0], me[1])
h.connect_socket(s.detach())
got = h.pread(h.get_size(), 0).decode()
print(got == want, got.startswith('{}'), h.can_multi_conn())
""#,
        if host.contains(':') { "[" } else { host }
    );
    let out = Command::new(nbdkit)
        .args(["-i", host, "-p", &port.to_string(), "info", "mode=address"])
        .args(["--run", &script])
        .env("PATH", path_env())
        .output()
        .unwrap();
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

#[test]
fn address_over_tcp_same_as_c_nbdkit() {
    if !have("nbdsh") {
        return;
    }
    let mut hosts = vec!["127.0.0.1"];
    if std::net::TcpListener::bind("[::1]:0").is_ok() {
        hosts.push("::1");
    }
    for host in hosts {
        let ours = tcp_address(&bin(), host);
        assert_eq!(ours, "True True False\n", "{host}");
        if let Some(c) = c_nbdkit() {
            assert_eq!(tcp_address(&c, host), ours, "C, {host}");
        }
    }
}

#[test]
fn time_modes_same_as_c_nbdkit() {
    let script = r#"nbdsh -u "$uri" -c "
import time
def stamp():
    b = h.pread(12, 0)
    return int.from_bytes(b[:8], 'big', signed=True) + int.from_bytes(b[8:], 'big', signed=True) / 1e6
print(h.get_size(), h.can_multi_conn(), h.is_read_only(), h.can_cache())
a = stamp()
time.sleep(0.3)
b = stamp()
print(0.25 < b - a < 5)
print(abs(b - time.time()) < 60, b < 60)
print(h.pread(4, 8)[0] == 0)
""#;
    let outs: Vec<_> = ["time", "uptime", "mode=CONNTIME"]
        .iter()
        .filter_map(|m| assert_same_as_c(&["info", m], script, &["nbdsh"]))
        .collect();
    if let [time, uptime, conntime] = &outs[..] {
        assert_eq!(time, "status Some(0)\n12 False True True\nTrue\nTrue False\nTrue\n");
        assert_eq!(uptime, "status Some(0)\n12 False True True\nTrue\nFalse True\nTrue\n");
        assert_eq!(conntime, uptime);
    }
}

#[test]
fn conntime_starts_at_the_open_and_uptime_at_start_up() {
    let d = disk(&["info", "uptime"]);
    let e = disk(&["info", "conntime"]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let secs = |b: Vec<u8>| {
        let s = i64::from_be_bytes(b[..8].try_into().unwrap()) as f64;
        s + i32::from_be_bytes(b[8..].try_into().unwrap()) as f64 / 1e6
    };
    let up = secs(d.connect().unwrap().read(0, 12).unwrap());
    let conn = secs(e.connect().unwrap().read(0, 12).unwrap());
    assert!(up >= 0.5, "{up}");
    assert!(conn < 0.5, "{conn}");
}

#[test]
fn dump_plugin_says_address_and_base64_work() {
    let out = nbdkit().args(["info", "--dump-plugin"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\ninfo_address=yes\n"), "{text}");
    assert!(text.contains("\ninfo_base64=yes\n"), "{text}");
    assert!(text.contains("\nmagic_config_key=mode\n"), "{text}");
}

#[rstest::rstest]
#[case(&["info", "mode=bogus"], "info: unknown mode: 'bogus'")]
#[case(&["info", "exportname", "size=1"], "info: unknown parameter 'size'")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    assert_refused(args, msg);
}
