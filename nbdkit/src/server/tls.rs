//! TLS: the credentials loaded at start-up, and the upgrade of a connection
//! after NBD_OPT_STARTTLS (nbdkit-tls(1)).
//!
//! Two kinds of credentials, as in C nbdkit:
//! - X.509: `ca-cert.pem`, `server-cert.pem` and `server-key.pem` (and an
//!   optional `ca-crl.pem`) in `--tls-certificates=DIR`, or in
//!   `$HOME/.pki/nbdkit` then `$HOME/.config/pki/nbdkit` (as root,
//!   `/etc/pki/nbdkit`). `--tls-verify-peer` asks for a client certificate
//!   issued by that CA.
//! - PSK: `--tls-psk=FILE`, `username:hexkey` lines as psktool writes them.
//!
//! The library is OpenSSL, through the `openssl` crate (built from source
//! and linked statically by default: see the `vendored-openssl` feature):
//! it does both X.509 and PSK over TLS 1.2 and 1.3, interoperates with the
//! GnuTLS clients (libnbd, qemu), and its AES-GCM uses AES-NI. rustls has
//! no PSK.
//!
//! The stream under the TLS session is buffered both ways: a TLS record is
//! at most 16 KiB, and without the buffer each record would cost its own
//! system calls (two to read one: its header, then its body).

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openssl::pkey::PKey;
use openssl::ssl::{
    Ssl, SslAcceptor, SslContext, SslFiletype, SslMethod, SslMode, SslOptions, SslRef,
    SslVerifyMode, SslVersion,
};
use openssl::x509::store::{X509Lookup, X509StoreBuilder};
use openssl::x509::verify::X509VerifyFlags;
use openssl::x509::X509;
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio_openssl::SslStream;

use crate::error::StartError;
use crate::log::Log;

pub use crate::protocol::handshake::TlsMode;

/// The TLS options from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    /// `--tls`: whether TLS is offered, and whether it is required.
    pub mode: TlsMode,
    /// `--tls` was given explicitly (a failed `--tls=on` then warns).
    pub mode_given: bool,
    /// `--tls-certificates=DIR`: where the X.509 certificates are.
    pub certificates: Option<PathBuf>,
    /// `--tls-psk=FILE`: the pre-shared keys file (used instead of
    /// certificates).
    pub psk: Option<PathBuf>,
    /// `--tls-verify-peer`: require a client certificate issued by the CA.
    pub verify_peer: bool,
    /// `-D nbdkit.tls.log=N`: how much of each TLS handshake to log.
    pub debug_log: i32,
    /// `-D nbdkit.tls.session=1`: log each session's parameters.
    pub debug_session: bool,
}

/// What a client needs to reach a TLS server: goes into `$uri`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCredentials {
    /// The certificates directory (libnbd looks for `ca-cert.pem` there,
    /// and for `client-cert.pem`/`client-key.pem` when verified).
    Certificates(PathBuf),
    /// The PSK file and its first username.
    Psk {
        /// The PSK file.
        file: PathBuf,
        /// The first username in it.
        username: String,
    },
}

/// Loaded credentials: the server's half of every TLS session.
pub struct Tls {
    context: SslContext,
    /// For `$uri`.
    pub client: ClientCredentials,
    log: Log,
    debug_log: i32,
    debug_session: bool,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("client", &self.client).finish()
    }
}

/// How long a client has to finish the TLS handshake (GnuTLS's default,
/// which C nbdkit uses): a client that stalls in it is dropped.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(40);

/// Bytes buffered each way under the TLS session (a few records).
const BUFFER: usize = 256 * 1024;

/// The stream a TLS connection speaks through.
pub type TlsStream<S> = SslStream<BufStream<S>>;

