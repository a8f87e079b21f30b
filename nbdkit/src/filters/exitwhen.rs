//! `exitwhen`: exit gracefully when something happens outside nbdkit.
//!
//! Events (any number; the first to happen counts):
//! - `exit-when-file-created=PATH`, `exit-when-file-deleted=PATH`;
//! - `exit-when-pipe-closed=FD`: the read end of a pipe, inherited;
//! - `exit-when-process-exits=PID`;
//! - `exit-when-script=COMMAND`: run under `/bin/sh`; exit status 88 means
//!   the event happened (0 not yet; anything else is logged).
//! - `exit-when-poll=SECS` (default 60): how often events are checked while
//!   no client is connected; they are also checked as clients come and go.
//!
//! Once an event has happened, new clients are refused, and nbdkit exits
//! when the last connected client leaves (at once if there is none). With
//! no events the filter does nothing.
//!
//! Example: `nbdkit --filter=exitwhen memory 1G exit-when-file-created=/tmp/stop`

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    shutdown::ShutdownRequest, Errno, Error, Filter, FilterHandle, Guard, Handle, Next, OpenArgs,
    Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `exitwhen` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "exitwhen",
    description: "exit gracefully when an external event happens",
    config_help: "exit-when-file-created=FILE    Exit when FILE is created.\n\
                  exit-when-file-deleted=FILE    Exit when FILE is deleted.\n\
                  exit-when-pipe-closed=FD       Exit when pipe FD is closed.\n\
                  exit-when-process-exits=PID    Exit when process PID exits.\n\
                  exit-when-script=SCRIPT        Exit when SCRIPT exits with status 88.\n\
                  exit-when-poll=SECS            Seconds between checks (default 60).",
    build,
};

enum Event {
    Created(std::path::PathBuf),
    Deleted(std::path::PathBuf),
    PipeClosed(RawFd),
    /// A pidfd, readable once the process has exited.
    ProcessExits(OwnedFd),
    Script(String),
}

/// Whether an fd has hung up / become readable, without waiting.
fn ready(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLIN | libc::POLLHUP, revents: 0 };
    // SAFETY: one valid pollfd, no wait.
    unsafe { libc::poll(&mut p, 1, 0) > 0 && p.revents != 0 }
}

impl Event {
    fn happened(&self, log: &crate::log::Log) -> bool {
        match self {
            Event::Created(p) => p.exists(),
            Event::Deleted(p) => !p.exists(),
            Event::PipeClosed(fd) => {
                let mut p = libc::pollfd { fd: *fd, events: 0, revents: 0 };
                // SAFETY: one valid pollfd, no wait.
                unsafe {
                    libc::poll(&mut p, 1, 0) > 0
                        && p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
                }
            }
            Event::ProcessExits(fd) => ready(std::os::fd::AsRawFd::as_raw_fd(fd)),
            Event::Script(cmd) => {
                match std::process::Command::new("/bin/sh").arg("-c").arg(cmd).status() {
                    Ok(s) if s.code() == Some(88) => true,
                    Ok(s) if s.success() => false,
                    Ok(s) => {
                        log.error(&format!("exitwhen: exit-when-script: {s}"));
                        false
                    }
                    Err(e) => {
                        log.error(&format!("exitwhen: exit-when-script: {e}"));
                        false
                    }
                }
            }
        }
    }
}

struct State {
    events: Mutex<Vec<Event>>,
    triggered: AtomicBool,
    clients: AtomicUsize,
    shutdown: ShutdownRequest,
    log: crate::log::Log,
}

impl State {
    /// Check the events; once one has happened, it stays happened.
    fn check(&self) -> bool {
        if self.triggered.load(Ordering::SeqCst) {
            return true;
        }
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner());
        if events.iter().any(|e| e.happened(&self.log)) {
            self.log.debug("exitwhen: the event happened");
            self.triggered.store(true, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// Exit now if the event has happened and nobody is connected.
    fn maybe_exit(&self) {
        if self.clients.load(Ordering::SeqCst) == 0 && self.check() {
            self.shutdown.request();
        }
    }
}

/// The events, and seconds between idle checks.
struct ExitWhen(Arc<State>, u64);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let fail = |m: String| StartError(format!("exitwhen: {m}"));
    let mut events = Vec::new();
    for v in p.take_all("exit-when-file-created") {
        events.push(Event::Created(v.into()));
    }
    for v in p.take_all("exit-when-file-deleted") {
        events.push(Event::Deleted(v.into()));
    }
    for v in p.take_all("exit-when-pipe-closed") {
        let fd: RawFd = v.parse().ok().filter(|&n| n > 2).ok_or_else(|| {
            fail(format!("exit-when-pipe-closed={v}: not a file descriptor above 2"))
        })?;
        events.push(Event::PipeClosed(fd));
    }
    for v in p.take_all("exit-when-process-exits") {
        let pid: i32 = v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| fail(format!("exit-when-process-exits={v}: not a process ID")))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return Err(fail(format!(
                "exit-when-process-exits={v}: {}",
                crate::error::io_message(&e)
            )));
        }
        // SAFETY: a fresh descriptor that we own.
        events.push(Event::ProcessExits(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }));
    }
    for v in p.take_all("exit-when-script") {
        events.push(Event::Script(v));
    }
    let poll = match p.take("exit-when-poll") {
        None => 60,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| fail(format!("exit-when-poll={v}: not a number of seconds")))?,
    };
    let state = Arc::new(State {
        events: Mutex::new(events),
        triggered: AtomicBool::new(false),
        clients: AtomicUsize::new(0),
        shutdown: p.shutdown(),
        log: p.log(),
    });
    Ok(Arc::new(ExitWhen(state, poll)))
}

#[async_trait]
impl Filter for ExitWhen {
    fn serving(&self) {
        if self.0.events.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return;
        }
        // Idle checks on a thread of their own (started here, after any
        // fork): the events are outside the runtime's reach (files, other
        // processes, scripts).
        let (s, poll) = (self.0.clone(), self.1);
        let started = std::thread::Builder::new().name("exitwhen".into()).spawn(move || loop {
            s.maybe_exit();
            std::thread::sleep(Duration::from_secs(poll));
        });
        if let Err(e) = started {
            self.0.log.error(&format!("exitwhen: cannot start the polling thread: {e}"));
        }
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let s = &self.0;
        if tokio::task::block_in_place(|| s.check()) {
            return Err(Error::new(Errno::Shutdown, "exitwhen: nbdkit is exiting: no new clients"));
        }
        let next = next.open(args).await?;
        s.clients.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Watched { next, state: s.clone() }))
    }
}

struct Watched {
    next: Arc<Guard>,
    state: Arc<State>,
}

impl FilterHandle for Watched {
    fn next(&self) -> &Guard {
        &self.next
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        self.state.clients.fetch_sub(1, Ordering::SeqCst);
        // Checking may run a script: not on the runtime's thread.
        let s = self.state.clone();
        std::thread::spawn(move || s.maybe_exit());
    }
}
