//! `tar`: serve one member of an uncompressed tar file, in place.
//!
//! - `tar=TARFILE` (required): the tar file.
//! - `file=MEMBER` (required): the member's name exactly as the archive
//!   stores it (as `tar tf` prints it).
//!
//! Reads and writes go straight to the member's bytes inside the tar file,
//! so writes change the archive (use `-r` to prevent that); the member
//! cannot grow or shrink. Everything else is as the file plugin: trim
//! punches holes, zero, flush, FUA and extents, within the member. The
//! archive is read by this plugin itself (no `tar` program needed): ustar
//! and old-style headers, GNU long names (`L`), pax extended headers (`x`:
//! `path`, `size`). GNU sparse members are refused.
//!
//! Modern C nbdkit has `--filter=tar tar-entry=MEMBER` instead; this is the
//! older plugin's command line, which serves the same bytes.
//!
//! Example: `nbdkit -U - tar tar=data.tar file=disk.img --run 'qemu-img convert -n disk.img "$nbd"'`

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::{Handle, OpenArgs, Plugin, Result, ThreadModel};
use crate::error::{io_message, StartError};
use crate::params::Params;

/// The `tar` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "tar",
    description: "one member of an uncompressed tar file, read and written in place",
    config_help: "tar=<TARFILE>       (required) The tar file.\n\
                  file=<MEMBER>       (required) The member to serve, as `tar tf` names it.",
    magic_config_key: None,
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

struct TarPlugin {
    tar: PathBuf,
    /// Where the member's data starts in the tar file, and its size.
    offset: u64,
    size: u64,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let tar = p.take("tar");
    let member = p.take("file");
    p.finish()?;
    let (Some(tar), Some(member)) = (tar, member) else {
        return Err(StartError("tar: you must supply tar=<TARFILE> and file=<MEMBER>".into()));
    };
    let f = File::open(&tar).map_err(|e| StartError(format!("tar: {tar}: {}", io_message(&e))))?;
    let (offset, size) =
        find_member(&f, &member).map_err(|m| StartError(format!("tar: {tar}: {m}")))?;
    Ok(Arc::new(TarPlugin { tar: tar.into(), offset, size }))
}

#[async_trait]
impl Plugin for TarPlugin {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (readonly, _export) = (args.readonly, args.export);
        super::file::open_window(&self.tar, readonly, self.offset, self.size)
    }
}

const BLOCK: u64 = 512;

/// Find `wanted` in the archive: (offset of its data, its size).
pub(crate) fn find_member(f: &File, wanted: &str) -> std::result::Result<(u64, u64), String> {
    find_member_in(
        &mut |pos, buf| {
            f.read_exact_at(buf, pos).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    format!("truncated tar file (at offset {pos})")
                } else {
                    io_message(&e)
                }
            })
        },
        wanted,
        None,
    )
}

/// Reads `buf.len()` bytes at an offset of the archive.
pub(crate) type ReadAt<'a> = dyn FnMut(u64, &mut [u8]) -> std::result::Result<(), String> + 'a;

/// [`find_member`] over any way of reading the archive (the tar filter
/// reads through the layer below), scanning at most `limit` bytes of it.
pub(crate) fn find_member_in(
    read: &mut ReadAt<'_>, wanted: &str, limit: Option<u64>,
) -> std::result::Result<(u64, u64), String> {
    let mut pos = 0u64;
    // Set by a GNU `L` entry or a pax `x` header, for the next entry only.
    let mut next_name: Option<String> = None;
    let mut next_size: Option<u64> = None;
    loop {
        if limit.is_some_and(|l| pos + BLOCK > l) {
            return Err(format!(
                "{wanted}: not found within the first {} bytes (tar-limit)",
                limit.unwrap_or(0)
            ));
        }
        let mut h = [0u8; BLOCK as usize];
        read(pos, &mut h)?;
        if h.iter().all(|&b| b == 0) {
            return Err(format!("{wanted}: no such member"));
        }
        check_sum(&h, pos)?;
        let typeflag = h[156];
        let size = match next_size.take() {
            Some(s) => s,
            None => number(&h[124..136])
                .ok_or(format!("bad size field in the header at offset {pos}"))?,
        };
        let data = pos + BLOCK;
        let next = size
            .div_ceil(BLOCK)
            .checked_mul(BLOCK)
            .and_then(|n| data.checked_add(n))
            .ok_or(format!("member size overflows at offset {pos}"))?;
        match typeflag {
            b'L' => next_name = Some(read_text(read, data, size, pos)?),
            b'x' => {
                let text = read_text(read, data, size, pos)?;
                for (k, v) in pax_records(&text) {
                    match k {
                        "path" => next_name = Some(v.to_string()),
                        "size" => {
                            next_size = Some(v.parse().map_err(|_| {
                                format!("bad pax size {v:?} in the header at offset {pos}")
                            })?)
                        }
                        _ => {}
                    }
                }
            }
            // Global pax headers, GNU long link names, volume labels.
            b'g' | b'K' | b'V' => {}
            _ => {
                let name = next_name.take().unwrap_or_else(|| header_name(&h));
                if name == wanted {
                    return match typeflag {
                        b'0' | 0 | b'7' => Ok((data, size)),
                        b'S' => Err(format!("{wanted}: GNU sparse members are not supported")),
                        t => {
                            Err(format!("{wanted}: not a regular file (tar type {:?})", t as char))
                        }
                    };
                }
            }
        }
        pos = next;
    }
}

