//! The reaper: a process that removes the `-U -` socket and its directory
//! once every nbdkit process holding its pipe has gone, however it went:
//! SIGKILL included, which no cleanup of our own survives.
//!
//! It holds nothing but the pipe's read end, ignores the signals a terminal
//! or a process group gets, and waits for the end of the pipe. It is best
//! effort: `None` if it cannot be set up (the server still removes both at
//! a normal exit).
//!
//! A server that stays in the foreground starts it with `clone(CLONE_VM)`:
//! a process of its own that shares our memory, so that starting it copies
//! no page tables and makes none of our pages copy-on-write (a fork costs
//! about a tenth of a captive run's start-up). Sharing memory, it may not
//! touch anything of ours but what it is given, nor the C library's
//! per-thread state (errno), so it makes its system calls itself. A server
//! that forks into the background uses a plain fork instead: a reaper that
//! shares the exiting parent's memory would keep all of it alive.

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
pub fn start(socket: &Path, dir: &Path, share_memory: bool) -> Option<OwnedFd> {
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
    let started = if share_memory && sys::AVAILABLE { clone_vm(job) } else { fork(job) };
    // Our copy of the read end goes now: only the reaper holds one.
    drop(r);
    started.then_some(w)
}

/// Fork the reaper. The child runs only async-signal-safe calls.
fn fork(job: Job) -> bool {
    // SAFETY: the child makes raw system calls only, then exits.
    match unsafe { libc::fork() } {
        -1 => false,
        0 => unsafe { sys::exit(reap(&job)) },
        _ => true,
    }
}

/// The reaper's stack, when it shares our memory.
const STACK: usize = 64 * 1024;

/// Start the reaper in a new process that shares our memory. Its stack and
/// its job are never freed: it may outlive everything else of ours.
fn clone_vm(job: Job) -> bool {
    // SAFETY: a fresh anonymous mapping, checked below.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return false;
    }
    let job: &'static mut Job = Box::leak(Box::new(job));
    extern "C" fn entry(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` is the leaked job, which nothing else touches.
        let job = unsafe { &*(arg as *const Job) };
        // SAFETY: raw system calls only; `exit` ends this process alone.
        unsafe { sys::exit(reap(job)) }
    }
    // SAFETY: the new process runs `entry` on its own stack (the top of the
    // mapping: stacks grow down), and `entry` touches only the job and that
    // stack. Without CLONE_THREAD it is a process of its own, which our
    // exit does not take with it.
    let pid = unsafe {
        libc::clone(
            entry,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::SIGCHLD,
            (job as *mut Job).cast(),
        )
    };
    if pid == -1 {
        // SAFETY: no process uses the mapping, and the job is ours again.
        unsafe {
            libc::munmap(stack, STACK);
            drop(Box::from_raw(job));
        }
        return false;
    }
    true
}

/// The reaper's work; the status it exits with.
///
/// # Safety
/// Only for a new process that owns nothing else of ours: it closes every
/// descriptor but the pipe's read end.
unsafe fn reap(job: &Job) -> libc::c_int {
    // SAFETY: raw system calls on the job's descriptor and paths.
    unsafe {
        let rfd = job.rfd as libc::c_uint;
        // Hold nothing else: not the listening socket, not the pipe's write
        // end, not the terminal.
        sys::call3(libc::SYS_close_range, 0, (rfd - 1) as usize, 0);
        sys::call3(libc::SYS_close_range, (rfd + 1) as usize, u32::MAX as usize, 0);
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
            sys::ignore(sig);
        }
        let mut b = [0u8; 1];
        loop {
            match sys::call3(libc::SYS_read, rfd as usize, b.as_mut_ptr() as usize, 1) {
                // The end of the pipe: every server process is gone.
                0 => break,
                n if n == -(libc::EINTR as isize) => {}
                // Anything else says nothing about the server: leave its files
                // alone.
                _ => return 0,
            }
        }
        sys::call3(libc::SYS_unlinkat, libc::AT_FDCWD as usize, job.socket.as_ptr() as usize, 0);
        sys::call3(
            libc::SYS_unlinkat,
            libc::AT_FDCWD as usize,
            job.dir.as_ptr() as usize,
            libc::AT_REMOVEDIR as usize,
        );
        0
    }
}

/// System calls that leave the C library's per-thread state alone: they
/// return `-errno` rather than setting errno, which a process sharing our
/// memory (and our thread pointer) must not write.
mod sys {
    /// Whether this architecture has them; elsewhere the reaper is forked.
    pub const AVAILABLE: bool = cfg!(any(target_arch = "x86_64", target_arch = "aarch64"));

    /// A system call of up to three arguments.
    ///
    /// # Safety
    /// As for the call itself.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn call3(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller's.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// A system call of up to three arguments.
    ///
    /// # Safety
    /// As for the call itself.
    #[cfg(target_arch = "aarch64")]
    pub unsafe fn call3(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller's.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") nr as usize,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                options(nostack),
            );
        }
        ret
    }

    /// Elsewhere the reaper is forked, and owns its errno.
    ///
    /// # Safety
    /// As for the call itself.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    pub unsafe fn call3(nr: libc::c_long, a: usize, b: usize, c: usize) -> isize {
        // SAFETY: the caller's; this process owns its errno.
        unsafe {
            match libc::syscall(nr, a, b, c) {
                -1 => -(*libc::__errno_location() as isize),
                r => r as isize,
            }
        }
    }

    /// Ignore `sig` (the kernel's own sigaction: no restorer is needed
    /// for SIG_IGN).
    ///
    /// # Safety
    /// Changes this process's signal dispositions.
    pub unsafe fn ignore(sig: libc::c_int) {
        // struct kernel_sigaction: handler, flags, restorer, mask.
        let act: [usize; 4] = [libc::SIG_IGN, 0, 0, 0];
        // The last argument, the size of the kernel's sigset_t, is 8 bytes
        // on Linux: a fourth argument, passed as the kernel expects.
        // SAFETY: the caller's; `act` outlives the call.
        unsafe { call4(libc::SYS_rt_sigaction, sig as usize, act.as_ptr() as usize, 0, 8) };
    }

    /// `call3` with a fourth argument.
    ///
    /// # Safety
    /// As for the call itself.
    #[cfg(target_arch = "x86_64")]
    unsafe fn call4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller's.
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") nr as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// `call3` with a fourth argument.
    ///
    /// # Safety
    /// As for the call itself.
    #[cfg(target_arch = "aarch64")]
    unsafe fn call4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the caller's.
        unsafe {
            std::arch::asm!(
                "svc 0",
                in("x8") nr as usize,
                inlateout("x0") a as isize => ret,
                in("x1") b,
                in("x2") c,
                in("x3") d,
                options(nostack),
            );
        }
        ret
    }

    /// `call3` with a fourth argument.
    ///
    /// # Safety
    /// As for the call itself.
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    unsafe fn call4(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> isize {
        // SAFETY: the caller's; this process owns its errno.
        unsafe {
            match libc::syscall(nr, a, b, c, d) {
                -1 => -(*libc::__errno_location() as isize),
                r => r as isize,
            }
        }
    }

    /// End this process (not its thread group's other members: the reaper
    /// has none) with `status`.
    ///
    /// # Safety
    /// Nothing after it runs.
    pub unsafe fn exit(status: libc::c_int) -> ! {
        // SAFETY: the caller's.
        unsafe { call3(libc::SYS_exit, status as usize, 0, 0) };
        // exit does not return.
        loop {
            std::hint::spin_loop();
        }
    }
}
