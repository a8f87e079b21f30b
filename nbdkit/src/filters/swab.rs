//! `swab`: swap the bytes of every 16-, 32- or 64-bit word.
//!
//! - `swab-bits=16` (default), `32`, `64`; `8` turns the filter off.
//!
//! The size is rounded down to a whole number of words, and requests not
//! aligned to words fail with EINVAL (put the blocksize filter below for
//! byte access). Extents come in whole words too: a run of the layer
//! below that ends mid-word is cut back to the word, and a first run
//! shorter than a word is merged with what follows, keeping only the
//! flags true of the whole word.
//!
//! Example: `nbdkit --filter=swab file disk.img`

use std::sync::Arc;

use async_trait::async_trait;

use super::{aligned_extents, FilterInfo};
use crate::backend::{
    BlockSize, Errno, Error, Extents, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs,
    Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `swab` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "swab",
    description: "swap the bytes of each word",
    config_help: "swab-bits=8|16|32|64          Size of the words swapped (default 16).",
    build,
};

struct Swab(usize);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let bytes = match p.take("swab-bits").as_deref() {
        None | Some("16") => 2,
        Some("8") => 1,
        Some("32") => 4,
        Some("64") => 8,
        Some(v) => {
            return Err(StartError(format!("swab: swab-bits={v}: expected 8, 16, 32 or 64")))
        }
    };
    Ok(Arc::new(Swab(bytes)))
}

#[async_trait]
impl Filter for Swab {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        if self.0 == 1 {
            return Ok(next);
        }
        Ok(Arc::new(Swapped { next, w: self.0 }))
    }
}

struct Swapped {
    next: Arc<Guard>,
    w: usize,
}

impl Swapped {
    fn aligned(&self, offset: u64, len: u64) -> Result<()> {
        let w = self.w as u64;
        if !offset.is_multiple_of(w) || !len.is_multiple_of(w) {
            return Err(Error::new(
                Errno::Inval,
                format!("swab: request not aligned to {w} bytes"),
            ));
        }
        Ok(())
    }

    fn swap(&self, buf: &mut [u8]) {
        for word in buf.chunks_exact_mut(self.w) {
            word.reverse();
        }
    }
}

impl FilterHandle for Swapped {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn size(&self) -> Result<u64> {
        let s = self.next.size().await?;
        Ok(s - s % self.w as u64)
    }
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        let w = self.w as u32;
        Ok(Some(match self.next.block_size().await? {
            Some(b) => BlockSize::new(b.minimum.max(w), b.preferred.max(w), b.maximum),
            None => BlockSize::new(w, 512, u32::MAX),
        }))
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.aligned(offset, buf.len() as u64)?;
        self.next.pread(buf, offset, flags).await?;
        self.swap(buf);
        Ok(())
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.aligned(offset, buf.len() as u64)?;
        let mut b = buf.to_vec();
        self.swap(&mut b);
        self.next.pwrite(&b, offset, flags).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.aligned(offset, count)?;
        self.next.trim(count, offset, flags).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.aligned(offset, count)?;
        self.next.zero(count, offset, flags).await
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        self.aligned(offset, count)?;
        aligned_extents(&self.next, count, offset, flags, self.w as u64, ext).await
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.aligned(offset, count)?;
        self.next.cache(count, offset, flags).await
    }
}
