//! `retry`: when a request fails, reopen the plugin and try again.
//!
//! - `retries=N` (default 5): tries per request after the first.
//! - `retry-delay=SECS` (default 2; `NNms` too): the first wait.
//! - `retry-exponential=yes|no` (default yes): double the wait each time.
//! - `retry-readonly=yes|no` (default no): reopen read-only after a
//!   failure; from then on, writes, trims and zeroes on the connection fail
//!   at once with EROFS, without retrying.
//!
//! Before each try the request is checked against the current handle (its
//! size, which may have changed on reopen; whether it can write, trim,
//! zero, FUA, flush, give extents or cache), and a failed check is retried
//! like a failed call. A reopen that fails counts as a failed try (its
//! error is ESHUTDOWN), and leaves the connection without a handle: the
//! next request begins by reopening. Requests on a connection run one at
//! a time (thread model `serialize_requests`), as in C nbdkit, so a reopen
//! never pulls the handle from under another request. The waits are
//! timers, holding up nothing else.
//!
//! Example: `nbdkit --filter=retry nbd socket=/tmp/flaky.sock retries=10`

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{parse_duration, FilterInfo};
use crate::backend::{
    Cache, Caps, Client, Errno, Error, Extents, Filter, Flags, Fua, Guard, Handle, Next, OpenArgs,
    Result, ThreadModel, Zero,
};
use crate::error::StartError;
use crate::params::Params;

/// The `retry` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "retry",
    description: "reopen the plugin and retry on errors",
    config_help: "retries=<N>                   Number of retries (default 5).\n\
                  retry-delay=<N>               Seconds to wait before retry (default 2).\n\
                  retry-exponential=yes|no      Exponential back-off (default yes).\n\
                  retry-readonly=yes|no         Force read-only on failure (default no).",
    build,
};

#[derive(Clone)]
struct Policy {
    retries: u32,
    delay: Duration,
    exponential: bool,
    readonly: bool,
    log: crate::log::Log,
}

struct Retry(Policy);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let retries = match p.take("retries") {
        None => 5,
        Some(v) => {
            v.parse().map_err(|_| StartError(format!("retry: retries={v}: not a number")))?
        }
    };
    let delay = match p.take("retry-delay") {
        None => Duration::from_secs(2),
        Some(v) => match parse_duration(&v) {
            None => {
                return Err(StartError(format!("retry: retry-delay={v}: expected seconds or NNms")))
            }
            Some(d) if d.is_zero() => {
                return Err(StartError("retry: retry-delay cannot be 0".to_string()))
            }
            Some(d) => d,
        },
    };
    let exponential = p.take_bool("retry-exponential")?.unwrap_or(true);
    let readonly = p.take_bool("retry-readonly")?.unwrap_or(false);
    Ok(Arc::new(Retry(Policy { retries, delay, exponential, readonly, log: p.log() })))
}

#[async_trait]
impl Filter for Retry {
    fn thread_model(&self) -> ThreadModel {
        ThreadModel::SerializeRequests
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { readonly, export, client, .. } = *args;
        let h = next.open(args).await?;
        Ok(Arc::new(Retrying {
            current: Mutex::new(Some(h)),
            plugin: next.clone(),
            export: export.to_string(),
            client: client.clone(),
            readonly,
            reopens: AtomicU32::new(0),
            p: self.0.clone(),
        }))
    }
}

struct Retrying {
    /// The layer below; `None` after a reopen failed.
    current: Mutex<Option<Arc<Guard>>>,
    plugin: Next,
    export: String,
    client: Client,
    /// How the client opened the connection.
    readonly: bool,
    reopens: AtomicU32,
    p: Policy,
}

/// One request's progress through its tries.
struct Tries {
    done: u32,
    delay: Duration,
}

fn closed() -> Error {
    Error::new(Errno::Shutdown, "retry: the plugin could not be reopened")
}

impl Retrying {
    fn handle(&self) -> Result<Arc<Guard>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone().ok_or_else(closed)
    }

    fn tries(&self) -> Tries {
        Tries { done: 0, delay: self.p.delay }
    }

    /// After reopening read-only, a write fails at once.
    fn refuse_writes(&self) -> Result<()> {
        if self.p.readonly && self.reopens.load(Ordering::Relaxed) > 0 {
            return Err(Error::new(Errno::Perm, "retry: the connection was reopened read-only"));
        }
        Ok(())
    }

    /// After a failed try: give up with the error if the tries are used
    /// up; else wait, drop the old handle and open a new one (a failed
    /// open is itself a failed try, with ESHUTDOWN).
    async fn failed(&self, what: &str, mut err: Error, t: &mut Tries) -> Result<()> {
        loop {
            if t.done >= self.p.retries {
                self.p
                    .log
                    .debug(&format!("retry: could not recover after {} retries", self.p.retries));
                return Err(err);
            }
            self.p.log.debug(&format!("retry: {what} failed: {err}"));
            self.p.log.debug(&format!(
                "retry: retry {}: waiting {:?} before retrying",
                t.done + 1,
                t.delay
            ));
            tokio::time::sleep(t.delay).await;
            t.done += 1;
            if self.p.exponential {
                t.delay = t.delay.saturating_mul(2);
            }
            self.reopens.fetch_add(1, Ordering::Relaxed);
            // The old handle is closed, and goes, before the new one is
            // opened, as C closes the old context.
            let old = self.current.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(old) = old {
                old.close().await;
            }
            let ro = self.readonly || self.p.readonly;
            let args = OpenArgs::new(ro, &self.export, &self.client);
            match self.plugin.open(&args).await {
                Ok(h) => {
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(h);
                    return Ok(());
                }
                Err(e) => {
                    self.p.log.debug(&format!("retry: reopen failed: {e}"));
                    err = closed();
                }
            }
        }
    }
}

