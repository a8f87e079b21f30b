//! `file`: serve a regular file or a block device, or every one of them in
//! a directory.
//!
//! Exactly one of these chooses what is served:
//! - `file=PATH` (magic key, so `nbdkit file disk.img` works): one file or
//!   block device; the export name the client asks for is ignored.
//! - `dir=DIR` (or `directory=DIR`): each regular file or block device directly in `DIR`
//!   (symbolic links followed) is an export named after it; `nbdinfo
//!   --list` shows them. The default export `""` is refused, and so is any
//!   name containing `/`.
//! - `fd=N`: the file already open on inherited descriptor `N` (> 2);
//!   read-only if it was opened read-only.
//! - `dirfd=N`: like `dir=`, for a directory open on descriptor `N`.
//!
//! Also:
//! - `cache=default|none`: `none` drops written pages from the page cache
//!   after each write (they are flushed first).
//! - `fadvise=normal|random|sequential`: access-pattern hint for the kernel.
//!
//! Files are opened read-write, or read-only with `-r` or when they cannot
//! be written. Trim punches holes, zero uses FALLOC_FL_ZERO_RANGE (or a
//! punched hole, or plain writes when neither works), flush and FUA use
//! fdatasync, and extents come from SEEK_DATA/SEEK_HOLE. The blocking
//! system calls run with `block_in_place`, so they never stall the other
//! requests, and requests on one file run in parallel. Reads first take
//! what the page cache holds with `RWF_NOWAIT`, which cannot block.
//!
//! Example: `nbdkit -U - file disk.img --run 'qemu-img info "$uri"'`

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::{
    Cache, Caps, Errno, Error, ExportEntry, ExtentFlags, Extents, Flags, Fua, Handle, OpenArgs,
    Plugin, Result, ThreadModel, Zero, ZeroCopySource,
};
use crate::error::{io_message, StartError};
use crate::params::Params;

/// The `file` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "file",
    description: "a regular file or block device",
    config_help: "[file=]<FILENAME>            The filename to serve.\n\
                  dir=<DIRNAME>                A directory of files to serve, one export each.\n\
                  fd=<FD>                      A file descriptor to serve.\n\
                  dirfd=<FD>                   A directory descriptor of files to serve.\n\
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

/// What is served.
enum Source {
    Path(PathBuf),
    Dir(PathBuf),
    /// An inherited descriptor; each connection gets a `dup` of it.
    Fd(RawFd),
    /// An inherited directory descriptor.
    DirFd(RawFd),
}

struct FilePlugin {
    source: Source,
    cache: CacheMode,
    fadvise: libc::c_int,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let err = |m: String| Err(StartError(format!("file: {m}")));
    let mut given = Vec::new();
    // `directory=` is an alias of `dir=`, as in C.
    for (key, name) in
        [("file", "file"), ("directory", "dir"), ("dir", "dir"), ("fd", "fd"), ("dirfd", "dirfd")]
    {
        for v in p.take_all(key) {
            given.push((name, v));
        }
    }
    let (key, value) = match given.as_slice() {
        [] => {
            return err(
                "you must supply [file=]<FILENAME>, dir=<DIRNAME>, fd=<FD> or dirfd=<FD>".into()
            )
        }
        [(k, v)] => (*k, v.clone()),
        [(a, _), (b, _), ..] if a == b => {
            return err(format!("{a} parameter can only appear once"))
        }
        [(a, _), (b, _), ..] => return err(format!("{a}= and {b}= cannot be used together")),
    };
    let cache = match p.take("cache").as_deref() {
        None | Some("default") => CacheMode::Default,
        Some("none") => CacheMode::None,
        Some(v) => return err(format!("unknown cache mode: {v}")),
    };
    let fadvise = match p.take("fadvise").as_deref() {
        None | Some("normal") => libc::POSIX_FADV_NORMAL,
        Some("random") => libc::POSIX_FADV_RANDOM,
        Some("sequential") => libc::POSIX_FADV_SEQUENTIAL,
        Some(v) => return err(format!("unknown fadvise mode: {v}")),
    };
    p.finish()?;
    let source = match key {
        "file" => match std::fs::metadata(&value) {
            Ok(m) if m.is_dir() => return err(format!("{value}: is a directory (use dir=)")),
            Ok(m) if !servable(&m.file_type()) => {
                return err(format!("{value}: not a regular file or block device"))
            }
            Ok(_) => Source::Path(value.into()),
            Err(e) => return err(format!("{value}: {}", io_message(&e))),
        },
        "dir" => match std::fs::metadata(&value) {
            Ok(m) if m.is_dir() => Source::Dir(value.into()),
            Ok(_) => return err(format!("dir={value}: not a directory")),
            Err(e) => return err(format!("dir={value}: {}", io_message(&e))),
        },
        _ => {
            let fd: RawFd = match value.parse() {
                Ok(n) if n > 2 => n,
                Ok(_) => {
                    return err(format!(
                        "{key}={value}: must be above 2 (0, 1 and 2 are nbdkit's own stdio)"
                    ))
                }
                Err(_) => return err(format!("{key}={value}: not a file descriptor number")),
            };
            // SAFETY: fstat on an integer descriptor, into a local struct.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstat(fd, &mut st) } == -1 {
                let e = std::io::Error::last_os_error();
                return err(format!("{key}={fd}: {}", io_message(&e)));
            }
            let fmt = st.st_mode & libc::S_IFMT;
            match key {
                "fd" if fmt == libc::S_IFREG || fmt == libc::S_IFBLK => Source::Fd(fd),
                "fd" => return err(format!("fd={fd}: not a regular file or block device")),
                _ if fmt == libc::S_IFDIR => Source::DirFd(fd),
                _ => return err(format!("dirfd={fd}: not a directory")),
            }
        }
    };
    Ok(Arc::new(FilePlugin { source, cache, fadvise }))
}

