//! `delay`: slow requests down, to test how a client copes with a slow or
//! far-away server.
//!
//! Each takes seconds (`2`, `0.5`) or milliseconds (`250ms`):
//! - `rdelay`/`delay-read`: reads.
//! - `delay-write`, `delay-zero`, `delay-trim`, `delay-extents`,
//!   `delay-cache`: those requests; `wdelay` sets write, zero and trim.
//! - `delay-open`: a client's connection (before the handshake ends);
//!   `delay-close`: a client's graceful disconnect.
//! - `delay-fast-zero=false`: a fast zero fails at once (ENOTSUP) instead of
//!   waiting (default true: it waits like any zero).
//!
//! A delay waits on a timer: it never holds up other requests or other
//! clients. As in C, a waiting request (or open) gives up with ESHUTDOWN
//! as soon as its client disconnects or the server begins to shut down;
//! `delay-close` always waits its time out.
//!
//! Example: `nbdkit -U - --filter=delay memory 1G delay-read=500ms`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{parse_duration, FilterInfo};
use crate::backend::{
    shutdown, Caps, Errno, Error, Filter, FilterHandle, Guard, Handle, Next, Op, OpKind, OpenArgs,
    Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `delay` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "delay",
    description: "inject delays for testing clients",
    config_help: "rdelay=<NN>|<NN>ms             Read delay in seconds/milliseconds.\n\
                  delay-read=<NN>|<NN>ms         Read delay in seconds/milliseconds.\n\
                  delay-write=<NN>|<NN>ms        Write delay in seconds/milliseconds.\n\
                  delay-zero=<NN>|<NN>ms         Zero delay in seconds/milliseconds.\n\
                  delay-trim=<NN>|<NN>ms         Trim delay in seconds/milliseconds.\n\
                  delay-extents=<NN>|<NN>ms      Extents delay in seconds/milliseconds.\n\
                  delay-cache=<NN>|<NN>ms        Cache delay in seconds/milliseconds.\n\
                  wdelay=<NN>|<NN>ms             Write, zero and trim delay in secs/msecs.\n\
                  delay-fast-zero=<BOOL>         Delay fast zero requests (default true).\n\
                  delay-open=<NN>|<NN>ms         Open delay in seconds/milliseconds.\n\
                  delay-close=<NN>|<NN>ms        Close delay in seconds/milliseconds.",
    build,
};

#[derive(Clone, Copy, Default)]
struct Delays {
    read: Duration,
    write: Duration,
    zero: Duration,
    trim: Duration,
    extents: Duration,
    cache: Duration,
    open: Duration,
    close: Duration,
    fast_zero: bool,
}

struct DelayFilter(Delays);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mut take = |key: &str| -> Result<Option<Duration>, StartError> {
        match p.take(key) {
            None => Ok(None),
            Some(v) => parse_duration(&v)
                .map(Some)
                .ok_or_else(|| StartError(format!("delay: {key}={v}: expected seconds or NNms"))),
        }
    };
    let read = take("delay-read")?.or(take("rdelay")?);
    let wdelay = take("wdelay")?;
    let mut d = Delays {
        read: read.unwrap_or_default(),
        write: take("delay-write")?.or(wdelay).unwrap_or_default(),
        zero: take("delay-zero")?.or(wdelay).unwrap_or_default(),
        trim: take("delay-trim")?.or(wdelay).unwrap_or_default(),
        extents: take("delay-extents")?.unwrap_or_default(),
        cache: take("delay-cache")?.unwrap_or_default(),
        open: take("delay-open")?.unwrap_or_default(),
        close: take("delay-close")?.unwrap_or_default(),
        fast_zero: true,
    };
    d.fast_zero = p.take_bool("delay-fast-zero")?.unwrap_or(true);
    Ok(Arc::new(DelayFilter(d)))
}

/// A plain wait (for `delay-close`, which nothing interrupts).
async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// A request's (or an open's) wait: it ends early, failing with
/// ESHUTDOWN, when the server stops or the client goes away.
async fn delay(d: Duration) -> Result<()> {
    if d.is_zero() {
        return Ok(());
    }
    shutdown::sleep(d).await
}

#[async_trait]
impl Filter for DelayFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        if let Err(e) = delay(self.0.open).await {
            return Err(Error::new(e.errno, format!("delay: {}", e.msg)));
        }
        let next = next.open(args).await?;
        Ok(Arc::new(DelayHandle { next, d: self.0 }))
    }
}

struct DelayHandle {
    next: Arc<Guard>,
    d: Delays,
}

impl FilterHandle for DelayHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    fn never_blocks(&self) -> bool {
        // Waiting is asynchronous; the layer below decides.
        self.next.never_blocks()
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.next.caps().await?;
        // Fast zeroes are refused here, at once.
        if !self.d.zero.is_zero() && !self.d.fast_zero {
            c.fast_zero = true;
        }
        Ok(c)
    }
    async fn op(&self, op: Op<'_>) -> Result<()> {
        let wait = match op.kind() {
            OpKind::Read => self.d.read,
            OpKind::Write => self.d.write,
            OpKind::Trim => self.d.trim,
            OpKind::Zero => {
                let fast = op.flags().fast_zero;
                if fast && !self.d.fast_zero && !self.d.zero.is_zero() {
                    return Err(Error::new(Errno::NotSup, "delay: fast zero refused"));
                }
                self.d.zero
            }
            OpKind::Extents => self.d.extents,
            OpKind::Cache => self.d.cache,
            _ => Duration::ZERO,
        };
        delay(wait).await?;
        self.next.op(op).await
    }
    async fn close(&self) {
        pause(self.d.close).await;
        self.next.close().await
    }
}
