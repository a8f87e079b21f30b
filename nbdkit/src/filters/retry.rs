//! `retry`: when a request fails, reopen the plugin and try again.
//!
//! - `retries=N` (default 5): tries per request after the first.
//! - `retry-delay=SECS` (default 2; `NNms` too): the first wait.
//! - `retry-exponential=yes|no` (default yes): double the wait each time.
//! - `retry-readonly=yes|no` (default no): reopen read-only after a
//!   failure, for the rest of the connection.
//!
//! The waits are timers, holding up nothing else. The connection's handle
//! is replaced by the reopened one for every later request.
//!
//! Example: `nbdkit --filter=retry nbd socket=/tmp/flaky.sock retries=10`

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::{parse_duration, FilterInfo};
use crate::backend::{
    Caps, Client, Error, Extents, Filter, FilterHandle, Flags, Handle, Plugin, Result,
};
use crate::error::StartError;
use crate::params::Params;

pub static INFO: FilterInfo = FilterInfo {
    name: "retry",
    description: "reopen the plugin and retry on errors",
    config_help: "retries=<N>                   Number of retries (default 5).\n\
                  retry-delay=<N>               Seconds to wait before retry (default 2).\n\
                  retry-exponential=yes|no      Exponential back-off (default yes).\n\
                  retry-readonly=yes|no         Force read-only on failure (default no).",
    build,
};

#[derive(Clone, Copy)]
struct Policy {
    retries: u32,
    delay: Duration,
    exponential: bool,
    readonly: bool,
}

struct Retry(Policy);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let retries = match p.take("retries") {
        None => 5,
        Some(v) => v
            .parse()
            .map_err(|_| StartError(format!("retry: retries={v}: not a number")))?,
    };
    let delay = match p.take("retry-delay") {
        None => Duration::from_secs(2),
        Some(v) => parse_duration(&v).ok_or_else(|| {
            StartError(format!("retry: retry-delay={v}: expected seconds or NNms"))
        })?,
    };
    let exponential = p.take_bool("retry-exponential")?.unwrap_or(true);
    let readonly = p.take_bool("retry-readonly")?.unwrap_or(false);
    Ok(Arc::new(Retry(Policy {
        retries,
        delay,
        exponential,
        readonly,
    })))
}

#[async_trait]
impl Filter for Retry {
    async fn open_shared(
        &self,
        next: &Arc<dyn Plugin>,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        let h = next.open_for(readonly, export, client).await?;
        Ok(Arc::new(Retrying {
            current: Mutex::new(h),
            plugin: next.clone(),
            export: export.to_string(),
            client: client.clone(),
            readonly: Mutex::new(readonly),
            p: self.0,
        }))
    }
}

struct Retrying {
    current: Mutex<Arc<dyn Handle>>,
    plugin: Arc<dyn Plugin>,
    export: String,
    client: Client,
    readonly: Mutex<bool>,
    p: Policy,
}

impl Retrying {
    fn handle(&self) -> Arc<dyn Handle> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// After a failure: wait, reopen (read-only if asked), swap in.
    async fn reopen(&self, attempt: u32) -> Result<()> {
        let mut d = self.p.delay;
        if self.p.exponential {
            d = d.saturating_mul(1 << attempt.min(20));
        }
        tokio::time::sleep(d).await;
        let ro = {
            let mut r = self.readonly.lock().unwrap_or_else(|e| e.into_inner());
            *r |= self.p.readonly;
            *r
        };
        let h = self.plugin.open_for(ro, &self.export, &self.client).await?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = h;
        Ok(())
    }

    /// After a failed try: give up with `err` if the tries are used up,
    /// else reopen (a failed reopen counts as a failed try).
    async fn failed(&self, what: &str, err: Error, attempt: &mut u32) -> Result<()> {
        if *attempt >= self.p.retries {
            return Err(err);
        }
        crate::log::debug(&format!(
            "retry: {what} failed ({err}); reopening, try {}",
            *attempt + 1
        ));
        let _ = self.reopen(*attempt).await;
        *attempt += 1;
        Ok(())
    }
}

/// Run `$call` on the current handle `$h` until it works or the tries run
/// out.
macro_rules! retrying {
    ($self:ident, $what:expr, $h:ident => $call:expr) => {{
        let mut attempt = 0;
        loop {
            let $h = $self.handle();
            match $call.await {
                Ok(v) => break Ok(v),
                Err(e) => $self.failed($what, e, &mut attempt).await?,
            }
        }
    }};
}

/// [`FilterHandle::next`] wants a reference that lives as long as the
/// handle; the current handle can change, so the pass-through methods are
/// all written out below and `next` is only a fallback.
#[async_trait]
impl FilterHandle for Retrying {
    fn next(&self) -> &Arc<dyn Handle> {
        unreachable!("every method of the retry handle is written out")
    }
    async fn size(&self) -> Result<u64> {
        self.handle().size().await
    }
    async fn caps(&self) -> Result<Caps> {
        self.handle().caps().await
    }
    async fn block_size(&self) -> Result<Option<crate::backend::BlockSize>> {
        self.handle().block_size().await
    }
    fn description(&self) -> Option<String> {
        self.handle().description()
    }
    fn never_blocks(&self) -> bool {
        self.handle().never_blocks()
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "pread", h => h.pread(buf, offset, flags))
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "pwrite", h => h.pwrite(buf, offset, flags))
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        retrying!(self, "flush", h => h.flush(flags))
    }
    async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "trim", h => h.trim(count, offset, flags))
    }
    async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "zero", h => h.zero(count, offset, flags))
    }
    async fn extents(
        &self,
        count: u32,
        offset: u64,
        flags: Flags,
        ext: &mut Extents,
    ) -> Result<()> {
        let got: Result<Extents> = retrying!(self, "extents", h => async {
            let mut e = Extents::new(offset, u64::from(count));
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
    async fn cache(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        retrying!(self, "cache", h => h.cache(count, offset, flags))
    }
    async fn close(&self) {
        self.handle().close().await
    }
}
