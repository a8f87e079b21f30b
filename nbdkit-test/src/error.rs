//! The one error type of this crate: what went wrong, plus the command line
//! and the tail of the server's stderr, so a failing test explains itself.

use std::fmt;
use std::io;
use std::process::ExitStatus;

/// What went wrong while starting a disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request itself was wrong (e.g. no plugin was named).
    Usage,
    /// No `nbdkit` binary was found; the message lists where we looked.
    BinaryNotFound,
    /// The binary could not be run (fork or exec failed).
    Spawn,
    /// The server exited before it was ready.
    Exited(ExitStatus),
    /// The server was not ready before the start timeout.
    Timeout,
    /// The server said something we did not understand, or another
    /// operating-system error.
    Io,
}

/// Why a [`CaptiveDisk`](crate::CaptiveDisk) could not be started.
///
/// The first line of its `Display` says what happened; the following lines
/// give the command line and the last lines the server wrote to stderr.
/// `Debug` prints the same, so `.unwrap()` and `?` in a test show it whole.
pub struct Error {
    kind: ErrorKind,
    message: String,
    command: Option<String>,
    stderr: Option<String>,
    source: Option<io::Error>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error { kind, message: message.into(), command: None, stderr: None, source: None }
    }

    pub(crate) fn io(message: impl Into<String>, source: io::Error) -> Error {
        let mut e = Error::new(ErrorKind::Io, message);
        e.source = Some(source);
        e
    }

    pub(crate) fn with_source(mut self, source: io::Error) -> Error {
        self.source = Some(source);
        self
    }

    pub(crate) fn with_command(mut self, command: String) -> Error {
        self.command = Some(command);
        self
    }

    pub(crate) fn with_stderr(mut self, stderr: String) -> Error {
        self.stderr = Some(stderr);
        self
    }

    /// What kind of failure this was.
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// The server command line, shell-quoted, when one was built.
    pub fn command(&self) -> Option<&str> {
        self.command.as_deref()
    }

    /// The last lines the server wrote to stderr, if it got that far.
    pub fn stderr(&self) -> Option<&str> {
        self.stderr.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)?;
        if let Some(e) = &self.source {
            write!(f, ": {e}")?;
        }
        if let Some(c) = &self.command {
            write!(f, "\n  command: {c}")?;
        }
        match self.stderr.as_deref() {
            Some(s) if !s.trim().is_empty() => {
                write!(f, "\n  server stderr:")?;
                for line in s.trim_end().lines() {
                    write!(f, "\n    {line}")?;
                }
            }
            Some(_) => write!(f, "\n  server stderr: (empty)")?,
            None => {}
        }
        Ok(())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The underlying OS error, if any, is part of the `Display` text rather
/// than a `source()`, so error reporters do not print it twice.
impl std::error::Error for Error {}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match e.kind {
            ErrorKind::BinaryNotFound => io::ErrorKind::NotFound,
            ErrorKind::Timeout => io::ErrorKind::TimedOut,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}
