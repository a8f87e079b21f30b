//! `memory`: a sparse RAM disk, lost when nbdkit exits.
//!
//! - `size=SIZE` (required; magic key, so `nbdkit memory 1G` works): the
//!   disk size, up to 2^63-1 bytes. Only written pages use memory.
//!
//! Supports writes, FUA, flush, trim and zero (which free pages), fast zero,
//! extents (holes are unwritten pages), cache, and multi-conn.
//!
//! Example: `nbdkit -U - memory 1G --run 'qemu-img info "$uri"'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Cache, Caps, Extents, Flags, Fua, Handle, Plugin, Result, ThreadModel, Zero};
use crate::error::StartError;
use crate::params::Params;
use crate::sparse::Sparse;

pub static INFO: PluginInfo = PluginInfo {
    name: "memory",
    description: "a sparse RAM disk",
    config_help: "size=<SIZE>  (required) Size of the backing disk",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("mlock", "no"), ("zstd", "no")],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let size = p.require_size("size")?;
    if let Some(a) = p.take("allocator") {
        if a != "sparse" {
            return Err(StartError(format!(
                "memory: allocator={a} is not supported (only allocator=sparse)"
            )));
        }
    }
    p.finish()?;
    Ok(Arc::new(Shared(Arc::new(Disk {
        size,
        data: Sparse::new(),
    }))))
}

struct Disk {
    size: u64,
    data: Sparse,
}

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps {
            write: true,
            flush: true,
            fua: Fua::Native,
            trim: true,
            zero: Zero::Native,
            fast_zero: true,
            cache: Cache::Native,
            extents: true,
            multi_conn: true,
            rotational: false,
        })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        self.data.read(buf, offset);
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        self.data.write(buf, offset);
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        Ok(())
    }

    async fn trim(&self, count: u32, offset: u64, _f: Flags) -> Result<()> {
        self.data.zero(u64::from(count), offset);
        Ok(())
    }

    async fn zero(&self, count: u32, offset: u64, _f: Flags) -> Result<()> {
        self.data.zero(u64::from(count), offset);
        Ok(())
    }

    async fn extents(&self, count: u32, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        self.data.runs(u64::from(count), offset, |off, len, state| {
            ext.add(off, len, state.flags()) && !(f.req_one && ext.list().len() > 1)
        });
        Ok(())
    }

    async fn cache(&self, _count: u32, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}