/// What this plugin serves: regular files and block devices.
fn servable(t: &std::fs::FileType) -> bool {
    t.is_file() || t.is_block_device()
}

struct Disk {
    /// Shared with replies sent straight from the page cache.
    file: Arc<File>,
    /// Where the export starts in the file (non-zero for a tar member).
    base: u64,
    size: u64,
    writable: bool,
    cache: CacheMode,
    /// SEEK_DATA/SEEK_HOLE work here (not for block devices).
    seekable_holes: bool,
    /// The file may have holes: it had fewer blocks than bytes when
    /// opened, or a trim or zero has punched some since. Only then do
    /// reads look for holes (two `lseek`s each).
    maybe_sparse: AtomicBool,
    /// The kernel will not say what of this file is cached (see
    /// [`ZeroCopySource::cached`]): its reads are all copies.
    no_cachestat: AtomicBool,
}

/// An export name in directory mode: one entry of the directory.
fn entry_name(export: &str) -> Result<CString> {
    if export.is_empty() {
        return Err(Error::new(
            Errno::Inval,
            "in directory mode the client must name an export (see nbdinfo --list)",
        ));
    }
    if export.contains('/') {
        return Err(Error::new(Errno::Inval, format!("export name {export:?} contains '/'")));
    }
    CString::new(export).map_err(|_| Error::new(Errno::Inval, "NUL in export name"))
}

/// Open `name` relative to `dir` (or the working directory), read-write
/// unless `readonly` or not permitted. Never blocks on a FIFO, and refuses
/// anything but a regular file or block device.
fn open_at(dir: RawFd, name: &CString, readonly: bool) -> std::io::Result<(File, bool)> {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
    let open = |mode| {
        // SAFETY: openat with a NUL-terminated path and plain flags.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | mode) };
        if fd == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            // SAFETY: a fresh descriptor that we now own.
            Ok(unsafe { File::from_raw_fd(fd) })
        }
    };
    let rw = if readonly {
        Err(std::io::Error::from_raw_os_error(libc::EROFS))
    } else {
        open(libc::O_RDWR)
    };
    let (file, writable) = match rw {
        Ok(f) => (f, true),
        Err(_) => (open(libc::O_RDONLY)?, false),
    };
    if !servable(&file.metadata()?.file_type()) {
        return Err(std::io::Error::other("not a regular file or block device"));
    }
    // O_NONBLOCK only guarded the open.
    // SAFETY: fcntl on our own descriptor.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) };
    Ok((file, writable))
}

/// The regular files and block devices in a directory, in directory order.
fn list_dir(dir: &Path) -> std::io::Result<Vec<ExportEntry>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // Follow symbolic links, as opening them will.
        let ok = match entry.file_type() {
            Ok(t) if t.is_symlink() => {
                std::fs::metadata(entry.path()).map(|m| servable(&m.file_type())).unwrap_or(false)
            }
            Ok(t) => servable(&t),
            Err(_) => false,
        };
        if ok {
            out.push(ExportEntry {
                name: entry.file_name().to_string_lossy().into_owned(),
                description: None,
            });
        }
    }
    Ok(out)
}

