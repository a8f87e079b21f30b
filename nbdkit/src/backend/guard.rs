//! The guard: one above every layer (the plugin and each filter).
//!
//! Requests arrive at the top guard already validated by `protocol::request`
//! (range, flags, read-only). A guard turns what the layer above asked for
//! into what the layer below can do: it emulates FUA with a flush (over the
//! plugin only: a filter gets the flag), WRITE_ZEROES with writes and CACHE
//! with reads, reports "all data" when the layer has no extents, and refuses
//! writes to a read-only export.
//!
//! A filter's handle sees the guard below it as its `next()`: the guard's
//! methods are the [`Handle`] calls, called directly (no boxing), so a
//! request costs one boxed future per layer, at the call into the layer.

use std::sync::Arc;

use async_trait::async_trait;

use super::{
    BlockSize, Cache, Caps, Errno, Error, ExtentFlags, Extents, Flags, Fua, Handle, Op, Result,
    Zero, ZeroCopySource,
};

/// Zeroes for emulated WRITE_ZEROES (in .bss: costs nothing until used).
static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

/// Largest chunk read at a time when emulating CACHE: C's, the largest
/// read a client may send (64 MiB), so a plugin or filter below sees the
/// same reads from us as from C nbdkit. The server charges a client's
/// CACHE up to this much of its data budget, which bounds the memory.
pub(crate) const CACHE_CHUNK: usize = 64 << 20;

/// The most an emulated CACHE reads: C's largest (a 32-bit count).
pub(crate) const CACHE_EMULATE_MAX: u64 = u32::MAX as u64;

/// One connection's open export.
pub struct Guard {
    handle: Arc<dyn Handle>,
    caps: Caps,
    size: u64,
    block_size: Option<BlockSize>,
    /// The layer's name for `-v` traces ("" for none), and the log.
    name: &'static str,
    log: crate::log::Log,
}

impl Guard {
    /// Wrap a freshly opened handle. With `readonly`, every write capability
    /// is dropped whatever the handle says.
    pub async fn new(handle: Arc<dyn Handle>, readonly: bool) -> Result<Guard> {
        let size = handle.size().await?;
        let mut caps = handle.caps().await?;
        if readonly || !caps.write {
            caps.write = false;
            caps.trim = false;
            caps.zero = Zero::None;
            caps.fast_zero = false;
            caps.fua = Fua::None;
        }
        if caps.zero == Zero::None {
            caps.fast_zero = false;
        }
        if !caps.flush && caps.fua == Fua::Emulate {
            caps.fua = Fua::None;
        }
        let block_size = handle.block_size().await?;
        Ok(Guard { handle, caps, size, block_size, name: "", log: Default::default() })
    }

    /// Name the layer this guard stands above, for the `-v` trace of each
    /// call (`memory: pread count=512 offset=0`, as C prints it).
    pub fn named(mut self, name: &'static str, log: &crate::log::Log) -> Guard {
        self.name = name;
        self.log = log.clone();
        self
    }

    /// One line of the `-v` trace, formatted only when it is printed.
    fn trace(&self, what: impl FnOnce() -> String) {
        if !self.name.is_empty() && self.log.verbose() {
            self.log.debug(&format!("{}: {}", self.name, what()));
        }
    }

    /// Effective capabilities: what the server advertises to the client.
    pub fn effective_caps(&self) -> &Caps {
        &self.caps
    }

    /// Size in bytes, as fetched at open.
    pub fn export_size(&self) -> u64 {
        self.size
    }

    /// Block size constraints, as fetched at open.
    pub fn export_block_size(&self) -> Option<BlockSize> {
        self.block_size
    }

    /// Size in bytes (the [`Handle`] call).
    pub async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    /// What the layer above sees of the layer below: whatever the guard
    /// emulates looks native, except FUA and cache, which show as emulated
    /// (so a filter above still gets the FUA flag, as in C), and extents,
    /// which say whether the layer below really has them (an emulated
    /// extents call still answers "all data").
    pub async fn caps(&self) -> Result<Caps> {
        let c = self.caps;
        Ok(Caps { zero: if c.zero == Zero::None { Zero::None } else { Zero::Native }, ..c })
    }