impl Tls {
    /// Load what the options name. `Ok(None)` means TLS ends up off: it was
    /// off, or it was on and no certificates were found where C looks for
    /// them. Anything wrong with files the user named is an error.
    pub fn load(opts: &TlsOptions, log: &Log) -> Result<Option<Arc<Tls>>, StartError> {
        if opts.mode == TlsMode::Off {
            return Ok(None);
        }
        let loaded = match &opts.psk {
            Some(file) => Some(psk_context(file)?),
            None => match &opts.certificates {
                Some(dir) => Some(x509_context(dir, opts.verify_peer, true)?.expect("required")),
                None => default_dirs()
                    .iter()
                    .find_map(|d| x509_context(d, opts.verify_peer, false).transpose())
                    .transpose()?,
            },
        };
        let Some((context, client)) = loaded else {
            let hint = "try --tls-certificates=DIR, or read the TLS section of nbdkit(1)";
            if opts.mode == TlsMode::Require {
                return Err(StartError(format!(
                    "--tls=require but could not load TLS certificates; {hint}"
                )));
            }
            if opts.mode_given {
                log.error(&format!(
                    "warning: --tls=on but could not load TLS certificates, so TLS is off \
                     and TLS clients will be refused; {hint}"
                ));
            }
            log.debug("TLS disabled: could not load TLS certificates");
            return Ok(None);
        };
        log.debug(&format!(
            "TLS enabled using: {}",
            match client {
                ClientCredentials::Psk { .. } => "Pre-Shared Keys (PSK)",
                ClientCredentials::Certificates(_) => "X.509 certificates",
            }
        ));
        Ok(Some(Arc::new(Tls {
            context,
            client,
            log: log.clone(),
            debug_log: opts.debug_log,
            debug_session: opts.debug_session,
        })))
    }

    /// The TLS handshake on a connection whose client has just been told
    /// yes to STARTTLS.
    pub async fn accept<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let ssl = Ssl::new(&self.context).map_err(io::Error::other)?;
        let mut s = SslStream::new(ssl, BufStream::with_capacity(BUFFER, BUFFER, stream))
            .map_err(io::Error::other)?;
        if self.debug_log > 0 {
            self.log.debug("starting TLS handshake");
        }
        let accepted = tokio::time::timeout(HANDSHAKE_TIMEOUT, std::pin::Pin::new(&mut s).accept())
            .await
            .map_err(|_| {
                let m = "TLS handshake: the client did not finish it in time";
                self.log.error(m);
                io::Error::new(io::ErrorKind::TimedOut, m)
            })?;
        if let Err(e) = accepted {
            let m = match e.ssl_error() {
                Some(stack) => format!("TLS handshake: {}", reasons(stack)),
                None => match e.io_error() {
                    Some(io) => format!("TLS handshake: {io}"),
                    None => format!("TLS handshake: {e}"),
                },
            };
            self.log.error(&m);
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, m));
        }
        if self.debug_log > 0 {
            self.log.debug("TLS handshake completed");
        }
        if self.debug_session {
            self.log_session(s.ssl());
        }
        Ok(s)
    }

    fn log_session(&self, ssl: &SslRef) {
        let d = |m: String| self.log.debug(&m);
        let cipher = ssl.current_cipher().map_or("(none)", |c| c.name());
        d(format!("TLS session: {} {cipher}", ssl.version_str()));
        match self.client {
            ClientCredentials::Psk { .. } => {
                d("TLS: authentication: PSK (Pre-Shared Key)".into());
                if let Some(user) = psk_username(ssl) {
                    d(format!("TLS: PSK username: {user}"));
                }
            }
            ClientCredentials::Certificates(_) => {
                d("TLS: authentication: certificate".into());
                match ssl.peer_certificate() {
                    Some(c) => d(format!("TLS: peer certificate: {:?}", c.subject_name())),
                    None => d("TLS: no peer certificates found".into()),
                }
            }
        }
    }
}

/// Where C looks when `--tls-certificates` is not given.
fn default_dirs() -> Vec<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return vec![PathBuf::from(ROOT_CERTIFICATES_DIR)];
    }
    match std::env::var_os("HOME") {
        Some(home) => {
            let home = PathBuf::from(home);
            vec![home.join(".pki/nbdkit"), home.join(".config/pki/nbdkit")]
        }
        None => Vec::new(),
    }
}

/// Root's certificates directory (`--dump-config`'s
/// `root_tls_certificates_dir`).
pub const ROOT_CERTIFICATES_DIR: &str = "/etc/pki/nbdkit";