impl FilePlugin {
    /// Open what a connection asked for (blocking).
    fn open_file(&self, readonly: bool, entry: Option<&CString>) -> std::io::Result<(File, bool)> {
        match (&self.source, entry) {
            (Source::Path(p), _) => {
                let name = CString::new(p.as_os_str().as_bytes())?;
                open_at(libc::AT_FDCWD, &name, readonly)
            }
            (Source::Dir(d), Some(name)) => {
                let dir = std::fs::File::open(d)?;
                open_at(dir.as_raw_fd(), name, readonly)
            }
            (Source::DirFd(fd), Some(name)) => open_at(*fd, name, readonly),
            (Source::Fd(fd), _) => {
                // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor.
                let dup = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3) };
                if dup == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // SAFETY: the duplicate is ours.
                let file = unsafe { File::from_raw_fd(dup) };
                // SAFETY: F_GETFL on our own descriptor.
                let mode = unsafe { libc::fcntl(dup, libc::F_GETFL) } & libc::O_ACCMODE;
                Ok((file, !readonly && mode != libc::O_RDONLY))
            }
            (Source::Dir(_) | Source::DirFd(_), None) => {
                Err(std::io::Error::from_raw_os_error(libc::EINVAL))
            }
        }
    }
}

#[async_trait]
impl Plugin for FilePlugin {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (readonly, export) = (args.readonly, args.export);
        let entry = match self.source {
            Source::Dir(_) | Source::DirFd(_) => Some(entry_name(export)?),
            _ => None,
        };
        let what = match &self.source {
            Source::Path(p) => p.display().to_string(),
            Source::Fd(fd) => format!("fd={fd}"),
            _ => export.to_string(),
        };
        let (file, writable) = blocking(|| self.open_file(readonly, entry.as_ref()))
            .map_err(|e| Error::new(e.errno, format!("{what}: {}", e.msg)))?;
        blocking(|| {
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
                file: Arc::new(file),
                base: 0,
                size,
                writable,
                cache: self.cache,
                seekable_holes: meta.is_file(),
                maybe_sparse: AtomicBool::new(has_holes(&meta)),
                no_cachestat: AtomicBool::new(false),
            }) as Arc<dyn Handle>)
        })
    }

    async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        match &self.source {
            Source::Dir(d) => blocking(|| list_dir(d)),
            Source::DirFd(fd) => blocking(|| list_dir(Path::new(&format!("/proc/self/fd/{fd}")))),
            _ => Ok(vec![ExportEntry {
                name: self.default_export(readonly, is_tls).await?,
                description: None,
            }]),
        }
    }
}

/// A handle on `[base, base+size)` of the file at `path` (the tar
/// plugin's member): everything the file plugin does, within that window.
pub(crate) fn open_window(
    path: &Path, readonly: bool, base: u64, size: u64,
) -> Result<Arc<dyn Handle>> {
    let (file, writable) = blocking(|| {
        let name = CString::new(path.as_os_str().as_bytes())?;
        open_at(libc::AT_FDCWD, &name, readonly)
    })?;
    Ok(handle_from(file, writable, base, size))
}

/// A handle on the whole of an open file (tmpdisk's and ondemand's disks).
pub(crate) fn whole_file(file: File, writable: bool) -> Result<Arc<dyn Handle>> {
    let size = blocking(|| file.metadata())?.len();
    Ok(handle_from(file, writable, 0, size))
}

fn handle_from(file: File, writable: bool, base: u64, size: u64) -> Arc<dyn Handle> {
    let meta = file.metadata();
    let seekable_holes = meta.as_ref().is_ok_and(|m| m.is_file());
    let maybe_sparse = AtomicBool::new(meta.as_ref().is_ok_and(has_holes));
    Arc::new(Disk {
        file: Arc::new(file),
        base,
        size,
        writable,
        cache: CacheMode::Default,
        seekable_holes,
        maybe_sparse,
        no_cachestat: AtomicBool::new(false),
    })
}

/// Whether a regular file has fewer blocks allocated than its size needs.
fn has_holes(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    meta.is_file() && meta.blocks().saturating_mul(512) < meta.len()
}

