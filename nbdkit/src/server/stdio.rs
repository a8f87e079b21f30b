//! `-s`: the client is on stdin (requests) and stdout (replies), as when
//! nbdkit is started by inetd or by libnbd's `nbd_connect_command`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::backend::Peer;

/// Who is on `stdin` (the server's original stdin, `-s`): a socket's
/// peer (as when started by inetd), or [`Peer::Unknown`] for a pipe.
pub fn peer(stdin: std::os::fd::BorrowedFd<'_>) -> Peer {
    use nix::sys::socket::{getpeername, AddressFamily, SockaddrLike, SockaddrStorage};
    use std::os::fd::AsRawFd;
    let Ok(a) = getpeername::<SockaddrStorage>(stdin.as_raw_fd()) else {
        return Peer::Unknown;
    };
    if let Some(v4) = a.as_sockaddr_in() {
        return Peer::Tcp(std::net::SocketAddrV4::from(*v4).into());
    }
    if let Some(v6) = a.as_sockaddr_in6() {
        return Peer::Tcp(std::net::SocketAddrV6::from(*v6).into());
    }
    match a.family() {
        Some(AddressFamily::Unix) => Peer::Unix(
            nix::sys::socket::getsockopt(&stdin, nix::sys::socket::sockopt::PeerCredentials)
                .ok()
                .map(|c| crate::backend::Cred { pid: c.pid(), uid: c.uid(), gid: c.gid() }),
        ),
        _ => Peer::Unknown,
    }
}

/// A non-blocking file descriptor (socket or pipe) driven by the runtime.
pub struct FdStream(AsyncFd<OwnedFd>);

impl FdStream {
    /// Take over `fd`, making it non-blocking. Fails for regular files and
    /// terminals, which cannot be polled.
    pub fn new(fd: OwnedFd) -> io::Result<FdStream> {
        let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
        // SAFETY: the OwnedFd stays open, and is the same descriptor, for as
        // long as the AsyncFd lives.
        Ok(FdStream(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?))
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = ready!(self.0.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref().as_raw_fd(), unfilled)?)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(
        self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), data)?)) {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// One end of `-s`: polled by the runtime where the descriptor can be
/// polled (socket, pipe, terminal); else (a regular file, `/dev/null`, which
/// C nbdkit reads and writes as well) plain reads and writes on the
/// blocking pool.
pub enum StdioStream {
    /// A descriptor the runtime can poll.
    Polled(FdStream),
    /// One it cannot: read and written on the blocking pool.
    Blocking(tokio::fs::File),
}

impl StdioStream {
    /// Take over `fd`.
    pub fn new(fd: OwnedFd) -> io::Result<StdioStream> {
        let polled = fd.try_clone().and_then(FdStream::new);
        match polled {
            Ok(s) => Ok(StdioStream::Polled(s)),
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                // epoll refuses it: our copy was made non-blocking, and
                // shares the flag with `fd`, so clear it again.
                let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)?;
                let flags =
                    nix::fcntl::OFlag::from_bits_truncate(flags) - nix::fcntl::OFlag::O_NONBLOCK;
                nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))?;
                Ok(StdioStream::Blocking(tokio::fs::File::from_std(std::fs::File::from(fd))))
            }
            Err(e) => Err(e),
        }
    }
}

impl AsyncRead for StdioStream {
    fn poll_read(
        self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StdioStream::Polled(s) => Pin::new(s).poll_read(cx, buf),
            StdioStream::Blocking(f) => Pin::new(f).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for StdioStream {
    fn poll_write(
        self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            StdioStream::Polled(s) => Pin::new(s).poll_write(cx, data),
            StdioStream::Blocking(f) => Pin::new(f).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StdioStream::Polled(s) => Pin::new(s).poll_flush(cx),
            StdioStream::Blocking(f) => Pin::new(f).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            StdioStream::Polled(s) => Pin::new(s).poll_shutdown(cx),
            StdioStream::Blocking(f) => Pin::new(f).poll_shutdown(cx),
        }
    }
}
