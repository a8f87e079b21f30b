//! `stats`: count requests, bytes and time spent, and write a summary to a
//! file when nbdkit exits.
//!
//! - `statsfile=FILE` (required): where the summary goes (truncated at
//!   start-up).
//! - `statsappend=BOOL`: append to FILE instead (default false).
//! - `statsthreshold=PERCENT` (0 to 100, default 95): for each kind of
//!   request, list the request sizes (grouped by bit length) and offset
//!   alignments that together make up this share of requests; 0 turns the
//!   breakdown off.
//!
//! The summary has a `total:` line, then one line per kind of request that
//! happened (read, write, trim, zero, extents, cache, flush): operations,
//! seconds spent in them, bytes, and rates per operation time and per
//! run time. Only successful requests count.
//!
//! Example: `nbdkit --filter=stats memory 1G statsfile=/tmp/stats.txt`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Filter, FilterHandle, Guard, Handle, Next, Op, OpKind, OpenArgs, Result, ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;

/// The `stats` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "stats",
    description: "display statistics about operations",
    config_help: "statsfile=<FILE>    (required) The file to place the log in.\n\
                  statsappend=<BOOL>  True to append to the log (default false).\n\
                  statsthreshold=<PERCENT>  Breakdown of requests to print (default 95).",
    build,
};

const KIB: f64 = 1024.0;
const MIB: f64 = KIB * 1024.0;
const GIB: f64 = MIB * 1024.0;

/// One kind of request.
#[derive(Default)]
struct Stat {
    ops: u64,
    bytes: u64,
    usecs: u64,
    /// Requests by size bits, then by offset alignment bits (-1: offset 0).
    count: BTreeMap<u32, BTreeMap<i32, u64>>,
    /// Bytes by size bits.
    size: BTreeMap<u32, u64>,
}

const NAMES: [&str; 7] = ["read", "write", "trim", "zero", "extents", "cache", "flush"];
const READ: usize = 0;
const WRITE: usize = 1;
const TRIM: usize = 2;
const ZERO: usize = 3;
const EXTENTS: usize = 4;
const CACHE: usize = 5;
const FLUSH: usize = 6;

struct State {
    file: Option<std::fs::File>,
    start: Instant,
    stats: [Stat; 7],
}

struct Stats {
    path: std::path::PathBuf,
    append: bool,
    /// 0..=1.
    threshold: f64,
    state: Mutex<State>,
}

struct StatsFilter(Arc<Stats>);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let path = p
        .take("statsfile")
        .ok_or_else(|| StartError("stats: the statsfile parameter is required".into()))?;
    let path = std::path::absolute(&path)
        .map_err(|e| StartError(format!("stats: statsfile={path}: {e}")))?;
    let append = p.take_bool("statsappend")?.unwrap_or(false);
    let threshold = match p.take("statsthreshold") {
        None => 95,
        Some(v) => match v.trim().parse::<i64>() {
            Ok(n) if (0..=100).contains(&n) => n,
            _ => {
                return Err(StartError(format!(
                    "stats: statsthreshold={v}: must be between 0 and 100 (percent)"
                )))
            }
        },
    };
    Ok(Arc::new(StatsFilter(Arc::new(Stats {
        path,
        append,
        threshold: threshold as f64 / 100.0,
        state: Mutex::new(State { file: None, start: Instant::now(), stats: Default::default() }),
    }))))
}

fn humansize(bytes: u64) -> String {
    let b = bytes as f64;
    if b < KIB {
        format!("{bytes} bytes")
    } else if b < MIB {
        format!("{:.2} KiB", b / KIB)
    } else if b < GIB {
        format!("{:.2} MiB", b / MIB)
    } else {
        format!("{:.2} GiB", b / GIB)
    }
}

