//! `cacheextents`: remember the last extents answer and serve later
//! requests it covers from memory, for plugins whose extents are slow.
//!
//! No parameters. Any write, trim or zero forgets what was remembered.
//!
//! Example: `nbdkit --filter=cacheextents nbd socket=/tmp/slow.sock`

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Extent, Extents, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `cacheextents` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "cacheextents",
    description: "cache the last extents answer",
    config_help: "(no parameters)",
    build,
};

/// One cache for every connection (writes on one must invalidate what
/// the others remember), with a generation bumped by every write so that an
/// answer fetched while a write ran is not kept.
#[derive(Default)]
struct Memory {
    last: Mutex<(u64, Vec<Extent>)>,
}

impl Memory {
    fn forget(&self) {
        let mut m = self.last.lock().unwrap_or_else(|e| e.into_inner());
        m.0 += 1;
        m.1.clear();
    }
}

struct CacheExtents(Arc<Memory>);

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(CacheExtents(Arc::default())))
}

#[async_trait]
impl Filter for CacheExtents {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let size = next.size().await?;
        Ok(Arc::new(Cached { next, size, mem: self.0.clone() }))
    }
}

struct Cached {
    next: Arc<Guard>,
    size: u64,
    /// The last answer, contiguous from its first offset.
    mem: Arc<Memory>,
}

impl Cached {
    fn forget(&self) {
        self.mem.forget();
    }
}

impl FilterHandle for Cached {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        let generation = {
            let m = self.mem.last.lock().unwrap_or_else(|e| e.into_inner());
            let last = &m.1;
            let start = last.first().map(|e| e.offset);
            let end = last.last().map(|e| e.offset + e.length);
            if let (Some(s), Some(e)) = (start, end) {
                if s <= offset && offset < e {
                    for x in last.iter() {
                        if !ext.add(x.offset, x.length, x.flags) {
                            break;
                        }
                    }
                    return Ok(());
                }
            }
            m.0
        };
        // Keep all the layer below says, up to the end of the disk: that is
        // what later requests can be answered from.
        let mut fresh = Extents::new(offset, self.size.saturating_sub(offset).max(1));
        self.next.extents(count, offset, flags, &mut fresh).await?;
        {
            let mut m = self.mem.last.lock().unwrap_or_else(|e| e.into_inner());
            if m.0 == generation {
                m.1 = fresh.list().to_vec();
            }
        }
        for x in fresh.list() {
            if !ext.add(x.offset, x.length, x.flags) {
                break;
            }
        }
        Ok(())
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.forget();
        let r = self.next.pwrite(buf, offset, flags).await;
        self.forget();
        r
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.forget();
        let r = self.next.trim(count, offset, flags).await;
        self.forget();
        r
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.forget();
        let r = self.next.zero(count, offset, flags).await;
        self.forget();
        r
    }
}
