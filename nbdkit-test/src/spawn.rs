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

struct Job {
    cmd: Command,
    reply: mpsc::Sender<io::Result<Child>>,
}

/// The spawner thread's queue, and the process it belongs to: a process
/// forked without exec inherits the queue but not the thread.
static SPAWNER: Mutex<Option<(u32, mpsc::Sender<Job>)>> = Mutex::new(None);

/// Run `cmd` from the spawner thread, with the parent-death guard armed.
///
/// `keep` are close-on-exec descriptors the child must inherit under their
/// own numbers: close-on-exec is cleared on them in the child only. (The
/// child never moves descriptors around: std keeps a close-on-exec pipe of
/// its own in the child, which a `dup2` onto a fixed number could hit.)
pub(crate) fn spawn(mut cmd: Command, keep: Vec<RawFd>) -> io::Result<Child> {
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and only
    // makes async-signal-safe calls (prctl, getppid, fcntl).
    unsafe {
        cmd.pre_exec(move || child_setup(parent as libc::pid_t, &keep));
    }
    let tx = {
        let mut guard = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some((pid, tx)) if *pid == parent => tx.clone(),
            _ => {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new().name("nbdkit-test-spawner".into()).spawn(
                    move || {
                        // The sender lives in a static, so this loop ends
                        // only with the process.
                        for mut job in rx {
                            let _ = job.reply.send(spawn_retrying(&mut job.cmd));
                        }
                    },
                )?;
                *guard = Some((parent, tx.clone()));
                tx
            }
        }
    };
    let (reply, answer) = mpsc::channel();
    tx.send(Job { cmd, reply })
        .map_err(|_| io::Error::other("the nbdkit-test spawner thread is gone"))?;
    answer.recv().map_err(|_| io::Error::other("the nbdkit-test spawner thread is gone"))?
}

/// `Command::spawn`, retried on ETXTBSY: a binary that was just written
/// (a test's fake nbdkit) stays "busy" while any child forked by another
/// thread still holds the writer's descriptor, until that child execs.
pub(crate) fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::yield_now();
                if tries > 10 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            r => return r,
        }
    }
}

/// In the child, between fork and exec.
fn child_setup(parent: libc::pid_t, keep: &[RawFd]) -> io::Result<()> {
    // SAFETY: plain syscalls on integers.
    unsafe {
        // prctl reads its arguments as unsigned longs.
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong) == -1 {
            return Err(io::Error::last_os_error());
        }
        // Did the parent die before the guard was armed?
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        for &fd in keep {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Send `sig` to our unreaped child: through its pidfd when there is one,
/// so that a pid recycled after someone else reaped it is never hit.
pub(crate) fn signal(child: &Child, pidfd: Option<&OwnedFd>, sig: libc::c_int) {
    match pidfd {
        // SAFETY: pidfd_send_signal(pidfd, sig, NULL, 0).
        Some(p) => unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                p.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        },
        // SAFETY: kill(2) on the pid of a child we have not reaped.
        None => unsafe {
            libc::kill(child.id() as libc::pid_t, sig);
        },
    }
}

/// A copy of `fd` numbered at least 10, close-on-exec. Shell redirections
/// in the socket-activation wrapper use the low numbers.
pub(crate) fn dup_high(fd: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if n == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
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
    /// The line, without its newline, and whatever followed it.
    Line(String, Vec<u8>),
    /// The pipe was closed or broke, or the child exited, first.
    Closed,
    /// The deadline passed.
    Timeout,
}

/// What one wait on a pipe (and maybe a pidfd) gave.
enum Event {
    /// Bytes were appended to the buffer.
    Data,
    /// End of file, or an error reading.
    Eof,
    /// The pidfd became readable: the child exited.
    Exited,
    Timeout,
}

/// Wait until `fd` has data (appended to `buf`, at most 64 KiB a time),
/// reaches end of file, `pidfd` shows an exit, or `deadline` passes.
fn wait_read(fd: &OwnedFd, pidfd: Option<&OwnedFd>, deadline: Instant, buf: &mut Vec<u8>) -> Event {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Event::Timeout;
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [
            libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
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
            return Event::Eof;
        }
        if fds[0].revents != 0 {
            let mut chunk = [0u8; 64 * 1024];
            // SAFETY: reading into a local buffer of the given length.
            let r = unsafe { libc::read(fd.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
            if r > 0 {
                buf.extend_from_slice(&chunk[..r as usize]);
                return Event::Data;
            }
            if r == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Event::Eof;
        }
        if fds[1].revents != 0 {
            return Event::Exited;
        }
    }
}

/// Wait for one line on `fd` (the server's `--print-uri` output or its
/// pidfile), for the child's exit, or for the deadline, whichever is first.
/// Nothing here sleeps: it is a poll on the pipe and the pidfd.
pub(crate) fn first_line(fd: &OwnedFd, pidfd: Option<&OwnedFd>, deadline: Instant) -> Ready {
    let mut buf = Vec::new();
    loop {
        if let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let rest = buf.split_off(nl + 1);
            buf.truncate(nl);
            return Ready::Line(String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        if buf.len() > 64 * 1024 {
            return Ready::Closed;
        }
        match wait_read(fd, pidfd, deadline, &mut buf) {
            Event::Data => {}
            Event::Eof | Event::Exited => return Ready::Closed,
            Event::Timeout => return Ready::Timeout,
        }
    }
}

/// Everything on `fd` until end of file, at most 1 MiB; None if the
/// deadline passes first.
pub(crate) fn read_all(fd: &OwnedFd, deadline: Instant) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    loop {
        match wait_read(fd, None, deadline, &mut buf) {
            Event::Data if buf.len() <= 1 << 20 => {}
            Event::Data | Event::Eof | Event::Exited => return Some(buf),
            Event::Timeout => return None,
        }
    }
}

/// Copy what is left of the server's stdout into its log, on a small
/// thread that ends when the server closes its stdout (when it exits).
/// The receiver hears (or sees a hang-up) once everything is copied.
pub(crate) fn drain(out: OwnedFd, already: Vec<u8>, log: std::fs::File) -> mpsc::Receiver<()> {
    let (done, finished) = mpsc::channel();
    let copy = move || {
        use std::io::{Read, Write};
        let mut log = log;
        let _ = log.write_all(&already);
        let mut out = std::fs::File::from(out);
        let mut buf = [0u8; 8192];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 || log.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = done.send(());
    };
    let _ = std::thread::Builder::new()
        .name("nbdkit-test-stdout".into())
        .stack_size(64 * 1024)
        .spawn(copy);
    finished
}

/// Wait up to `limit` for the child to exit; true if it did (or if it was
/// already reaped elsewhere). Uses the pidfd when there is one; otherwise
/// polls `try_wait` (kernels before 5.3 only).
pub(crate) fn wait_exit(child: &mut Child, pidfd: Option<&OwnedFd>, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let ms = (deadline - now).as_millis().clamp(1, i32::MAX as u128) as i32;
        match pidfd {
            Some(p) => {
                let mut pfd = libc::pollfd { fd: p.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut pfd, 1, ms) };
            }
            None => std::thread::sleep(Duration::from_millis(ms.min(5) as u64)),
        }
    }
}
