//! Helpers shared by the crate's tests.

use std::os::fd::AsRawFd;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Is the process running? A zombie counts as gone: an orphan's zombie
/// waits for a reaper that may never come in a container.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // The state follows the parenthesised command name.
            let state = s.rsplit_once(')').map(|(_, r)| r.trim_start());
            !matches!(state.and_then(|r| r.chars().next()), Some('Z') | Some('X'))
        }
        Err(_) => false,
    }
}

/// Wait until `pid` has exited, up to `limit`; true if it did. Waits on a
/// pidfd, which works for processes that are not our children.
pub fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return !alive(pid);
    }
    // SAFETY: a fresh descriptor that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    loop {
        if !alive(pid) {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = (deadline - now).as_millis().max(1) as i32;
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, ms) };
        if p.revents != 0 {
            return true;
        }
    }
}

/// C nbdkit, when installed; under CI=true it must be.
pub fn c_nbdkit() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/nbdkit");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but /usr/bin/nbdkit is not installed"
    );
    eprintln!("skipping: /usr/bin/nbdkit is not installed");
    None
}

/// Run one test of this binary in a child process, with extra environment.
/// Used for what cannot happen in-process: crashes, panics, and changes to
/// the environment.
pub fn run_child(test: &str, envs: &[(&str, &str)]) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--include-ignored", "--nocapture", "--test-threads=1"])
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

/// Is this process the child of [`run_child`] for this test?
pub fn child_mode(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// A fake nbdkit in `dir`: says it has --print-uri, records its pid in
/// `dir/pid`, then runs `body` (shell).
pub fn fake_nbdkit(dir: &std::path::Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("nbdkit");
    std::fs::write(
        &p,
        format!(
            "#!/bin/sh\nif [ \"$1\" = --help ]; then echo '--print-uri'; exit 0; fi\n\
             echo $$ > {}/pid\n{body}\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// The pid a fake nbdkit recorded.
pub fn fake_pid(dir: &std::path::Path) -> u32 {
    std::fs::read_to_string(dir.join("pid")).unwrap().trim().parse().unwrap()
}

/// Make a FIFO.
pub fn mkfifo(p: &std::path::Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string and a mode.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}
