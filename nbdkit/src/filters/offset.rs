//! `offset`: serve only the bytes `[offset, offset+range)` of the layer
//! below.
//!
//! - `offset=SIZE`: where the served range starts (default 0).
//! - `range=SIZE`: how many bytes to serve (default: through to the end).
//!
//! A range that reaches past the end of the layer below makes the export
//! fail to open (use the truncate filter to grow a plugin).
//!
//! Example: `nbdkit --filter=offset file disk.img offset=1M range=100M`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Client, Errno, Error, Extents, Filter, FilterHandle, Flags, Handle, Plugin, Result,
};
use crate::error::StartError;
use crate::params::Params;

pub static INFO: FilterInfo = FilterInfo {
    name: "offset",
    description: "serve a byte range of the plugin",
    config_help: "offset=<OFFSET>            The start offset to serve (default 0).\n\
                  range=<LENGTH>             The total size to serve (default rest of file).",
    build,
};

struct OffsetFilter {
    offset: u64,
    range: Option<u64>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let offset = p.take_size("offset")?.unwrap_or(0);
    let range = p.take_size("range")?;
    Ok(Arc::new(OffsetFilter { offset, range }))
}

#[async_trait]
impl Filter for OffsetFilter {
    async fn open(
        &self,
        next: &dyn Plugin,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        let next = next.open_for(readonly, export, client).await?;
        let real = next.size().await?;
        let size = match self.range {
            Some(r) if self.offset.checked_add(r).is_none_or(|end| end > real) => {
                return Err(Error::new(
                    Errno::Inval,
                    format!(
                        "offset+range ({}+{r}) is larger than the real size ({real}) \
                         of the underlying file or device",
                        self.offset
                    ),
                ))
            }
            Some(r) => r,
            None if self.offset > real => {
                return Err(Error::new(
                    Errno::Inval,
                    format!(
                        "offset ({}) is larger than the real size ({real}) \
                         of the underlying file or device",
                        self.offset
                    ),
                ))
            }
            None => real - self.offset,
        };
        Ok(Arc::new(OffsetHandle {
            next,
            offset: self.offset,
            size,
        }))
    }
}

struct OffsetHandle {
    next: Arc<dyn Handle>,
    offset: u64,
    size: u64,
}

#[async_trait]
impl FilterHandle for OffsetHandle {
    fn next(&self) -> &Arc<dyn Handle> {
        &self.next
    }
    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.next.pread(buf, offset + self.offset, flags).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.next.pwrite(buf, offset + self.offset, flags).await
    }
    async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.next.trim(count, offset + self.offset, flags).await
    }
    async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.next.zero(count, offset + self.offset, flags).await
    }
    async fn cache(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.next.cache(count, offset + self.offset, flags).await
    }
    async fn extents(
        &self,
        count: u32,
        offset: u64,
        flags: Flags,
        ext: &mut Extents,
    ) -> Result<()> {
        // Ask below for what lies under our window, then shift it back.
        let below = offset + self.offset;
        let mut inner = Extents::new(below, self.offset + self.size - below);
        self.next.extents(count, below, flags, &mut inner).await?;
        for e in inner.list() {
            if !ext.add(e.offset - self.offset, e.length, e.flags) {
                break;
            }
        }
        Ok(())
    }
}