/// Run a call that may block, from a handle that says it never blocks
/// (see [`Handle::never_blocks`]): yield once first, so that a request the
/// server started on the connection's own task moves to a task of its own
/// before the thread blocks.
async fn yield_then_block<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    tokio::task::yield_now().await;
    blocking(f)
}

/// Run a blocking system call without stalling the runtime's other tasks.
/// (Shared with the other plugins that serve files.)
pub(crate) fn blocking<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    tokio::task::block_in_place(f).map_err(Error::from)
}

/// Read what the page cache already holds, with `RWF_NOWAIT`: never
/// blocks. Returns how many bytes were read (0 on a miss, on an old
/// kernel, or at end of file).
pub(crate) fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut done = 0;
    while done < buf.len() {
        let iov =
            libc::iovec { iov_base: buf[done..].as_mut_ptr().cast(), iov_len: buf.len() - done };
        // SAFETY: one iovec over the unread part of `buf`.
        let n = unsafe {
            libc::preadv2(
                file.as_raw_fd(),
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

/// Fill all of `buf` from `offset` of `file`: what the page cache holds is
/// copied without leaving the thread, and only the rest (a cache miss)
/// goes through `block_in_place`. A file too short gives `UnexpectedEof`.
pub(crate) fn read_file(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let cached = read_cached(file, buf, offset);
    let (buf, offset) = (&mut buf[cached..], offset + cached as u64);
    if buf.is_empty() {
        return Ok(());
    }
    tokio::task::block_in_place(|| file.read_exact_at(buf, offset))
}

/// `lseek` with `SEEK_DATA` or `SEEK_HOLE`; `None` when it fails (ENXIO:
/// no data after `offset`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> Option<u64> {
    // SAFETY: lseek on a descriptor we own. Other users of the file share
    // its position, but SEEK_DATA/SEEK_HOLE results don't depend on it and
    // reads and writes use explicit offsets.
    let r = unsafe { libc::lseek(file.as_raw_fd(), offset as i64, whence) };
    (r >= 0).then_some(r as u64)
}

/// Describe bytes `[from, to)` of a regular file `size` bytes long with
/// SEEK_DATA/SEEK_HOLE, as extents of the disk where byte `from` of the
/// file is at offset `at`. Blocking: call it inside [`blocking`]. Returns
/// false once `ext` wants no more (full, covered, or `req_one`).
pub(crate) fn seek_extents(
    file: &File, size: u64, (from, to): (u64, u64), at: u64, req_one: bool, ext: &mut Extents,
) -> bool {
    let disk = |pos: u64| at + (pos - from);
    let mut pos = from;
    while pos < to {
        // Where does the data at or after `pos` start?
        let data = seek(file, pos, libc::SEEK_DATA).unwrap_or(size).min(to);
        let (end, flags) = if data > pos {
            (data, ExtentFlags::HOLE | ExtentFlags::ZERO)
        } else {
            (seek(file, pos, libc::SEEK_HOLE).unwrap_or(size).min(to), ExtentFlags::DATA)
        };
        if end <= pos {
            // The file shrank under us: call the rest data.
            return ext.add(disk(pos), to - pos, ExtentFlags::DATA) && !req_one;
        }
        if !ext.add(disk(pos), end - pos, flags) || req_one {
            return false;
        }
        pos = end;
    }
    true
}

impl Disk {
    /// Fill `buf` from position `pos` of the file: what the page cache
    /// holds at once, the rest after yielding (see `never_blocks`).
    async fn read_at(&self, buf: &mut [u8], pos: u64) -> Result<()> {
        let cached = read_cached(&self.file, buf, pos);
        if cached < buf.len() {
            let rest = &mut buf[cached..];
            yield_then_block(|| {
                self.file.read_exact_at(rest, pos + cached as u64).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        std::io::Error::other(
                            "file: read past the end of the file (was it truncated?)",
                        )
                    } else {
                        e
                    }
                })
            })
            .await?;
        }
        Ok(())
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
}

