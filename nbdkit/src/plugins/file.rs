//! `file`: serve a regular file or a block device.
//!
//! - `file=PATH` (required; magic key, so `nbdkit file disk.img` works).
//! - `cache=default|none`: `none` drops written pages from the page cache
//!   after each write (they are flushed first).
//! - `fadvise=normal|random|sequential`: access-pattern hint for the kernel.
//!
//! The file is opened read-write, or read-only with `-r` or when it cannot
//! be written. Trim punches holes, zero uses FALLOC_FL_ZERO_RANGE (or a
//! punched hole, or plain writes when neither works), flush and FUA use
//! fdatasync, and extents come from SEEK_DATA/SEEK_HOLE. The blocking
//! system calls run with `block_in_place`, so they never stall the other
//! requests, and requests on one file run in parallel. Reads first take
//! what the page cache holds with `RWF_NOWAIT`, which cannot block.
//!
//! Not yet: `dir=`, `fd=` and `dirfd=` (each gives an error naming it).
//!
//! Example: `nbdkit -U - file disk.img --run 'qemu-img info "$uri"'`

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::{
    Cache, Caps, Errno, Error, Extents, Flags, Fua, Handle, Plugin, Result, ThreadModel, Zero,
};
use crate::error::StartError;
use crate::params::Params;

pub static INFO: PluginInfo = PluginInfo {
    name: "file",
    description: "a regular file or block device",
    config_help: "[file=]<FILENAME>            The filename to serve.\n\
                  cache=default|none           Set use of the page cache.\n\
                  fadvise=normal|random|sequential  Access-pattern hint.",
    magic_config_key: Some("file"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum CacheMode {
    Default,
    None,
}

struct FilePlugin {
    path: String,
    cache: CacheMode,
    fadvise: libc::c_int,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    for unsupported in ["dir", "fd", "dirfd"] {
        if p.take(unsupported).is_some() {
            return Err(StartError(format!(
                "file: {unsupported}= is not supported yet by this nbdkit"
            )));
        }
    }
    let files = p.take_all("file");
    let path = match files.as_slice() {
        [] => {
            return Err(StartError(
                "file: you must supply the file=<FILENAME> parameter".into(),
            ))
        }
        [one] => one.clone(),
        _ => {
            return Err(StartError(
                "file: file parameter can only appear once".into(),
            ))
        }
    };
    let cache = match p.take("cache").as_deref() {
        None | Some("default") => CacheMode::Default,
        Some("none") => CacheMode::None,
        Some(v) => return Err(StartError(format!("file: unknown cache mode: {v}"))),
    };
    let fadvise = match p.take("fadvise").as_deref() {
        None | Some("normal") => libc::POSIX_FADV_NORMAL,
        Some("random") => libc::POSIX_FADV_RANDOM,
        Some("sequential") => libc::POSIX_FADV_SEQUENTIAL,
        Some(v) => return Err(StartError(format!("file: unknown fadvise mode: {v}"))),
    };
    p.finish()?;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => return Err(StartError(format!("file: {path}: is a directory"))),
        Ok(_) => {}
        Err(e) => return Err(StartError(format!("file: {path}: {e}"))),
    }
    Ok(Arc::new(FilePlugin {
        path,
        cache,
        fadvise,
    }))
}

struct Disk {
    file: File,
    size: u64,
    writable: bool,
    cache: CacheMode,
    /// SEEK_DATA/SEEK_HOLE work here (not for block devices).
    seekable_holes: bool,
}

#[async_trait]
impl Plugin for FilePlugin {
    async fn open(&self, readonly: bool, _export: &str) -> Result<Arc<dyn Handle>> {
        blocking(|| {
            let rw = if readonly {
                Err(std::io::Error::from_raw_os_error(libc::EROFS))
            } else {
                OpenOptions::new().read(true).write(true).open(&self.path)
            };
            let (file, writable) = match rw {
                Ok(f) => (f, true),
                Err(_) => (File::open(&self.path)?, false),
            };
            let meta = file.metadata()?;
            let size = if meta.is_file() {
                meta.len()
            } else {
                // Block device: its size is where SEEK_END lands.
                use std::io::Seek;
                (&file).seek(std::io::SeekFrom::End(0))?
            };
            // SAFETY: posix_fadvise on our own descriptor.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, self.fadvise) };
            Ok(Arc::new(Disk {
                file,
                size,
                writable,
                cache: self.cache,
                seekable_holes: meta.is_file(),
            }) as Arc<dyn Handle>)
        })
    }
}

/// Run a blocking system call without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    tokio::task::block_in_place(f).map_err(Error::from)
}

