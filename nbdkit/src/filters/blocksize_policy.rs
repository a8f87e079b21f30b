//! `blocksize-policy`: advertise block size constraints, and optionally
//! refuse requests that break them.
//!
//! - `blocksize-minimum=N`: the minimum (and alignment), a power of 2 up
//!   to 64K.
//! - `blocksize-preferred=N`: a power of 2 from 512 to 32M.
//! - `blocksize-maximum=N`: the largest read or write, up to 4G-1.
//!
//! Each that is not given comes from the plugin, or, when the plugin has
//! no constraints, defaults to 1, 4K and 4G-1. Given none, the plugin's
//! constraints are passed on as they are. The results must be in order
//! (minimum <= preferred <= maximum), or clients are refused.
//!
//! - `blocksize-error-policy=allow|error`: with `error`, a request whose
//!   offset or length is not a multiple of the minimum, whose length is
//!   below the minimum, or (reads and writes only) whose length is above
//!   the maximum fails with EINVAL before it reaches the plugin. The
//!   default, `allow`, passes everything on.
//!
//! Example: `nbdkit -U - --filter=blocksize-policy memory 1G blocksize-preferred=32K`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    BlockSize, Errno, Error, Extents, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs,
    Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `blocksize-policy` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "blocksize-policy",
    description: "set block size constraints and the policy for requests breaking them",
    config_help: "blocksize-error-policy=allow|error  Refuse requests breaking the constraints.\n\
                  blocksize-minimum=<SIZE>     Minimum block size (power of 2, <= 64K).\n\
                  blocksize-preferred=<SIZE>   Preferred block size (power of 2, 512..32M).\n\
                  blocksize-maximum=<SIZE>     Maximum block size (<= 4G-1).",
    build,
};

fn take(p: &mut Params, key: &str) -> Result<Option<u32>, StartError> {
    match p.take(key) {
        None => Ok(None),
        Some(v) => match crate::size::parse_size(&v) {
            Ok(n) if n <= u64::from(u32::MAX) => Ok(Some(n as u32)),
            _ => Err(StartError(format!(
                "blocksize-policy: {key}={v}: expected a size no larger than 4G-1"
            ))),
        },
    }
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let error = match p.take("blocksize-error-policy").as_deref() {
        None | Some("allow") => false,
        Some("error") => true,
        Some(v) => {
            return Err(StartError(format!(
                "blocksize-policy: blocksize-error-policy={v}: expected allow or error"
            )))
        }
    };
    // 0 means "not set", as for C nbdkit.
    let min = take(p, "blocksize-minimum")?.filter(|&n| n != 0);
    let pref = take(p, "blocksize-preferred")?.filter(|&n| n != 0);
    let max = take(p, "blocksize-maximum")?.filter(|&n| n != 0);
    let bad = |msg: String| Err(StartError(format!("blocksize-policy: {msg}")));
    if let Some(m) = min {
        if !m.is_power_of_two() || m > 65536 {
            return bad(format!("blocksize-minimum={m} must be a power of 2 no larger than 64K"));
        }
    }
    if let Some(p) = pref {
        if !p.is_power_of_two() || !(512..=32 << 20).contains(&p) {
            return bad(format!("blocksize-preferred={p} must be a power of 2 from 512 to 32M"));
        }
    }
    if let (Some(m), Some(x)) = (min, max) {
        if x != u32::MAX && x % m != 0 {
            return bad(format!(
                "blocksize-maximum={x} must be 4G-1 or a multiple of blocksize-minimum ({m})"
            ));
        }
    }
    if let (Some(m), Some(p)) = (min, pref) {
        if m > p {
            return bad(format!("blocksize-minimum={m} is larger than blocksize-preferred={p}"));
        }
    }
    if let (Some(p), Some(x)) = (pref, max) {
        if p > x {
            return bad(format!("blocksize-preferred={p} is larger than blocksize-maximum={x}"));
        }
    }
    Ok(Arc::new(PolicyFilter { error, min, pref, max }))
}

struct PolicyFilter {
    error: bool,
    min: Option<u32>,
    pref: Option<u32>,
    max: Option<u32>,
}

impl PolicyFilter {
    /// The constraints to advertise, given the plugin's.
    fn limits(&self, below: Option<BlockSize>) -> Result<Option<BlockSize>> {
        let (min, pref, max) = match (self.min, self.pref, self.max, below) {
            (Some(m), Some(p), Some(x), _) => return Ok(Some(BlockSize::new(m, p, x))),
            (None, None, None, b) => return Ok(b),
            (m, p, x, None) => (m.unwrap_or(1), p.unwrap_or(4096), x.unwrap_or(u32::MAX)),
            (m, p, x, Some(b)) => {
                (m.unwrap_or(b.minimum), p.unwrap_or(b.preferred), x.unwrap_or(b.maximum))
            }
        };
        if min > pref || pref > max {
            return Err(Error::new(
                Errno::Inval,
                format!(
                    "blocksize-policy: the block sizes are out of order: minimum {min}, \
                     preferred {pref}, maximum {max}"
                ),
            ));
        }
        Ok(Some(BlockSize::new(min, pref, max)))
    }
}

#[async_trait]
impl Filter for PolicyFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let below = match (self.min, self.pref, self.max) {
            (Some(_), Some(_), Some(_)) => None,
            _ => next.block_size().await?,
        };
        let limits = self.limits(below)?;
        Ok(Arc::new(PolicyHandle { next, limits, error: self.error }))
    }
}

struct PolicyHandle {
    next: Arc<Guard>,
    limits: Option<BlockSize>,
    error: bool,
}

impl PolicyHandle {
    /// Under `blocksize-error-policy=error`, refuse what breaks the limits.
    fn check(&self, what: &str, data: bool, count: u64, offset: u64) -> Result<()> {
        let Some(BlockSize { minimum: min, maximum: max, .. }) = self.limits.filter(|_| self.error)
        else {
            return Ok(());
        };
        let (min, max) = (u64::from(min), u64::from(max));
        let why = if count < min {
            format!("length {count} is below the minimum block size {min}")
        } else if data && count > max {
            format!("length {count} is above the maximum block size {max}")
        } else if !count.is_multiple_of(min) {
            format!("length {count} is not a multiple of the minimum block size {min}")
        } else if !offset.is_multiple_of(min) {
            format!("offset {offset} is not a multiple of the minimum block size {min}")
        } else {
            return Ok(());
        };
        Err(Error::new(Errno::Inval, format!("blocksize-policy: {what} refused: {why}")))
    }
}

impl FilterHandle for PolicyHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(self.limits)
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.check("pread", true, buf.len() as u64, offset)?;
        self.next.pread(buf, offset, flags).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.check("pwrite", true, buf.len() as u64, offset)?;
        self.next.pwrite(buf, offset, flags).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.check("zero", false, count, offset)?;
        self.next.zero(count, offset, flags).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.check("trim", false, count, offset)?;
        self.next.trim(count, offset, flags).await
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.check("cache", false, count, offset)?;
        self.next.cache(count, offset, flags).await
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        self.check("extents", false, count, offset)?;
        self.next.extents(count, offset, flags, ext).await
    }
}
