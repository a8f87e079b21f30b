//! `cow`: a copy-on-write overlay that makes any plugin writable while
//! leaving it untouched.
//!
//! The layer below is always opened read-only: writes, trims and zeroes
//! land in an overlay, a temporary file in `$TMPDIR` (default `/var/tmp`)
//! that is unlinked as soon as it is made, so everything written is lost
//! when nbdkit exits. The overlay is shared by every connection: all
//! clients see the same disk. The underlying disk must not change size.
//!
//! - `cow-block-size=N`: the overlay's unit, a power of 2 from 4K up
//!   (default 64K). Writes that do not cover whole blocks read the rest of
//!   the block from below first.
//! - `cow-on-cache=BOOL`: a cache (prefetch) request copies the data into
//!   the overlay (default false: it is passed down, or ignored).
//! - `cow-on-read=BOOL|/PATH`: reads copy the data into the overlay too
//!   (default false); with an absolute path, only while that path exists.
//!
//! Flush and FUA do nothing (the overlay does not outlive the server).
//! Extents report overlay blocks as data (trimmed ones as holes that read
//! as zeroes) and ask the plugin about the rest.
//!
//! Example: `nbdkit -U - --filter=cow pattern 1G --run 'nbdsh -u "$uri"'`

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    BlockSize, Cache, Caps, Errno, Error, ExtentFlags, Extents, Filter, FilterHandle, Flags, Guard,
    Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `cow` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "cow",
    description: "copy-on-write overlay: writes go to a temporary file",
    config_help: "cow-block-size=<N>         Overlay block size (power of 2, default 64K).\n\
                  cow-on-cache=<BOOL>        Copy cached (prefetched) data to the overlay.\n\
                  cow-on-read=<BOOL>|/PATH   Copy data read to the overlay.",
    build,
};

/// When reads copy data into the overlay.
#[derive(Debug, Clone)]
enum OnRead {
    Never,
    Always,
    /// While this path exists.
    While(PathBuf),
}

impl OnRead {
    fn now(&self) -> bool {
        match self {
            OnRead::Never => false,
            OnRead::Always => true,
            OnRead::While(p) => p.exists(),
        }
    }
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let block = match p.take_size("cow-block-size")? {
        None => 65536,
        Some(n) if (4096..=1 << 31).contains(&n) && n.is_power_of_two() => n,
        Some(n) => {
            return Err(StartError(format!(
                "cow: cow-block-size={n}: must be a power of 2 from 4096 to 2G"
            )))
        }
    };
    let on_cache = p.take_bool("cow-on-cache")?.unwrap_or(false);
    let on_read = match p.take("cow-on-read") {
        None => OnRead::Never,
        Some(v) if v.starts_with('/') => OnRead::While(PathBuf::from(v)),
        Some(v) => {
            let mut one = Params::new("cow", vec![("cow-on-read".into(), v)]);
            if one.take_bool("cow-on-read")? == Some(true) {
                OnRead::Always
            } else {
                OnRead::Never
            }
        }
    };
    let dir = std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    let file = tempfile::tempfile_in(&dir).map_err(|e| {
        StartError(format!(
            "cow: cannot make the overlay in {}: {}",
            dir.display(),
            crate::error::io_message(&e)
        ))
    })?;
    Ok(Arc::new(CowFilter {
        overlay: Arc::new(Overlay {
            block,
            file,
            map: Mutex::new(BlockMap::default()),
            commit: tokio::sync::Mutex::new(()),
            rmw: tokio::sync::Mutex::new(()),
        }),
        on_cache,
        on_read,
    }))
}

/// The state of one overlay block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not in the overlay: read from below.
    Absent = 0,
    /// In the overlay file.
    Present = 1,
    /// Trimmed: reads as zeroes.
    Trimmed = 3,
}

/// Two bits per block, and the size of the disk below.
#[derive(Default)]
struct BlockMap {
    bits: Vec<u8>,
    size: u64,
}

impl BlockMap {
    fn get(&self, blk: u64) -> State {
        let Some(byte) = self.bits.get((blk / 4) as usize) else {
            return State::Absent;
        };
        match (byte >> ((blk % 4) * 2)) & 3 {
            0 => State::Absent,
            1 => State::Present,
            _ => State::Trimmed,
        }
    }

    fn set(&mut self, blk: u64, s: State) {
        if let Some(byte) = self.bits.get_mut((blk / 4) as usize) {
            let shift = (blk % 4) * 2;
            *byte = (*byte & !(3 << shift)) | ((s as u8) << shift);
        }
    }
}

