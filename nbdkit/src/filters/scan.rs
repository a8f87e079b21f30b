//! `scan`: prefetch the whole disk while clients are connected.
//!
//! - `scan-size=SIZE` (default 2M, a power of 2): the prefetch step.
//! - `scan-ahead=false`: do not skip ahead past a client's reads (default
//!   true: a read beyond the scan moves the scan to just after it).
//! - `scan-forever=true`: start again from the beginning once done.
//! - `scan-clock=false`: a new client after none restarts from the
//!   beginning (default true: it carries on where it stopped).
//!
//! Prefetching is `cache` requests to the layer below, in the background,
//! on the default export, one step at a time; it only helps a layer below
//! that caches.
//!
//! Example: `nbdkit --filter=scan file disk.img`

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `scan` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "scan",
    description: "prefetch the whole disk in the background",
    config_help: "scan-ahead=false              Don't skip ahead of client reads.\n\
                  scan-clock=false              Restart from the start for each new client.\n\
                  scan-forever=true             Scan the disk again and again.\n\
                  scan-size=<SIZE>              Prefetch step (default 2M).",
    build,
};

struct Scan {
    step: u64,
    ahead: bool,
    clock: bool,
    forever: bool,
    /// Where the scan has got to.
    pos: Arc<AtomicU64>,
    /// Connected clients; the scan runs while there is one.
    clients: Arc<AtomicUsize>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let step = p.take_size("scan-size")?.unwrap_or(2 << 20);
    if !step.is_power_of_two() || step > 1 << 30 {
        return Err(StartError(format!("scan: scan-size={step}: must be a power of 2 up to 1G")));
    }
    Ok(Arc::new(Scan {
        step,
        ahead: p.take_bool("scan-ahead")?.unwrap_or(true),
        clock: p.take_bool("scan-clock")?.unwrap_or(true),
        forever: p.take_bool("scan-forever")?.unwrap_or(false),
        pos: Arc::default(),
        clients: Arc::default(),
    }))
}

#[async_trait]
impl Filter for Scan {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { export, .. } = *args;
        let next = next.open(args).await?;
        let first = self.clients.fetch_add(1, Ordering::SeqCst) == 0;
        if first && export.is_empty() {
            if !self.clock {
                self.pos.store(0, Ordering::SeqCst);
            }
            let (h, pos, clients) = (next.clone(), self.pos.clone(), self.clients.clone());
            let (step, forever) = (self.step, self.forever);
            tokio::spawn(async move {
                let Ok(size) = h.size().await else { return };
                while clients.load(Ordering::SeqCst) > 0 {
                    let at = pos.load(Ordering::SeqCst);
                    if at >= size {
                        if !forever {
                            return;
                        }
                        pos.store(0, Ordering::SeqCst);
                        continue;
                    }
                    let n = step.min(size - at);
                    if h.cache(n, at, Flags::default()).await.is_err() {
                        return;
                    }
                    // Moved ahead by a read meanwhile? Keep the larger.
                    pos.fetch_max(at + n, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            });
        }
        Ok(Arc::new(Scanned {
            next,
            pos: self.pos.clone(),
            clients: self.clients.clone(),
            ahead: self.ahead,
        }))
    }
}

struct Scanned {
    next: Arc<Guard>,
    pos: Arc<AtomicU64>,
    clients: Arc<AtomicUsize>,
    ahead: bool,
}

impl Drop for Scanned {
    fn drop(&mut self) {
        self.clients.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FilterHandle for Scanned {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        if self.ahead {
            self.pos.fetch_max(offset + buf.len() as u64, Ordering::SeqCst);
        }
        self.next.pread(buf, offset, flags).await
    }
}
