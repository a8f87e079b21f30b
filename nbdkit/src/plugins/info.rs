//! `info`: a small read-only disk whose contents describe the connection.
//!
//! - `mode=MODE` (magic key; default `exportname`; any case):
//!   - `exportname` (or `export-name`): the export name the client asked
//!     for; its size is the name's length, so "" gives an empty disk.
//!   - `base64exportname` (or `base64-export-name`): the export name
//!     decoded from base64, as C nbdkit's GnuTLS decoder takes it (padding
//!     required, blanks and newlines skipped, the text ends at a `-`). A
//!     name that does not decode, or decodes to nothing, is refused.
//!   - `address`: the client's address as text: `1.2.3.4:PORT`,
//!     `[::1]:PORT`, or `unix` for a Unix domain socket. (Under `-s` on
//!     pipes there is no address and the export cannot be opened.)
//!   - `time`: the time now, since the Unix epoch;
//!   - `uptime`: the time since the server started;
//!   - `conntime`: the time since this connection opened the export.
//!     These three are 12 bytes, read afresh on every read: seconds as a
//!     big-endian signed 64-bit number, then microseconds as a big-endian
//!     signed 32-bit number. (C measures `uptime` and `conntime` on the
//!     wall clock; we use the monotonic clock, which a clock change cannot
//!     make jump.)
//!
//! Multi-conn is advertised only by the export name modes: the others can
//! differ between connections.
//!
//! Example: `nbdkit -U - info mode=address --run 'nbdcopy "$uri" -'`

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::ThreadModel;
use crate::backend::{Cache, Caps, Errno, Error, Flags, Handle, OpenArgs, Peer, Plugin, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `info` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "info",
    description: "a disk whose contents describe the connection",
    config_help: "mode=exportname|base64exportname|address|time|uptime|conntime\n\
                  \x20                                     Plugin mode (default exportname).",
    magic_config_key: Some("mode"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("info_address", "yes"), ("info_base64", "yes")],
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ExportName,
    Base64ExportName,
    Address,
    Time,
    Uptime,
    ConnTime,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let mode = match p.take("mode") {
        None => Mode::ExportName,
        Some(m) => match m.to_ascii_lowercase().as_str() {
            "exportname" | "export-name" => Mode::ExportName,
            "base64exportname" | "base64-export-name" => Mode::Base64ExportName,
            "address" => Mode::Address,
            "time" => Mode::Time,
            "uptime" => Mode::Uptime,
            "conntime" => Mode::ConnTime,
            _ => return Err(StartError(format!("info: unknown mode: '{m}'"))),
        },
    };
    p.finish()?;
    Ok(Arc::new(Info { mode, started: Instant::now() }))
}

struct Info {
    mode: Mode,
    started: Instant,
}

#[async_trait]
impl Plugin for Info {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (export_name, client) = (args.export, args.client);
        let contents = match self.mode {
            Mode::ExportName => Contents::Fixed(export_name.as_bytes().to_vec()),
            Mode::Base64ExportName => Contents::Fixed(
                decode_base64(export_name)
                    .ok_or_else(|| Error::new(Errno::Inval, "base64: Base64 decoding error."))?,
            ),
            Mode::Address => Contents::Fixed(address(&client.peer)?.into_bytes()),
            Mode::Time => Contents::Clock(None),
            Mode::Uptime => Contents::Clock(Some(self.started)),
            Mode::ConnTime => Contents::Clock(Some(Instant::now())),
        };
        Ok(Arc::new(Conn {
            contents,
            multi_conn: matches!(self.mode, Mode::ExportName | Mode::Base64ExportName),
        }))
    }
}

/// The client's address as C nbdkit's info plugin writes it.
fn address(peer: &Peer) -> Result<String> {
    match peer {
        Peer::Tcp(std::net::SocketAddr::V4(a)) => Ok(format!("{}:{}", a.ip(), a.port())),
        Peer::Tcp(std::net::SocketAddr::V6(a)) => Ok(format!("[{}]:{}", a.ip(), a.port())),
        Peer::Unix(_) => Ok("unix".into()),
        Peer::Unknown => {
            Err(Error::new(Errno::Inval, "getpeername: the client is not on a socket"))
        }
    }
}