/// The X.509 context from `dir`. Without `required`, a directory that does
/// not hold the three files is not ours (`Ok(None)`), as C's search.
fn x509_context(
    dir: &Path, verify_peer: bool, required: bool,
) -> Result<Option<(SslContext, ClientCredentials)>, StartError> {
    let ca = dir.join("ca-cert.pem");
    let cert = dir.join("server-cert.pem");
    let key = dir.join("server-key.pem");
    let crl = dir.join("ca-crl.pem");
    for f in [&ca, &cert, &key] {
        if let Err(e) = std::fs::File::open(f) {
            if !required {
                return Ok(None);
            }
            return Err(StartError(format!("--tls-certificates: {}: {e}", f.display())));
        }
    }
    let fail = |f: &Path, what: &str, e: &dyn std::fmt::Display| {
        StartError(format!("TLS: {}: {what}: {}", f.display(), one_line(e)))
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .map_err(|e| fail(dir, "creating the TLS context", &e))?;
    common(&mut b).map_err(|e| fail(dir, "creating the TLS context", &e))?;
    let cert_pem = std::fs::read(&cert).map_err(|e| fail(&cert, "cannot read", &e))?;
    let leaf =
        X509::from_pem(&cert_pem).map_err(|e| fail(&cert, "cannot load the certificate", &e))?;
    let key_pem = std::fs::read(&key).map_err(|e| fail(&key, "cannot read", &e))?;
    let pkey = PKey::private_key_from_pem(&key_pem)
        .map_err(|e| fail(&key, "cannot load the private key", &e))?;
    if !leaf.public_key().is_ok_and(|p| p.public_eq(&pkey)) {
        return Err(StartError(format!(
            "TLS: {}: the private key does not match the certificate {}",
            key.display(),
            cert.display()
        )));
    }
    b.set_certificate_chain_file(&cert)
        .map_err(|e| fail(&cert, "cannot load the certificate", &e))?;
    b.set_private_key(&pkey).map_err(|e| fail(&key, "cannot load the private key", &e))?;
    let ca_pem = std::fs::read(&ca).map_err(|e| fail(&ca, "cannot read", &e))?;
    let cas = X509::stack_from_pem(&ca_pem).map_err(|e| fail(&ca, "cannot load", &e))?;
    if cas.is_empty() {
        return Err(StartError(format!("TLS: {}: no certificate in the file", ca.display())));
    }
    let mut store = X509StoreBuilder::new().map_err(|e| fail(&ca, "cannot load", &e))?;
    for c in &cas {
        store.add_cert(c.clone()).map_err(|e| fail(&ca, "cannot load", &e))?;
    }
    if crl.exists() {
        let lookup =
            store.add_lookup(X509Lookup::file()).map_err(|e| fail(&crl, "cannot load", &e))?;
        lookup
            .load_crl_file(&crl, SslFiletype::PEM)
            .map_err(|e| fail(&crl, "cannot load the revocation list", &e))?;
        store.set_flags(X509VerifyFlags::CRL_CHECK).map_err(|e| fail(&crl, "cannot load", &e))?;
    }
    b.set_verify_cert_store(store.build()).map_err(|e| fail(&ca, "cannot load", &e))?;
    if verify_peer {
        let mut names = openssl::stack::Stack::new().map_err(|e| fail(&ca, "cannot load", &e))?;
        for c in &cas {
            let n = c.subject_name().to_owned().map_err(|e| fail(&ca, "cannot load", &e))?;
            names.push(n).map_err(|e| fail(&ca, "cannot load", &e))?;
        }
        b.set_client_ca_list(names);
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    Ok(Some((b.build().into_context(), ClientCredentials::Certificates(absolute(dir)))))
}

/// What both kinds of context share: TLS 1.2 and later, the write modes
/// the async stream needs, and no session tickets (NBD clients connect
/// once, and a resumed session would skip a full handshake's checks).
fn common(b: &mut openssl::ssl::SslAcceptorBuilder) -> Result<(), openssl::error::ErrorStack> {
    b.set_min_proto_version(Some(SslVersion::TLS1_2))?;
    b.set_mode(SslMode::ENABLE_PARTIAL_WRITE | SslMode::ACCEPT_MOVING_WRITE_BUFFER);
    b.set_options(SslOptions::NO_TICKET | SslOptions::CIPHER_SERVER_PREFERENCE);
    Ok(())
}

/// The PSK context from a psktool file.
fn psk_context(file: &Path) -> Result<(SslContext, ClientCredentials), StartError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| StartError(format!("--tls-psk: {}: {e}", file.display())))?;
    let keys = parse_psk_file(&text)
        .map_err(|m| StartError(format!("--tls-psk: {}: {m}", file.display())))?;
    let username = keys.first().map(|(u, _)| u.clone()).expect("parse_psk_file checks");
    let keys: Arc<HashMap<Vec<u8>, Vec<u8>>> =
        Arc::new(keys.into_iter().map(|(u, k)| (u.into_bytes(), k)).collect());
    let fail = |e: openssl::error::ErrorStack| {
        StartError(format!("TLS: creating the PSK context: {}", one_line(&e)))
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server()).map_err(fail)?;
    common(&mut b).map_err(fail)?;
    // TLS 1.2 needs PSK cipher suites: those with forward secrecy first
    // (OpenSSL has no ECDHE-PSK with AES-GCM).
    b.set_cipher_list(
        "ECDHE-PSK-CHACHA20-POLY1305:DHE-PSK-AES256-GCM-SHA384:DHE-PSK-AES128-GCM-SHA256:\
         ECDHE-PSK-AES256-CBC-SHA384:ECDHE-PSK-AES128-CBC-SHA256:PSK-AES256-GCM-SHA384:\
         PSK-AES128-GCM-SHA256",
    )
    .map_err(fail)?;
    // TLS 1.3 with a plain PSK needs a SHA-256 suite: AES-GCM first (AES-NI
    // makes it the fastest here), ours rather than the client's order.
    b.set_ciphersuites("TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256").map_err(fail)?;
    b.set_verify(SslVerifyMode::NONE);
    let user_index = psk_user_index().map_err(fail)?;
    b.set_psk_server_callback(move |ssl, identity, out| {
        let key = identity.and_then(|id| keys.get(id).map(|k| (id, k)));
        match key {
            Some((id, k)) if k.len() <= out.len() => {
                // Kept for the session log (OpenSSL keeps it only for 1.2).
                ssl.set_ex_data(user_index, String::from_utf8_lossy(id).into_owned());
                out[..k.len()].copy_from_slice(k);
                Ok(k.len())
            }
            // 0 is "unknown identity": the handshake fails with an alert.
            _ => Ok(0),
        }
    });
    Ok((b.build().into_context(), ClientCredentials::Psk { file: absolute(file), username }))
}