/// The request `[offset, offset + count)` must fit the current handle's
/// size, which a reopen may have changed.
async fn in_range(h: &Guard, count: u64, offset: u64, write: bool) -> Result<()> {
    if offset.saturating_add(count) > h.size().await? {
        return Err(if write {
            Error::new(Errno::NoSpc, "retry: request beyond the end after reopening")
        } else {
            Error::new(Errno::Io, "retry: request beyond the end after reopening")
        });
    }
    Ok(())
}

fn need(ok: bool, errno: Errno, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::new(errno, format!("retry: the reopened plugin cannot {what}")))
    }
}

/// Check FUA is possible when asked for.
fn fua_ok(c: &Caps, flags: Flags) -> Result<()> {
    need(!flags.fua || c.fua != Fua::None, Errno::Io, "do FUA")
}

/// Run `$body` (with `$h` the current handle) until it works or the tries
/// run out; with `writes`, a connection reopened read-only fails at once.
macro_rules! retrying {
    ($self:ident, $what:expr, writes = $w:expr, $h:ident => $body:expr) => {{
        let mut t = $self.tries();
        loop {
            if $w {
                $self.refuse_writes()?;
            }
            let r = async {
                let $h = $self.handle()?;
                $body
            }
            .await;
            match r {
                Ok(v) => break Ok(v),
                Err(e) => $self.failed($what, e, &mut t).await?,
            }
        }
    }};
}

/// The layer below can change under a request (a reopen), so the retry
/// handle is a [`Handle`] of its own rather than a [`FilterHandle`] with
/// one `next()`: every method is written out.
#[async_trait]
impl Handle for Retrying {
    fn takes_fua_flag(&self) -> bool {
        true
    }
    async fn size(&self) -> Result<u64> {
        self.handle()?.size().await
    }
    async fn caps(&self) -> Result<Caps> {
        self.handle()?.caps().await
    }
    async fn block_size(&self) -> Result<Option<crate::backend::BlockSize>> {
        self.handle()?.block_size().await
    }
    fn description(&self) -> Option<String> {
        self.handle().ok()?.description()
    }
    fn never_blocks(&self) -> bool {
        self.handle().map(|h| h.never_blocks()).unwrap_or(false)
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        let count = buf.len() as u64;
        retrying!(self, "pread", writes = false, h => {
            in_range(&h, count, offset, false).await?;
            h.pread(&mut *buf, offset, flags).await
        })
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        let count = buf.len() as u64;
        retrying!(self, "pwrite", writes = true, h => {
            in_range(&h, count, offset, true).await?;
            let c = h.caps().await?;
            need(c.write, Errno::Perm, "write")?;
            fua_ok(&c, flags)?;
            h.pwrite(buf, offset, flags).await
        })
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        retrying!(self, "flush", writes = false, h => {
            need(h.caps().await?.flush, Errno::Io, "flush")?;
            h.flush(flags).await
        })
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "trim", writes = true, h => {
            in_range(&h, count, offset, true).await?;
            let c = h.caps().await?;
            need(c.trim, Errno::Perm, "trim")?;
            fua_ok(&c, flags)?;
            h.trim(count, offset, flags).await
        })
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let mut t = self.tries();
        loop {
            self.refuse_writes()?;
            // A fast zero that cannot be fast is no failure to retry.
            if flags.fast_zero {
                let fast = match self.handle() {
                    Ok(h) => h.caps().await?.fast_zero,
                    Err(_) => false,
                };
                need(fast, Errno::NotSup, "zero fast")?;
            }
            let r = async {
                let h = self.handle()?;
                in_range(&h, count, offset, true).await?;
                let c = h.caps().await?;
                need(c.zero != Zero::None, Errno::Perm, "zero")?;
                fua_ok(&c, flags)?;
                h.zero(count, offset, flags).await
            }
            .await;
            match r {
                Ok(()) => return Ok(()),
                Err(e) => self.failed("zero", e, &mut t).await?,
            }
        }
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        // Each try starts from an empty list.
        let got: Result<Extents> = retrying!(self, "extents", writes = false, h => {
            in_range(&h, count, offset, false).await?;
            need(h.caps().await?.extents, Errno::Io, "give extents")?;
            let mut e = Extents::with_limit(offset, count, ext.limit());
            h.extents(count, offset, flags, &mut e).await?;
            Ok::<Extents, Error>(e)
        });
        for x in got?.list() {
            if !ext.add(x.offset, x.length, x.flags) {
                break;
            }
        }
        Ok(())
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "cache", writes = false, h => {
            in_range(&h, count, offset, false).await?;
            need(h.caps().await?.cache != Cache::None, Errno::Io, "cache")?;
            h.cache(count, offset, flags).await
        })
    }
    async fn close(&self) {
        if let Ok(h) = self.handle() {
            h.close().await
        }
    }
}

impl Drop for Retrying {
    fn drop(&mut self) {
        self.p
            .log
            .debug(&format!("retry: reopens needed: {}", self.reopens.load(Ordering::Relaxed)));
    }
}
