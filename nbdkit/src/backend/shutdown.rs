//! `nbdkit_shutdown()`: how a plugin or filter asks the server to stop
//! (the exitlast and exitwhen filters). The server treats it as it treats
//! SIGTERM: listeners close, clients get their grace, nbdkit exits 0.
//!
//! And `nbdkit_nanosleep()`: a sleep that ends early when the server
//! stops or the client goes away (the delay filter).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::{Errno, Error, Result};

/// A request to stop the server, shared by whoever may make it (the
/// exitlast and exitwhen filters, through their parameters) and the
/// server, which waits on it. One per server: several servers in one
/// process each have their own.
#[derive(Clone, Default)]
pub struct ShutdownRequest(Arc<(AtomicBool, Notify)>);

impl std::fmt::Debug for ShutdownRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownRequest").field("requested", &self.requested()).finish()
    }
}

impl ShutdownRequest {
    /// A request not yet made.
    pub fn new() -> ShutdownRequest {
        ShutdownRequest::default()
    }

    /// Ask the server to shut down (from any thread, any number of times).
    pub fn request(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
        self.0 .1.notify_one();
    }

    /// Has shutdown been asked for?
    pub fn requested(&self) -> bool {
        self.0 .0.load(Ordering::SeqCst)
    }

    /// Resolves once shutdown has been asked for.
    pub async fn wait(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

/// The end of one connection, as C's `nbdkit_nanosleep` watches for it:
/// the client went away or said goodbye, or the server began to stop.
/// The server fires it; [`sleep`] inside that connection's requests
/// wakes up.
#[derive(Clone, Default)]
pub struct ConnectionEnd(Arc<(AtomicBool, Notify)>);

impl ConnectionEnd {
    /// The connection is ending (any number of times).
    pub fn fire(&self) {
        self.0 .0.store(true, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.0 .1.notified();
            if self.0 .0.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

tokio::task_local! {
    static CONNECTION_END: ConnectionEnd;
}

/// Run `f` (a request of the connection that `end` belongs to) so that
/// [`sleep`] in it knows its connection.
pub async fn in_connection<F: std::future::Future>(end: ConnectionEnd, f: F) -> F::Output {
    CONNECTION_END.scope(end, f).await
}

/// Sleep for `d`, as C's `nbdkit_nanosleep`: but wake up early, failing
/// with ESHUTDOWN, when the current request's connection ends (the server
/// ends every connection when it begins to stop).
pub async fn sleep(d: Duration) -> Result<()> {
    let end = CONNECTION_END.try_with(Clone::clone).ok();
    let conn_end = async {
        match &end {
            Some(e) => e.wait().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::time::sleep(d) => Ok(()),
        _ = conn_end => Err(aborted("aborting sleep because of connection close or error")),
    }
}

/// The request fails with ESHUTDOWN; the server logs it with the rest.
fn aborted(why: &str) -> Error {
    Error::new(Errno::Shutdown, why)
}
