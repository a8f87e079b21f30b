//! `nocache`: change how NBD_CMD_CACHE is handled.
//!
//! - `cachemode=none` (default): cache is not advertised to clients.
//! - `cachemode=emulate`: cache is advertised and done by reading the
//!   range, whatever the layer below can do.
//! - `cachemode=nop` (or `no-op`): cache is advertised and every request
//!   succeeds at once, doing nothing.
//!
//! Example: `nbdkit --filter=nocache file disk.img cachemode=nop`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Cache, Caps, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `nocache` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "nocache",
    description: "disable cache requests in the underlying plugin",
    config_help: "cachemode=<MODE>     Either 'none' (default), 'emulate', or 'nop'.",
    build,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Emulate,
    Nop,
}

struct NoCache(Mode);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mode = match p.take("cachemode").as_deref() {
        None | Some("none") => Mode::None,
        Some("emulate") => Mode::Emulate,
        Some("nop" | "no-op") => Mode::Nop,
        Some(v) => return Err(StartError(format!("nocache: unknown cachemode '{v}'"))),
    };
    Ok(Arc::new(NoCache(mode)))
}

#[async_trait]
impl Filter for NoCache {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(NoCacheHandle { next, mode: self.0 }))
    }
}

struct NoCacheHandle {
    next: Arc<Guard>,
    mode: Mode,
}

impl FilterHandle for NoCacheHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let cache = match self.mode {
            Mode::None => Cache::None,
            // The guard above reads the range.
            Mode::Emulate => Cache::Emulate,
            Mode::Nop => Cache::Native,
        };
        Ok(Caps { cache, ..self.next.caps().await? })
    }
    async fn cache(&self, _count: u64, _offset: u64, _flags: Flags) -> Result<()> {
        // Only reached in nop mode.
        Ok(())
    }
}
