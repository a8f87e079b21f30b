//! NBD URIs (the NBD project's doc/uri.md), as far as tests need them:
//! building the two forms nbdkit prints and reading them back.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The NBD port when a URI gives none.
const NBD_DEFAULT_PORT: u16 = 10809;

/// Percent-encode everything but unreserved characters and `/`, as nbdkit
/// does in the URIs it prints.
pub(crate) fn quote(s: impl AsRef<[u8]>) -> String {
    let s = s.as_ref();
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `nbd+unix://?socket=PATH` or `nbd+unix:///EXPORT?socket=PATH`, the
/// form nbdkit's `$uri` and `--print-uri` give.
pub(crate) fn unix(socket: &Path, export: &str) -> String {
    let mut u = String::from("nbd+unix://");
    if !export.is_empty() {
        u.push('/');
        u.push_str(&quote(export.as_bytes()));
    }
    u.push_str("?socket=");
    u.push_str(&quote(socket.as_os_str().as_bytes()));
    u
}

/// `nbd://127.0.0.1:PORT[/EXPORT]`
pub(crate) fn tcp(port: u16, export: &str) -> String {
    let mut u = format!("nbd://127.0.0.1:{port}");
    if !export.is_empty() {
        u.push('/');
        u.push_str(&quote(export));
    }
    u
}

/// Where an NBD URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `nbd://host[:port][/export]`
    Tcp { host: String, port: u16, export: String },
    /// `nbd+unix:///[export]?socket=PATH`
    Unix { socket: PathBuf, export: String },
}

/// Parse the subset of NBD URIs this client supports.
pub(crate) fn parse(uri: &str) -> io::Result<Target> {
    let bad = |msg: &str| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("invalid NBD URI {uri:?}: {msg}"))
    };
    let unsupported = |what: &str| {
        io::Error::new(
            io::ErrorKind::Unsupported,
            format!("NBD URI {uri:?}: {what} not supported by this test client"),
        )
    };

    let (scheme, rest) = uri.split_once("://").ok_or_else(|| bad("expected scheme://"))?;
    let unix = match scheme.to_ascii_lowercase().as_str() {
        "nbd" => false,
        "nbd+unix" => true,
        "nbds" | "nbds+unix" | "nbds+vsock" => return Err(unsupported("TLS (nbds) is")),
        "nbd+vsock" => return Err(unsupported("vsock is")),
        _ => return Err(bad("the scheme must be nbd:// or nbd+unix://")),
    };

    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (rest, query) = match rest.split_once('?') {
        Some((before, q)) => (before, q),
        None => (rest, ""),
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let export = String::from_utf8(
        percent_decode(path).ok_or_else(|| bad("bad %-escape in the export name"))?,
    )
    .map_err(|_| bad("the export name is not UTF-8"))?;

    let mut socket = None;
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = param.split_once('=').unwrap_or((param, ""));
        let key = percent_decode(key).ok_or_else(|| bad("bad %-escape in the query"))?;
        if key == b"socket" {
            let value =
                percent_decode(value).ok_or_else(|| bad("bad %-escape in the socket path"))?;
            socket = Some(value);
        }
        // Other parameters (tls-*, etc.) do not concern us.
    }

    if unix {
        if !authority.is_empty() {
            return Err(bad("nbd+unix URIs take no host: use nbd+unix:///export?socket=PATH"));
        }
        match socket {
            Some(path) if !path.is_empty() => {
                Ok(Target::Unix { socket: PathBuf::from(OsString::from_vec(path)), export })
            }
            _ => Err(bad("nbd+unix URIs need ?socket=PATH")),
        }
    } else {
        if socket.is_some() {
            return Err(bad("socket= is only allowed in nbd+unix URIs"));
        }
        // Drop any user name (used only with TLS).
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = if let Some(bracketed) = hostport.strip_prefix('[') {
            let (host, after) =
                bracketed.split_once(']').ok_or_else(|| bad("unterminated [IPv6 address]"))?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':').ok_or_else(|| bad("junk after [IPv6 address]"))?),
            };
            (host, port)
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        let host =
            String::from_utf8(percent_decode(host).ok_or_else(|| bad("bad %-escape in the host"))?)
                .map_err(|_| bad("the host is not UTF-8"))?;
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = match port {
            None | Some("") => NBD_DEFAULT_PORT,
            Some(p) => p.parse().map_err(|_| bad("bad port number"))?,
        };
        Ok(Target::Tcp { host, port, export })
    }
}

