//! The server's log: `nbdkit: error: ...` lines on stderr, to syslog, or
//! nowhere (`--log`). Debug lines only with `-v`.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

/// Where messages go (`--log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTo {
    /// `--log=stderr`: on standard error (the default).
    Stderr,
    /// `--log=syslog`: to the system log.
    Syslog,
    /// `--log=null`: nowhere.
    Null,
}

/// The server's log: where messages go and whether debug messages are
/// wanted. A value, handed to whatever logs (the server, and plugins and
/// filters through their parameters); clones share one setting, which
/// start-up fixes once the plugin is built (errors while it starts go to
/// stderr, as in C).
#[derive(Clone, Debug, Default)]
pub struct Log(Arc<State>);

#[derive(Debug, Default)]
struct State {
    /// A [`LogTo`] as a number (see [`Log::send_to`]): 0 stderr, 1 syslog,
    /// 2 nowhere.
    to: AtomicU8,
    verbose: AtomicBool,
}

impl Log {
    /// A log on stderr, with debug messages if `verbose` (`-v`).
    pub fn new(verbose: bool) -> Log {
        let log = Log::default();
        log.0.verbose.store(verbose, Ordering::Relaxed);
        log
    }

    /// Send messages to `to` from now on.
    pub fn send_to(&self, to: LogTo) {
        if to == LogTo::Syslog {
            // SAFETY: the identity string is 'static and NUL-terminated.
            unsafe { libc::openlog(c"nbdkit".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
        }
        let n = match to {
            LogTo::Stderr => 0,
            LogTo::Syslog => 1,
            LogTo::Null => 2,
        };
        self.0.to.store(n, Ordering::Relaxed);
    }

    /// Whether debug messages are wanted (so callers can skip formatting them).
    pub fn verbose(&self) -> bool {
        self.0.verbose.load(Ordering::Relaxed)
    }

    fn to(&self) -> LogTo {
        match self.0.to.load(Ordering::Relaxed) {
            1 => LogTo::Syslog,
            2 => LogTo::Null,
            _ => LogTo::Stderr,
        }
    }

    /// Log an error.
    pub fn error(&self, msg: &str) {
        emit(self.to(), "error", libc::LOG_ERR, msg);
    }

    /// Log a debug message (only with `-v`). Debug output always goes to
    /// stderr, whatever `--log` says, as in C nbdkit: with `-v` a server in
    /// the background keeps its stderr for it.
    pub fn debug(&self, msg: &str) {
        if self.verbose() {
            let line = format!("nbdkit: debug: {msg}\n");
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
    }
}

fn emit(to: LogTo, level: &str, prio: libc::c_int, msg: &str) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_values() {
        // Two servers in one process may log differently.
        let (a, b) = (Log::new(true), Log::new(false));
        assert!(a.verbose() && !b.verbose());
        // Clones share the destination start-up sets.
        let c = b.clone();
        b.send_to(LogTo::Null);
        assert_eq!(c.to(), LogTo::Null);
        assert_eq!(a.to(), LogTo::Stderr);
    }
}
