//! `truncate`: change the size of the layer below: cut it short, extend it
//! with zeroes, or round it to a multiple of a power of two.
//!
//! - `truncate=SIZE`: the new size. Past the real end, reads return
//!   zeroes, writes of zeroes succeed and anything else fails (ENOSPC).
//! - `round-up=N`: round the size up to a multiple of N (a power of 2).
//! - `round-down=N`: round the size down to a multiple of N (a power of 2).
//!
//! All are optional; `truncate` applies first, then `round-up`, then
//! `round-down`.
//!
//! Example: `nbdkit --filter=truncate file disk.img round-up=512`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Errno, Error, ExtentFlags, Extents, Filter, FilterHandle, Flags, Guard, Handle, Next,
    OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `truncate` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "truncate",
    description: "truncate, extend or round the size of the plugin",
    config_help: "truncate=<SIZE>                The new size.\n\
                  round-up=<N>                   Round up to next multiple of N.\n\
                  round-down=<N>                 Round down to multiple of N.",
    build,
};

struct TruncateFilter {
    truncate: Option<u64>,
    round_up: Option<u64>,
    round_down: Option<u64>,
}

fn take_round(p: &mut Params, key: &str) -> Result<Option<u64>, StartError> {
    let Some(n) = p.take_size(key)? else {
        return Ok(None);
    };
    let err = |m: &str| Err(StartError(format!("truncate: {m}")));
    if n == 0 {
        return err(&format!("if set, the {key} parameter must be > 0"));
    }
    if n > u64::from(u32::MAX) {
        return err(&format!("the {key} parameter is too large"));
    }
    if !n.is_power_of_two() {
        return err(&format!("the {key} parameter must be a power of 2"));
    }
    Ok(Some(n))
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let truncate = p.take_size("truncate")?;
    let round_up = take_round(p, "round-up")?;
    let round_down = take_round(p, "round-down")?;
    Ok(Arc::new(TruncateFilter { truncate, round_up, round_down }))
}

#[async_trait]
impl Filter for TruncateFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let real = next.size().await?;
        let mut size = self.truncate.unwrap_or(real);
        if let Some(n) = self.round_up {
            size = size.checked_next_multiple_of(n).filter(|s| *s <= i64::MAX as u64).ok_or_else(
                || {
                    Error::new(
                        Errno::Inval,
                        format!("cannot round size {size} up to next boundary of {n}"),
                    )
                },
            )?;
        }
        if let Some(n) = self.round_down {
            size -= size % n;
        }
        Ok(Arc::new(TruncateHandle { next, real, size }))
    }
}

struct TruncateHandle {
    next: Arc<Guard>,
    /// Size of the layer below.
    real: u64,
    /// Size we serve.
    size: u64,
}

impl TruncateHandle {
    /// How much of `count` bytes from `offset` lies within the layer below.
    fn inside(&self, count: u64, offset: u64) -> u64 {
        if offset >= self.real {
            0
        } else {
            count.min(self.real - offset)
        }
    }
}

impl FilterHandle for TruncateHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    async fn caps(&self) -> Result<Caps> {
        let c = self.next.caps().await?;
        // The part past the end is known: all zero, answered here.
        Ok(Caps { extents: true, fast_zero: true, ..c })
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        let n = self.inside(buf.len() as u64, offset) as usize;
        let (head, tail) = buf.split_at_mut(n);
        if n > 0 {
            self.next.pread(head, offset, flags).await?;
        }
        tail.fill(0);
        Ok(())
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        let n = self.inside(buf.len() as u64, offset) as usize;
        if n > 0 {
            self.next.pwrite(&buf[..n], offset, flags).await?;
        }
        if buf[n..].iter().any(|b| *b != 0) {
            return Err(Error::new(
                Errno::NoSpc,
                "truncate: write beyond end of underlying device",
            ));
        }
        Ok(())
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            self.next.trim(n, offset, flags).await?;
        }
        Ok(())
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            if flags.fast_zero && !self.next.caps().await?.fast_zero {
                return Err(Error::new(Errno::NotSup, "fast zero is not possible"));
            }
            self.next.zero(n, offset, flags).await?;
        }
        Ok(())
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            self.next.cache(n, offset, flags).await?;
        }
        Ok(())
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        let n = self.inside(count, offset);
        if n > 0 {
            let mut inner = Extents::new(offset, self.real - offset);
            self.next.extents(n, offset, flags, &mut inner).await?;
            for e in inner.list() {
                if !ext.add(e.offset, e.length, e.flags) {
                    return Ok(());
                }
            }
            if ext.next_offset() < self.real {
                return Ok(());
            }
        }
        // Past the real end: zeroes, not stored anywhere.
        let from = offset.max(self.real);
        ext.add(from, self.size - from, ExtentFlags::HOLE | ExtentFlags::ZERO);
        Ok(())
    }
}
