//! Starting the server so that it cannot outlive us.
//!
//! Two mechanisms, because either alone has a hole:
//!
//! * The child arms `PR_SET_PDEATHSIG(SIGTERM)` between fork and exec, then
//!   checks that its parent is still the process that forked it (if we died
//!   in that window, it was reparented and exits at once). The death signal
//!   fires when the *thread* that forked the child exits, and libtest runs
//!   every test on its own short-lived thread; so every server is forked by
//!   one spawner thread that lives as long as the process. A disk created by
//!   a `static` or an rstest `#[once]` fixture therefore survives the test
//!   that created it, and still gets SIGTERM when the process dies.
//! * The server also runs with `--exit-with-parent`, which our nbdkit
//!   implements by watching the parent *process*.
//!
//! SIGTERM (not SIGKILL) lets the server remove its socket and its private
//! directory on the way out.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The most descriptors [`spawn`] passes on.
const MAX_KEEP: usize = 4;

struct Job {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// Run `cmd` from the spawner thread, with the parent-death guard armed.
///
/// `keep` are descriptors the child must inherit: each `(fd, target)` is
/// duplicated onto `target` in the child, without close-on-exec.
pub(crate) fn spawn(mut cmd: Command, keep: Vec<(RawFd, RawFd)>) -> io::Result<Child> {
    if keep.len() > MAX_KEEP {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "too many descriptors to pass",
        ));
    }
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (prctl, getppid, fcntl, dup2).
    unsafe {
        cmd.pre_exec(move || child_setup(parent, &keep));
    }
    static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);
    let tx = {
        let mut guard = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("nbdkit-test-spawner".into())
                    .spawn(move || {
                        // The sender lives in a static, so this loop ends
                        // only with the process.
                        for mut job in rx {
                            let _ = job.reply.send(job.cmd.spawn());
                        }
                    })?;
                *guard = Some(tx.clone());
                tx
            }
        }
    };
    let (reply, answer) = mpsc::channel();
    tx.send(Job { cmd, reply })
        .map_err(|_| io::Error::other("the nbdkit-test spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the nbdkit-test spawner thread is gone"))?
}

/// In the child, between fork and exec.
fn child_setup(parent: libc::pid_t, keep: &[(RawFd, RawFd)]) -> io::Result<()> {
    // SAFETY: plain syscalls on integers.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
            return Err(io::Error::last_os_error());
        }
        // Did the parent die before the guard was armed?
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // Move every kept descriptor out of the way first, so that placing
        // one cannot overwrite another that has yet to be placed.
        let mut high = [0; MAX_KEEP];
        for (i, &(fd, _)) in keep.iter().enumerate() {
            let h = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 64);
            if h == -1 {
                return Err(io::Error::last_os_error());
            }
            high[i] = h;
        }
        for (i, &(_, target)) in keep.iter().enumerate() {
            // dup2 clears close-on-exec on the target.
            if libc::dup2(high[i], target) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// A pidfd on our child, if the kernel has them.
pub(crate) fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative result is a fresh descriptor that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// A close-on-exec pipe: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two descriptors that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// How waiting for the first line ended.
pub(crate) enum Ready {
    /// The line, without its newline.
    Line(String),
    /// The child exited (or closed the pipe) first.
    Exited,
    /// The deadline passed.
    Timeout,
}

/// Wait for one line on `fd` (the server's `--print-uri` output or its
/// pidfile), for the child's exit, or for the deadline, whichever is first.
/// Nothing here sleeps: it is a poll on the pipe and the pidfd.
pub(crate) fn first_line(fd: &OwnedFd, pidfd: Option<&OwnedFd>, deadline: Instant) -> Ready {
    let mut buf = Vec::new();
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            buf.truncate(nl);
            return Ready::Line(String::from_utf8_lossy(&buf).into_owned());
        }
        let now = Instant::now();
        if now >= deadline {
            return Ready::Timeout;
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [
            libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd.map_or(-1, |p| p.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, ms) };
        if n == -1 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Ready::Exited;
        }
        if fds[0].revents != 0 {
            let mut chunk = [0u8; 4096];
            // SAFETY: reading into a local buffer of the given length.
            let r = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            match r {
                0 => return Ready::Exited,
                r if r > 0 => {
                    buf.extend_from_slice(&chunk[..r as usize]);
                    if buf.len() > 64 * 1024 {
                        return Ready::Exited;
                    }
                    continue;
                }
                _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
                _ => return Ready::Exited,
            }
        }
        if fds[1].revents != 0 {
            return Ready::Exited;
        }
    }
}

/// Wait up to `limit` for the child to exit; true if it did. Uses the
/// pidfd when there is one; otherwise polls `try_wait` (old kernels only).
pub(crate) fn wait_exit(child: &mut Child, pidfd: Option<&OwnedFd>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        match pidfd {
            Some(p) => {
                let mut pfd = libc::pollfd {
                    fd: p.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            None => std::thread::sleep(Duration::from_millis(ms.min(5) as u64)),
        }
    }
}
