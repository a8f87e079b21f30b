//! Errors.
//!
//! Two kinds, kept apart on purpose:
//! - [`Error`] is the data-path error. It carries the [`Errno`] the client will
//!   see in its reply, decided once where the failure happens, plus a message
//!   for the server log.
//! - [`StartError`] is a start-up error (bad command line, bad parameter,
//!   cannot listen). It becomes one line on stderr and a non-zero exit code.

use std::fmt;

/// The error numbers the NBD protocol can carry (doc/proto.md, "Error values").
///
/// Any other errno a plugin produces is mapped onto this set by
/// [`Errno::from_os`], following C nbdkit's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Errno {
    /// Operation not permitted (e.g. a write to a read-only export).
    Perm,
    /// Input/output error.
    Io,
    /// Cannot allocate memory (also: request too large).
    NoMem,
    /// Invalid argument.
    Inval,
    /// No space left on device (also: write beyond the end).
    NoSpc,
    /// Value too large (a DF read that cannot be sent in one chunk).
    Overflow,
    /// Operation not supported (e.g. a fast zero that would be slow).
    NotSup,
    /// Server is shutting down.
    Shutdown,
}

impl Errno {
    /// Map an operating-system errno onto the NBD set, as C nbdkit does.
    pub fn from_os(errno: i32) -> Errno {
        match errno {
            libc::EROFS | libc::EPERM => Errno::Perm,
            libc::EIO => Errno::Io,
            libc::ENOMEM => Errno::NoMem,
            libc::EDQUOT | libc::EFBIG | libc::ENOSPC => Errno::NoSpc,
            libc::ESHUTDOWN => Errno::Shutdown,
            libc::ENOTSUP => Errno::NotSup,
            libc::EOVERFLOW => Errno::Overflow,
            _ => Errno::Inval,
        }
    }

    /// The operating-system errno (the inverse of [`Errno::from_os`] on
    /// the values it yields).
    pub fn to_os(self) -> i32 {
        match self {
            Errno::Perm => libc::EPERM,
            Errno::Io => libc::EIO,
            Errno::NoMem => libc::ENOMEM,
            Errno::Inval => libc::EINVAL,
            Errno::NoSpc => libc::ENOSPC,
            Errno::Overflow => libc::EOVERFLOW,
            Errno::NotSup => libc::ENOTSUP,
            Errno::Shutdown => libc::ESHUTDOWN,
        }
    }

    /// The name used in log messages, e.g. `EIO`.
    pub fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::Io => "EIO",
            Errno::NoMem => "ENOMEM",
            Errno::Inval => "EINVAL",
            Errno::NoSpc => "ENOSPC",
            Errno::Overflow => "EOVERFLOW",
            Errno::NotSup => "ENOTSUP",
            Errno::Shutdown => "ESHUTDOWN",
        }
    }

    /// Parse an errno name (`EIO`, `eio`, `ENOSPC` ...) as used by filters.
    pub fn from_name(s: &str) -> Option<Errno> {
        let up = s.to_ascii_uppercase();
        Some(match up.as_str() {
            "EPERM" | "EROFS" => Errno::Perm,
            "EIO" => Errno::Io,
            "ENOMEM" => Errno::NoMem,
            "EINVAL" => Errno::Inval,
            "ENOSPC" | "EDQUOT" | "EFBIG" => Errno::NoSpc,
            "EOVERFLOW" => Errno::Overflow,
            "ENOTSUP" | "EOPNOTSUPP" => Errno::NotSup,
            "ESHUTDOWN" => Errno::Shutdown,
            _ => return None,
        })
    }
}

/// A data-path error: the errno the client sees, a message for the log,
/// and (when there was one) the error that caused it, as
/// [`std::error::Error::source`].
#[derive(Debug, Clone)]
pub struct Error {
    /// What the client will be told.
    pub errno: Errno,
    /// Why, for the server's log. May be empty.
    pub msg: String,
    cause: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    /// An error with a log message.
    pub fn new(errno: Errno, msg: impl Into<String>) -> Error {
        Error { errno, msg: msg.into(), cause: None }
    }

    /// The same error, caused by `cause` (kept for [`std::error::Error::source`]).
    pub fn with_cause(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Error {
        self.cause = Some(std::sync::Arc::new(cause));
        self
    }
}

/// Errors are equal when the client would see the same: errno and message.
impl PartialEq for Error {
    fn eq(&self, other: &Error) -> bool {
        self.errno == other.errno && self.msg == other.msg
    }
}

impl Eq for Error {}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.msg.is_empty() {
            f.write_str(self.errno.name())
        } else {
            write!(f, "{} ({})", self.msg, self.errno.name())
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Error {
        let errno = e.raw_os_error().map(Errno::from_os).unwrap_or(Errno::Io);
        Error::new(errno, io_message(&e)).with_cause(e)
    }
}

/// An I/O error as C's `%m` prints it: "No such file or directory", without
/// Rust's " (os error 2)" suffix.
pub fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match (e.raw_os_error(), s.rfind(" (os error ")) {
        (Some(_), Some(i)) => s[..i].to_string(),
        _ => s,
    }
}

#[cfg(test)]
mod cause_tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_cause() {
        let e = Error::from(std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.errno, Errno::NoSpc);
        let cause = std::error::Error::source(&e).expect("a cause");
        let io = cause.downcast_ref::<std::io::Error>().expect("the io::Error");
        assert_eq!(io.raw_os_error(), Some(libc::ENOSPC));
        assert!(std::error::Error::source(&Error::new(Errno::Io, "x")).is_none());
    }
}

/// Result of a data-path call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A start-up error: printed once as `nbdkit: error: MSG`, exit status 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartError(pub String);

impl StartError {
    /// Build from anything printable.
    pub fn new(msg: impl Into<String>) -> StartError {
        StartError(msg.into())
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StartError {}

/// `Err(StartError)` from a format string.
#[macro_export]
macro_rules! start_err {
    ($($arg:tt)*) => { Err($crate::error::StartError(format!($($arg)*))) };
}
