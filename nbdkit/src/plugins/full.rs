//! `full`: a disk that is always full, like `/dev/full`.
//!
//! - `size=SIZE` (magic key; required): the disk size.
//!
//! Reads return zeroes and the whole disk is one hole. Every write, trim
//! and write-zeroes fails with ENOSPC, except a fast zero, which fails
//! at once with ENOTSUP. No flush: with every write refused there is
//! nothing to flush. Useful to test how a client copes with a full disk.
//!
//! Example: `nbdkit -U - full 1M --run 'nbdcopy /dev/urandom "$uri"'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Cache, Caps, Errno, Error, Extents, Flags, Fua, Handle, Plugin, Result};
use crate::backend::{ExtentFlags, ThreadModel, Zero};
use crate::error::StartError;
use crate::params::Params;

/// The `full` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "full",
    description: "a disk that is always full: writes fail with ENOSPC",
    config_help: "size=<SIZE>  (required) Size of the backing disk",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let size = p.take_size("size")?;
    p.finish()?;
    let size = size.ok_or_else(|| StartError("full: size parameter is required".into()))?;
    Ok(Arc::new(Shared(Arc::new(Disk(size)))))
}

struct Disk(u64);

fn full() -> Error {
    Error::new(Errno::NoSpc, "No space left on device")
}

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.0)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps {
            write: true,
            flush: false,
            fua: Fua::None,
            trim: true,
            // Zeroes are written with pwrite, which fails: ENOSPC, but a
            // fast zero fails with ENOTSUP before trying.
            zero: Zero::Emulate,
            fast_zero: true,
            cache: Cache::Native,
            extents: true,
            multi_conn: true,
            rotational: false,
        })
    }

    async fn pread(&self, buf: &mut [u8], _offset: u64, _f: Flags) -> Result<()> {
        buf.fill(0);
        Ok(())
    }

    async fn pread_sparse(
        &self, buf: &mut [u8], _offset: u64, _f: Flags, holes: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        holes.push((0, buf.len() as u64));
        Ok(())
    }

    async fn pwrite(&self, _buf: &[u8], _offset: u64, _f: Flags) -> Result<()> {
        Err(full())
    }

    async fn trim(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Err(full())
    }

    async fn extents(&self, _count: u64, _offset: u64, _f: Flags, ext: &mut Extents) -> Result<()> {
        ext.add(0, self.0, ExtentFlags::HOLE | ExtentFlags::ZERO);
        Ok(())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}