/// The overlay, shared by every connection.
struct Overlay {
    block: u64,
    file: File,
    map: Mutex<BlockMap>,
    /// Held while writing the file and recording the blocks written, so a
    /// copy made by a read can never overwrite newer data.
    commit: tokio::sync::Mutex<()>,
    /// Held over a read-modify-write of a partial block.
    rmw: tokio::sync::Mutex<()>,
}

/// Run a blocking system call without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> std::io::Result<T>) -> Result<T> {
    tokio::task::block_in_place(f).map_err(|e| {
        let err = Error::from(e);
        Error::new(err.errno, format!("cow: overlay: {}", err.msg))
    })
}

impl Overlay {
    fn map(&self) -> std::sync::MutexGuard<'_, BlockMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn state(&self, blk: u64) -> State {
        self.map().get(blk)
    }

    fn size(&self) -> u64 {
        self.map().size
    }

    /// Fit the overlay to a disk of `size` bytes.
    fn set_size(&self, size: u64) -> Result<()> {
        let blocks = size.div_ceil(self.block);
        let bytes = usize::try_from(blocks.div_ceil(4))
            .map_err(|_| Error::new(Errno::NoMem, "cow: the disk is too large"))?;
        {
            let mut m = self.map();
            let have = m.bits.len();
            if bytes > have {
                m.bits
                    .try_reserve_exact(bytes - have)
                    .map_err(|_| Error::new(Errno::NoMem, "cow: the disk is too large"))?;
            }
            m.bits.resize(bytes, 0);
            m.size = size;
        }
        blocking(|| self.file.set_len(blocks * self.block))
    }

    /// Fill `buf` (whole blocks from block `blk`) from the overlay or from
    /// below, a run of blocks in the same state at a time; with `save`,
    /// what comes from below is copied into the overlay.
    async fn read_blocks(
        &self, next: &dyn Handle, mut blk: u64, mut buf: &mut [u8], save: bool,
    ) -> Result<()> {
        let bs = self.block as usize;
        while !buf.is_empty() {
            let nblocks = (buf.len() / bs) as u64;
            let (state, run, size) = {
                let m = self.map();
                let s = m.get(blk);
                let run = (1..nblocks).take_while(|i| m.get(blk + i) == s).count() as u64 + 1;
                (s, run, m.size)
            };
            let (here, rest) = buf.split_at_mut(run as usize * bs);
            let offset = blk * self.block;
            match state {
                State::Absent => {
                    let n = (here.len() as u64).min(size.saturating_sub(offset)) as usize;
                    next.pread(&mut here[..n], offset, Flags::default()).await?;
                    here[n..].fill(0);
                    if save {
                        self.save(blk, here).await?;
                    }
                }
                State::Present => blocking(|| self.file.read_exact_at(here, offset))?,
                State::Trimmed => here.fill(0),
            }
            buf = rest;
            blk += run;
        }
        Ok(())
    }

    /// Copy blocks read from below into the overlay, skipping any that
    /// were written (or trimmed) meanwhile.
    async fn save(&self, blk: u64, data: &[u8]) -> Result<()> {
        let _commit = self.commit.lock().await;
        let bs = self.block as usize;
        for (i, chunk) in data.chunks(bs).enumerate() {
            let b = blk + i as u64;
            if self.state(b) == State::Absent {
                blocking(|| self.file.write_all_at(chunk, b * self.block))?;
                self.map().set(b, State::Present);
            }
        }
        Ok(())
    }

    /// Write whole blocks from block `blk`.
    async fn write_blocks(&self, blk: u64, data: &[u8]) -> Result<()> {
        let _commit = self.commit.lock().await;
        blocking(|| self.file.write_all_at(data, blk * self.block))?;
        let mut m = self.map();
        for i in 0..(data.len() as u64 / self.block) {
            m.set(blk + i, State::Present);
        }
        Ok(())
    }

    /// Change part of one block: read it (from wherever it is), let `edit`
    /// change it, write it to the overlay.
    async fn modify(
        &self, next: &dyn Handle, blk: u64, save_reads: bool, edit: impl FnOnce(&mut [u8]),
    ) -> Result<()> {
        let _rmw = self.rmw.lock().await;
        let mut block = vec![0u8; self.block as usize];
        self.read_blocks(next, blk, &mut block, save_reads).await?;
        edit(&mut block);
        self.write_blocks(blk, &block).await
    }
}

struct CowFilter {
    overlay: Arc<Overlay>,
    on_cache: bool,
    on_read: OnRead,
}

