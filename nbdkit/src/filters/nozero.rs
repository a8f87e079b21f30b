//! `nozero`: change how NBD_CMD_WRITE_ZEROES and fast zeroes are handled.
//!
//! - `zeromode=none` (default): zero is not advertised; clients write
//!   zeroes themselves.
//! - `zeromode=emulate`: zero is advertised and done by writing zeroes,
//!   whatever the layer below can do.
//! - `zeromode=notrim`: zero goes to the layer below without the
//!   may-trim flag (a client's NO_HOLE is always implied).
//! - `zeromode=plugin`: zero goes to the layer below unchanged.
//!
//! `notrim` and `plugin` need a layer below that can zero (else writable
//! connections fail to open).
//!
//! - `fastzeromode=default` (default): with `emulate`, fast zero is
//!   advertised and always fails; otherwise the layer below decides.
//! - `fastzeromode=none`: fast zero is not advertised.
//! - `fastzeromode=slow`: fast zero is advertised and always fails with
//!   ENOTSUP.
//! - `fastzeromode=ignore`: fast zero is advertised and treated as a plain
//!   zero (unsafe: against the NBD spec; for comparisons only).
//!
//! Example: `nbdkit --filter=nozero file disk.img zeromode=emulate`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Errno, Error, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result, Zero,
};
use crate::error::StartError;
use crate::params::Params;

/// The `nozero` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "nozero",
    description: "disable zero requests in the underlying plugin",
    config_help: "zeromode=<MODE>      One of 'none' (default), 'emulate', 'notrim', 'plugin'.\n\
                  fastzeromode=<MODE>  One of 'default', 'none', 'slow', 'ignore'.",
    build,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum ZeroMode {
    None,
    Emulate,
    NoTrim,
    Plugin,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FastMode {
    Default,
    None,
    Slow,
    Ignore,
}

#[derive(Clone, Copy)]
struct NoZero {
    zero: ZeroMode,
    fast: FastMode,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let zero = match p.take("zeromode").as_deref() {
        None | Some("none") => ZeroMode::None,
        Some("emulate") => ZeroMode::Emulate,
        Some("notrim") => ZeroMode::NoTrim,
        Some("plugin") => ZeroMode::Plugin,
        Some(v) => return Err(StartError(format!("nozero: unknown zeromode '{v}'"))),
    };
    let fast = match p.take("fastzeromode").as_deref() {
        None | Some("default") => FastMode::Default,
        Some("none") => FastMode::None,
        Some("slow") => FastMode::Slow,
        Some("ignore") => FastMode::Ignore,
        Some(v) => return Err(StartError(format!("nozero: unknown fastzeromode '{v}'"))),
    };
    Ok(Arc::new(NoZero { zero, fast }))
}

#[async_trait]
impl Filter for NoZero {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { readonly, .. } = *args;
        let next = next.open(args).await?;
        let below = next.caps().await?;
        let passes = matches!(self.zero, ZeroMode::NoTrim | ZeroMode::Plugin);
        if !readonly && passes && below.zero == Zero::None {
            let name = if self.zero == ZeroMode::NoTrim { "notrim" } else { "plugin" };
            return Err(Error::new(
                Errno::Inval,
                format!("zeromode '{name}' requires plugin zero support"),
            ));
        }
        Ok(Arc::new(NoZeroHandle { next, f: *self }))
    }
}

struct NoZeroHandle {
    next: Arc<Guard>,
    f: NoZero,
}

impl FilterHandle for NoZeroHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let c = self.next.caps().await?;
        let (zero, fast_zero) = match (self.f.zero, self.f.fast) {
            (ZeroMode::None, _) => (Zero::None, false),
            // The guard above writes zeroes, and fails fast zeroes.
            (ZeroMode::Emulate, f) => (Zero::Emulate, f != FastMode::None),
            (_, FastMode::Default) => (c.zero, c.fast_zero),
            (_, f) => (c.zero, f != FastMode::None),
        };
        Ok(Caps { zero, fast_zero, ..c })
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let mut flags = flags;
        if flags.fast_zero {
            match self.f.fast {
                FastMode::Slow => {
                    return Err(Error::new(Errno::NotSup, "nozero: fast zero refused"))
                }
                FastMode::Ignore => flags.fast_zero = false,
                _ => {}
            }
        }
        if self.f.zero == ZeroMode::NoTrim {
            flags.may_trim = false;
        }
        self.next.zero(count, offset, flags).await
    }
}
