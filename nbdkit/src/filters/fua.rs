//! `fua`: change how FUA (force unit access) and flush are handled.
//!
//! - `fuamode=none` (default): FUA is not advertised; clients must flush.
//! - `fuamode=emulate`: FUA is advertised and done as a flush after the
//!   write, whatever the layer below can do (needs flush below).
//! - `fuamode=native`: FUA is advertised as native and passed down (needs
//!   FUA below).
//! - `fuamode=force`: every write, trim and zero is sent down with FUA
//!   (write-through), and flushes do nothing (needs FUA below).
//! - `fuamode=pass`: FUA and flush pass through unchanged.
//! - `fuamode=discard`: FUA is dropped and flushes do nothing (unsafe: for
//!   data you can afford to lose).
//!
//! A writable connection fails to open when the layer below lacks what the
//! mode needs.
//!
//! Example: `nbdkit --filter=fua file disk.img fuamode=force`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Errno, Error, Filter, FilterHandle, Flags, Fua, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `fua` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "fua",
    description: "modify fua behaviour in the underlying plugin",
    config_help: "fuamode=<MODE>       One of 'none' (default), 'emulate', 'native',\n\
                  \x20                      'force', 'pass', 'discard'.",
    build,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    None,
    Emulate,
    Native,
    Force,
    Pass,
    Discard,
}

struct FuaFilter(Mode);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mode = match p.take("fuamode").as_deref() {
        None | Some("none") => Mode::None,
        Some("emulate") => Mode::Emulate,
        Some("native") => Mode::Native,
        Some("force") => Mode::Force,
        Some("pass") => Mode::Pass,
        Some("discard") => Mode::Discard,
        Some(v) => return Err(StartError(format!("fua: unknown fuamode '{v}'"))),
    };
    Ok(Arc::new(FuaFilter(mode)))
}

#[async_trait]
impl Filter for FuaFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { readonly, .. } = *args;
        let next = next.open(args).await?;
        if !readonly {
            let c = next.caps().await?;
            let missing = match self.0 {
                Mode::Emulate if !c.flush => {
                    Some("fuamode 'emulate' requires plugin flush support")
                }
                Mode::Native if c.fua == Fua::None => {
                    Some("fuamode 'native' requires plugin fua support")
                }
                Mode::Force if c.fua == Fua::None => {
                    Some("fuamode 'force' requires plugin fua support")
                }
                _ => None,
            };
            if let Some(m) = missing {
                return Err(Error::new(Errno::Inval, m));
            }
        }
        Ok(Arc::new(FuaHandle { next, mode: self.0 }))
    }
}

struct FuaHandle {
    next: Arc<Guard>,
    mode: Mode,
}

impl FuaHandle {
    /// The flags to send down, and whether to flush after.
    fn down(&self, flags: Flags) -> (Flags, bool) {
        match self.mode {
            Mode::Force => (Flags { fua: true, ..flags }, false),
            Mode::Discard => (Flags { fua: false, ..flags }, false),
            // FUA is advertised as emulated, and the flag still comes
            // here (as in C): it becomes a flush.
            Mode::Emulate if flags.fua => (Flags { fua: false, ..flags }, true),
            // In none mode it never comes.
            _ => (flags, false),
        }
    }

    async fn flush_after(&self, needed: bool) -> Result<()> {
        if needed {
            self.next.flush(Flags::default()).await?;
        }
        Ok(())
    }
}

impl FilterHandle for FuaHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let c = self.next.caps().await?;
        let fua = match self.mode {
            Mode::None => Fua::None,
            Mode::Emulate => Fua::Emulate,
            Mode::Native | Mode::Force | Mode::Discard => Fua::Native,
            Mode::Pass => c.fua,
        };
        Ok(Caps { fua, ..c })
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.down(flags);
        self.next.pwrite(buf, offset, flags).await?;
        self.flush_after(flush).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.down(flags);
        self.next.trim(count, offset, flags).await?;
        self.flush_after(flush).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.down(flags);
        self.next.zero(count, offset, flags).await?;
        self.flush_after(flush).await
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        match self.mode {
            Mode::Force | Mode::Discard => Ok(()),
            _ => self.next.flush(flags).await,
        }
    }
}
