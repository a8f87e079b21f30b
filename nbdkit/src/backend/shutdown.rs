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

/// A request, from inside one of a connection's requests, that the
/// server close that connection (C's `nbdkit_disconnect`): gracefully
/// (no more requests are read; those in flight are answered) or at once.
#[derive(Clone, Default)]
pub struct Disconnect(Arc<(std::sync::atomic::AtomicU8, Notify)>);

impl Disconnect {
    const GRACEFUL: u8 = 1;
    const FORCE: u8 = 2;

    /// Ask for the connection to close (a forced close wins).
    pub fn request(&self, force: bool) {
        let how = if force { Self::FORCE } else { Self::GRACEFUL };
        self.0 .0.fetch_max(how, Ordering::SeqCst);
        self.0 .1.notify_waiters();
    }

    /// Wait for a request: true if the close is forced.
    pub async fn wait(&self) -> bool {
        loop {
            let notified = self.0 .1.notified();
            match self.0 .0.load(Ordering::SeqCst) {
                0 => notified.await,
                how => return how == Self::FORCE,
            }
        }
    }
}

/// What a connection's requests know of their connection.
#[derive(Clone, Default)]
pub struct InConnection {
    /// Fired when the connection ends.
    pub end: ConnectionEnd,
    /// Where a request asks for the connection to close.
    pub disconnect: Disconnect,
}

tokio::task_local! {
    static CONNECTION: InConnection;
}

/// Run `f` (a request of the connection `conn` describes) so that
/// [`sleep`], [`connection_ending`] and [`request_disconnect`] in it know
/// its connection.
pub async fn in_connection<F: std::future::Future>(conn: InConnection, f: F) -> F::Output {
    CONNECTION.scope(conn, f).await
}

/// Whether the current request's connection is ending (false outside a
/// request). Callable from blocking code running inside the request.
pub fn connection_ending() -> bool {
    CONNECTION.try_with(|c| c.end.0 .0.load(Ordering::SeqCst)).unwrap_or(false)
}

/// Ask for the current request's connection to be closed; false outside
/// a request.
pub fn request_disconnect(force: bool) -> bool {
    CONNECTION.try_with(|c| c.disconnect.request(force)).is_ok()
}

/// Sleep for `d`, as C's `nbdkit_nanosleep`: but wake up early, failing
/// with ESHUTDOWN, when the current request's connection ends (the server
/// ends every connection when it begins to stop).
pub async fn sleep(d: Duration) -> Result<()> {
    let end = CONNECTION.try_with(|c| c.end.clone()).ok();
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