    /// Block size constraints (the [`Handle`] call).
    pub async fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(self.block_size)
    }

    /// Description for NBD_INFO_DESCRIPTION.
    pub fn description(&self) -> Option<String> {
        self.handle.description()
    }

    /// The client said goodbye: see [`Handle::close`].
    pub async fn close(&self) {
        self.handle.close().await
    }

    /// See [`Handle::never_blocks`].
    pub fn never_blocks(&self) -> bool {
        self.handle.never_blocks()
    }

    /// Writes to a read-only export fail here, whatever the layer above
    /// thought (a filter may reopen read-only: retry-readonly).
    fn writable(&self) -> Result<()> {
        if self.caps.write {
            Ok(())
        } else {
            Err(Error::new(Errno::Perm, "the export is read-only"))
        }
    }

    /// Split `flags.fua` into what to pass down and whether to flush after.
    /// Emulated FUA is passed down to a handle that takes the flag anyway
    /// (a filter): only the guard over the plugin flushes.
    fn fua(&self, flags: Flags) -> (Flags, bool) {
        match (flags.fua, self.caps.fua) {
            (true, Fua::Native) => (flags, false),
            (true, Fua::Emulate) if self.handle.takes_fua_flag() => (flags, false),
            (true, _) => (Flags { fua: false, ..flags }, true),
            (false, _) => (flags, false),
        }
    }

    async fn flush_after(&self, needed: bool) -> Result<()> {
        if needed {
            self.handle.flush(Flags::default()).await?;
        }
        Ok(())
    }

    /// READ.
    pub async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.trace(|| format!("pread count={} offset={offset}", buf.len()));
        self.handle.pread(buf, offset, flags).await
    }

    /// READ, where the layer below may answer parts as holes (see
    /// [`Handle::pread_sparse`]). What it reports is checked: holes out of
    /// order or outside `buf` are an error, not a wrong reply.
    pub async fn pread_sparse(
        &self, buf: &mut [u8], offset: u64, flags: Flags, holes: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        self.trace(|| format!("pread count={} offset={offset}", buf.len()));
        holes.clear();
        self.handle.pread_sparse(buf, offset, flags, holes).await?;
        let mut at = 0u64;
        for &(start, len) in holes.iter() {
            if start < at || len == 0 || start + len > buf.len() as u64 {
                return Err(Error::new(
                    Errno::Io,
                    "the plugin reported read holes out of order or out of range",
                ));
            }
            at = start + len;
        }
        Ok(())
    }

    /// READ straight from a file's page cache, where the layer below says
    /// it can be (see [`Handle::zero_copy_source`]).
    pub fn zero_copy_source(&self, offset: u64, len: u64) -> Option<ZeroCopySource> {
        let src = self.handle.zero_copy_source(offset, len)?;
        self.trace(|| format!("pread count={len} offset={offset} (sent from the page cache)"));
        Some(src)
    }

    /// WRITE.
    pub async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.trace(|| {
            let fua = u8::from(flags.fua);
            format!("pwrite count={} offset={offset} fua={fua}", buf.len())
        });
        self.writable()?;
        let (flags, flush) = self.fua(flags);
        self.handle.pwrite(buf, offset, flags).await?;
        self.flush_after(flush).await
    }

    /// FLUSH.
    pub async fn flush(&self, _flags: Flags) -> Result<()> {
        self.trace(|| "flush".into());
        self.handle.flush(Flags::default()).await
    }

    /// TRIM.
    pub async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.trace(|| {
            let fua = u8::from(flags.fua);
            format!("trim count={count} offset={offset} fua={fua}")
        });
        self.writable()?;
        let (flags, flush) = self.fua(flags);
        self.handle.trim(count, offset, flags).await?;
        self.flush_after(flush).await
    }

    /// WRITE_ZEROES, emulated with writes when the handle cannot zero.
    pub async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.trace(|| {
            format!(
                "zero count={count} offset={offset} may_trim={} fua={} fast={}",
                u8::from(flags.may_trim),
                u8::from(flags.fua),
                u8::from(flags.fast_zero)
            )
        });
        self.writable()?;
        let (flags, flush) = self.fua(flags);
        if self.caps.zero == Zero::Native {
            match self.handle.zero(count, offset, flags).await {
                Err(e) if e.errno == Errno::NotSup && !flags.fast_zero => {}
                other => {
                    other?;
                    return self.flush_after(flush).await;
                }
            }
        }
        if flags.fast_zero {
            return Err(Error::new(Errno::NotSup, "fast zero is not possible"));
        }
        let wflags = Flags { fua: false, ..Flags::default() };
        let mut done = 0u64;
        while done < count {
            let n = (count - done).min(ZEROES.len() as u64) as usize;
            self.handle.pwrite(&ZEROES[..n], offset + done, wflags).await?;
            done += n as u64;
        }
        self.flush_after(flush).await
    }

    /// BLOCK_STATUS for `base:allocation`.
    pub async fn block_status(&self, count: u64, offset: u64, req_one: bool) -> Result<Extents> {
        self.trace(|| {
            format!("extents count={count} offset={offset} req_one={}", u8::from(req_one))
        });
        // The last extent may reach past the request, up to the end of the
        // export, as in C nbdkit.
        let mut ext = Extents::with_limit(offset, count, self.size);
        if self.caps.extents {
            let flags = Flags { req_one, ..Flags::default() };
            self.handle.extents(count, offset, flags, &mut ext).await?;
            ext.check()?;
        } else {
            ext.add(offset, count, ExtentFlags::DATA);
        }
        Ok(ext)
    }

    /// Extents into a layer above's collector, which may reach past the
    /// request (cacheextents keeps all it is told).
    pub async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        self.trace(|| {
            format!("extents count={count} offset={offset} req_one={}", u8::from(flags.req_one))
        });
        if self.caps.extents {
            let flags = Flags { req_one: flags.req_one, ..Flags::default() };
            self.handle.extents(count, offset, flags, ext).await
        } else {
            ext.add(offset, count, ExtentFlags::DATA);
            Ok(())
        }
    }

    /// CACHE, emulated with reads when the handle has no cache of its own.
    /// An emulated CACHE reads at most `CACHE_EMULATE_MAX` (4 GiB): it is only
    /// advice, and with extended headers one request could otherwise ask
    /// for a read of exabytes.
    pub async fn cache(&self, count: u64, offset: u64, _flags: Flags) -> Result<()> {
        self.trace(|| format!("cache count={count} offset={offset}"));
        match self.caps.cache {
            Cache::Native => self.handle.cache(count, offset, Flags::default()).await,
            _ => {
                let count = count.min(CACHE_EMULATE_MAX);
                let mut buf = vec![0u8; (count as usize).min(CACHE_CHUNK)];
                let mut done = 0u64;
                while done < count {
                    let n = (count - done).min(buf.len() as u64) as usize;
                    self.handle.pread(&mut buf[..n], offset + done, Flags::default()).await?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }

    /// One request, whatever it is: what a filter passes down when it
    /// treats every request alike.
    pub async fn op(&self, op: Op<'_>) -> Result<()> {
        super::dispatch_op!(self, op)
    }
}

/// A guard is itself a handle: what a filter that changes nothing hands to
/// the layer above.
#[async_trait]
impl Handle for Guard {
    async fn size(&self) -> Result<u64> {
        Guard::size(self).await
    }
    async fn caps(&self) -> Result<Caps> {
        Guard::caps(self).await
    }
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        Guard::block_size(self).await
    }
    fn description(&self) -> Option<String> {
        Guard::description(self)
    }
    fn never_blocks(&self) -> bool {
        Guard::never_blocks(self)
    }
    fn takes_fua_flag(&self) -> bool {
        true
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        Guard::pread(self, buf, offset, flags).await
    }
    async fn pread_sparse(
        &self, buf: &mut [u8], offset: u64, flags: Flags, holes: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        Guard::pread_sparse(self, buf, offset, flags, holes).await
    }
    fn zero_copy_source(&self, offset: u64, len: u64) -> Option<ZeroCopySource> {
        Guard::zero_copy_source(self, offset, len)
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        Guard::pwrite(self, buf, offset, flags).await
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        Guard::flush(self, flags).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        Guard::trim(self, count, offset, flags).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        Guard::zero(self, count, offset, flags).await
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        Guard::extents(self, count, offset, flags, ext).await
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        Guard::cache(self, count, offset, flags).await
    }
    async fn close(&self) {
        Guard::close(self).await
    }
}