/// Where a session keeps its PSK username.
fn psk_user_index() -> Result<openssl::ex_data::Index<Ssl, String>, openssl::error::ErrorStack> {
    static INDEX: std::sync::OnceLock<openssl::ex_data::Index<Ssl, String>> =
        std::sync::OnceLock::new();
    if let Some(i) = INDEX.get() {
        return Ok(*i);
    }
    let i = Ssl::new_ex_index()?;
    Ok(*INDEX.get_or_init(|| i))
}

/// The username a PSK client authenticated as.
fn psk_username(ssl: &SslRef) -> Option<&str> {
    ssl.ex_data(psk_user_index().ok()?).map(String::as_str)
}

/// `username:hexkey` lines (blank lines are skipped). Errors name the
/// line.
pub fn parse_psk_file(text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut keys = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (user, hex) =
            line.split_once(':').ok_or_else(|| format!("line {n}: expected username:hexkey"))?;
        if user.is_empty() {
            return Err(format!("line {n}: empty username"));
        }
        let key = decode_hex(hex.trim_end())
            .ok_or_else(|| format!("line {n}: the key is not an even number of hex digits"))?;
        if key.is_empty() || key.len() > 256 {
            return Err(format!("line {n}: the key must be 1 to 256 bytes"));
        }
        keys.push((user.to_string(), key));
    }
    if keys.is_empty() {
        return Err("no keys in the file".into());
    }
    Ok(keys)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// What went wrong, without OpenSSL's codes and source lines.
fn reasons(stack: &openssl::error::ErrorStack) -> String {
    let r: Vec<&str> = stack.errors().iter().filter_map(|e| e.reason()).collect();
    if r.is_empty() {
        one_line(stack)
    } else {
        r.join("; ")
    }
}

/// OpenSSL's error stacks print over several lines; ours are one.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().replace('\n', "; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psk_lines() {
        let k = parse_psk_file("alice:00ff10\n\nbob:AB\n").unwrap();
        assert_eq!(k, vec![("alice".into(), vec![0, 0xff, 0x10]), ("bob".into(), vec![0xab])]);
        for (bad, why) in [
            ("alice", "line 1: expected username:hexkey"),
            ("alice:0", "line 1: the key is not"),
            ("x:zz", "line 1: the key is not"),
            (":00", "line 1: empty username"),
            ("a:00\nb:", "line 2: the key must be"),
            ("\n", "no keys"),
        ] {
            let e = parse_psk_file(bad).unwrap_err();
            assert!(e.starts_with(why), "{bad:?}: {e}");
        }
    }
}
