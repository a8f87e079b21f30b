//! Read replies sent straight from a file's page cache (`sendfile`).
//!
//! For a plain (not TLS) connection to a plugin that reads a file (see
//! [`Handle::zero_copy_source`](crate::backend::Handle::zero_copy_source)),
//! a large READ whose pages are all cached is answered with its header
//! from us and its data by the kernel, from the page cache to the socket:
//! the server copies nothing (on Linux 6.5 and later a Unix socket takes
//! the page cache's pages as they are), which leaves the CPU to the client.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, AsyncWriteExt, Interest};

use crate::backend::ZeroCopySource;
use crate::protocol::reply;

/// Reads at least this long go from the page cache; shorter ones cost
/// more in system calls (one `sendfile` each, where a batch of copied
/// replies shares one `writev`) than the copy they save.
pub const MIN: u64 = 64 * 1024;

/// The data of one read reply, still in the file.
pub struct FileData {
    pub src: ZeroCopySource,
    pub len: u64,
    /// The reply's header, should it have to become an error after all.
    pub to: reply::To,
}

impl FileData {
    /// The whole reply the usual way: the data read into memory (off the
    /// runtime's threads), after `header`; or an EIO reply if it cannot be
    /// read. For data no longer all in the page cache, or no socket to
    /// send it to.
    pub async fn copied(&self, header: &[u8], log: &crate::log::Log) -> Vec<u8> {
        let (file, off, len) = (self.src.file.clone(), self.src.offset, self.len as usize);
        let mut out = Vec::with_capacity(header.len() + len);
        out.extend_from_slice(header);
        out.resize(header.len() + len, 0);
        let h = header.len();
        let read = tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            file.read_exact_at(&mut out[h..], off).map(|()| out)
        })
        .await;
        let msg = match read {
            Ok(Ok(out)) => return out,
            Ok(Err(e)) => format!("pread: {e}"),
            Err(e) => format!("pread: {e}"),
        };
        log.error(&msg);
        reply::status(&self.to, Some((crate::protocol::consts::EIO, &msg)))
    }
}

/// A connection's socket, as `sendfile` writes to it: our own descriptor
/// for it (a duplicate, registered for writability with the runtime).
pub struct Sink(AsyncFd<OwnedFd>);

impl Sink {
    /// Duplicate `socket` (the connection's, alive as long as its streams).
    pub fn new(socket: RawFd) -> io::Result<Sink> {
        // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own, or -1.
        let fd = unsafe { libc::fcntl(socket, libc::F_DUPFD_CLOEXEC, 3) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the new descriptor is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd stays open for the AsyncFd's lifetime.
        Ok(Sink(unsafe { AsyncFd::register_with_interest(fd, Interest::WRITABLE) }?))
    }

    /// Send `data` after whatever `w` has written (the reply's header):
    /// from the page cache, and should the file have shrunk meanwhile, the
    /// missing bytes as zeroes (the header has promised them). False if
    /// zeroes had to stand in.
    pub async fn send<W: AsyncWrite + Unpin>(
        &self, w: &mut W, data: &FileData,
    ) -> io::Result<bool> {
        let file = data.src.file.as_raw_fd();
        let mut off = data.src.offset as libc::off_t;
        let mut left = data.len;
        while left > 0 {
            let mut ready = self.0.writable().await?;
            let sent = ready.try_io(|fd| {
                let want = left.min(1 << 30) as usize;
                // SAFETY: sendfile between two descriptors we hold, with
                // `off` ours to update.
                match unsafe { libc::sendfile(fd.as_raw_fd(), file, &mut off, want) } {
                    n if n < 0 => Err(io::Error::last_os_error()),
                    n => Ok(n as u64),
                }
            });
            match sent {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => left -= n,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        let complete = left == 0;
        let zeroes = vec![0u8; left.min(1 << 20) as usize];
        while left > 0 {
            let n = left.min(zeroes.len() as u64) as usize;
            w.write_all(&zeroes[..n]).await?;
            left -= n as u64;
        }
        Ok(complete)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::protocol::reply::{Style, To};

    fn data(file: std::fs::File, offset: u64, len: u64) -> FileData {
        let to = To { style: Style::Simple, cookie: 7, offset };
        FileData { src: ZeroCopySource { file: Arc::new(file), offset }, len, to }
    }

    #[tokio::test]
    async fn a_reply_that_cannot_be_sent_from_the_cache_is_read_or_fails_with_eio() {
        let mut f = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut f, b"0123456789").unwrap();
        let header = reply::read_header(&To { style: Style::Simple, cookie: 7, offset: 2 }, 5);
        let log = crate::log::Log::default();
        let out = data(f.try_clone().unwrap(), 2, 5).copied(&header, &log).await;
        assert_eq!(&out[..header.len()], &header[..]);
        assert_eq!(&out[header.len()..], b"23456");
        // Past the end of the file (it shrank): an error reply, no data.
        let out = data(f, 8, 5).copied(&header, &log).await;
        assert_eq!(out.len(), 16);
        assert_eq!(&out[4..8], &crate::protocol::consts::EIO.to_be_bytes());
    }

    #[test]
    fn dropped_pages_are_not_cached() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![1u8; 1 << 20]).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let src = ZeroCopySource { file: Arc::new(f), offset: 4096 };
        let Some(cached) = src.cached(65536) else { return };
        if cached {
            src.file.sync_all().unwrap();
            // SAFETY: advice on our own descriptor.
            unsafe { libc::posix_fadvise(src.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            // (tmpfs keeps its pages whatever we advise.)
            if src.cached(65536) == Some(true) {
                return;
            }
        }
        assert_eq!(src.cached(65536), Some(false));
        assert_eq!(src.cached(0), Some(true));
    }
}
