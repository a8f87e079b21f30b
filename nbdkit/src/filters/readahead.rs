//! `readahead`: prefetch what a sequential reader will want next.
//!
//! No parameters. After each read, the layer below is asked to cache the
//! window that follows it (from the end of the read, 32 KiB at first).
//! The window doubles (up to 4 MiB) when a read starts past the end of
//! the last prefetch, stays while reads go forward, and drops back to
//! 32 KiB when they go back. The prefetches run in order on a
//! connection's own background task and never delay the read (at most
//! 256 wait; more are dropped, as prefetching is only advice).
//!
//! It only works over a layer that caches natively (`file`, or
//! `--filter=cache`/`cow` underneath) in the `parallel` thread model;
//! otherwise each connection logs a warning and the filter does nothing.
//!
//! Unlike C nbdkit 1.32, whose window is shared by all connections (so
//! two sequential readers reset each other's), each connection has its
//! own window.
//!
//! Example: `nbdkit --filter=readahead file disk.img`

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::FilterInfo;
use crate::backend::{
    Cache, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result, ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;

/// The `readahead` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "readahead",
    description: "prefetch data when reading sequentially",
    config_help: "(no parameters)",
    build,
};

const MIN_WINDOW: u64 = 32 * 1024;
const MAX_WINDOW: u64 = 4 << 20;
/// Prefetches waiting per connection before more are dropped.
const QUEUE: usize = 256;

struct ReadAhead {
    /// The server runs the `parallel` thread model.
    parallel: AtomicBool,
    log: crate::log::Log,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(ReadAhead { parallel: AtomicBool::new(true), log: p.log() }))
}

#[async_trait]
impl Filter for ReadAhead {
    fn get_ready(&self, thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        self.parallel.store(thread_model == ThreadModel::Parallel, Ordering::Relaxed);
        Ok(())
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let size = next.size().await?;
        let native = next.caps().await?.cache == Cache::Native;
        let parallel = self.parallel.load(Ordering::Relaxed);
        if !(native && parallel) {
            self.log.error(
                "readahead: warning: underlying plugin does not support NBD_CMD_CACHE or \
                 PARALLEL thread model, so the filter won't do anything",
            );
            if parallel {
                self.log.error("readahead: try adding --filter=cache after this filter");
            }
            return Ok(next);
        }
        let (tx, mut rx) = mpsc::channel::<(u64, u64)>(QUEUE);
        let below = next.clone();
        tokio::spawn(async move {
            while let Some((count, offset)) = rx.recv().await {
                // Advice only: an error has nobody to go to.
                let _ = below.cache(count, offset, Flags::default()).await;
            }
        });
        Ok(Arc::new(Ahead {
            next,
            size,
            state: Mutex::new(Window { window: MIN_WINDOW, last_offset: 0, last_readahead: 0 }),
            prefetch: tx,
        }))
    }
}

struct Window {
    window: u64,
    last_offset: u64,
    /// The end of the last prefetch.
    last_readahead: u64,
}

struct Ahead {
    next: Arc<Guard>,
    size: u64,
    state: Mutex<Window>,
    prefetch: mpsc::Sender<(u64, u64)>,
}

impl FilterHandle for Ahead {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        let from = offset + buf.len() as u64;
        let ahead = {
            let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let count = if from < self.size { w.window.min(self.size - from) } else { 0 };
            if w.last_readahead < offset {
                w.window = (w.window * 2).min(MAX_WINDOW);
            } else if w.last_offset >= offset {
                w.window = MIN_WINDOW;
            }
            w.last_offset = offset;
            w.last_readahead = from + count;
            count
        };
        if ahead > 0 {
            let _ = self.prefetch.try_send((ahead, from));
        }
        self.next.pread(buf, offset, flags).await
    }
}