#[async_trait]
impl Filter for CowFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        // Nothing is ever written below.
        let next = next.open(&args.with_readonly(true)).await?;
        self.overlay.set_size(next.size().await?)?;
        let next_cache = next.caps().await?.cache != Cache::None;
        Ok(Arc::new(CowHandle {
            next,
            overlay: self.overlay.clone(),
            on_cache: self.on_cache,
            on_read: self.on_read.clone(),
            next_cache,
        }))
    }
}

struct CowHandle {
    next: Arc<Guard>,
    overlay: Arc<Overlay>,
    on_cache: bool,
    on_read: OnRead,
    /// Whether the layer below does cache requests.
    next_cache: bool,
}

/// How a request splits into an unaligned head, whole blocks, and an
/// unaligned tail.
struct Split {
    /// First block touched.
    blk: u64,
    /// Offset within the first block (0 when the head is aligned).
    head_skip: u64,
    /// Bytes in the partial head block (0 if none).
    head: u64,
    /// Bytes of whole blocks.
    body: u64,
    /// Bytes in the partial tail block (0 if none).
    tail: u64,
}

fn split(offset: u64, count: u64, bs: u64) -> Split {
    let blk = offset / bs;
    let head_skip = offset % bs;
    let head = if head_skip != 0 { (bs - head_skip).min(count) } else { 0 };
    let rest = count - head;
    Split { blk, head_skip, head, body: rest / bs * bs, tail: rest % bs }
}

impl CowHandle {
    /// Zero `[offset, offset + count)`, with whole blocks either written
    /// as zeroes or marked as trimmed.
    async fn zero_or_trim(&self, count: u64, offset: u64, trim: bool) -> Result<()> {
        let ov = &*self.overlay;
        let bs = ov.block;
        let s = split(offset, count, bs);
        let save = self.on_read.now();
        let mut blk = s.blk;
        if s.head > 0 {
            let (from, n) = (s.head_skip as usize, s.head as usize);
            ov.modify(&*self.next, blk, save, |b| b[from..from + n].fill(0)).await?;
            blk += 1;
        }
        let nbody = s.body / bs;
        if trim {
            let _commit = ov.commit.lock().await;
            let mut m = ov.map();
            for i in 0..nbody {
                m.set(blk + i, State::Trimmed);
            }
        } else if nbody > 0 {
            let zeroes = vec![0u8; (s.body.min(1 << 20) / bs * bs).max(bs) as usize];
            let mut done = 0;
            while done < nbody {
                let n = (nbody - done).min(zeroes.len() as u64 / bs);
                ov.write_blocks(blk + done, &zeroes[..(n * bs) as usize]).await?;
                done += n;
            }
        }
        blk += nbody;
        if s.tail > 0 {
            let n = s.tail as usize;
            ov.modify(&*self.next, blk, save, |b| b[..n].fill(0)).await?;
        }
        Ok(())
    }
}

impl FilterHandle for CowHandle {
    fn next(&self) -> &Guard {
        &self.next
    }

    fn never_blocks(&self) -> bool {
        false
    }

    async fn caps(&self) -> Result<Caps> {
        let below = self.next.caps().await?;
        Ok(Caps { rotational: below.rotational, ..Caps::ALL_NATIVE })
    }

    async fn block_size(&self) -> Result<Option<BlockSize>> {
        let bs = self.overlay.block as u32;
        Ok(Some(match self.next.block_size().await? {
            None => BlockSize::new(1, bs, u32::MAX),
            Some(b) if b.maximum >= bs => BlockSize { preferred: b.preferred.max(bs), ..b },
            Some(b) => b,
        }))
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _flags: Flags) -> Result<()> {
        let ov = &*self.overlay;
        let bs = ov.block;
        let s = split(offset, buf.len() as u64, bs);
        let save = self.on_read.now();
        let mut blk = s.blk;
        let (head, rest) = buf.split_at_mut(s.head as usize);
        let (body, tail) = rest.split_at_mut(s.body as usize);
        let mut block = Vec::new();
        if !head.is_empty() {
            block.resize(bs as usize, 0);
            ov.read_blocks(&*self.next, blk, &mut block, save).await?;
            let from = s.head_skip as usize;
            head.copy_from_slice(&block[from..from + head.len()]);
            blk += 1;
        }
        if !body.is_empty() {
            ov.read_blocks(&*self.next, blk, body, save).await?;
            blk += s.body / bs;
        }
        if !tail.is_empty() {
            block.resize(bs as usize, 0);
            ov.read_blocks(&*self.next, blk, &mut block, save).await?;
            let n = tail.len();
            tail.copy_from_slice(&block[..n]);
        }
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _flags: Flags) -> Result<()> {
        let ov = &*self.overlay;
        let bs = ov.block;
        let s = split(offset, buf.len() as u64, bs);
        let save = self.on_read.now();
        let mut blk = s.blk;
        let (head, rest) = buf.split_at(s.head as usize);
        let (body, tail) = rest.split_at(s.body as usize);
        if !head.is_empty() {
            let from = s.head_skip as usize;
            ov.modify(&*self.next, blk, save, |b| b[from..from + head.len()].copy_from_slice(head))
                .await?;
            blk += 1;
        }
        if !body.is_empty() {
            ov.write_blocks(blk, body).await?;
            blk += s.body / bs;
        }
        if !tail.is_empty() {
            ov.modify(&*self.next, blk, save, |b| b[..tail.len()].copy_from_slice(tail)).await?;
        }
        Ok(())
    }