fn humanrate(bytes: u64, usecs: u64) -> String {
    if usecs == 0 {
        return "(n/a)".into();
    }
    humansize((bytes as f64 / (usecs as f64 / 1e6)) as u64)
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, which: usize, size: u64, offset: u64, since: Instant) {
        let usecs = since.elapsed().as_micros() as u64;
        let mut st = self.lock();
        let s = &mut st.stats[which];
        s.ops += 1;
        s.bytes += size;
        s.usecs += usecs;
        if self.threshold == 0.0 || size == 0 {
            return;
        }
        let bits = 63 - size.leading_zeros();
        let align = if offset == 0 { -1 } else { offset.trailing_zeros() as i32 };
        *s.count.entry(bits).or_default().entry(align).or_default() += 1;
        *s.size.entry(bits).or_default() += size;
    }

    fn alignments(&self, out: &mut String, align: &BTreeMap<i32, u64>) {
        let any = align.get(&-1).copied().unwrap_or(0);
        let total: u64 = align.values().sum();
        // Requests aligned to 2^k are aligned to every smaller power too,
        // and offset 0 is aligned to everything.
        let mut hist: Vec<(i32, u64)> = Vec::new();
        let mut above = 0;
        for (&bits, &n) in align.iter().rev().filter(|(b, _)| **b >= 0) {
            above += n;
            hist.push((bits, above + any));
        }
        hist.reverse();
        let cutoff = ((1.0 - self.threshold) * total as f64) as u64;
        let pct = |n: u64| (n * 100) as f64 / total as f64;
        for (i, &(bits, n)) in hist.iter().enumerate() {
            if n < cutoff {
                let _ = writeln!(out, "         {bits:2}+ bit-aligned: {:4.1}% ({n})", pct(n));
                break;
            }
            if hist.get(i + 1).is_none_or(|next| next.1 != n) {
                let _ = writeln!(out, "         {bits:2} bit aligned: {:5.1}% ({n})", pct(n));
            }
        }
    }

    fn histogram(&self, out: &mut String, s: &Stat) {
        let mut buckets: Vec<(u64, u32)> =
            s.count.iter().map(|(bits, a)| (a.values().sum(), *bits)).collect();
        buckets.sort_by(|a, b| b.cmp(a));
        let total = s.ops as f64;
        let to_print = (self.threshold * total) as u64;
        let (mut reqs_done, mut bytes_done) = (0, 0);
        for (n, bits) in buckets {
            if reqs_done >= to_print {
                let left = s.ops - reqs_done;
                let _ = writeln!(
                    out,
                    "    other sizes: {:4.1}% ({left} reqs, {} total)",
                    left as f64 / total * 100.0,
                    humansize(s.bytes - bytes_done)
                );
                break;
            }
            let bytes = s.size[&bits];
            let _ = writeln!(
                out,
                "    {bits:2} bits: {:4.1}% ({n} reqs, {} total)",
                n as f64 / total * 100.0,
                humansize(bytes)
            );
            reqs_done += n;
            bytes_done += bytes;
            self.alignments(out, &s.count[&bits]);
        }
    }

    /// The summary, for a run of `usecs`.
    fn summary(&self, stats: &[Stat; 7], usecs: u64) -> String {
        let mut out = String::new();
        let ops: u64 =
            [READ, WRITE, TRIM, ZERO, EXTENTS, FLUSH].iter().map(|i| stats[*i].ops).sum();
        let bytes: u64 = [READ, WRITE, TRIM, ZERO].iter().map(|i| stats[*i].bytes).sum();
        let _ = writeln!(
            out,
            "total: {ops} ops, {:.6} s, {}, {}/s",
            usecs as f64 / 1e6,
            humansize(bytes),
            humanrate(bytes, usecs)
        );
        for (name, s) in NAMES.iter().zip(stats.iter()) {
            if s.ops == 0 {
                continue;
            }
            let _ = writeln!(
                out,
                "{name}: {} ops, {:.6} s, {}, {}/s op, {}/s total",
                s.ops,
                s.usecs as f64 / 1e6,
                humansize(s.bytes),
                humanrate(s.bytes, s.usecs),
                humanrate(s.bytes, usecs)
            );
            if self.threshold != 0.0 && !s.count.is_empty() {
                out.push_str("  Request size and alignment breakdown:\n");
                self.histogram(&mut out, s);
                out.push('\n');
            }
        }
        out
    }
}

#[async_trait]
impl Filter for StatsFilter {
    fn get_ready(&self, _thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        let s = &self.0;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(s.append)
            .truncate(!s.append)
            .open(&s.path)
            .map_err(|e| StartError(format!("stats: open: {}: {e}", s.path.display())))?;
        let mut st = s.lock();
        st.file = Some(f);
        st.start = Instant::now();
        Ok(())
    }

    fn unload(&self) {
        let mut st = self.0.lock();
        let usecs = st.start.elapsed().as_micros() as u64;
        let text = self.0.summary(&st.stats, usecs);
        if let Some(mut f) = st.file.take() {
            if usecs > 0 {
                let _ = f.write_all(text.as_bytes());
            }
        }
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(StatsHandle { next, stats: self.0.clone() }))
    }
}

struct StatsHandle {
    next: Arc<Guard>,
    stats: Arc<Stats>,
}

impl StatsHandle {
    fn count<T>(
        &self, r: Result<T>, which: usize, size: u64, offset: u64, t: Instant,
    ) -> Result<T> {
        if r.is_ok() {
            self.stats.record(which, size, offset, t);
        }
        r
    }
}

impl FilterHandle for StatsHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn op(&self, op: Op<'_>) -> Result<()> {
        let which = match op.kind() {
            OpKind::Read => READ,
            OpKind::Write => WRITE,
            OpKind::Trim => TRIM,
            OpKind::Zero => ZERO,
            OpKind::Extents => EXTENTS,
            OpKind::Cache => CACHE,
            _ => FLUSH,
        };
        let (count, offset) = (op.count(), op.offset());
        let t = Instant::now();
        let r = self.next.op(op).await;
        self.count(r, which, count, offset, t)
    }
}