#[async_trait]
impl Handle for Disk {
    fn zero_copy_source(&self, offset: u64, len: u64) -> Option<ZeroCopySource> {
        // Only where nothing else must happen on a read: the page cache is
        // used as usual, and no holes are to be found.
        if self.cache != CacheMode::Default
            || self.maybe_sparse.load(Ordering::Relaxed)
            || self.no_cachestat.load(Ordering::Relaxed)
        {
            return None;
        }
        let src = ZeroCopySource { file: self.file.clone(), offset: self.base + offset };
        match src.cached(len) {
            Some(true) => Some(src),
            Some(false) => None,
            None => {
                // Not for this file (EPERM: neither ours nor writable).
                self.no_cachestat.store(true, Ordering::Relaxed);
                None
            }
        }
    }

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
            // As C's file plugin: zeroing may be slow, so no fast zero.
            fast_zero: false,
            cache: Cache::Native,
            extents: self.seekable_holes,
            multi_conn: true,
            rotational: false,
        })
    }

    /// Reads that the page cache holds are copied at once; a miss yields
    /// before it blocks. Other calls yield first.
    fn never_blocks(&self) -> bool {
        true
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        self.read_at(buf, self.base + offset).await
    }

    async fn pread_sparse(
        &self, buf: &mut [u8], offset: u64, f: Flags, holes: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        if !self.seekable_holes || !self.maybe_sparse.load(Ordering::Relaxed) {
            return self.pread(buf, offset, f).await;
        }
        let from = self.base + offset;
        let to = from + buf.len() as u64;
        let mut pos = from;
        while pos < to {
            // SAFETY: lseek on our own descriptor (see `seek`).
            let data = unsafe { libc::lseek(self.file.as_raw_fd(), pos as i64, libc::SEEK_DATA) };
            let data = match data {
                d if d >= 0 => (d as u64).min(to),
                // ENXIO: no data from here to the end of the file.
                _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => to,
                // Anything else: read the rest as data, to be safe.
                _ => pos,
            };
            if data > pos {
                holes.push((pos - from, data - pos));
                pos = data;
                continue;
            }
            let end = seek(&self.file, pos, libc::SEEK_HOLE).unwrap_or(to).min(to);
            let end = if end > pos { end } else { to };
            let at = (pos - from) as usize;
            self.read_at(&mut buf[at..at + (end - pos) as usize], pos).await?;
            pos = end;
        }
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, f: Flags) -> Result<()> {
        let offset = self.base + offset;
        yield_then_block(|| {
            self.file.write_all_at(buf, offset)?;
            self.after_write(offset, buf.len() as u64, f.fua)
        })
        .await
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        yield_then_block(|| self.datasync()).await
    }

    async fn trim(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        let offset = self.base + offset;
        self.maybe_sparse.store(true, Ordering::Relaxed);
        yield_then_block(|| {
            let r = self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                count,
            );
            match r {
                // Trim is advisory: a file system that cannot punch holes
                // simply keeps the data.
                Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(()),
                r => r,
            }?;
            self.after_write(offset, count, f.fua)
        })
        .await
    }

    async fn zero(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        // C's order: a hole where trimming is allowed (reads back as zero,
        // frees the space), else ZERO_RANGE, else a hole filled in again.
        // Where none is supported the guard writes zeroes (or refuses a
        // fast zero); any other failure is the client's error.
        let offset = self.base + offset;
        let len = count;
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let unsupported =
            |e: &std::io::Error| matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS));
        self.maybe_sparse.store(true, Ordering::Relaxed);
        yield_then_block(|| {
            let mut tries: Vec<&dyn Fn() -> std::io::Result<()>> = Vec::new();
            let hole = || self.fallocate(punch, offset, len);
            let zero_range = || {
                let keep = libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE;
                self.fallocate(keep, offset, len)
            };
            let refill = || {
                self.fallocate(punch, offset, len)?;
                self.fallocate(0, offset, len)
            };
            if f.may_trim {
                tries.push(&hole);
            }
            tries.push(&zero_range);
            tries.push(&refill);
            for t in tries {
                match t() {
                    Ok(()) => return self.after_write(offset, len, f.fua),
                    Err(e) if unsupported(&e) => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(std::io::Error::from_raw_os_error(libc::ENOTSUP))
        })
        .await
    }

    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        // Positions in the file; extents are reported relative to `base`.
        let from = self.base + offset;
        let range = (from, from + count);
        let file_end = self.base + self.size;
        yield_then_block(|| {
            seek_extents(&self.file, file_end, range, offset, f.req_one, ext);
            Ok(())
        })
        .await
    }

    async fn cache(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        // SAFETY: advisory call on our own descriptor.
        unsafe {
            libc::posix_fadvise(
                self.file.as_raw_fd(),
                (self.base + offset) as i64,
                count as i64,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        Ok(())
    }
}
