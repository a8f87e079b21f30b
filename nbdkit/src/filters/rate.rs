//! `rate`: limit bandwidth, per connection and in total.
//!
//! - `rate=BITSPERSEC`: all connections together; `connection-rate=`: each
//!   connection. Numbers may have `K`, `M`, `G` suffixes (bits).
//! - `rate-file=PATH`, `connection-rate-file=PATH`: a file holding the rate,
//!   re-read every second so it can be changed while serving (the last
//!   good value stays if the file goes).
//! - `burstiness=SECS` (default 2.0): how long a burst an idle connection
//!   may send at full speed.
//!
//! Reads and writes wait on a timer for their share (a token bucket):
//! other requests and clients are not held up by the waiting.
//!
//! Example: `nbdkit --filter=rate memory 1G rate=10M`

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;
use crate::size::parse_size;

/// The `rate` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "rate",
    description: "limit bandwidth by connection or server",
    config_help: "rate=<BITSPERSEC>             Limit total bandwidth.\n\
                  connection-rate=<BITSPERSEC>  Limit per-connection bandwidth.\n\
                  rate-file=<FILE>              Dynamically adjust total bandwidth.\n\
                  connection-rate-file=<FILE>   Dynamically adjust per-connection bandwidth.\n\
                  burstiness=<SECS>             Set burstiness (default 2.0).",
    build,
};

/// A token bucket of bits.
struct Bucket {
    rate: f64,
    file: Option<PathBuf>,
    read_at: Option<Instant>,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: Option<u64>, file: Option<PathBuf>, burst: f64) -> Bucket {
        let rate = rate.map_or(0.0, |r| r as f64);
        Bucket { rate, file, read_at: None, tokens: rate * burst, last: Instant::now() }
    }

    /// Take `bits`; return how long to wait for them (zero if unlimited).
    fn take(&mut self, bits: f64, burst: f64) -> Duration {
        let now = Instant::now();
        if let Some(f) = &self.file {
            if self.read_at.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1)) {
                self.read_at = Some(now);
                if let Some(r) =
                    std::fs::read_to_string(f).ok().and_then(|t| parse_size(t.trim()).ok())
                {
                    self.rate = r as f64;
                }
            }
        }
        if self.rate <= 0.0 {
            return Duration::ZERO;
        }
        let cap = self.rate * burst;
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(cap);
        self.last = now;
        self.tokens -= bits;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

struct RateFilter {
    total: Arc<Mutex<Bucket>>,
    conn_rate: Option<u64>,
    conn_file: Option<PathBuf>,
    burst: f64,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mut rate = |key: &str| -> Result<Option<u64>, StartError> {
        match p.take(key) {
            None => Ok(None),
            Some(v) => {
                parse_size(&v).map(Some).map_err(|e| StartError(format!("rate: {key}={v}: {e}")))
            }
        }
    };
    let total = rate("rate")?;
    let conn_rate = rate("connection-rate")?;
    let total_file = p.take("rate-file").map(PathBuf::from);
    let conn_file = p.take("connection-rate-file").map(PathBuf::from);
    let burst = match p.take("burstiness") {
        None => 2.0,
        Some(v) => v
            .parse::<f64>()
            .ok()
            .filter(|b| *b > 0.0 && b.is_finite())
            .ok_or_else(|| StartError(format!("rate: burstiness={v}: expected seconds")))?,
    };
    Ok(Arc::new(RateFilter {
        total: Arc::new(Mutex::new(Bucket::new(total, total_file, burst))),
        conn_rate,
        conn_file,
        burst,
    }))
}

#[async_trait]
impl Filter for RateFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(Limited {
            next,
            total: self.total.clone(),
            mine: Mutex::new(Bucket::new(self.conn_rate, self.conn_file.clone(), self.burst)),
            burst: self.burst,
        }))
    }
}

struct Limited {
    next: Arc<Guard>,
    total: Arc<Mutex<Bucket>>,
    mine: Mutex<Bucket>,
    burst: f64,
}

impl Limited {
    async fn wait(&self, bytes: usize) {
        let bits = bytes as f64 * 8.0;
        let a = self.total.lock().unwrap_or_else(|e| e.into_inner()).take(bits, self.burst);
        let b = self.mine.lock().unwrap_or_else(|e| e.into_inner()).take(bits, self.burst);
        let d = a.max(b);
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }
}

impl FilterHandle for Limited {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.wait(buf.len()).await;
        self.next.pread(buf, offset, flags).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.wait(buf.len()).await;
        self.next.pwrite(buf, offset, flags).await
    }
}
