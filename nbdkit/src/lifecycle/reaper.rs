//! The reaper: a process that removes the `-U -` socket and its directory
//! once every nbdkit process holding its pipe has gone, however it went:
//! SIGKILL included, which no cleanup of our own survives.
//!
//! It is forked, holds nothing but the pipe's read end, ignores the signals
//! a terminal or a process group gets, and waits for the end of the pipe.
//! It is best effort: `None` if it cannot be set up (the server still
//! removes both at a normal exit).
//!
//! A process sharing our memory (`clone(CLONE_VM)`) would be cheaper to
//! start, but the kernel's OOM killer kills every process sharing the
//! victim's memory, and a server that drops privileges (`-u`/`-g`) would
//! leave a root process inside its address space: a plain fork it is.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// What the reaper needs, made before it exists.
struct Job {
    rfd: libc::c_int,
    socket: CString,
    dir: CString,
}

/// Start the reaper of `socket` in `dir`; the returned descriptor is the
/// pipe's write end, which every server process must hold until it exits.
pub fn start(socket: &Path, dir: &Path) -> Option<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let socket = CString::new(socket.as_os_str().as_bytes()).ok()?;
    let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills in two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: both are new descriptors we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The reaper closes every descriptor below and above the read end: keep
    // it clear of 0-2 (a server started with stdin closed gets fd 0 here).
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
    let r = match unsafe { libc::fcntl(r.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) } {
        -1 => return None,
        fd => unsafe { OwnedFd::from_raw_fd(fd) },
    };
    let job = Job { rfd: r.as_raw_fd(), socket, dir };
    let started = fork(&job);
    // Our copy of the read end goes now: only the reaper holds one.
    drop(r);
    started.then_some(w)
}

/// Fork the reaper. The child runs only async-signal-safe calls.
fn fork(job: &Job) -> bool {
    // SAFETY: the child makes raw system calls only, then exits.
    match unsafe { libc::fork() } {
        -1 => false,
        0 => unsafe { libc::_exit(reap(job)) },
        _ => true,
    }
}

/// The reaper's work; the status it exits with.
///
/// # Safety
/// Only in the forked child: it closes every descriptor but the pipe's
/// read end, and makes async-signal-safe calls only.
unsafe fn reap(job: &Job) -> libc::c_int {
    // SAFETY: system calls on the job's descriptor and paths, in a process
    // of our own.
    unsafe {
        let rfd = job.rfd;
        // Hold nothing else: not the listening socket, not the pipe's write
        // end, not the terminal. Without close_range (Linux before 5.9, or
        // a seccomp filter), one descriptor at a time.
        let below = libc::syscall(libc::SYS_close_range, 0u32, (rfd - 1) as u32, 0u32);
        let above = libc::syscall(libc::SYS_close_range, (rfd + 1) as u32, u32::MAX, 0u32);
        if below != 0 || above != 0 {
            let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            let max = match libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) {
                0 => lim.rlim_cur.min(1 << 20) as libc::c_int,
                _ => 1024,
            };
            for fd in (0..max).filter(|&fd| fd != rfd) {
                libc::close(fd);
            }
        }
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGALRM,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let mut b = [0u8; 1];
        loop {
            match libc::read(rfd, b.as_mut_ptr().cast(), 1) {
                // The end of the pipe: every server process is gone.
                0 => break,
                n if n < 0 && *libc::__errno_location() == libc::EINTR => {}
                // Anything else says nothing about the server: leave its
                // files alone.
                _ => return 0,
            }
        }
        libc::unlink(job.socket.as_ptr());
        libc::rmdir(job.dir.as_ptr());
        0
    }
}
