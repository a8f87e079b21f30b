//! `--exit-with-parent`: stop when the parent *process* exits.
//!
//! C nbdkit uses PR_SET_PDEATHSIG, which fires when the parent *thread*
//! that forked us exits; a test harness that starts a shared server from
//! one of its threads would lose it. We watch the process instead, with a
//! pidfd. The parent pid is recorded first thing; the pidfd is opened on
//! it, and then `getppid()` is checked again: if the parent had already
//! died, we were reparented and the check fails, so no death goes unseen.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use nix::unistd::{getppid, Pid};
use tokio::io::unix::AsyncFd;

/// The parent recorded at start-up.
pub struct Parent {
    pid: Pid,
    pidfd: Option<OwnedFd>,
}

impl Parent {
    /// Record the parent and open a pidfd on it. Returns None if the parent
    /// is already gone.
    pub fn watch() -> Option<Parent> {
        let pid = getppid();
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
        let pidfd = if fd >= 0 {
            // SAFETY: the syscall returned a fresh descriptor that we own.
            Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
        } else {
            None
        };
        if getppid() != pid {
            return None;
        }
        Some(Parent { pid, pidfd })
    }

    /// Resolves when the parent process has exited.
    pub async fn exited(self) {
        if let Some(fd) = self.pidfd {
            // SAFETY: the OwnedFd stays open for the AsyncFd's lifetime.
            if let Ok(afd) = unsafe { AsyncFd::register(fd) } {
                // A pidfd becomes readable when the process exits.
                let _ = afd.readable().await;
                return;
            }
        }
        // No pidfd (old kernel): notice reparenting instead.
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            if getppid() != self.pid {
                return;
            }
        }
    }
}