    async fn flush(&self, _flags: Flags) -> Result<()> {
        Ok(())
    }

    async fn trim(&self, count: u64, offset: u64, _flags: Flags) -> Result<()> {
        self.zero_or_trim(count, offset, true).await
    }

    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        // Zeroing is never faster than writing here.
        if flags.fast_zero {
            return Err(Error::new(Errno::NotSup, "cow: fast zero is not possible"));
        }
        self.zero_or_trim(count, offset, false).await
    }

    async fn cache(&self, count: u64, offset: u64, _flags: Flags) -> Result<()> {
        let ov = &*self.overlay;
        let bs = ov.block;
        let first = offset / bs;
        let end = (offset + count).div_ceil(bs);
        let size = ov.size();
        let mut block = Vec::new();
        for blk in first..end {
            if ov.state(blk) != State::Absent {
                continue;
            }
            let off = blk * bs;
            let n = bs.min(size.saturating_sub(off));
            if n == 0 {
                break;
            }
            if self.on_cache {
                block.resize(bs as usize, 0);
                self.next.pread(&mut block[..n as usize], off, Flags::default()).await?;
                block[n as usize..].fill(0);
                ov.save(blk, &block).await?;
            } else if self.next_cache {
                self.next.cache(n, off, Flags::default()).await?;
            }
        }
        Ok(())
    }

    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        let ov = &*self.overlay;
        let bs = ov.block;
        let mut blk = offset / bs;
        let end_blk = (offset + count).div_ceil(bs);
        let size = ov.size();
        while blk < end_blk {
            let state = ov.state(blk);
            if state != State::Absent {
                let f = if state == State::Trimmed {
                    ExtentFlags::HOLE | ExtentFlags::ZERO
                } else {
                    ExtentFlags::DATA
                };
                ext.add(blk * bs, bs, f);
                blk += 1;
            } else {
                // A run of blocks not in the overlay: ask below, all at once.
                let mut run_end = blk + 1;
                while run_end < end_blk && ov.state(run_end) == State::Absent {
                    run_end += 1;
                }
                let mut pos = blk * bs;
                let stop = (run_end * bs).min(size);
                while pos < stop {
                    let n = (stop - pos).min(u64::from(u32::MAX) / bs * bs);
                    let mut below = Extents::new(pos, n);
                    self.next.extents(n, pos, flags, &mut below).await?;
                    below.check()?;
                    for e in below.list() {
                        ext.add(e.offset, e.length, e.flags);
                    }
                    pos = below.next_offset();
                    if flags.req_one {
                        break;
                    }
                }
                blk = run_end;
            }
            if flags.req_one && !ext.list().is_empty() {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_into_head_body_tail() {
        let s = split(100, 10, 4096);
        assert_eq!((s.blk, s.head_skip, s.head, s.body, s.tail), (0, 100, 10, 0, 0));
        let s = split(4000, 10000, 4096);
        assert_eq!((s.blk, s.head, s.body, s.tail), (0, 96, 8192, 1712));
        let s = split(8192, 4096, 4096);
        assert_eq!((s.blk, s.head, s.body, s.tail), (2, 0, 4096, 0));
    }

    #[test]
    fn block_map_keeps_two_bits_a_block() {
        let mut m = BlockMap { bits: vec![0; 2], size: 0 };
        m.set(0, State::Present);
        m.set(3, State::Trimmed);
        m.set(5, State::Present);
        assert_eq!(m.get(0), State::Present);
        assert_eq!(m.get(1), State::Absent);
        assert_eq!(m.get(3), State::Trimmed);
        assert_eq!(m.get(5), State::Present);
        m.set(3, State::Absent);
        assert_eq!(m.get(3), State::Absent);
        assert_eq!(m.get(100), State::Absent);
    }
}
