//! `checkwrite`: turn writes into checks that the data is already there.
//!
//! No parameters. The layer below is opened read-only and never written:
//! a write, zero or trim succeeds (doing nothing) if the disk already holds
//! that data (zeroes, for zero and trim), else it fails with EIO. Made to
//! test copying tools: `nbdkit -U - --filter=checkwrite data "@32768 1" --run 'nbdcopy "$uri" "$uri"'`.

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Errno, Error, Filter, FilterHandle, Flags, Fua, Guard, Handle, Next, OpenArgs, Result,
    Zero,
};
use crate::error::StartError;
use crate::params::Params;

/// The `checkwrite` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "checkwrite",
    description: "check writes match the contents of the plugin",
    config_help: "(no parameters)",
    build,
};

struct CheckWrite;

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(CheckWrite))
}

#[async_trait]
impl Filter for CheckWrite {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(&args.with_readonly(true)).await?;
        Ok(Arc::new(Checker { next }))
    }
}

struct Checker {
    next: Arc<Guard>,
}

/// Largest piece compared at a time.
const CHUNK: u64 = 1 << 20;

impl Checker {
    /// Does `[offset, offset+len)` hold `want` (or zeroes, if None)?
    async fn same(&self, offset: u64, len: u64, want: Option<&[u8]>) -> Result<()> {
        let mut done = 0u64;
        let mut buf = vec![0u8; len.min(CHUNK) as usize];
        while done < len {
            let n = (len - done).min(CHUNK) as usize;
            self.next.pread(&mut buf[..n], offset + done, Flags::default()).await?;
            let ok = match want {
                Some(w) => buf[..n] == w[done as usize..done as usize + n],
                None => buf[..n].iter().all(|&b| b == 0),
            };
            if !ok {
                return Err(Error::new(
                    Errno::Io,
                    format!("checkwrite: the data at offset {} differs", offset + done),
                ));
            }
            done += n as u64;
        }
        Ok(())
    }
}

impl FilterHandle for Checker {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let c = self.next.caps().await?;
        Ok(Caps {
            write: true,
            flush: true,
            fua: Fua::Native,
            trim: true,
            zero: Zero::Native,
            fast_zero: true,
            ..c
        })
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        self.same(offset, buf.len() as u64, Some(buf)).await
    }
    async fn flush(&self, _f: Flags) -> Result<()> {
        Ok(())
    }
    async fn trim(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.same(offset, count, None).await
    }
    async fn zero(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.same(offset, count, None).await
    }
}
