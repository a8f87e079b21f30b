//! The server's log: `nbdkit: error: ...` lines on stderr, to syslog, or
//! nowhere (`--log`). Debug lines only with `-v`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Where messages go (`--log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    Stderr,
    Syslog,
    Null,
}

struct Settings {
    to: LogTo,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// `-v`, known before [`init`] so that plugins can debug while they start.
static VERBOSE: AtomicBool = AtomicBool::new(false);

/// Turn debug messages on or off before [`init`] (which sets it again).
pub fn set_verbose(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
}

/// Choose where messages go. Called once at start-up; before that,
/// messages go to stderr.
pub fn init(to: LogTo, verbose: bool) {
    if to == LogTo::Syslog {
        // SAFETY: the identity string is 'static and NUL-terminated.
        unsafe { libc::openlog(c"nbdkit".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
    }
    set_verbose(verbose);
    let _ = SETTINGS.set(Settings { to });
}

/// Whether debug messages are wanted (so callers can skip formatting them).
pub fn verbose() -> bool {
    VERBOSE.load(Ordering::Relaxed)
}

fn emit(level: &str, prio: libc::c_int, msg: &str) {
    let to = SETTINGS.get().map_or(LogTo::Stderr, |s| s.to);
    match to {
        LogTo::Null => {}
        LogTo::Stderr => {
            // One write per line, so lines from different tasks don't mix.
            let line = format!("nbdkit: {level}: {msg}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        LogTo::Syslog => {
            let text = format!("{level}: {msg}").replace('\0', " ");
            if let Ok(c) = std::ffi::CString::new(text) {
                // SAFETY: "%s" with one valid C string.
                unsafe { libc::syslog(prio, c"%s".as_ptr(), c.as_ptr()) };
            }
        }
    }
}

/// Log an error.
pub fn error(msg: &str) {
    emit("error", libc::LOG_ERR, msg);
}

/// Log a debug message (only with `-v`). Debug output always goes to
/// stderr, whatever `--log` says, as in C nbdkit: with `-v` a server in the
/// background keeps its stderr for it.
pub fn debug(msg: &str) {
    if verbose() {
        let line = format!("nbdkit: debug: {msg}\n");
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}
