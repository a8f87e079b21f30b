//! `cache`: a block cache in a temporary file between the client and a
//! slow plugin.
//!
//! - `cache=writeback` (default): writes stay in the cache until a flush
//!   (or FUA) writes them back; `writethrough`: writes reach the plugin at
//!   once; `unsafe`: like writeback, but flush and FUA are ignored (dirty
//!   blocks go back when evicted or when a client disconnects).
//! - `cache-min-block-size=SIZE` (default 64K, a power of 2): the block.
//! - `cache-max-size=SIZE`: evict clean blocks (oldest first) beyond this;
//!   `cache-high-threshold=` and `cache-low-threshold=` (percent) are
//!   accepted: eviction here goes straight back under the limit.
//! - `cache-on-read=true|false|/PATH` (default true): keep what is read
//!   (false: only what is written; a path: only while it exists).
//!
//! The cache is one unlinked file in `$TMPDIR` (default `/var/tmp`) shared
//! by every connection, so multi-conn holds. Trim, zero and extents write
//! back what they touch and pass through.
//!
//! Example: `nbdkit --filter=cache nbd socket=/tmp/remote.sock`

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Cache as CacheCap, Caps, Errno, Error, Extents, Filter, FilterHandle, Flags, Fua, Guard,
    Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `cache` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "cache",
    description: "a block cache in a temporary file",
    config_help: "cache=MODE                    writeback, writethrough or unsafe.\n\
                  cache-min-block-size=SIZE     Minimum block size (default 64K).\n\
                  cache-max-size=SIZE           Maximum size of the cache.\n\
                  cache-high-threshold=PCT      Accepted for compatibility.\n\
                  cache-low-threshold=PCT       Accepted for compatibility.\n\
                  cache-on-read=BOOL|/PATH      Cache reads (default true).",
    build,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    WriteBack,
    WriteThrough,
    Unsafe,
}

#[derive(Clone)]
enum OnRead {
    Always,
    Never,
    While(PathBuf),
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Clean,
    Dirty,
}

/// The cache proper, shared by every connection.
struct Store {
    file: File,
    blocks: HashMap<u64, State>,
    /// Cached blocks, oldest first (for eviction).
    order: VecDeque<u64>,
}

struct CacheFilter {
    mode: Mode,
    block: u64,
    max_blocks: Option<usize>,
    on_read: OnRead,
    /// One cache per export name.
    stores: Arc<tokio::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<Store>>>>>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let fail = |m: String| StartError(format!("cache: {m}"));
    let mode = match p.take("cache").as_deref() {
        None | Some("writeback") => Mode::WriteBack,
        Some("writethrough") => Mode::WriteThrough,
        Some("unsafe") => Mode::Unsafe,
        Some(v) => {
            return Err(fail(format!("cache={v}: expected writeback, writethrough or unsafe")))
        }
    };
    let block = p.take_size("cache-min-block-size")?.unwrap_or(64 * 1024);
    if !block.is_power_of_two() || !(4096..=1 << 30).contains(&block) {
        return Err(fail(format!(
            "cache-min-block-size={block}: must be a power of 2 from 4K to 1G"
        )));
    }
    let max_blocks = p.take_size("cache-max-size")?.map(|m| (m / block).max(1) as usize);
    for k in ["cache-high-threshold", "cache-low-threshold"] {
        if let Some(v) = p.take(k) {
            v.parse::<u32>().map_err(|_| fail(format!("{k}={v}: not a percentage")))?;
        }
    }
    let on_read = match p.take("cache-on-read") {
        None => OnRead::Always,
        Some(v) if v.starts_with('/') => OnRead::While(v.into()),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => OnRead::Always,
            "0" | "false" | "no" | "off" => OnRead::Never,
            _ => return Err(fail(format!("cache-on-read={v}: expected true, false or /PATH"))),
        },
    };
    Ok(Arc::new(CacheFilter { mode, block, max_blocks, on_read, stores: Arc::default() }))
}

