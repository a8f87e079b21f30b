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

/// Reads at least this long go from the page cache; shorter ones cost
/// more in system calls (one `sendfile` each, where a batch of copied
/// replies shares one `writev`) than the copy they save.
pub const MIN: u64 = 64 * 1024;

/// The data of one read reply, still in the file.
pub struct FileData {
    pub src: ZeroCopySource,
    pub len: u64,
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
