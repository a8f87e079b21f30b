//! stdin and stdout once the plugin is ready (C nbdkit's `switch_stdio`):
//! both become `/dev/null`, so that a plugin that prints (a python
//! script's `print`) or reads cannot corrupt an NBD stream on stdout or
//! steal a client's bytes. What needs the originals gets copies kept here:
//! `-s` serves on them, `--run`'s command gets them as its stdin and
//! stdout, and `--print-uri` writes to the original stdout.

use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use crate::error::StartError;

extern "C" {
    /// C's `stdin` stream.
    static stdin: *mut libc::FILE;
}

/// The original stdin and stdout, when something needs them.
static SAVED: Mutex<Option<(OwnedFd, OwnedFd)>> = Mutex::new(None);

/// Switch: keep copies of stdin and stdout (above fd 2, close-on-exec) if
/// `keep`, then point both at `/dev/null`.
pub fn switch(keep: bool) -> Result<(), StartError> {
    let _ = std::io::stdout().flush();
    // SAFETY: flushing C's stdio streams: stdin first, which (glibc needs
    // it said explicitly) puts a seekable stdin's offset back where a C
    // plugin stopped reading, so that --run's command reads the rest;
    // then the output streams (a C plugin's printf).
    unsafe {
        libc::fflush(stdin);
        libc::fflush(std::ptr::null_mut());
    }
    let err = |what: &str, e: std::io::Error| StartError(format!("{what}: {e}"));
    if keep {
        let dup = |fd: RawFd| -> Result<OwnedFd, StartError> {
            // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we own.
            match unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) } {
                -1 => Err(err("saving stdin/stdout", std::io::Error::last_os_error())),
                n => Ok(unsafe { OwnedFd::from_raw_fd(n) }),
            }
        };
        let saved = (dup(0)?, dup(1)?);
        *SAVED.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
    }
    let null_r = std::fs::File::open("/dev/null").map_err(|e| err("/dev/null", e))?;
    let null_w = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| err("/dev/null", e))?;
    // SAFETY: dup2 onto fds 0 and 1 of descriptors we hold.
    unsafe {
        libc::dup2(null_r.as_raw_fd(), 0);
        libc::dup2(null_w.as_raw_fd(), 1);
    }
    Ok(())
}

/// The original stdin and stdout, if [`switch`] kept them.
pub fn saved() -> Option<(RawFd, RawFd)> {
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    saved.as_ref().map(|(r, w)| (r.as_raw_fd(), w.as_raw_fd()))
}

/// Close the copies: a server gone into the background must not hold
/// its starter's stdout (whoever reads it would never see its end).
pub fn close_saved() {
    SAVED.lock().unwrap_or_else(|e| e.into_inner()).take();
}

/// Write `line` and a newline to the original stdout (or to stdout, if
/// nothing was switched).
pub fn println_original(line: &str) {
    let text = format!("{line}\n");
    let saved = SAVED.lock().unwrap_or_else(|e| e.into_inner());
    match saved.as_ref() {
        Some((_, w)) => {
            // SAFETY: borrowing our saved descriptor as a File, which is
            // forgotten, not closed.
            let mut f =
                std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(w.as_raw_fd()) });
            let _ = f.write_all(text.as_bytes());
        }
        None => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }
}
