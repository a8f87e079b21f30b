//! `--run CMD`: run a command against the server, then exit with its status.
//!
//! Unlike C nbdkit, which forks and leaves the server in a child, the server
//! stays in this process and the command is our child: SIGKILL on the
//! nbdkit pid leaves no server behind, and the command gets SIGTERM when we
//! die (PR_SET_PDEATHSIG, armed in the child; the main thread that spawns
//! it lives as long as the process).

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The shell variables the command sees.
pub struct Vars<'a> {
    pub uri: &'a str,
    pub export_name: &'a str,
    pub port: Option<u16>,
    pub unix: Option<&'a std::path::Path>,
    pub tls: u8,
}

/// Quote for /bin/sh: single quotes, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script: variable assignments (not exported, as in C nbdkit), then
/// the command. `$tls` is set only when TLS is on (1 or 2), as in C.
pub fn script(cmd: &str, v: &Vars<'_>) -> String {
    let port = v.port.map(|p| p.to_string()).unwrap_or_default();
    let unix = v.unix.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    format!(
        "uri={}\nnbd=\"$uri\"\nexportname={}\n{}port={}\nunixsocket={}\n{cmd}\n",
        shell_quote(v.uri),
        shell_quote(v.export_name),
        if v.tls > 0 { format!("tls={}\n", v.tls) } else { String::new() },
        shell_quote(&port),
        shell_quote(&unix),
    )
}

/// The command, started: killed and reaped if dropped before it is
/// [watched](Child::watch) (a start-up step after it failed).
pub struct Spawned {
    pid: libc::pid_t,
    pidfd: Option<OwnedFd>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        let Some(pidfd) = &self.pidfd else { return };
        let mut p = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: signalling, waiting for and reaping our own child; `p`
        // is one valid pollfd.
        unsafe {
            libc::kill(self.pid, libc::SIGTERM);
            // A command that ignores SIGTERM gets SIGKILL after a while.
            if libc::poll(&mut p, 1, STOP_GRACE_MS) != 1 {
                libc::kill(self.pid, libc::SIGKILL);
            }
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// How long a command stopped by a failed start-up may take to exit.
const STOP_GRACE_MS: libc::c_int = 5000;

/// The running command, as the runtime waits for it.
pub struct Child {
    pid: libc::pid_t,
    /// Readable once the command has exited.
    pidfd: AsyncFd<OwnedFd>,
}

impl Child {
    /// Watch a started command: inside the runtime.
    pub fn watch(mut s: Spawned) -> std::io::Result<Child> {
        let pidfd = s.pidfd.take().expect("watched once");
        // SAFETY: the OwnedFd stays open for the AsyncFd's lifetime.
        match unsafe { AsyncFd::register(pidfd) } {
            Ok(pidfd) => Ok(Child { pid: s.pid, pidfd }),
            Err(e) => {
                // Without a way to wait for it, the command must not run.
                // SAFETY: signalling and reaping our own child.
                unsafe {
                    libc::kill(s.pid, libc::SIGKILL);
                    libc::waitpid(s.pid, std::ptr::null_mut(), 0);
                }
                Err(e.into())
            }
        }
    }

    /// Wait for the command to exit, and reap it.
    pub async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        use std::os::unix::process::ExitStatusExt;
        loop {
            let mut ready = self.pidfd.readable().await?;
            let mut status = 0;
            // SAFETY: waitpid on our own child, with a valid out pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
            match r {
                r if r == self.pid => return Ok(ExitStatus::from_raw(status)),
                0 => ready.clear_ready(),
                _ => return Err(std::io::Error::last_os_error()),
            }
        }
    }
}

/// What the new process needs, prepared before it exists: it shares our
/// memory until it has called `execve`, and may not allocate.
struct Exec {
    argv: [*const libc::c_char; 4],
    envp: *const *const libc::c_char,
    parent: libc::pid_t,
    /// The original stdin and stdout (ours are /dev/null by now), or -1.
    stdio: (libc::c_int, libc::c_int),
    /// The errno of a failed `execve`, written by the new process.
    error: libc::c_int,
}

extern "C" {
    static environ: *const *const libc::c_char;
}

/// Start the command. Must be called on the main thread (see module doc);
/// the runtime need not exist yet.
///
/// The new process is made as glibc's `posix_spawn` makes one: it borrows
/// our memory and we wait (CLONE_VM | CLONE_VFORK) until it has called
/// `execve`. Copying the page tables of a multi-threaded server, as
/// `fork` does, costs about 0.3 ms of each captive start-up; std's
/// `Command` forks whenever the child must run code of ours first (here:
/// arming PR_SET_PDEATHSIG).
pub fn spawn(cmd: &str, vars: &Vars<'_>) -> std::io::Result<Spawned> {
    let script = CString::new(script(cmd, vars))
        .map_err(|_| std::io::Error::other("the command contains a NUL byte"))?;
    let mut exec = Exec {
        argv: [c"/bin/sh".as_ptr(), c"-c".as_ptr(), script.as_ptr(), std::ptr::null()],
        // SAFETY: reading the process's environment pointer.
        envp: unsafe { environ },
        parent: std::process::id() as libc::pid_t,
        stdio: super::stdio::saved().unwrap_or((-1, -1)),
        error: 0,
    };
    const STACK: usize = 64 * 1024;
    // SAFETY: a fresh anonymous mapping, checked below and unmapped after
    // the clone.
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
        return Err(std::io::Error::last_os_error());
    }
    let mut pidfd: libc::c_int = -1;
    // SAFETY: all signals are blocked around the clone, so that none of
    // our handlers runs in the new process while it shares our memory;
    // the new process runs `start` on its own stack and only makes
    // system calls; CLONE_VFORK keeps `exec`, `script` and the stack
    // alive until it has exec'd or exited.
    let (pid, clone_error) = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            start,
            stack.cast::<u8>().add(STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (&mut exec as *mut Exec).cast(),
            &mut pidfd as *mut libc::c_int,
        );
        let e = std::io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::munmap(stack, STACK);
        (pid, e)
    };
    if pid < 0 {
        return Err(clone_error);
    }
    // SAFETY: CLONE_PIDFD gave us this descriptor.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if exec.error != 0 {
        // SAFETY: reap the child that failed to exec.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
        return Err(std::io::Error::from_raw_os_error(exec.error));
    }
    Ok(Spawned { pid, pidfd: Some(pidfd) })
}

