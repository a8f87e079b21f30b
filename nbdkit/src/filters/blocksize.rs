//! `blocksize`: make every request the layer below sees aligned and small
//! enough, whatever the client sends.
//!
//! - `minblock=SIZE`: the alignment, a power of 2 up to 64K (default: the
//!   plugin's minimum block size, or 1). Reads are widened to whole
//!   blocks; partial blocks of writes and zeroes are done by
//!   read-modify-write; partial blocks of trims are ignored; the size is
//!   rounded down to a multiple (the unaligned tail cannot be served).
//! - `maxdata=SIZE`: the largest read or write passed down (default 64M,
//!   or less if the plugin says so, or `maxlen` if smaller); a multiple of
//!   `minblock`. Larger requests are split.
//! - `maxlen=SIZE`: the largest trim, zero, cache or extents request
//!   passed down (default 4G minus `minblock`); a multiple of `minblock`.
//!
//! FUA on a split request: every piece carries it when the layer below
//! does FUA natively; when it emulates FUA, the pieces go without it and
//! one flush follows. Extents come in whole blocks (a run ending
//! mid-block is cut back; a first run shorter than a block is merged with
//! what follows, keeping only the flags true of all of it), asked for
//! from the block holding the offset, for the request's length rounded
//! up to blocks.
//!
//! Clients are told the export takes any request (minimum 1, maximum
//! 4G-1), preferring blocks of at least 4K and at least `minblock`.
//!
//! Example: `nbdkit -U - --filter=blocksize nbd socket=/tmp/sock maxdata=32M`

use std::sync::Arc;

use async_trait::async_trait;

use super::{aligned_extents, FilterInfo};
use crate::backend::{
    BlockSize, Errno, Error, Extents, Filter, FilterHandle, Flags, Fua, Guard, Handle, Next,
    OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `blocksize` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "blocksize",
    description: "align and split requests for the plugin",
    config_help: "minblock=<SIZE>      Minimum block size, power of 2 <= 64k (default 1).\n\
                  maxdata=<SIZE>       Maximum size for read/write (default 64M).\n\
                  maxlen=<SIZE>        Maximum size for trim/zero (default 4G-minblock).",
    build,
};

/// The largest `minblock`.
const MINBLOCK_LIMIT: u64 = 64 * 1024;
/// The default `maxdata`: the largest request nbdkit accepts.
const MAXDATA_DEFAULT: u64 = 64 * 1024 * 1024;

fn take(p: &mut Params, key: &str) -> Result<Option<u64>, StartError> {
    let v = p.take_size(key).map_err(|e| StartError(e.0.replacen(p.owner(), "blocksize", 1)))?;
    match v {
        Some(0) => Err(StartError(format!("blocksize: {key} must not be 0 when given"))),
        Some(n) if n > u64::from(u32::MAX) => {
            Err(StartError(format!("blocksize: {key}={n} is too large (the limit is 4G-1)")))
        }
        v => Ok(v),
    }
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let minblock = take(p, "minblock")?;
    let maxdata = take(p, "maxdata")?;
    let maxlen = take(p, "maxlen")?;
    if let Some(m) = minblock {
        if !m.is_power_of_two() || m > MINBLOCK_LIMIT {
            return Err(StartError(format!(
                "blocksize: minblock={m} must be a power of 2 no larger than 64K"
            )));
        }
        for (key, v) in [("maxdata", maxdata), ("maxlen", maxlen)] {
            if let Some(v) = v.filter(|v| v % m != 0) {
                return Err(StartError(format!(
                    "blocksize: {key}={v} must be a multiple of minblock ({m})"
                )));
            }
        }
    }
    Ok(Arc::new(BlocksizeFilter {
        minblock,
        maxdata,
        maxlen,
        lock: Arc::new(tokio::sync::RwLock::new(())),
    }))
}

