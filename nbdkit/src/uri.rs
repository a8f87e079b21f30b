//! The NBD URI of a running server (the NBD project's doc/uri.md), shared by
//! `--run` (`$uri`) and `--print-uri`.

use std::path::Path;

/// Percent-encode everything but unreserved characters and `/`, as C
/// nbdkit's `uri_quote` does.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `nbd://HOST:PORT[/EXPORT]`.
pub fn tcp(host: &str, port: u16, export: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let mut u = format!("nbd://{host}:{port}");
    if !export.is_empty() {
        u.push('/');
        u.push_str(&quote(export));
    }
    u
}

/// `nbd+unix://?socket=PATH`, or `nbd+unix:///EXPORT?socket=PATH`: C
/// nbdkit's form, which has no path at all for the empty export name.
pub fn unix(socket: &Path, export: &str) -> String {
    let mut u = String::from("nbd+unix://");
    if !export.is_empty() {
        u.push('/');
        u.push_str(&quote(export));
    }
    u.push_str("?socket=");
    u.push_str(&quote(&socket.to_string_lossy()));
    u
}

/// The URI of a server that requires TLS: `nbds://` or `nbds+unix://`,
/// with what libnbd needs to connect in its query (`tls-certificates=DIR`,
/// or the PSK file and, as the URI's user, its first username).
pub fn with_tls(uri: &str, creds: &crate::server::tls::ClientCredentials) -> String {
    use crate::server::tls::ClientCredentials;
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let scheme = scheme.replacen("nbd", "nbds", 1);
    let (user, param) = match creds {
        ClientCredentials::Certificates(dir) => {
            (String::new(), format!("tls-certificates={}", quote(&dir.to_string_lossy())))
        }
        ClientCredentials::Psk { file, username } => (
            format!("{}@", quote(username)),
            format!("tls-psk-file={}", quote(&file.to_string_lossy())),
        ),
    };
    // The query goes after the path; TCP URIs have none yet.
    let (rest, query) = match rest.split_once('?') {
        Some(("", q)) => ("/".to_string(), format!("?{q}&{param}")),
        Some((r, q)) => (r.to_string(), format!("?{q}&{param}")),
        None if rest.contains('/') => (rest.to_string(), format!("?{param}")),
        None => (format!("{rest}/"), format!("?{param}")),
    };
    format!("{scheme}://{user}{rest}{query}")
}

/// Where an `nbd://` or `nbd+unix://` URI points (the nbd plugin's
/// `uri=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `nbd://HOST[:PORT]/EXPORT`.
    Tcp {
        /// The host name or address (without brackets for IPv6).
        host: String,
        /// The port (10809 if not given).
        port: u16,
        /// The export name (the path, unescaped).
        export: String,
    },
    /// `nbd+unix:///EXPORT?socket=PATH`.
    Unix {
        /// The socket's path.
        socket: String,
        /// The export name (the path, unescaped).
        export: String,
    },
}

/// Read an NBD URI; TLS and vsock schemes are refused with a reason.
pub fn parse(uri: &str) -> Result<Target, String> {
    let (scheme, rest) = uri.split_once("://").ok_or("not a URI (expected nbd://...)")?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let export = unquote(path).ok_or("bad %-escape in the export name")?;
    let socket = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("socket="))
        .map(|v| unquote(v).ok_or("bad %-escape in the socket path"))
        .transpose()?;
    match scheme {
        "nbd+unix" => {
            Ok(Target::Unix { socket: socket.ok_or("nbd+unix URIs need ?socket=PATH")?, export })
        }
        "nbd" => {
            let (host, port) = match authority.strip_prefix('[') {
                Some(h) => {
                    let (h, tail) = h.split_once(']').ok_or("unterminated [IPv6 address]")?;
                    (h, tail.strip_prefix(':'))
                }
                None => match authority.rsplit_once(':') {
                    Some((h, p)) => (h, Some(p)),
                    None => (authority, None),
                },
            };
            if host.is_empty() {
                return Err("the URI has no host".into());
            }
            let port = match port {
                None | Some("") => 10809,
                Some(p) => p.parse().map_err(|_| format!("bad port {p:?}"))?,
            };
            Ok(Target::Tcp { host: host.to_string(), port, export })
        }
        s if s.starts_with("nbds") => Err("TLS (nbds://) is not supported by this nbdkit".into()),
        s => Err(format!("unsupported URI scheme {s:?}")),
    }
}

fn unquote(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            out.push(u8::from_str_radix(s.get(i + 1..i + 3)?, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(tcp("localhost", 10809, ""), "nbd://localhost:10809");
        assert_eq!(tcp("::1", 1, "a b"), "nbd://[::1]:1/a%20b");
        assert_eq!(
            unix(Path::new("/tmp/x y/socket"), "my exp/ä?"),
            "nbd+unix:///my%20exp/%C3%A4%3F?socket=/tmp/x%20y/socket"
        );
        assert_eq!(unix(Path::new("/s"), ""), "nbd+unix://?socket=/s");
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse("nbd+unix:///a%20b?socket=/tmp/s").unwrap(),
            Target::Unix { socket: "/tmp/s".into(), export: "a b".into() }
        );
        assert_eq!(
            parse("nbd://[::1]:99/x").unwrap(),
            Target::Tcp { host: "::1".into(), port: 99, export: "x".into() }
        );
        assert_eq!(
            parse("nbd://h").unwrap(),
            Target::Tcp { host: "h".into(), port: 10809, export: "".into() }
        );
        for bad in ["nbds://h", "nbd+unix:///x", "http://h", "nbd://", "nbd://h:x", "junk"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
