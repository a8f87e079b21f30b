//! `pause`: hold requests while a snapshot is taken, on command.
//!
//! - `pause-control=SOCKET` (required): a Unix socket this filter listens
//!   on. Send `p` to pause: requests that arrive afterwards wait, and `P`
//!   comes back once those already running have finished. Send `r` to
//!   resume (`R` comes back). Anything else gets `X`.
//!
//! Example: `nbdkit -U - --filter=pause file disk.img pause-control=ctl.sock --run '...'` then `echo p | nc -U ctl.sock`

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Condvar, Mutex};

use async_trait::async_trait;
use tokio::sync::watch;

use super::FilterInfo;
use crate::backend::{Filter, FilterHandle, Guard, Handle, Next, Op, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `pause` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "pause",
    description: "pause and resume request processing on command",
    config_help: "pause-control=<SOCKET>        (required) Control socket.",
    build,
};

struct Gate {
    paused: watch::Sender<bool>,
    /// Requests running now, and a way to wait for none.
    running: Mutex<usize>,
    idle: Condvar,
}

/// The gate, the control socket's path, and its listener until serving
/// starts (its thread is started then, after any fork).
struct Pause(Arc<Gate>, std::path::PathBuf, Mutex<Option<UnixListener>>, crate::log::Log);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let path = p
        .take("pause-control")
        .ok_or_else(|| StartError("pause: you must supply pause-control=<SOCKET>".into()))?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| StartError(format!("pause: {path}: {}", crate::error::io_message(&e))))?;
    let gate = Arc::new(Gate {
        paused: watch::channel(false).0,
        running: Mutex::new(0),
        idle: Condvar::new(),
    });
    Ok(Arc::new(Pause(gate, path.into(), Mutex::new(Some(listener)), p.log())))
}

#[async_trait]
impl Filter for Pause {
    fn serving(&self) {
        let g = self.0.clone();
        let Some(listener) = self.2.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let started = std::thread::Builder::new().name("pause-control".into()).spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { continue };
                let mut b = [0u8; 1];
                while let Ok(1) = s.read(&mut b) {
                    let answer = match b[0] {
                        b'p' => {
                            g.paused.send_replace(true);
                            let mut n = g.running.lock().unwrap_or_else(|e| e.into_inner());
                            while *n > 0 {
                                n = g.idle.wait(n).unwrap_or_else(|e| e.into_inner());
                            }
                            b'P'
                        }
                        b'r' => {
                            g.paused.send_replace(false);
                            b'R'
                        }
                        b'\n' | b'\r' => continue,
                        _ => b'X',
                    };
                    if s.write_all(&[answer]).is_err() {
                        break;
                    }
                }
            }
        });
        if let Err(e) = started {
            self.3.error(&format!("pause: cannot start the control thread: {e}"));
        }
    }

    fn unload(&self) {
        let _ = std::fs::remove_file(&self.1);
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(Paused { next, gate: self.0.clone() }))
    }
}

struct Paused {
    next: Arc<Guard>,
    gate: Arc<Gate>,
}

/// Counts a running request while it lives.
struct Running<'a>(&'a Gate);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl Paused {
    /// Wait while paused, then count this request as running.
    async fn enter(&self) -> Running<'_> {
        let mut rx = self.gate.paused.subscribe();
        loop {
            let _ = rx.wait_for(|p| !p).await;
            let mut n = self.gate.running.lock().unwrap_or_else(|e| e.into_inner());
            // Paused again between the wake-up and here? Wait again.
            if *self.gate.paused.borrow() {
                continue;
            }
            *n += 1;
            return Running(&self.gate);
        }
    }
}

impl FilterHandle for Paused {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn op(&self, op: Op<'_>) -> Result<()> {
        let _r = self.enter().await;
        self.next.op(op).await
    }
}
