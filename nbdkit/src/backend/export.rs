//! The guard at the top of the chain.
//!
//! Requests arrive here already validated by `protocol::request` (range,
//! flags, read-only). The guard turns what the client asked for into what the
//! handle can do: it emulates FUA with a flush, WRITE_ZEROES with writes and
//! CACHE with reads, and reports "all data" when the handle has no extents.

use std::sync::Arc;

use super::{Cache, Caps, Errno, Error, Extents, Flags, Fua, Handle, Result, Zero};

/// Zeroes for emulated WRITE_ZEROES (in .bss: costs nothing until used).
static ZEROES: [u8; 1 << 20] = [0; 1 << 20];

/// Largest chunk read at a time when emulating CACHE: C's, the largest
/// read a client may send (64 MiB), so a plugin or filter below sees the
/// same reads from us as from C nbdkit.
const CACHE_CHUNK: usize = 64 << 20;

/// How many emulated CACHE reads may hold a buffer at once, server-wide:
/// bounds the memory clients can make us use this way (4 x 64 MiB).
static CACHE_SINKS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// One connection's open export.
pub struct Export {
    handle: Arc<dyn Handle>,
    caps: Caps,
    size: u64,
    block_size: Option<super::BlockSize>,
    /// The layer's name for `-v` traces ("" for none).
    name: &'static str,
}

impl Export {
    /// Wrap a freshly opened handle. With `readonly`, every write capability
    /// is dropped whatever the handle says.
    pub async fn new(handle: Arc<dyn Handle>, readonly: bool) -> Result<Export> {
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
        Ok(Export {
            handle,
            caps,
            size,
            block_size,
            name: "",
        })
    }

    /// Name the layer this guard stands above, for the `-v` trace of each
    /// call (`memory: pread count=512 offset=0`, as C prints it).
    pub fn named(mut self, name: &'static str) -> Export {
        self.name = name;
        self
    }

    /// One line of the `-v` trace, formatted only when it is printed.
    fn trace(&self, what: impl FnOnce() -> String) {
        if !self.name.is_empty() && crate::log::verbose() {
            crate::log::debug(&format!("{}: {}", self.name, what()));
        }
    }

    /// Effective capabilities.
    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Block size constraints.
    pub fn block_size(&self) -> Option<super::BlockSize> {
        self.block_size
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
            (true, _) => (
                Flags {
                    fua: false,
                    ..flags
                },
                true,
            ),
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
    pub async fn flush(&self) -> Result<()> {
        self.trace(|| "flush".into());
        self.handle.flush(Flags::default()).await
    }

    /// TRIM.
    pub async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
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
    pub async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
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
        let wflags = Flags {
            fua: false,
            ..Flags::default()
        };
        let mut done = 0u64;
        while done < u64::from(count) {
            let n = (u64::from(count) - done).min(ZEROES.len() as u64) as usize;
            self.handle
                .pwrite(&ZEROES[..n], offset + done, wflags)
                .await?;
            done += n as u64;
        }
        self.flush_after(flush).await
    }

    /// BLOCK_STATUS for `base:allocation`.
    pub async fn extents(&self, count: u32, offset: u64, req_one: bool) -> Result<Extents> {
        self.trace(|| {
            format!(
                "extents count={count} offset={offset} req_one={}",
                u8::from(req_one)
            )
        });
        // The last extent may reach past the request, up to the end of the
        // export, as in C nbdkit.
        let mut ext = Extents::with_limit(offset, u64::from(count), self.size);
        if self.caps.extents {
            let flags = Flags {
                req_one,
                ..Flags::default()
            };
            self.handle.extents(count, offset, flags, &mut ext).await?;
            ext.check()?;
        } else {
            ext.add(offset, u64::from(count), 0);
        }
        Ok(ext)
    }

    /// BLOCK_STATUS into a layer above's extents, which may reach past the
    /// request (cacheextents keeps all it is told).
    pub async fn extents_into(
        &self,
        count: u32,
        offset: u64,
        req_one: bool,
        ext: &mut Extents,
    ) -> Result<()> {
        self.trace(|| {
            format!(
                "extents count={count} offset={offset} req_one={}",
                u8::from(req_one)
            )
        });
        if self.caps.extents {
            let flags = Flags {
                req_one,
                ..Flags::default()
            };
            self.handle.extents(count, offset, flags, ext).await
        } else {
            ext.add(offset, u64::from(count), 0);
            Ok(())
        }
    }

    /// CACHE, emulated with reads when the handle has no cache of its own.
    pub async fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.trace(|| format!("cache count={count} offset={offset}"));
        match self.caps.cache {
            Cache::Native => self.handle.cache(count, offset, Flags::default()).await,
            _ => {
                let _sink = CACHE_SINKS
                    .acquire()
                    .await
                    .map_err(|_| Error::new(Errno::Shutdown, "shutting down"))?;
                let mut buf = vec![0u8; (count as usize).min(CACHE_CHUNK)];
                let mut done = 0u64;
                while done < u64::from(count) {
                    let n = (u64::from(count) - done).min(buf.len() as u64) as usize;
                    self.handle
                        .pread(&mut buf[..n], offset + done, Flags::default())
                        .await?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }
}