struct BlocksizeFilter {
    minblock: Option<u64>,
    maxdata: Option<u64>,
    maxlen: Option<u64>,
    /// Read-modify-write cycles hold this exclusively, aligned writes
    /// shared, so no aligned write slips into the middle of a cycle.
    lock: Arc<tokio::sync::RwLock<()>>,
}

#[async_trait]
impl Filter for BlocksizeFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let below = next.block_size().await?;
        let (below_min, below_max) =
            below.map_or((1, 0), |b| (u64::from(b.minimum.max(1)), u64::from(b.maximum)));
        let minblock = self.minblock.unwrap_or(1).max(below_min);
        let mut maxdata = self
            .maxdata
            .unwrap_or_else(|| self.maxlen.map_or(MAXDATA_DEFAULT, |l| l.min(MAXDATA_DEFAULT)));
        if below_max > 0 {
            maxdata = maxdata.min(below_max);
        }
        let maxdata = (maxdata / minblock * minblock).max(minblock);
        let maxlen = match self.maxlen {
            None => (1 << 32) - minblock,
            Some(l) => (l / minblock * minblock).max(minblock),
        };
        Ok(Arc::new(BlocksizeHandle { next, minblock, maxdata, maxlen, lock: self.lock.clone() }))
    }
}

struct BlocksizeHandle {
    next: Arc<Guard>,
    minblock: u64,
    maxdata: u64,
    maxlen: u64,
    lock: Arc<tokio::sync::RwLock<()>>,
}

impl BlocksizeHandle {
    /// Bytes past the last block boundary at or before `offset`.
    fn misalign(&self, offset: u64) -> u64 {
        offset & (self.minblock - 1)
    }

    fn round_down(&self, n: u64) -> u64 {
        n & !(self.minblock - 1)
    }

    /// Read the block at `start`, change part of it, write it back.
    async fn modify(&self, start: u64, flags: Flags, edit: impl FnOnce(&mut [u8])) -> Result<()> {
        let _excl = self.lock.write().await;
        let mut block = vec![0u8; self.minblock as usize];
        self.next.pread(&mut block, start, Flags::default()).await?;
        edit(&mut block);
        let flags = Flags { may_trim: false, fast_zero: false, ..flags };
        self.next.pwrite(&block, start, flags).await
    }

    /// FUA on a request split into pieces: when the layer below does FUA
    /// by flushing, the pieces go without it and one flush follows them
    /// all (as C); when it is native, every piece carries it.
    async fn fua(&self, flags: Flags) -> Result<(Flags, bool)> {
        if flags.fua && self.next.caps().await?.fua == Fua::Emulate {
            Ok((Flags { fua: false, ..flags }, true))
        } else {
            Ok((flags, false))
        }
    }

    async fn flush_after(&self, needed: bool) -> Result<()> {
        if needed {
            self.next.flush(Flags::default()).await?;
        }
        Ok(())
    }

    /// Split a write or zero of `count` bytes at `offset` into an
    /// unaligned head, an aligned body and an unaligned tail.
    fn split(&self, offset: u64, count: u64) -> (u64, u64, u64) {
        let head = match self.misalign(offset) {
            0 => 0,
            drop => (self.minblock - drop).min(count),
        };
        let body = self.round_down(count - head);
        (head, body, count - head - body)
    }
}

