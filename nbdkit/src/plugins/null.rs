//! `null`: a disk that reads as zeroes and discards writes.
//!
//! - `size=SIZE` (magic key; default 0): the disk size.
//!
//! Every write, trim and zero succeeds and changes nothing; the whole disk is
//! one hole. Useful to measure the protocol path with no storage behind it.
//!
//! Example: `nbdkit -U - null 1G --run 'nbdcopy "$uri" null:'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Caps, ExtentFlags, Extents, Flags, Handle, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

/// The `null` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "null",
    description: "a disk that reads as zeroes and discards writes",
    config_help: "[size=]<SIZE>               Size of the backing disk (default 0)",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let size = p.take_size("size")?.unwrap_or(0);
    p.finish()?;
    Ok(Arc::new(Shared(Arc::new(Disk(size)))))
}

struct Disk(u64);

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.0)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps::ALL_NATIVE)
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
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        Ok(())
    }

    async fn trim(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }

    async fn zero(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }

    async fn extents(&self, _count: u64, _offset: u64, _f: Flags, ext: &mut Extents) -> Result<()> {
        ext.add(0, self.0, ExtentFlags::HOLE | ExtentFlags::ZERO);
        Ok(())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}
