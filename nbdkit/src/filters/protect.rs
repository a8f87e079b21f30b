//! `protect`: refuse writes that would change parts of the disk, while
//! the rest stays writable.
//!
//! - `protect=START-END`: protect bytes START to END, inclusive (decimal,
//!   `0NN` octal or `0xNN` hex; START defaults to 0 and END to the end of
//!   the disk when left out). May be given many times.
//! - `protect=~START-END`: protect everything but that range.
//!
//! Reads are always allowed; a write, trim or zero touching a protected
//! range succeeds only if it leaves its content unchanged, and otherwise
//! fails with EPERM.
//!
//! Example: `nbdkit --filter=protect file disk.img protect=0-0x1bd`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Errno, Error, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::{parse_uint, Params};

/// The `protect` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "protect",
    description: "write-protect parts of the plugin",
    config_help: "protect=<START>-<END>      Protect range of bytes START-END (inclusive).",
    build,
};

/// The highest offset a range can reach.
const LAST: u64 = i64::MAX as u64;

/// A protected range, inclusive at both ends.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    start: u64,
    end: u64,
    /// The parameter it came from, for messages.
    what: String,
}

fn parse_range(value: &str, out: &mut Vec<Range>) -> Result<(), StartError> {
    let (negate, body) = match value.strip_prefix('~') {
        Some(b) => (true, b),
        None => (false, value),
    };
    let Some((s, e)) = body.split_once('-') else {
        return Err(StartError(format!("protect: cannot parse range, missing '-': {value}")));
    };
    let num = |t: &str, default: u64| -> Result<u64, StartError> {
        if t.is_empty() {
            Ok(default)
        } else {
            parse_uint("range", t, u64::MAX).map_err(|m| StartError(format!("protect: {m}")))
        }
    };
    let start = num(s, 0)?;
    let end = num(e, LAST)?;
    if end < start {
        return Err(StartError(format!("protect: invalid range, end < start: {value}")));
    }
    let what = value.to_string();
    if !negate {
        out.push(Range { start, end, what });
    } else {
        if start > 0 {
            out.push(Range { start: 0, end: start - 1, what: what.clone() });
        }
        if end < LAST {
            out.push(Range { start: end + 1, end: LAST, what });
        }
    }
    Ok(())
}

/// Sort, and merge ranges that overlap or touch.
fn merge(mut ranges: Vec<Range>) -> Vec<Range> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.end.saturating_add(1) >= r.start => l.end = l.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mut ranges = Vec::new();
    for v in p.take_all("protect") {
        parse_range(&v, &mut ranges)?;
    }
    Ok(Arc::new(ProtectFilter(Arc::new(merge(ranges)))))
}

struct ProtectFilter(Arc<Vec<Range>>);

#[async_trait]
impl Filter for ProtectFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(ProtectHandle { next, ranges: self.0.clone() }))
    }
}

struct ProtectHandle {
    next: Arc<Guard>,
    ranges: Arc<Vec<Range>>,
}

impl ProtectHandle {
    /// Fail unless writing `data` (None: zeroes) over `count` bytes at
    /// `offset` leaves every protected byte as it is.
    async fn check(&self, data: Option<&[u8]>, count: u64, offset: u64) -> Result<()> {
        let end = offset + count; // exclusive
        for r in self.ranges.iter() {
            if r.end < offset || r.start >= end {
                continue;
            }
            let from = r.start.max(offset);
            let to = (r.end + 1).min(end);
            let mut have = vec![0u8; (to - from) as usize];
            self.next.pread(&mut have, from, Flags::default()).await?;
            let same = match data {
                Some(d) => have == d[(from - offset) as usize..(to - offset) as usize],
                None => have.iter().all(|b| *b == 0),
            };
            if !same {
                return Err(Error::new(
                    Errno::Perm,
                    format!("protect filter prevented write to protected range {}", r.what),
                ));
            }
        }
        Ok(())
    }
}

impl FilterHandle for ProtectHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.check(Some(buf), buf.len() as u64, offset).await?;
        self.next.pwrite(buf, offset, flags).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.check(None, count, offset).await?;
        self.next.trim(count, offset, flags).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.check(None, count, offset).await?;
        self.next.zero(count, offset, flags).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(args: &[&str]) -> Vec<(u64, u64)> {
        let mut v = Vec::new();
        for a in args {
            parse_range(a, &mut v).unwrap();
        }
        merge(v).into_iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn parse_and_merge() {
        assert_eq!(ranges(&["0-1023"]), [(0, 1023)]);
        assert_eq!(ranges(&["0x10-"]), [(16, LAST)]);
        assert_eq!(ranges(&["-010"]), [(0, 8)]);
        assert_eq!(ranges(&["~100-199"]), [(0, 99), (200, LAST)]);
        assert_eq!(ranges(&["~0-"]), []);
        assert_eq!(ranges(&["10-19", "0-9", "30-40"]), [(0, 19), (30, 40)]);
        assert_eq!(ranges(&["0-100", "10-20"]), [(0, 100)]);
    }
}