/// The new process, until `execve`: default signal handling, an empty
/// signal mask, our original stdin and stdout, SIGTERM when we die, then
/// the shell. It shares our memory
/// (and our thread's TLS), so it makes raw system calls only.
extern "C" fn start(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Exec` that `spawn` keeps alive (CLONE_VFORK).
    unsafe {
        let exec = &mut *arg.cast::<Exec>();
        for sig in 1..=libc::SIGRTMAX() {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                && old.sa_sigaction != libc::SIG_DFL
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::syscall(libc::SYS_rt_sigprocmask, libc::SIG_SETMASK, &none, 0, 8);
        let (stdin, stdout) = exec.stdio;
        if stdin >= 0 && stdout >= 0 {
            libc::syscall(libc::SYS_dup3, stdin, 0, 0);
            libc::syscall(libc::SYS_dup3, stdout, 1, 0);
        }
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
        // We may have died before the line above: then nobody would send
        // the signal.
        if libc::syscall(libc::SYS_getppid) as libc::pid_t != exec.parent {
            libc::syscall(libc::SYS_kill, libc::syscall(libc::SYS_getpid), libc::SIGTERM);
        }
        libc::syscall(libc::SYS_execve, exec.argv[0], exec.argv.as_ptr(), exec.envp);
        exec.error = *libc::__errno_location();
        libc::syscall(libc::SYS_exit_group, 127);
    }
    127
}

/// Ask the command to stop.
pub fn terminate(child: &Child) {
    let _ = kill(Pid::from_raw(child.pid), Signal::SIGTERM);
}

/// nbdkit's exit status for the command's: its code, or 128+N if signal N
/// killed it.
pub fn exit_code(st: ExitStatus, log: &crate::log::Log) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = st.code() {
        return c as u8;
    }
    let sig = st.signal().unwrap_or(0);
    log.error(&format!("external command was killed by signal {sig}"));
    (128 + sig) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b $c"), r"'a'\''b $c'");
        let s = script(
            "echo $uri",
            &Vars {
                uri: "nbd://localhost:10809",
                export_name: "",
                port: Some(10809),
                unix: None,
                tls: 0,
            },
        );
        assert!(s.starts_with("uri='nbd://localhost:10809'\nnbd=\"$uri\"\n"));
        assert!(s.contains("port='10809'\nunixsocket=''\n"));
        assert!(s.ends_with("echo $uri\n"));
    }
}
