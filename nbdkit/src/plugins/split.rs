//! `split`: several files joined end to end into one disk.
//!
//! - `file=PATH` (magic key, so `nbdkit split a.img b.img c.img` works),
//!   any number of times: the pieces of the disk, in command-line order.
//!   Each must exist when nbdkit starts (it is resolved to an absolute
//!   path then); its size is taken when a client connects, and must not
//!   change while it is served. With no `file=` the disk is empty, as in
//!   C nbdkit.
//!
//! Each connection opens every file, read-write, or read-only with `-r`.
//! A file that cannot be opened for writing (read-only, or busy being
//! executed) fails the connection unless `-r` is given, as in C nbdkit.
//! Reads and writes that cross from one file to the next are split
//! between them; extents come from SEEK_DATA/SEEK_HOLE in each file; cache
//! is `posix_fadvise(WILLNEED)`. There is no trim, and zeroing writes
//! zeroes (a fast zero fails at once). Blocking calls run with
//! `block_in_place` and reads first take what the page cache holds, as in
//! the file plugin.
//!
//! Differences from C nbdkit 1.32, on purpose:
//! - flush is supported (fdatasync of every file), so FUA is too (by a
//!   flush); C's split plugin has neither.
//! - a write to the second or a later file lands at its offset within that
//!   file (C 1.32 writes it at the offset within the whole disk, into the
//!   wrong place), and CACHE returns (C 1.32 loops forever).
//! - requests run in parallel (C serializes them per connection).
//!
//! Example: `nbdkit -U - split disk.img.000 disk.img.001 --run 'qemu-img info "$uri"'`

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::file::{blocking, read_file, seek_extents};
use super::PluginInfo;
use crate::backend::{
    Caps, Errno, Error, ExtentFlags, Extents, Flags, Fua, Handle, OpenArgs, Plugin, Result,
    ThreadModel, Zero,
};
use crate::error::{io_message, StartError};
use crate::params::Params;

/// The `split` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "split",
    description: "files concatenated into one disk",
    config_help: "file=<FILENAME>  (required) File(s) to serve.",
    magic_config_key: Some("file"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

struct SplitPlugin {
    paths: Vec<PathBuf>,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let mut paths = Vec::new();
    for f in p.take_all("file") {
        match std::fs::canonicalize(&f) {
            Ok(abs) => paths.push(abs),
            Err(e) => return Err(StartError(format!("split: {f}: {}", io_message(&e)))),
        }
    }
    p.finish()?;
    Ok(Arc::new(SplitPlugin { paths }))
}

/// One file of the disk.
struct Piece {
    file: File,
    /// Where it starts on the disk.
    start: u64,
    size: u64,
    /// SEEK_DATA works on it; otherwise it is all data.
    seekable_holes: bool,
}

struct Split {
    pieces: Vec<Piece>,
    size: u64,
    writable: bool,
}

#[async_trait]
impl Plugin for SplitPlugin {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (readonly, _export) = (args.readonly, args.export);
        blocking(|| {
            let mut pieces = Vec::with_capacity(self.paths.len());
            let mut start = 0;
            for path in &self.paths {
                let opened = std::fs::OpenOptions::new()
                    .read(true)
                    .write(!readonly)
                    .custom_flags(libc::O_NOCTTY)
                    .open(path)
                    .and_then(|f| Ok((f.metadata()?.len(), f)));
                let (size, file) = opened.map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("split: {}: {}", path.display(), io_message(&e)),
                    )
                })?;
                // SAFETY: lseek on the descriptor just opened.
                let r = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_DATA) };
                let seekable_holes =
                    r >= 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
                pieces.push(Piece { file, start, size, seekable_holes });
                start += size;
            }
            Ok(Arc::new(Split { pieces, size: start, writable: !readonly }) as Arc<dyn Handle>)
        })
    }
}

impl Split {
    /// The parts of `[offset, offset + len)`, file by file: the piece, the
    /// offset within it, and how many bytes. Empty files are skipped.
    fn spans(&self, offset: u64, len: u64) -> impl Iterator<Item = (&Piece, u64, u64)> {
        let end = offset + len;
        let first = self.pieces.partition_point(|p| p.start + p.size <= offset);
        self.pieces[first..].iter().take_while(move |p| p.start < end).filter(|p| p.size > 0).map(
            move |p| {
                let from = offset.max(p.start);
                let to = end.min(p.start + p.size);
                (p, from - p.start, to - from)
            },
        )
    }
}

#[async_trait]
impl Handle for Split {
    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps {
            write: self.writable,
            fua: Fua::Emulate,
            trim: false,
            zero: Zero::Emulate,
            multi_conn: false,
            ..Caps::ALL_NATIVE
        })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let mut done = 0;
        for (piece, at, n) in self.spans(offset, buf.len() as u64) {
            let part = &mut buf[done..done + n as usize];
            read_file(&piece.file, part, at).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    Error::new(Errno::Io, "split: a file ended early (was it truncated?)")
                } else {
                    Error::from(e)
                }
            })?;
            done += n as usize;
        }
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        blocking(|| {
            let mut done = 0;
            for (piece, at, n) in self.spans(offset, buf.len() as u64) {
                piece.file.write_all_at(&buf[done..done + n as usize], at)?;
                done += n as usize;
            }
            Ok(())
        })
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        blocking(|| {
            for piece in &self.pieces {
                piece.file.sync_data()?;
            }
            Ok(())
        })
    }

    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        blocking(|| {
            for (piece, at, n) in self.spans(offset, count) {
                let more = if piece.seekable_holes {
                    seek_extents(
                        &piece.file,
                        piece.size,
                        (at, at + n),
                        piece.start + at,
                        f.req_one,
                        ext,
                    )
                } else {
                    ext.add(piece.start + at, n, ExtentFlags::DATA)
                };
                if !more || f.req_one {
                    break;
                }
            }
            Ok(())
        })
    }

    async fn cache(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        for (piece, at, n) in self.spans(offset, count) {
            // Advisory: a failure only means nothing gets prefetched.
            // SAFETY: posix_fadvise on our own descriptor.
            unsafe {
                libc::posix_fadvise(
                    piece.file.as_raw_fd(),
                    at as i64,
                    n as i64,
                    libc::POSIX_FADV_WILLNEED,
                )
            };
        }
        Ok(())
    }
}
