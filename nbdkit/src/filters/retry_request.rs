//! `retry-request`: retry a failed request a few times before giving up,
//! for plugins that fail now and then.
//!
//! - `retry-request-retries=N` (default 2): retries per request.
//! - `retry-request-delay=SECS` (default 2; `NNms` too): the wait between
//!   tries (a timer: other requests go on meanwhile).
//! - `retry-request-open=false`: do not retry opening the plugin
//!   (default true).
//!
//! Example: `nbdkit --filter=retry-request nbd socket=/tmp/flaky.sock retry-request-retries=5`

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{parse_duration, FilterInfo};
use crate::backend::{Extents, Filter, FilterHandle, Guard, Handle, Next, Op, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `retry-request` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "retry-request",
    description: "retry single requests on error",
    config_help: "retry-request-retries=<N>     Number of retries (default 2).\n\
                  retry-request-delay=<N>       Seconds to wait before retry (default 2).\n\
                  retry-request-open=false      Do not retry opening the plugin.",
    build,
};

#[derive(Clone)]
struct Policy {
    retries: u32,
    delay: Duration,
    open: bool,
    log: crate::log::Log,
}

struct RetryRequest(Policy);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let retries = match p.take("retry-request-retries") {
        None => 2,
        Some(v) => v.parse().map_err(|_| {
            StartError(format!("retry-request: retry-request-retries={v}: not a number"))
        })?,
    };
    let delay = match p.take("retry-request-delay") {
        None => Duration::from_secs(2),
        Some(v) => parse_duration(&v).ok_or_else(|| {
            StartError(format!("retry-request: retry-request-delay={v}: expected seconds or NNms"))
        })?,
    };
    let open = p.take_bool("retry-request-open")?.unwrap_or(true);
    Ok(Arc::new(RetryRequest(Policy { retries, delay, open, log: p.log() })))
}

impl Policy {
    /// Run `op` until it succeeds or the retries are used up.
    async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut tries = 0;
        loop {
            match op().await {
                Err(e) if tries < self.retries => {
                    tries += 1;
                    self.log.debug(&format!(
                        "retry-request: {what} failed ({e}), retry {tries} of {}",
                        self.retries
                    ));
                    tokio::time::sleep(self.delay).await;
                }
                r => return r,
            }
        }
    }
}

#[async_trait]
impl Filter for RetryRequest {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = if self.0.open {
            self.0.run("open", || next.open(args)).await?
        } else {
            next.open(args).await?
        };
        Ok(Arc::new(Retrying { next, p: self.0.clone() }))
    }
}

struct Retrying {
    next: Arc<Guard>,
    p: Policy,
}

impl FilterHandle for Retrying {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn op(&self, mut op: Op<'_>) -> Result<()> {
        let what = op.name();
        let mut tries = 0;
        loop {
            // Extents go to a fresh list each try, so that a failed try
            // leaves nothing behind in the caller's.
            let r = match op.reborrow() {
                Op::Extents { count, offset, flags, ext } => {
                    let mut fresh = Extents::with_limit(offset, count, ext.limit());
                    let r = self.next.extents(count, offset, flags, &mut fresh).await;
                    if r.is_ok() {
                        for x in fresh.list() {
                            if !ext.add(x.offset, x.length, x.flags) {
                                break;
                            }
                        }
                    }
                    r
                }
                again => self.next.op(again).await,
            };
            match r {
                Err(e) if tries < self.p.retries => {
                    tries += 1;
                    self.p.log.debug(&format!(
                        "retry-request: {what} failed ({e}), retry {tries} of {}",
                        self.p.retries
                    ));
                    tokio::time::sleep(self.p.delay).await;
                }
                r => return r,
            }
        }
    }
}
