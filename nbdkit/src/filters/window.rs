//! A window onto the layer below: `[base, base+size)` served as a whole
//! export. Not a filter itself: the handle the offset, partition and tar
//! filters share.

use std::sync::Arc;

use crate::backend::{Extents, FilterHandle, Flags, Guard, Result};

pub(crate) struct Window {
    pub next: Arc<Guard>,
    pub base: u64,
    pub size: u64,
    /// Replaces the description from below, when set.
    pub description: Option<String>,
}

impl FilterHandle for Window {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn description(&self) -> Option<String> {
        self.description.clone().or_else(|| self.next.description())
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.next.pread(buf, self.base + offset, flags).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.next.pwrite(buf, self.base + offset, flags).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.next.trim(count, self.base + offset, flags).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.next.zero(count, self.base + offset, flags).await
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.next.cache(count, self.base + offset, flags).await
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        // Ask below about the rest of the window, then shift it back.
        let start = self.base + offset;
        let mut below = Extents::new(start, self.size - offset);
        self.next.extents(count, start, flags, &mut below).await?;
        for e in below.list() {
            if !ext.add(e.offset - self.base, e.length, e.flags) {
                break;
            }
        }
        Ok(())
    }
}