/// A long name or pax header's contents (bounded: these are small).
fn read_text(
    read: &mut ReadAt<'_>, at: u64, size: u64, pos: u64,
) -> std::result::Result<String, String> {
    if size > 1 << 20 {
        return Err(format!("oversized extended header at offset {pos}"));
    }
    let mut b = vec![0u8; size as usize];
    read(at, &mut b)?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    b.truncate(end);
    String::from_utf8(b).map_err(|_| format!("a name that is not UTF-8 at offset {pos}"))
}

/// pax records: `LEN key=value\n`, LEN counting the whole record.
fn pax_records(text: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some((len, _)) = rest.split_once(' ') {
        let Ok(n) = len.parse::<usize>() else { break };
        // A record holds at least its length, a space and a newline.
        if n <= len.len() + 1 {
            break;
        }
        let Some(rec) = rest.get(..n) else { break };
        if let Some((k, v)) = rec[len.len() + 1..].trim_end_matches('\n').split_once('=') {
            out.push((k, v));
        }
        rest = &rest[n..];
    }
    out
}

/// The name in a ustar (prefix/name) or old-style header.
fn header_name(h: &[u8]) -> String {
    let field = |b: &[u8]| {
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        String::from_utf8_lossy(&b[..end]).into_owned()
    };
    let name = field(&h[0..100]);
    // POSIX ustar ("ustar\0") splits long paths into prefix and name; GNU
    // ("ustar  ") uses that space for other things.
    if &h[257..263] == b"ustar\0" {
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            return format!("{prefix}/{name}");
        }
    }
    name
}

/// A numeric field: octal text, or (GNU) base-256 when the top bit is set.
fn number(b: &[u8]) -> Option<u64> {
    if b[0] & 0x80 != 0 {
        let mut v: u64 = u64::from(b[0] & 0x7f);
        for &c in &b[1..] {
            v = v.checked_mul(256)?.checked_add(u64::from(c))?;
        }
        return Some(v);
    }
    let text: String = b.iter().take_while(|&&c| c != 0).map(|&c| c as char).collect();
    let t = text.trim();
    if t.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(t, 8).ok()
}

/// The header checksum: the sum of all bytes with the field itself read as
/// spaces.
fn check_sum(h: &[u8], pos: u64) -> std::result::Result<(), String> {
    let want =
        number(&h[148..156]).ok_or(format!("not a tar file (bad header at offset {pos})"))?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| if (148..156).contains(&i) { 32 } else { u64::from(b) })
        .sum();
    if sum != want {
        return Err(format!("not a tar file (bad header checksum at offset {pos})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(number(b"00000001750\0"), Some(1000));
        assert_eq!(number(b"     17 \0\0\0\0"), Some(15));
        assert_eq!(number(&[0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]), Some(256));
        assert_eq!(number(b"zz\0\0\0\0\0\0\0\0\0\0"), None);
    }

    #[test]
    fn pax() {
        let t = "27 path=some/long/name.img\n17 size=12345678\n";
        assert_eq!(pax_records(t), [("path", "some/long/name.img"), ("size", "12345678")]);
        // Hostile lengths end the parse, never panic.
        assert!(pax_records("1 x").is_empty());
        assert!(pax_records("0 ").is_empty());
        assert!(pax_records("2 ab").is_empty());
    }
}