#[async_trait]
impl Filter for CacheFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { export, .. } = *args;
        let next = next.open(args).await?;
        let size = next.size().await?;
        let store = {
            let mut stores = self.stores.lock().await;
            match stores.get(export) {
                Some(s) => s.clone(),
                None => {
                    let file = tokio::task::block_in_place(|| {
                        let dir = std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into());
                        tempfile::tempfile_in(dir)
                    })
                    .map_err(|e| Error::new(Errno::Io, format!("cache: temporary file: {e}")))?;
                    let s = Arc::new(tokio::sync::Mutex::new(Store {
                        file,
                        blocks: HashMap::new(),
                        order: VecDeque::new(),
                    }));
                    stores.insert(export.to_string(), s.clone());
                    s
                }
            }
        };
        Ok(Arc::new(Cached {
            next,
            size,
            mode: self.mode,
            block: self.block,
            max_blocks: self.max_blocks,
            on_read: self.on_read.clone(),
            store,
        }))
    }
}

struct Cached {
    next: Arc<Guard>,
    size: u64,
    mode: Mode,
    block: u64,
    max_blocks: Option<usize>,
    on_read: OnRead,
    store: Arc<tokio::sync::Mutex<Store>>,
}

fn io(e: std::io::Error) -> Error {
    Error::new(Errno::Io, format!("cache: {}", crate::error::io_message(&e)))
}

impl Cached {
    /// The bytes of block `b` that lie on the disk.
    fn span(&self, b: u64) -> (u64, usize) {
        let start = b * self.block;
        (start, (self.size - start).min(self.block) as usize)
    }

    fn caching_reads(&self) -> bool {
        match &self.on_read {
            OnRead::Always => true,
            OnRead::Never => false,
            OnRead::While(p) => p.exists(),
        }
    }

    /// Block `b`'s bytes, from the cache or from below (then kept, when
    /// `keep`).
    async fn load(&self, s: &mut Store, b: u64, keep: bool) -> Result<Vec<u8>> {
        let (start, len) = self.span(b);
        let mut buf = vec![0u8; len];
        if s.blocks.contains_key(&b) {
            tokio::task::block_in_place(|| s.file.read_exact_at(&mut buf, start)).map_err(io)?;
            return Ok(buf);
        }
        self.next.pread(&mut buf, start, Flags::default()).await?;
        if keep {
            self.store_block(s, b, &buf, State::Clean).await?;
        }
        Ok(buf)
    }

    async fn store_block(&self, s: &mut Store, b: u64, data: &[u8], st: State) -> Result<()> {
        let (start, _) = self.span(b);
        tokio::task::block_in_place(|| s.file.write_all_at(data, start)).map_err(io)?;
        if s.blocks.insert(b, st).is_none() {
            s.order.push_back(b);
        }
        self.evict(s).await
    }

    /// Stay under cache-max-size: write back and drop the oldest blocks.
    async fn evict(&self, s: &mut Store) -> Result<()> {
        let Some(max) = self.max_blocks else {
            return Ok(());
        };
        while s.blocks.len() > max {
            let Some(b) = s.order.pop_front() else { break };
            if s.blocks.get(&b) == Some(&State::Dirty) {
                if let Err(e) = self.write_back(s, b).await {
                    // Still cached, and still dirty: keep it in line.
                    s.order.push_front(b);
                    return Err(e);
                }
            }
            s.blocks.remove(&b);
            let (start, len) = self.span(b);
            // Give the space back: the file stays sparse.
            // SAFETY: fallocate on our own descriptor.
            unsafe {
                libc::fallocate(
                    std::os::fd::AsRawFd::as_raw_fd(&s.file),
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    start as i64,
                    len as i64,
                )
            };
        }
        Ok(())
    }

    async fn write_back(&self, s: &mut Store, b: u64) -> Result<()> {
        let (start, len) = self.span(b);
        let mut buf = vec![0u8; len];
        tokio::task::block_in_place(|| s.file.read_exact_at(&mut buf, start)).map_err(io)?;
        self.next.pwrite(&buf, start, Flags::default()).await?;
        s.blocks.insert(b, State::Clean);
        Ok(())
    }

    /// Write back every dirty block in `[first, last]` (all, if None).
    async fn write_back_range(&self, s: &mut Store, range: Option<(u64, u64)>) -> Result<()> {
        let mut dirty: Vec<u64> = s
            .blocks
            .iter()
            .filter(|(b, st)| {
                **st == State::Dirty && range.is_none_or(|(f, l)| (f..=l).contains(*b))
            })
            .map(|(b, _)| *b)
            .collect();
        dirty.sort();
        for b in dirty {
            self.write_back(s, b).await?;
        }
        Ok(())
    }

    fn blocks_of(&self, offset: u64, len: u64) -> (u64, u64) {
        (offset / self.block, (offset + len.max(1) - 1) / self.block)
    }
}