impl Disk {
    /// Read what the page cache already has, with `RWF_NOWAIT`: never
    /// blocks. Returns how many bytes were read (0 on a miss, on an old
    /// kernel, or at end of file).
    fn read_cached(&self, buf: &mut [u8], offset: u64) -> usize {
        let mut done = 0;
        while done < buf.len() {
            let iov = libc::iovec {
                iov_base: buf[done..].as_mut_ptr().cast(),
                iov_len: buf.len() - done,
            };
            // SAFETY: one iovec over the unread part of `buf`.
            let n = unsafe {
                libc::preadv2(
                    self.file.as_raw_fd(),
                    &iov,
                    1,
                    (offset + done as u64) as libc::off_t,
                    libc::RWF_NOWAIT,
                )
            };
            if n <= 0 {
                break;
            }
            done += n as usize;
        }
        done
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> std::io::Result<()> {
        // SAFETY: fallocate on our own descriptor with plain integers.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, offset as i64, len as i64) };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    fn datasync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn after_write(&self, offset: u64, len: u64, fua: bool) -> std::io::Result<()> {
        if fua || self.cache == CacheMode::None {
            self.datasync()?;
        }
        if self.cache == CacheMode::None {
            // SAFETY: advisory call on our own descriptor.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    offset as i64,
                    len as i64,
                    libc::POSIX_FADV_DONTNEED,
                )
            };
        }
        Ok(())
    }

    fn seek(&self, offset: u64, whence: libc::c_int) -> Option<u64> {
        // SAFETY: lseek on our own descriptor. Handles share the file but
        // SEEK_DATA/SEEK_HOLE results don't depend on the file position.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), offset as i64, whence) };
        (r >= 0).then_some(r as u64)
    }
}

#[async_trait]
impl Handle for Disk {
    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps {
            write: self.writable,
            flush: true,
            fua: Fua::Native,
            trim: self.writable,
            zero: Zero::Native,
            fast_zero: true,
            cache: Cache::Native,
            extents: self.seekable_holes,
            multi_conn: true,
            rotational: false,
        })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        // What the page cache holds is copied without leaving the thread;
        // only the rest (a cache miss) goes through `block_in_place`.
        let cached = self.read_cached(buf, offset);
        let (buf, offset) = (&mut buf[cached..], offset + cached as u64);
        if buf.is_empty() {
            return Ok(());
        }
        blocking(|| self.file.read_exact_at(buf, offset)).map_err(|e| {
            if e.errno == Errno::Inval && e.msg.contains("fill whole buffer") {
                Error::new(
                    Errno::Io,
                    "file: read past the end of the file (was it truncated?)",
                )
            } else {
                e
            }
        })
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, f: Flags) -> Result<()> {
        blocking(|| {
            self.file.write_all_at(buf, offset)?;
            self.after_write(offset, buf.len() as u64, f.fua)
        })
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        blocking(|| self.datasync())
    }

    async fn trim(&self, count: u32, offset: u64, f: Flags) -> Result<()> {
        blocking(|| {
            let r = self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                u64::from(count),
            );
            match r {
                // Trim is advisory: a file system that cannot punch holes
                // simply keeps the data.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
                r => r,
            }?;
            self.after_write(offset, u64::from(count), f.fua)
        })
    }

    async fn zero(&self, count: u32, offset: u64, f: Flags) -> Result<()> {
        let len = u64::from(count);
        blocking(|| {
            let mut r = self.fallocate(
                libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                len,
            );
            if r.is_err() && f.may_trim {
                r = self.fallocate(
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    len,
                );
            }
            match r {
                Ok(()) => self.after_write(offset, len, f.fua),
                // Let the guard fall back to writing zeroes (or refuse a
                // fast zero).
                Err(_) => Err(std::io::Error::from_raw_os_error(libc::ENOTSUP)),
            }
        })
    }

    async fn extents(&self, count: u32, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        let end = offset + u64::from(count);
        blocking(|| {
            let mut pos = offset;
            while pos < end {
                // Where does the data at or after `pos` start?
                let data = self.seek(pos, libc::SEEK_DATA).unwrap_or(self.size);
                if data > pos {
                    if !ext.add(pos, data.min(end) - pos, 3) || f.req_one {
                        break;
                    }
                    pos = data;
                    continue;
                }
                let hole = self.seek(pos, libc::SEEK_HOLE).unwrap_or(self.size);
                if !ext.add(pos, hole.min(end) - pos, 0) || f.req_one {
                    break;
                }
                pos = hole;
            }
            Ok(())
        })
    }

    async fn cache(&self, count: u32, offset: u64, _f: Flags) -> Result<()> {
        // SAFETY: advisory call on our own descriptor.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                offset as i64,
                i64::from(count),
                libc::POSIX_FADV_WILLNEED,
            )
        };
        Ok(())
    }
}
