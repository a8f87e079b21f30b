//! TLS: X.509 certificates (with and without client verification) and PSK,
//! through libnbd's clients (nbdinfo, nbdcopy, nbdsh) and qemu-img, over
//! TLS 1.3 and 1.2; the refusals; STARTTLS on the wire; start-up errors.
//!
//! The credentials are made at test time with certtool and psktool (gnutls-bin)
//! and never committed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::util::*;

/// Throwaway credentials, made once per test run.
struct Creds {
    /// ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem,
    /// client-key.pem.
    certs: PathBuf,
    /// Only ca-cert.pem: a client with no certificate of its own.
    ca_only: PathBuf,
    /// `alice:KEY` (in a directory of its own, as qemu wants `keys.psk`).
    psk: PathBuf,
    /// `alice:` with another key.
    wrong_key: PathBuf,
    /// `bob:KEY`, a user the server does not know.
    unknown_user: PathBuf,
}

/// The credentials, or None (a failure under CI=true) without gnutls-bin.
fn creds() -> Option<&'static Creds> {
    static CREDS: OnceLock<Creds> = OnceLock::new();
    if !have("certtool") || !have("psktool") {
        return None;
    }
    Some(CREDS.get_or_init(make_creds))
}

fn make_creds() -> Creds {
    // Under cargo's per-target scratch space, made afresh by each run of
    // the suite (a directory per process, removed by the next run).
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tls");
    let _ = std::fs::remove_dir_all(&base);
    let root = base.join(std::process::id().to_string());
    let d = |n: &str| {
        let p = root.join(n);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let (certs, ca_only) = (d("certs"), d("ca-only"));
    let (psk, wrong, unknown) = (d("psk"), d("wrong"), d("unknown"));
    let script = format!(
        r#"set -e
cd {certs}
printf 'cn = Test CA\nca\ncert_signing_key\nexpiration_days = 30\n' > ca.info
printf 'cn = localhost\ndns_name = localhost\nip_address = 127.0.0.1\ntls_www_server\nencryption_key\nsigning_key\nexpiration_days = 30\n' > server.info
printf 'cn = client\ntls_www_client\nencryption_key\nsigning_key\nexpiration_days = 30\n' > client.info
certtool --generate-privkey --key-type=rsa --bits=2048 > ca-key.pem
certtool --generate-self-signed --load-privkey ca-key.pem --template ca.info --outfile ca-cert.pem
for who in server client; do
  certtool --generate-privkey --key-type=rsa --bits=2048 > $who-key.pem
  certtool --generate-certificate --load-ca-certificate ca-cert.pem --load-ca-privkey ca-key.pem \
    --load-privkey $who-key.pem --template $who.info --outfile $who-cert.pem
done
cp ca-cert.pem {ca_only}/
psktool -u alice -p {psk}/keys.psk
psktool -u alice -p {wrong}/keys.psk
psktool -u bob -p {unknown}/keys.psk
"#,
        certs = certs.display(),
        ca_only = ca_only.display(),
        psk = psk.display(),
        wrong = wrong.display(),
        unknown = unknown.display(),
    );
    let out = Command::new("sh").arg("-c").arg(&script).env("PATH", path_env()).output().unwrap();
    assert!(out.status.success(), "making credentials: {}", String::from_utf8_lossy(&out.stderr));
    Creds {
        certs,
        ca_only,
        psk: psk.join("keys.psk"),
        wrong_key: wrong.join("keys.psk"),
        unknown_user: unknown.join("keys.psk"),
    }
}

/// `nbdkit -U - ARGS --run SCRIPT`: (success, stdout, stderr). The script
/// sees `$CERTS`, `$CA_ONLY`, `$PSK` (the file), `$PSKDIR`, `$WRONG`,
/// `$UNKNOWN`, and a scratch directory `$T`.
fn captive(server: &Path, args: &[&str], script: &str) -> (bool, String, String) {
    let c = creds().expect("checked by the caller");
    let t = scratch();
    let out = Command::new(server)
        .args(["-U", "-"])
        .args(args)
        .arg("--run")
        .arg(script)
        .env("PATH", path_env())
        .env("CERTS", &c.certs)
        .env("CA_ONLY", &c.ca_only)
        .env("PSK", &c.psk)
        .env("PSKDIR", c.psk.parent().unwrap())
        .env("WRONG", &c.wrong_key)
        .env("UNKNOWN", &c.unknown_user)
        .env("T", t.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Like `captive` on our binary, asserting success.
fn ours(args: &[&str], script: &str) -> (String, String) {
    let (ok, out, err) = captive(&bin(), args, script);
    assert!(ok, "{args:?}\nstdout:\n{out}\nstderr:\n{err}");
    (out, err)
}

fn tools() -> bool {
    creds().is_some() && ["nbdinfo", "nbdcopy", "nbdsh", "qemu-img"].iter().all(|t| have(t))
}

fn certs_arg() -> String {
    format!("--tls-certificates={}", creds().unwrap().certs.display())
}

fn psk_arg() -> String {
    format!("--tls-psk={}", creds().unwrap().psk.display())
}

/// Writes 1 MiB of random data with one client and reads it back with the
/// others, comparing bytes: nbdcopy, qemu-img (in both directions), nbdsh.
/// `$QEMU_CREDS` is the qemu object for the credentials and `$QEMU_NBD` the
/// image options' TLS part.
const ROUND_TRIP: &str = r#"set -e
nbdinfo "$uri" | grep 'with TLS'
head -c 1048576 /dev/urandom > $T/in
nbdcopy $T/in "$uri"
nbdcopy "$uri" $T/out
cmp -n 1048576 $T/in $T/out
qemu-img convert --object "$QEMU_CREDS" --image-opts "driver=nbd,path=$unixsocket,tls-creds=tls0$QEMU_NBD" -O raw $T/qout
cmp -n 1048576 $T/in $T/qout
head -c 65536 /dev/urandom > $T/small
qemu-img convert -n --object "$QEMU_CREDS" -f raw $T/small --target-image-opts "driver=nbd,path=$unixsocket,tls-creds=tls0$QEMU_NBD"
nbdcopy "$uri" $T/back
cmp -n 65536 $T/small $T/back
nbdsh -c 'h.set_uri_allow_local_file(True)' -c "h.connect_uri('$uri')" \
  -c 'h.pwrite(b"over tls", 4096)' -c 'assert h.pread(8, 4096) == b"over tls"' -c 'print("nbdsh", h.get_tls_negotiated())'
"#;

/// [`ROUND_TRIP`] over TLS 1.3 and then 1.2 (qemu-img's priority chooses;
/// libnbd's clients get 1.3), with the server's session log checked.
fn round_trip(server_creds: &str, qemu_creds: &str, qemu_nbd: &str, auth: &str) {
    for (priority, version) in [("NORMAL", "TLSv1.3"), ("NORMAL:-VERS-TLS1.3", "TLSv1.2")] {
        let script = format!(
            "export QEMU_CREDS={qemu_creds},id=tls0,endpoint=client,priority={priority}\n\
             export QEMU_NBD={qemu_nbd}\n{ROUND_TRIP}"
        );
        let (out, err) = ours(
            &["--tls=require", server_creds, "-D", "nbdkit.tls.session=1", "-v", "memory", "4M"],
            &script,
        );
        assert!(out.contains("nbdsh True"), "{out}");
        assert!(err.contains(&format!("TLS session: {version}")), "{err}");
        assert!(err.contains(auth), "{err}");
    }
}

#[test]
fn x509_round_trip_tls13_and_tls12() {
    if !tools() {
        return;
    }
    let certs = creds().unwrap().certs.display().to_string();
    round_trip(
        &certs_arg(),
        &format!("tls-creds-x509,dir={certs}"),
        ",tls-hostname=localhost",
        "TLS: authentication: certificate",
    );
}

#[test]
fn psk_round_trip_tls13_and_tls12() {
    if !tools() {
        return;
    }
    round_trip(
        &psk_arg(),
        "tls-creds-psk,dir=$PSKDIR,username=alice",
        "",
        "TLS: PSK username: alice",
    );
}

#[test]
fn psk_wrong_key_and_unknown_user_are_refused() {
    if !tools() {
        return;
    }
    for (file, user) in [("$WRONG", "alice"), ("$UNKNOWN", "bob")] {
        let script = format!(
            r#"nbdinfo --size "nbds+unix://{user}@/?socket=$unixsocket&tls-psk-file={file}" && exit 1
nbdinfo --size "$uri""#
        );
        let (out, err) = ours(&["--tls=require", &psk_arg(), "memory", "1M"], &script);
        assert_eq!(out, "1048576\n");
        assert!(err.contains("nbdkit: error: TLS handshake:"), "{err}");
    }
}

#[test]
fn verify_peer_wants_a_client_certificate() {
    if !tools() {
        return;
    }
    // With one (libnbd finds client-cert.pem beside ca-cert.pem), data
    // goes both ways; without one, the handshake fails.
    let (out, err) = ours(
        &["--tls=require", &certs_arg(), "--tls-verify-peer", "memory", "1M"],
        r#"set -e
printf 'abc' | nbdcopy - "$uri"
nbdcopy "$uri" - | head -c 3; echo
! nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=$CA_ONLY"
"#,
    );
    assert_eq!(out, "abc\n");
    assert!(err.contains("peer did not return a certificate"), "{err}");
    // Without --tls-verify-peer, a client with no certificate is served.
    let (out, _) = ours(
        &["--tls=require", &certs_arg(), "memory", "1M"],
        r#"nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=$CA_ONLY""#,
    );
    assert_eq!(out, "1048576\n");
}

#[test]
fn tls_on_serves_plain_and_tls_clients() {
    if !tools() {
        return;
    }
    let (out, _) = ours(
        &["--tls=on", &certs_arg(), "memory", "1M"],
        r#"set -e
echo "tls=$tls uri=${uri%%:*}"
nbdinfo "$uri" | grep -o 'without TLS'
nbdinfo "nbds+unix:///?socket=$unixsocket&tls-certificates=$CERTS" | grep -o 'with TLS'
"#,
    );
    assert_eq!(out, "tls=1 uri=nbd+unix\nwithout TLS\nwith TLS\n");
}

#[test]
fn tls_require_refuses_plain_clients() {
    if !tools() {
        return;
    }
    let (out, _) = ours(
        &["--tls=require", &psk_arg(), "memory", "1M"],
        r#"nbdinfo --size "nbd+unix:///?socket=$unixsocket" 2>&1 | grep -o 'server requires TLS'"#,
    );
    assert_eq!(out, "server requires TLS\n");
    // On the wire: every option but STARTTLS and ABORT is refused with
    // TLS_REQD, and the client can still go on.
    let c = creds().unwrap();
    let srv = Server::start(&[
        "--tls=require",
        &format!("--tls-psk={}", c.psk.display()),
        "memory",
        "1M",
    ]);
    let mut r = Raw::new(srv.connect());
    r.hello();
    for opt in [OPT_LIST, OPT_STRUCTURED_REPLY, OPT_INFO, OPT_GO, 42] {
        let data: &[u8] = if matches!(opt, OPT_INFO | OPT_GO) { &[0; 6] } else { &[] };
        r.option(opt, data);
        assert_eq!(r.opt_reply(opt).0, REP_ERR_TLS_REQD, "option {opt}");
    }
    r.option(OPT_ABORT, b"");
    assert_eq!(r.opt_reply(OPT_ABORT).0, REP_ACK);
    // EXPORT_NAME has no error reply: the server hangs up.
    let mut r = Raw::new(srv.connect());
    r.hello();
    r.option(OPT_EXPORT_NAME, b"");
    let mut rest = Vec::new();
    assert_eq!(r.s.read_to_end(&mut rest).unwrap(), 0);
}

/// STARTTLS by hand, then a TLS session over the same socket with a PSK.
fn starttls(r: &mut Raw, psk: &Path) -> openssl::ssl::SslStream<UnixStream> {
    let line = std::fs::read_to_string(psk).unwrap();
    let (user, hex) = line.trim().split_once(':').unwrap();
    let key: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let user = user.to_string();
    let mut b = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    b.set_psk_client_callback(move |_, _, id, out| {
        id[..user.len()].copy_from_slice(user.as_bytes());
        id[user.len()] = 0;
        out[..key.len()].copy_from_slice(&key);
        Ok(key.len())
    });
    b.set_ciphersuites("TLS_AES_128_GCM_SHA256").unwrap();
    let cfg = b.build().configure().unwrap().verify_hostname(false);
    cfg.connect("localhost", r.s.try_clone().unwrap()).unwrap()
}

fn tls_option(s: &mut impl Write, opt: u32, data: &[u8]) {
    let mut b = IHAVEOPT.to_be_bytes().to_vec();
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    s.write_all(&b).unwrap();
}

fn tls_reply(s: &mut impl Read, opt: u32) -> (u32, Vec<u8>) {
    let mut h = [0u8; 20];
    s.read_exact(&mut h).unwrap();
    assert_eq!(u64::from_be_bytes(h[0..8].try_into().unwrap()), REP_MAGIC);
    assert_eq!(u32::from_be_bytes(h[8..12].try_into().unwrap()), opt);
    let mut d = vec![0; u32::from_be_bytes(h[16..20].try_into().unwrap()) as usize];
    s.read_exact(&mut d).unwrap();
    (u32::from_be_bytes(h[12..16].try_into().unwrap()), d)
}

#[test]
fn starttls_forgets_the_plain_phase_and_what_was_injected() {
    let Some(c) = creds() else { return };
    let srv =
        Server::start(&["--tls=on", &format!("--tls-psk={}", c.psk.display()), "memory", "1M"]);
    let mut r = Raw::new(srv.connect());
    r.hello();
    // Structured replies in the clear: forgotten once TLS is up.
    r.option(OPT_STRUCTURED_REPLY, b"");
    assert_eq!(r.opt_reply(OPT_STRUCTURED_REPLY).0, REP_ACK);
    // STARTTLS with an option injected right behind it, before the TLS
    // hello: read as TLS, it would break the handshake.
    let mut both = Vec::new();
    for (opt, data) in [(OPT_STARTTLS, &b""[..]), (OPT_GO, &[0u8; 6][..])] {
        both.extend_from_slice(&IHAVEOPT.to_be_bytes());
        both.extend_from_slice(&opt.to_be_bytes());
        both.extend_from_slice(&(data.len() as u32).to_be_bytes());
        both.extend_from_slice(data);
    }
    r.send(&both);
    assert_eq!(r.opt_reply(OPT_STARTTLS).0, REP_ACK);
    let mut t = starttls(&mut r, &c.psk);
    // Under TLS: SET_META_CONTEXT needs structured replies again.
    let mut q = 0u32.to_be_bytes().to_vec();
    q.extend_from_slice(&1u32.to_be_bytes());
    q.extend_from_slice(&15u32.to_be_bytes());
    q.extend_from_slice(b"base:allocation");
    tls_option(&mut t, OPT_SET_META_CONTEXT, &q);
    assert_eq!(tls_reply(&mut t, OPT_SET_META_CONTEXT).0, REP_ERR_INVALID);
    // A second STARTTLS is refused; then the export is served.
    tls_option(&mut t, OPT_STARTTLS, b"");
    assert_eq!(tls_reply(&mut t, OPT_STARTTLS).0, REP_ERR_INVALID);
    tls_option(&mut t, OPT_GO, &[0; 6]);
    let (typ, info) = tls_reply(&mut t, OPT_GO);
    assert_eq!(typ, REP_INFO);
    assert_eq!(u64::from_be_bytes(info[2..10].try_into().unwrap()), 1 << 20);
    assert_eq!(tls_reply(&mut t, OPT_GO).0, REP_ACK);
    // A read in transmission, under TLS.
    let mut req = REQUEST_MAGIC.to_be_bytes().to_vec();
    req.extend_from_slice(&0u16.to_be_bytes());
    req.extend_from_slice(&CMD_READ.to_be_bytes());
    req.extend_from_slice(&7u64.to_be_bytes());
    req.extend_from_slice(&0u64.to_be_bytes());
    req.extend_from_slice(&512u32.to_be_bytes());
    t.write_all(&req).unwrap();
    let mut rep = [0u8; 16 + 512];
    t.read_exact(&mut rep).unwrap();
    assert_eq!(u32::from_be_bytes(rep[0..4].try_into().unwrap()), SIMPLE_REPLY_MAGIC);
    assert_eq!(u32::from_be_bytes(rep[4..8].try_into().unwrap()), 0);
    assert_eq!(u64::from_be_bytes(rep[8..16].try_into().unwrap()), 7);
}

#[test]
fn tls_over_tcp_and_stdin() {
    if !tools() {
        return;
    }
    let c = creds().unwrap();
    let out = Command::new(bin())
        .args(["-p", "0", "-i", "127.0.0.1", "--tls=require", &certs_arg(), "memory", "1M"])
        .args(["--run", r#"echo "${uri%%:*}"; nbdinfo --size "$uri""#])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "nbds\n1048576\n");
    // -s: the client runs us with stdin/stdout as its connection.
    let py = format!(
        "h.set_tls(nbd.TLS_REQUIRE)\n\
         h.set_tls_psk_file({psk:?})\n\
         h.set_tls_username('alice')\n\
         h.connect_command([{bin:?}, '-s', '--tls=require', '--tls-psk={psk}', 'memory', '1M'])\n\
         print(h.get_size(), h.get_tls_negotiated())",
        psk = c.psk.display().to_string(),
        bin = bin().display().to_string(),
    );
    let out = Command::new("nbdsh").arg("-c").arg(py).env("PATH", path_env()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1048576 True\n");
}

#[test]
fn captive_variables_and_print_uri() {
    let Some(c) = creds() else { return };
    let (out, _) = ours(&["--tls=require", &certs_arg(), "null"], r#"echo "$tls $uri""#);
    let certs = c.certs.canonicalize().unwrap();
    assert!(out.starts_with("2 nbds+unix:///?socket="), "{out}");
    assert!(out.trim_end().ends_with(&format!("&tls-certificates={}", certs.display())), "{out}");
    let (out, _) = ours(&["--tls=require", &psk_arg(), "null"], r#"echo "$tls $uri""#);
    let psk = c.psk.canonicalize().unwrap();
    assert!(out.starts_with("2 nbds+unix://alice@/?socket="), "{out}");
    assert!(out.trim_end().ends_with(&format!("&tls-psk-file={}", psk.display())), "{out}");
    let srv = Server::start(&["--tls=require", &psk_arg(), "null"]);
    assert!(srv.uri.starts_with("nbds+unix://alice@/?socket="), "{}", srv.uri);
    // Off: no $tls at all, as in C.
    let (out, _) = ours(&["--tls=off", &psk_arg(), "null"], r#"echo "${tls-unset} ${uri%%:*}""#);
    assert_eq!(out, "unset nbd+unix\n");
}

#[test]
fn plugins_see_whether_the_client_uses_tls() {
    if !tools() {
        return;
    }
    // sh: list_exports, default_export and open get the TLS flag.
    let t = scratch();
    let script = t.path().join("tls.sh");
    write_executable(
        &script,
        r#"case "$1" in
  list_exports) echo "list-$3" ;;
  default_export) echo "default-$3" ;;
  open) echo "$4" > "$(dirname "$0")/open-$4" ;;
  get_size) echo 512 ;;
  pread) head -c $3 /dev/zero ;;
  *) exit 2 ;;
esac"#,
    );
    let (out, _) = ours(
        &["--tls=on", &certs_arg(), "sh", script.to_str().unwrap()],
        r#"set -e
tls="nbds+unix:///?socket=$unixsocket&tls-certificates=$CERTS"
nbdinfo --list "$uri" | grep -o 'export="[a-z-]*"'
nbdinfo --list "$tls" | grep -o 'export="[a-z-]*"'
nbdinfo "$uri" | grep -o 'export="[a-z-]*"'
nbdinfo "$tls" | grep -o 'export="[a-z-]*"'
"#,
    );
    assert_eq!(
        out,
        "export=\"list-false\"\nexport=\"list-true\"\nexport=\"default-false\"\nexport=\"default-true\"\n"
    );
    assert!(t.path().join("open-false").exists() && t.path().join("open-true").exists());
}

#[test]
fn tls_fallback_serves_plain_clients_a_readme() {
    if !tools() {
        return;
    }
    let (out, _) = ours(
        &["--tls=on", &certs_arg(), "--filter=tls-fallback", "pattern", "1M", "tlsreadme=Use TLS!"],
        r#"set -e
nbdinfo --size "$uri"
nbdcopy "$uri" - | head -c 8; echo
nbdinfo "$uri" | grep -o 'is_read_only: true'
nbdinfo --size "nbds+unix:///?socket=$unixsocket&tls-certificates=$CERTS"
nbdcopy "nbds+unix:///?socket=$unixsocket&tls-certificates=$CERTS" - | od -An -tx1 -N16 | tr -d ' \n'; echo
"#,
    );
    assert_eq!(
        out,
        "512\nUse TLS!\nis_read_only: true\n1048576\n00000000000000000000000000000008\n"
    );
}

#[test]
fn bad_configuration_is_one_line_naming_the_file() {
    let Some(c) = creds() else { return };
    let t = scratch();
    let dir = t.path();
    // A key that is not the certificate's.
    for f in ["ca-cert.pem", "server-cert.pem"] {
        std::fs::copy(c.certs.join(f), dir.join(f)).unwrap();
    }
    std::fs::copy(c.certs.join("client-key.pem"), dir.join("server-key.pem")).unwrap();
    let arg = format!("--tls-certificates={}", dir.display());
    refused(&["-U", "-"], &["--tls=require", &arg, "null"], "does not match the certificate");
    // A key that is not a key.
    std::fs::write(dir.join("server-key.pem"), "not a key\n").unwrap();
    refused(
        &["-U", "-"],
        &["--tls=on", &arg, "null"],
        "server-key.pem: cannot load the private key",
    );
    // A missing file in a directory that was named.
    std::fs::remove_file(dir.join("ca-cert.pem")).unwrap();
    refused(&["-U", "-"], &["--tls=on", &arg, "null"], "ca-cert.pem: No such file");
    // A PSK file with a bad line.
    let psk = dir.join("bad.psk");
    std::fs::write(&psk, "alice:00ff\nbob\n").unwrap();
    let arg = format!("--tls-psk={}", psk.display());
    refused(
        &["-U", "-"],
        &["--tls=require", &arg, "null"],
        "bad.psk: line 2: expected username:hexkey",
    );
    std::fs::write(&psk, "alice:0g\n").unwrap();
    refused(&["-U", "-"], &["--tls=require", &arg, "null"], "line 1: the key is not");
    // --tls=require with nothing to offer ($HOME has no certificates).
    let out = nbdkit()
        .env("HOME", dir)
        .args(["-U", "-", "--tls=require", "null", "--run", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(err.contains("--tls=require but could not load TLS certificates"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Plain --tls=on with nothing to offer warns, and serves in the clear.
    let out = nbdkit()
        .env("HOME", dir)
        .args(["-U", "-", "--tls=on", "null", "--run", r#"echo "${tls-unset}""#])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "unset\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning: --tls=on but could not load"));
}

#[test]
fn default_certificates_directory_is_searched() {
    let Some(c) = creds() else { return };
    // Not as root (root's directory is /etc/pki/nbdkit): as nobody, whose
    // $HOME is ours to choose.
    if !have("setpriv") {
        return;
    }
    let home = scratch();
    let pki = home.path().join(".pki/nbdkit");
    std::fs::create_dir_all(&pki).unwrap();
    for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        std::fs::copy(c.certs.join(f), pki.join(f)).unwrap();
    }
    let world_readable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    for p in [home.path(), &home.path().join(".pki"), &pki] {
        world_readable(p);
    }
    for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
        world_readable(&pki.join(f));
    }
    let as_nobody = |tls: &[&str]| {
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args(["-U", "-"])
            .args(tls)
            .args(["null", "--run", r#"echo "${tls-unset}""#])
            .env("HOME", home.path())
            .env("TMPDIR", "/tmp")
            .env("PATH", path_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // Without --tls, C's default is on: found, so TLS is offered.
    assert_eq!(as_nobody(&[]), "1\n");
    assert_eq!(as_nobody(&["--tls=require"]), "2\n");
    assert_eq!(as_nobody(&["--tls=off"]), "unset\n");
}

#[test]
fn debug_flags_and_dump_config() {
    if !tools() {
        return;
    }
    let (_, err) = ours(
        &["--tls=require", &psk_arg(), "-D", "nbdkit.tls.log=1", "-v", "null"],
        r#"nbdinfo --size "$uri""#,
    );
    assert!(err.contains("TLS handshake completed"), "{err}");
    assert!(!err.contains("was not used"), "{err}");
    let out = nbdkit().arg("--dump-config").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("\ntls=yes\n"));
}

#[test]
fn same_as_c_over_tls() {
    if !tools() {
        return;
    }
    let Some(cbin) = c_nbdkit() else { return };
    // C's $uri names no credentials: both are given the same URI by hand.
    let script = r#"u="nbds+unix:///?socket=$unixsocket&tls-certificates=$CERTS"
nbdinfo "$u" | grep -v uri:
nbdinfo "nbd+unix:///?socket=$unixsocket" >/dev/null 2>&1; echo "plain: $?"
nbdcopy "$u" - | sha256sum"#;
    let args = ["--tls=require", &certs_arg(), "pattern", "1M"];
    let (ok, theirs, err) = captive(&cbin, &args, script);
    assert!(ok, "{err}");
    let (mine, _) = ours(&args, script);
    assert_eq!(mine, theirs);
}

fn write_executable(p: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn file_reads_over_tls_are_encrypted_copies_not_sent_from_the_page_cache() {
    if !tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("data.img");
    let data: Vec<u8> = (0..4u32 << 20).map(|i| (i * 13 + i / 4096) as u8).collect();
    std::fs::write(&img, &data).unwrap();
    let (out, err) = ours(
        &["-v", "--tls=require", &psk_arg(), "file", img.to_str().unwrap()],
        &format!("set -e\nnbdcopy \"$uri\" $T/out\ncmp $T/out {} && echo same\n", img.display()),
    );
    assert_eq!(out, "same\n");
    assert!(err.contains("pread count=262144"), "{err}");
    assert!(!err.contains("page cache"), "{err}");
}
