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

/// `nbd+unix:///[EXPORT]?socket=PATH`.
pub fn unix(socket: &Path, export: &str) -> String {
    format!(
        "nbd+unix:///{}?socket={}",
        quote(export),
        quote(&socket.to_string_lossy())
    )
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
        assert_eq!(unix(Path::new("/s"), ""), "nbd+unix:///?socket=/s");
    }
}
