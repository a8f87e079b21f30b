//! `memory`: a sparse RAM disk, lost when nbdkit exits.
//!
//! - `size=SIZE` (required; magic key, so `nbdkit memory 1G` works): the
//!   disk size, up to 2^63-1 bytes. Only written pages use memory.
//! - `allocator=sparse|malloc`: data is kept in sparse pages either way;
//!   with `malloc` extents report the whole disk as data, as C's malloc
//!   allocator does. `zstd` and `mlock` give an error.
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
    let extents = allocator(&mut p)?;
    p.finish()?;
    Ok(Arc::new(Shared(Arc::new(Disk::new(
        size,
        Sparse::new(),
        extents,
    )))))
}

/// `allocator=sparse|malloc` (shared with the data plugin). Both keep the
/// data in sparse pages here; `malloc` reports the whole disk as data in
/// extents, as C's malloc allocator does. True for `sparse`.
pub(crate) fn allocator(p: &mut Params) -> Result<bool, StartError> {
    let owner = p.owner().to_string();
    match p.take("allocator").as_deref() {
        None | Some("sparse") => Ok(true),
        Some("malloc") => Ok(false),
        Some(a) if a.starts_with("malloc,") => Err(StartError(format!(
            "{owner}: allocator={a}: mlock is not supported by this nbdkit"
        ))),
        Some("zstd") => Err(StartError(format!(
            "{owner}: allocator=zstd is not supported by this nbdkit (use sparse or malloc)"
        ))),
        Some(a) => Err(StartError(format!("{owner}: unknown allocator \"{a}\""))),
    }
}

/// A RAM disk: the memory plugin's, and the data plugin's once filled.
pub(crate) struct Disk {
    size: u64,
    data: Sparse,
    /// Report holes (allocator=sparse), or everything as data (malloc).
    extents: bool,
}

impl Disk {
    pub(crate) fn new(size: u64, data: Sparse, extents: bool) -> Disk {
        Disk {
            size,
            data,
            extents,
        }
    }
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
        if !self.extents {
            ext.add(offset, u64::from(count), 0);
            return Ok(());
        }
        self.data.runs(u64::from(count), offset, |off, len, state| {
            ext.add(off, len, state.flags()) && !(f.req_one && ext.list().len() > 1)
        });
        Ok(())
    }

    async fn cache(&self, _count: u32, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}