/// Decode base64 as GnuTLS (through Nettle) does for C nbdkit: CR, LF
/// and NUL are dropped and a `-` ends the text; then blanks are skipped,
/// `=` padding is required and must be the right amount, nothing but
/// padding may follow it, and the unused bits must be zero. "" decodes to
/// nothing, but any other text that gives no bytes is an error.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() {
        return Some(Vec::new());
    }
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0u32);
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for c in text.bytes() {
        let v = match c {
            b'\r' | b'\n' | 0 => continue,
            b'-' => break,
            b'\t' | b'\x0b' | b'\x0c' | b' ' => continue,
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => {
                if bits == 0 || padding > 2 || acc & ((1 << bits) - 1) != 0 {
                    return None;
                }
                padding += 1;
                bits -= 2;
                continue;
            }
            _ => return None,
        };
        if padding > 0 {
            return None;
        }
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    (bits == 0 && !out.is_empty()).then_some(out)
}

enum Contents {
    Fixed(Vec<u8>),
    /// A 12-byte time stamp: since `Some(instant)`, or since the epoch.
    Clock(Option<Instant>),
}

struct Conn {
    contents: Contents,
    multi_conn: bool,
}

/// Seconds (big-endian i64) then microseconds (big-endian i32).
fn stamp(d: Duration) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&(d.as_secs() as i64).to_be_bytes());
    b[8..].copy_from_slice(&(d.subsec_micros() as i32).to_be_bytes());
    b
}

#[async_trait]
impl Handle for Conn {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(match &self.contents {
            Contents::Fixed(v) => v.len() as u64,
            Contents::Clock(_) => 12,
        })
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps { cache: Cache::Native, multi_conn: self.multi_conn, ..Caps::READ_ONLY })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let clock;
        let bytes: &[u8] = match &self.contents {
            Contents::Fixed(v) => v,
            Contents::Clock(since) => {
                clock = stamp(match since {
                    Some(t) => t.elapsed(),
                    None => {
                        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default()
                    }
                });
                &clock
            }
        };
        let at = offset as usize;
        buf.copy_from_slice(&bytes[at..at + buf.len()]);
        Ok(())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_gnutls_decodes_it() {
        let ok = |s: &str, v: &[u8]| assert_eq!(decode_base64(s).as_deref(), Some(v), "{s:?}");
        ok("", b"");
        ok("aGVsbG8=", b"hello");
        ok("aGVsbA==", b"hell");
        ok("YWJj", b"abc");
        ok("aGVs\nbG8=", b"hello");
        ok("\naGVsbG8=\r\n", b"hello");
        ok("aGVs bG8=", b"hello");
        ok("aGVs\tbG8=", b"hello");
        ok("aGVs\x0bbG8=", b"hello");
        ok("aGVs\x0cbG8=", b"hello");
        ok("aGVsbG8=-junk", b"hello");
        for bad in [
            "aGVsbG8",
            "aGVsbA",
            "aGVsbA=",
            "aGVsbG8==",
            "aGVsbB==",
            "YQ=",
            "Y=Q=",
            "YQ==YQ==",
            "aGVsbG8=x",
            "aGVsbG8=\n=",
            "!!!!",
            "a",
            "-aGVs",
            "\n",
            "====",
            "a-b",
            "_-",
        ] {
            assert_eq!(decode_base64(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn addresses() {
        let a = |s: &str| address(&Peer::Tcp(s.parse().unwrap())).unwrap();
        assert_eq!(a("127.0.0.1:10809"), "127.0.0.1:10809");
        assert_eq!(a("[::1]:44766"), "[::1]:44766");
        assert_eq!(a("[::ffff:127.0.0.1]:5"), "[::ffff:127.0.0.1]:5");
        assert_eq!(a("[fe80::1%3]:5"), "[fe80::1]:5");
        assert_eq!(address(&Peer::Unix(None)).unwrap(), "unix");
        assert!(address(&Peer::Unknown).is_err());
    }

    #[test]
    fn time_stamps() {
        assert_eq!(
            stamp(Duration::new(0x0102_0304_0506, 789_000)),
            [0, 0, 1, 2, 3, 4, 5, 6, 0, 0, 0x03, 0x15]
        );
    }
}
