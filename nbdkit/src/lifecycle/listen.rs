//! Binding the listening sockets, before anything else can fail late.
//!
//! Sockets are bound (and listening) before nbdkit forks, writes its
//! pidfile, prints its URI or runs `--run`, so each of those means "a
//! client can connect now".

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

use crate::cli::{Config, Family, Listen};
use crate::error::StartError;
use crate::uri;

/// A bound, listening socket, not yet handed to the runtime.
pub enum Bound {
    Tcp(std::net::TcpListener),
    Unix(UnixListener),
}

/// Everything `bind` set up. Dropping it removes the Unix socket we created
/// and the private directory of `-U -`.
pub struct Listening {
    pub sockets: Vec<Bound>,
    /// TCP port actually bound (the kernel's choice for `-p 0`).
    pub port: Option<u16>,
    /// Unix socket path.
    pub unix: Option<PathBuf>,
    /// The server's URI, for `$uri` and `--print-uri`.
    pub uri: Option<String>,
    cleanup: Option<PathBuf>,
    _private_dir: Option<tempfile::TempDir>,
    /// The reaper's pipe (see [`super::reaper`]): closed when we exit.
    _reaper: Option<std::os::fd::OwnedFd>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(p) = &self.cleanup {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Listening {
    /// The socket and directory we created and must remove at exit.
    pub fn owned_paths(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.cleanup.iter().map(|p| p.as_path()).collect();
        if let Some(d) = &self._private_dir {
            v.push(d.path());
        }
        v
    }

    /// Remove the socket and directory we created now, rather than at
    /// exit: once the `--run` command has ended nobody will connect again,
    /// and a directory is removed faster while its socket is still bound.
    pub fn remove_now(&mut self) {
        if let Some(p) = self.cleanup.take() {
            let _ = std::fs::remove_file(p);
        }
        drop(self._private_dir.take());
    }

    /// Forget the cleanup duties: used by the parent after a fork, whose
    /// child now owns the sockets.
    pub fn disown(mut self) {
        self.cleanup = None;
        if let Some(d) = self._private_dir.take() {
            let _ = d.keep();
        }
    }
}

/// Bind what the configuration asks for.
pub fn bind(cfg: &Config, log: &crate::log::Log) -> Result<Listening, StartError> {
    let mut l = Listening {
        sockets: Vec::new(),
        port: None,
        unix: None,
        uri: None,
        cleanup: None,
        _private_dir: None,
        _reaper: None,
    };
    match &cfg.listen {
        Listen::Stdin => {}
        Listen::Unix(path) => {
            let abs = std::path::absolute(path)
                .map_err(|e| StartError(format!("{}: {e}", path.display())))?;
            l.sockets.push(Bound::Unix(bind_unix(&abs)?));
            l.cleanup = Some(abs.clone());
            l.uri = Some(uri::unix(&abs, &cfg.export_name));
            l.unix = Some(abs);
        }
        Listen::UnixPrivate => {
            use std::os::unix::fs::PermissionsExt;
            let dir = tempfile::Builder::new()
                .prefix("nbdkit")
                .permissions(std::fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| {
                    StartError(format!("-U -: cannot create a temporary directory: {e}"))
                })?;
            let path = dir.path().join("socket");
            l.sockets.push(Bound::Unix(bind_unix(&path)?));
            l.cleanup = Some(path.clone());
            l.uri = Some(uri::unix(&path, &cfg.export_name));
            l._reaper = super::reaper::start(&path, dir.path());
            l.unix = Some(path);
            l._private_dir = Some(dir);
        }
        Listen::Tcp { ipaddr, port, family } => {
            let mut port = *port;
            for (addr, v6only) in tcp_addresses(ipaddr.as_deref(), port, *family)? {
                let mut a = addr;
                if port != 0 {
                    a.set_port(port); // every socket on the port of the first (-p 0)
                }
                let t = match bind_tcp(a, v6only) {
                    Ok(t) => t,
                    // All addresses, and no IPv6 on this machine: IPv4 will do.
                    Err(e) if ipaddr.is_none() && *family == Family::Any && a.is_ipv6() => {
                        log.debug(&format!("{a}: {e}"));
                        continue;
                    }
                    Err(e) => return Err(StartError(format!("bind: {a}: {e}"))),
                };
                port = t.local_addr().map(|s| s.port()).unwrap_or(port);
                l.sockets.push(Bound::Tcp(t));
                if ipaddr.is_none() && *family == Family::Any {
                    break; // the dual-stack socket covers IPv4 too
                }
            }
            if l.sockets.is_empty() {
                return Err(StartError("could not bind to any address".into()));
            }
            // Always localhost, whatever -i says, as C nbdkit does.
            l.uri = Some(uri::tcp("localhost", port, &cfg.export_name));
            l.port = Some(port);
        }
        Listen::Activation(n) => {
            for fd in 3..3 + n {
                // Checked before it is owned: a descriptor that was never
                // passed must be an error, not a close of a closed fd.
                let local: SockaddrStorage = socket::getsockname(fd)
                    .map_err(|e| StartError(format!("socket activation: fd {fd}: {e}")))?;
                // SAFETY: systemd passed us these descriptors (LISTEN_FDS),
                // and the check above shows this one is open; nothing else
                // in this process owns them.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                let _ = nix::fcntl::fcntl(
                    fd,
                    nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
                );
                if local.as_unix_addr().is_some() {
                    l.sockets.push(Bound::Unix(UnixListener::from(owned)));
                } else {
                    l.sockets.push(Bound::Tcp(std::net::TcpListener::from(owned)));
                }
            }
        }
    }
    Ok(l)
}

fn bind_unix(path: &Path) -> Result<UnixListener, StartError> {
    UnixListener::bind(path).map_err(|e| StartError(format!("bind: {}: {e}", path.display())))
}

/// Where to listen on TCP, and whether each IPv6 socket is IPv6-only.
fn tcp_addresses(
    ip: Option<&str>, port: u16, family: Family,
) -> Result<Vec<(SocketAddr, bool)>, StartError> {
    let fits = |a: &SocketAddr| match family {
        Family::Any => true,
        Family::V4 => a.is_ipv4(),
        Family::V6 => a.is_ipv6(),
    };
    let Some(ip) = ip else {
        // All addresses: one dual-stack IPv6 socket where the machine has
        // IPv6, else (or with -4) IPv4 alone.
        let v6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        let v4 = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port);
        return Ok(match family {
            Family::Any => vec![(v6, false), (v4, false)],
            Family::V4 => vec![(v4, false)],
            Family::V6 => vec![(v6, true)],
        });
    };
    let host = ip.trim_start_matches('[').trim_end_matches(']');
    let found: Vec<_> = (host, port)
        .to_socket_addrs()
        .map_err(|e| StartError(format!("-i {ip}: {e}")))?
        .filter(fits)
        .map(|a| (a, a.is_ipv6()))
        .collect();
    if found.is_empty() {
        return Err(StartError(format!("-i {ip}: no address of the requested family")));
    }
    Ok(found)
}

fn bind_tcp(addr: SocketAddr, v6only: bool) -> std::io::Result<std::net::TcpListener> {
    let fam = if addr.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    let fd = socket::socket(fam, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6only)?;
    }
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(addr))?;
    socket::listen(&fd, Backlog::MAXCONN)?;
    Ok(std::net::TcpListener::from(fd))
}