impl FilterHandle for Cached {
    fn next(&self) -> &Guard {
        &self.next
    }
    fn never_blocks(&self) -> bool {
        false
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.next.caps().await?;
        // Flush and FUA write back, then ask the layer below to flush: only
        // where it can (or, in unsafe mode, where they are no-ops anyway).
        if self.mode == Mode::Unsafe || c.flush {
            c.flush = true;
            c.fua = Fua::Native;
        }
        c.cache = CacheCap::Native;
        c.multi_conn = true;
        Ok(c)
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let mut guard = self.store.lock().await;
        let s = &mut *guard;
        let keep = self.caching_reads();
        let (first, last) = self.blocks_of(offset, buf.len() as u64);
        for b in first..=last {
            let data = self.load(s, b, keep).await?;
            let bstart = b * self.block;
            let from = offset.max(bstart);
            let to = (offset + buf.len() as u64).min(bstart + data.len() as u64);
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - bstart) as usize..(to - bstart) as usize]);
        }
        Ok(())
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, f: Flags) -> Result<()> {
        let mut guard = self.store.lock().await;
        let s = &mut *guard;
        let (first, last) = self.blocks_of(offset, buf.len() as u64);
        if self.mode == Mode::WriteThrough {
            // Below first: the cache never holds what the plugin refused.
            self.next.pwrite(buf, offset, f).await?;
        }
        for b in first..=last {
            let mut data = self.load(s, b, false).await?;
            let bstart = b * self.block;
            let from = offset.max(bstart);
            let to = (offset + buf.len() as u64).min(bstart + data.len() as u64);
            data[(from - bstart) as usize..(to - bstart) as usize]
                .copy_from_slice(&buf[(from - offset) as usize..(to - offset) as usize]);
            let st = if self.mode == Mode::WriteThrough { State::Clean } else { State::Dirty };
            self.store_block(s, b, &data, st).await?;
        }
        match self.mode {
            Mode::WriteThrough => Ok(()),
            Mode::WriteBack if f.fua => {
                self.write_back_range(s, Some((first, last))).await?;
                if self.next.caps().await?.flush {
                    self.next.flush(Flags::default()).await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    async fn flush(&self, f: Flags) -> Result<()> {
        if self.mode == Mode::Unsafe {
            return Ok(());
        }
        let mut guard = self.store.lock().await;
        self.write_back_range(&mut guard, None).await?;
        if self.next.caps().await?.flush {
            self.next.flush(f).await?;
        }
        Ok(())
    }
    async fn trim(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        // Held until the layer below is done, so no read can cache the old
        // bytes meanwhile.
        let mut guard = self.store.lock().await;
        self.pass_range(&mut guard, offset, count).await?;
        self.next.trim(count, offset, f).await
    }
    async fn zero(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        let mut guard = self.store.lock().await;
        self.pass_range(&mut guard, offset, count).await?;
        self.next.zero(count, offset, f).await
    }
    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        {
            let mut guard = self.store.lock().await;
            let s = &mut *guard;
            let range = self.blocks_of(offset, count);
            self.write_back_range(s, Some(range)).await?;
        }
        // Only what was written back is known to be right below: report no
        // further than the request.
        let mut mine = Extents::new(offset, count);
        self.next.extents(count, offset, f, &mut mine).await?;
        for x in mine.list() {
            if !ext.add(x.offset, x.length, x.flags) {
                break;
            }
        }
        Ok(())
    }
    async fn cache(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        let mut guard = self.store.lock().await;
        let s = &mut *guard;
        let (first, last) = self.blocks_of(offset, count);
        for b in first..=last {
            self.load(s, b, true).await?;
        }
        Ok(())
    }
    async fn close(&self) {
        if self.mode == Mode::Unsafe {
            let mut guard = self.store.lock().await;
            let _ = self.write_back_range(&mut guard, None).await;
        }
        // Then the layers below close too.
        self.next.close().await;
    }
}

impl Cached {
    /// Before a trim or zero goes below: write back the dirty blocks it
    /// touches and forget the cached copies.
    async fn pass_range(&self, s: &mut Store, offset: u64, len: u64) -> Result<()> {
        let (first, last) = self.blocks_of(offset, len);
        self.write_back_range(s, Some((first, last))).await?;
        for b in first..=last {
            if s.blocks.remove(&b).is_some() {
                s.order.retain(|x| *x != b);
            }
        }
        Ok(())
    }
}
