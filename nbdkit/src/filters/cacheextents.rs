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
    Client, Extent, Extents, Filter, FilterHandle, Flags, Handle, Plugin, Result,
};
use crate::error::StartError;
use crate::params::Params;

pub static INFO: FilterInfo = FilterInfo {
    name: "cacheextents",
    description: "cache the last extents answer",
    config_help: "(no parameters)",
    build,
};

struct CacheExtents;

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(CacheExtents))
}

#[async_trait]
impl Filter for CacheExtents {
    async fn open(
        &self,
        next: &dyn Plugin,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        let next = next.open_for(readonly, export, client).await?;
        let size = next.size().await?;
        Ok(Arc::new(Cached {
            next,
            size,
            last: Mutex::new(Vec::new()),
        }))
    }
}

struct Cached {
    next: Arc<dyn Handle>,
    size: u64,
    /// The last answer, contiguous from its first offset.
    last: Mutex<Vec<Extent>>,
}

impl Cached {
    fn forget(&self) {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[async_trait]
impl FilterHandle for Cached {
    fn next(&self) -> &Arc<dyn Handle> {
        &self.next
    }
    async fn extents(
        &self,
        count: u32,
        offset: u64,
        flags: Flags,
        ext: &mut Extents,
    ) -> Result<()> {
        {
            let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
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
        }
        // Keep all the layer below says, up to the end of the disk: that is
        // what later requests can be answered from.
        let mut fresh = Extents::new(offset, self.size.saturating_sub(offset).max(1));
        self.next.extents(count, offset, flags, &mut fresh).await?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = fresh.list().to_vec();
        for x in fresh.list() {
            if !ext.add(x.offset, x.length, x.flags) {
                break;
            }
        }
        Ok(())
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.forget();
        self.next.pwrite(buf, offset, flags).await
    }
    async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.forget();
        self.next.trim(count, offset, flags).await
    }
    async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.forget();
        self.next.zero(count, offset, flags).await
    }
}
