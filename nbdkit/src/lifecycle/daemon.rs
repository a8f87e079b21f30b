//! Background mode: fork once the sockets listen, and let the parent exit
//! only when the child is ready (pidfile written, signals handled), so that
//! "nbdkit returned" means "the server is up".

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use nix::unistd::{fork, ForkResult};

use crate::error::StartError;

/// Which side of the fork we are on.
pub enum Side {
    /// The original process: the child is ready; exit with this status.
    Parent(u8),
    /// The server: report readiness through this.
    Child(Ready),
}

/// The child's end of the readiness pipe.
pub struct Ready(Option<OwnedFd>);

impl Ready {
    /// Nobody is waiting (foreground mode).
    pub fn none() -> Ready {
        Ready(None)
    }

    /// Tell the parent we are ready.
    pub fn signal(&mut self) {
        if let Some(fd) = self.0.take() {
            let _ = std::fs::File::from(fd).write_all(b"1");
        }
    }
}

/// Fork into the background. Must be called while the process has a single
/// thread (before the runtime starts).
pub fn fork_into_background(verbose: bool) -> Result<Side, StartError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| StartError(format!("pipe: {e}")))?;
    // SAFETY: no other threads exist yet, so the child may run Rust code.
    match unsafe { fork() }.map_err(|e| StartError(format!("fork: {e}")))? {
        ForkResult::Parent { child } => {
            drop(w);
            let mut byte = [0u8; 1];
            let n = std::fs::File::from(r).read(&mut byte).unwrap_or(0);
            if n == 1 {
                return Ok(Side::Parent(0));
            }
            // The child died before it was ready; it said why on stderr.
            let st = nix::sys::wait::waitpid(child, None);
            Ok(Side::Parent(match st {
                Ok(nix::sys::wait::WaitStatus::Exited(_, c)) if c != 0 => c as u8,
                _ => 1,
            }))
        }
        ForkResult::Child => {
            drop(r);
            let _ = nix::unistd::setsid();
            redirect_stdio(verbose);
            Ok(Side::Child(Ready(Some(w))))
        }
    }
}

/// stdin and stdout go to /dev/null; stderr too unless `-v`, as C nbdkit
/// does (errors go to syslog instead). A caller capturing our output must
/// not be kept waiting by the daemon holding its pipe.
fn redirect_stdio(verbose: bool) {
    if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
        let fd = null.as_raw_fd();
        let _ = nix::unistd::dup2(fd, 0);
        let _ = nix::unistd::dup2(fd, 1);
        if !verbose {
            let _ = nix::unistd::dup2(fd, 2);
        }
    }
}

/// Write the pidfile in place (no temporary file and rename), so that a
/// FIFO or `/dev/fd/N` works as a readiness signal.
pub fn write_pidfile(path: &Path) -> Result<(), StartError> {
    let line = format!("{}\n", std::process::id());
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()))
        .map_err(|e| StartError(format!("{}: {e}", path.display())))
}
