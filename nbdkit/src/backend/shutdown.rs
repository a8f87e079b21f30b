//! `nbdkit_shutdown()`: how a plugin or filter asks the server to stop
//! (the exitlast and exitwhen filters). The server treats it as it treats
//! SIGTERM: listeners close, clients get their grace, nbdkit exits 0.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static NOTIFY: Notify = Notify::const_new();

/// Ask the server to shut down (from any thread, any number of times).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    NOTIFY.notify_waiters();
    NOTIFY.notify_one();
}

/// Has shutdown been asked for?
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Resolves once shutdown has been asked for.
pub async fn wait() {
    loop {
        let notified = NOTIFY.notified();
        if requested() {
            return;
        }
        notified.await;
    }
}
