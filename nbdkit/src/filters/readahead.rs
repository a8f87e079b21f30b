//! `readahead`: prefetch what a sequential reader will want next.
//!
//! No parameters. Each read that follows on from the last one asks the
//! layer below to cache the next stretch (doubling, up to 32 MiB, while
//! reads stay sequential; back to 64 KiB when they jump). The prefetch
//! runs in the background and never delays the read. It only helps a layer
//! below that caches (`file`, or `--filter=cache`/`cow` underneath).
//!
//! Example: `nbdkit --filter=readahead file disk.img`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Client, Filter, FilterHandle, Flags, Handle, Plugin, Result};
use crate::error::StartError;
use crate::params::Params;

pub static INFO: FilterInfo = FilterInfo {
    name: "readahead",
    description: "prefetch data when reading sequentially",
    config_help: "(no parameters)",
    build,
};

const MIN_WINDOW: u64 = 64 * 1024;
const MAX_WINDOW: u64 = 32 << 20;

struct ReadAhead;

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(ReadAhead))
}

#[async_trait]
impl Filter for ReadAhead {
    async fn open(
        &self,
        next: &dyn Plugin,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        let next = next.open_for(readonly, export, client).await?;
        let size = next.size().await?;
        Ok(Arc::new(Ahead {
            next,
            size,
            last_end: AtomicU64::new(u64::MAX),
            window: AtomicU64::new(MIN_WINDOW),
            prefetched_to: Arc::new(AtomicU64::new(0)),
        }))
    }
}

struct Ahead {
    next: Arc<dyn Handle>,
    size: u64,
    last_end: AtomicU64,
    window: AtomicU64,
    /// How far prefetches have been asked for.
    prefetched_to: Arc<AtomicU64>,
}

#[async_trait]
impl FilterHandle for Ahead {
    fn next(&self) -> &Arc<dyn Handle> {
        &self.next
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        let end = offset + buf.len() as u64;
        let sequential = self.last_end.swap(end, Ordering::Relaxed) == offset;
        let window = if sequential {
            (self.window.load(Ordering::Relaxed) * 2).min(MAX_WINDOW)
        } else {
            MIN_WINDOW
        };
        self.window.store(window, Ordering::Relaxed);
        let from = end.max(self.prefetched_to.load(Ordering::Relaxed));
        let to = (end + window).min(self.size);
        if sequential && from < to {
            self.prefetched_to.store(to, Ordering::Relaxed);
            let next = self.next.clone();
            tokio::spawn(async move {
                let mut pos = from;
                while pos < to {
                    let n = (to - pos).min(u64::from(u32::MAX >> 1)) as u32;
                    if next.cache(n, pos, Flags::default()).await.is_err() {
                        break;
                    }
                    pos += u64::from(n);
                }
            });
        }
        self.next.pread(buf, offset, flags).await
    }
}
