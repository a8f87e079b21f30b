//! Signals that arrive before the runtime can take them.
//!
//! The server is announced (`--print-uri`) and the `--run` command started
//! as soon as the sockets listen, before the runtime, whose handlers
//! ([`super::serve`]) come later. A signal sent in between must not kill
//! the server by its default action: [`defer`] installs a handler that only
//! notes it, and [`replay`] raises what was noted once the runtime's
//! handlers are in place. Blocking the signals instead would leave them
//! blocked in every thread the runtime starts, and so in what those
//! threads spawn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The signals the server handles (see `serve`); the last three only when
/// they were not inherited as ignored.
const HANDLED: [(libc::c_int, bool); 7] = [
    (libc::SIGINT, true),
    (libc::SIGTERM, true),
    (libc::SIGQUIT, true),
    (libc::SIGHUP, true),
    (libc::SIGUSR1, false),
    (libc::SIGUSR2, false),
    (libc::SIGALRM, false),
];

/// One bit per signal number noted.
static NOTED: AtomicU64 = AtomicU64::new(0);
/// Set by [`replay`]: from then on the runtime's handlers take signals.
/// (Tokio's handler keeps ours and calls it too: it must then do nothing.)
static REPLAYED: AtomicBool = AtomicBool::new(false);

extern "C" fn note(sig: libc::c_int) {
    if !REPLAYED.load(Ordering::SeqCst) {
        NOTED.fetch_or(1 << sig, Ordering::SeqCst);
    }
}

/// Note the signals the server handles, from now until [`replay`].
pub fn defer() {
    for (sig, always) in HANDLED {
        if !always && super::ignored(sig) {
            continue;
        }
        // SAFETY: `note` is async-signal-safe (one atomic operation).
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
            act.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Raise again what [`defer`] noted: call once the runtime's handlers are
/// installed.
pub fn replay() {
    REPLAYED.store(true, Ordering::SeqCst);
    let noted = NOTED.swap(0, Ordering::SeqCst);
    for (sig, _) in HANDLED {
        if noted & (1 << sig) != 0 {
            // SAFETY: raising a signal that now has a handler.
            unsafe { libc::raise(sig) };
        }
    }
}