impl FilterHandle for BlocksizeHandle {
    fn next(&self) -> &Guard {
        &self.next
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.round_down(self.next.size().await?))
    }

    async fn block_size(&self) -> Result<Option<BlockSize>> {
        let pref = self.next.block_size().await?.map_or(0, |b| b.preferred);
        Ok(Some(BlockSize::new(1, pref.max(4096).max(self.minblock as u32), u32::MAX)))
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        let (head, body, _) = self.split(offset, buf.len() as u64);
        let (h, rest) = buf.split_at_mut(head as usize);
        let (b, t) = rest.split_at_mut(body as usize);
        let mut block = Vec::new();
        if !h.is_empty() {
            let drop = self.misalign(offset);
            block.resize(self.minblock as usize, 0);
            self.next.pread(&mut block, offset - drop, flags).await?;
            h.copy_from_slice(&block[drop as usize..drop as usize + h.len()]);
        }
        let mut pos = offset + head;
        for chunk in b.chunks_mut(self.maxdata as usize) {
            self.next.pread(chunk, pos, flags).await?;
            pos += chunk.len() as u64;
        }
        if !t.is_empty() {
            block.resize(self.minblock as usize, 0);
            self.next.pread(&mut block, pos, flags).await?;
            let n = t.len();
            t.copy_from_slice(&block[..n]);
        }
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.fua(flags).await?;
        let (head, body, _) = self.split(offset, buf.len() as u64);
        let (h, rest) = buf.split_at(head as usize);
        let (b, t) = rest.split_at(body as usize);
        if !h.is_empty() {
            let drop = self.misalign(offset);
            self.modify(offset - drop, flags, |blk| {
                blk[drop as usize..drop as usize + h.len()].copy_from_slice(h)
            })
            .await?;
        }
        let mut pos = offset + head;
        for chunk in b.chunks(self.maxdata as usize) {
            let _shared = self.lock.read().await;
            self.next.pwrite(chunk, pos, flags).await?;
            pos += chunk.len() as u64;
        }
        if !t.is_empty() {
            self.modify(pos, flags, |blk| blk[..t.len()].copy_from_slice(t)).await?;
        }
        self.flush_after(flush).await
    }

    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.fua(flags).await?;
        // Partial blocks at either end are left alone.
        let (head, body, _) = self.split(offset, count);
        let mut pos = offset + head;
        let mut left = body;
        while left > 0 {
            let n = left.min(self.maxlen);
            let _shared = self.lock.read().await;
            self.next.trim(n, pos, flags).await?;
            pos += n;
            left -= n;
        }
        self.flush_after(flush).await
    }

    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        if flags.fast_zero && (self.misalign(offset | count) != 0 || count > self.maxlen) {
            // Anything needing more than one call below cannot be fast.
            return Err(Error::new(
                Errno::NotSup,
                "blocksize: a fast zero must be one aligned request",
            ));
        }
        let (flags, flush) = self.fua(flags).await?;
        let (head, body, tail) = self.split(offset, count);
        if head > 0 {
            let drop = self.misalign(offset) as usize;
            self.modify(offset - drop as u64, flags, |blk| blk[drop..drop + head as usize].fill(0))
                .await?;
        }
        let mut pos = offset + head;
        let mut left = body;
        while left > 0 {
            let n = left.min(self.maxlen);
            let _shared = self.lock.read().await;
            self.next.zero(n, pos, flags).await?;
            pos += n;
            left -= n;
        }
        if tail > 0 {
            self.modify(pos, flags, |blk| blk[..tail as usize].fill(0)).await?;
        }
        self.flush_after(flush).await
    }

    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let start = self.round_down(offset);
        let end = (offset + count).next_multiple_of(self.minblock);
        let mut pos = start;
        while pos < end {
            let n = (end - pos).min(self.maxdata);
            self.next.cache(n, pos, flags).await?;
            pos += n;
        }
        Ok(())
    }

    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        // As C: ask from the block holding `offset` for the request's
        // length rounded up (so with an unaligned offset the answer may
        // stop a block short: the client asks again), at most `maxlen`;
        // the layer below may describe up to the end of the block
        // holding the request's end.
        let start = self.round_down(offset);
        let end = (offset + count).next_multiple_of(self.minblock);
        let len = count.next_multiple_of(self.minblock).min(self.maxlen).min(end - start);
        let mut aligned = Extents::with_limit(start, len, end);
        aligned_extents(&self.next, len, start, flags, self.minblock, &mut aligned).await?;
        for e in aligned.list() {
            if !ext.add(e.offset, e.length, e.flags) {
                break;
            }
        }
        Ok(())
    }
}