/// Decode `%XX` escapes; `None` if an escape is malformed.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp_target(host: &str, port: u16, export: &str) -> Target {
        Target::Tcp { host: host.into(), port, export: export.into() }
    }

    #[test]
    fn tcp_with_port_and_export() {
        assert_eq!(
            parse("nbd://example.com:1234/disk").unwrap(),
            tcp_target("example.com", 1234, "disk")
        );
    }

    #[test]
    fn tcp_default_port_and_empty_export() {
        assert_eq!(parse("nbd://localhost").unwrap(), tcp_target("localhost", 10809, ""));
        assert_eq!(parse("nbd://localhost/").unwrap(), tcp_target("localhost", 10809, ""));
        assert_eq!(parse("nbd://localhost:/x").unwrap(), tcp_target("localhost", 10809, "x"));
    }

    #[test]
    fn tcp_ipv6_and_user() {
        assert_eq!(parse("nbd://[::1]:10810/e").unwrap(), tcp_target("::1", 10810, "e"));
        assert_eq!(parse("nbd://[::1]").unwrap(), tcp_target("::1", 10809, ""));
        assert_eq!(parse("nbd://me@127.0.0.1/e").unwrap(), tcp_target("127.0.0.1", 10809, "e"));
    }

    #[test]
    fn percent_decoding_of_export() {
        assert_eq!(parse("nbd://h/a%20b%2Fc/d").unwrap(), tcp_target("h", 10809, "a b/c/d"));
        assert_eq!(parse("nbd://h/caf%C3%A9").unwrap(), tcp_target("h", 10809, "café"));
    }

    #[test]
    fn unix_socket() {
        assert_eq!(
            parse("nbd+unix:///exp?socket=/tmp/x%20y").unwrap(),
            Target::Unix { socket: PathBuf::from("/tmp/x y"), export: "exp".into() }
        );
        assert_eq!(
            parse("nbd+unix://?socket=/s&tls=off").unwrap(),
            Target::Unix { socket: PathBuf::from("/s"), export: String::new() }
        );
    }

    #[test]
    fn rejects_tls_and_vsock_as_unsupported() {
        for uri in ["nbds://h/e", "nbds+unix:///e?socket=/s", "nbd+vsock://1:2/e"] {
            let err = parse(uri).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{uri}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for uri in [
            "nbd+unix:///exp",
            "nbd+unix:///exp?socket=",
            "nbd+unix://host/exp?socket=/s",
            "nbd://h/e?socket=/s",
            "nbd:///e",
            "nbd://h:99999/e",
            "nbd://h:port/e",
            "nbd://h/%zz",
            "nbd://h/%4",
            "nbd://h/%ff",
            "http://h/e",
            "h/e",
            "nbd://[::1/e",
        ] {
            let err = parse(uri).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{uri}: {err}");
        }
    }

    #[test]
    fn what_we_build_we_read_back() {
        let u = unix(Path::new("/tmp/a b/socket"), "my exp");
        assert_eq!(u, "nbd+unix:///my%20exp?socket=/tmp/a%20b/socket");
        assert_eq!(
            parse(&u).unwrap(),
            Target::Unix { socket: "/tmp/a b/socket".into(), export: "my exp".into() }
        );
        let t = tcp(1234, "e/f");
        assert_eq!(t, "nbd://127.0.0.1:1234/e/f");
        assert_eq!(parse(&t).unwrap(), tcp_target("127.0.0.1", 1234, "e/f"));
        assert_eq!(tcp(1, ""), "nbd://127.0.0.1:1");
    }
}
