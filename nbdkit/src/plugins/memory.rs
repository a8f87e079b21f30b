//! `memory`: a sparse RAM disk, lost when nbdkit exits.
//!
//! - `size=SIZE` (required; magic key, so `nbdkit memory 1G` works): the
//!   disk size, up to 2^63-1 bytes. Only written pages use memory.
//! - `allocator=sparse|malloc[,mlock=true]`: data is kept in pages either
//!   way; with `malloc` extents report the whole disk as data, as C's
//!   malloc allocator does, and `mlock=true` allocates the whole disk at
//!   start-up and locks it in RAM (an error, naming `ulimit -l`, if it
//!   cannot). `zstd` gives an error.
//!
//! Supports writes, FUA, flush, trim and zero (which free pages), fast zero,
//! extents (holes are unwritten pages), cache, and multi-conn.
//!
//! Example: `nbdkit -U - memory 1G --run 'qemu-img info "$uri"'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Caps, ExtentFlags, Extents, Flags, Handle, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;
use crate::sparse::Sparse;

/// The `memory` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "memory",
    description: "a sparse RAM disk",
    config_help: "size=<SIZE>  (required) Size of the backing disk",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("mlock", "yes"), ("zstd", "no")],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let size = p.require_size("size")?;
    let alloc = allocator(&mut p)?;
    p.finish()?;
    let data = alloc.storage("memory", size)?;
    Ok(Arc::new(Shared(Arc::new(Disk::new(size, data, alloc.extents)))))
}

/// `allocator=...`, shared with the data plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allocator {
    /// Report holes (`sparse`), or the whole disk as data (`malloc`).
    pub extents: bool,
    /// `malloc,mlock=true`: the disk is allocated and locked in RAM at
    /// start-up.
    pub mlock: bool,
}

impl Allocator {
    /// The storage for a disk of `size` bytes.
    pub(crate) fn storage(self, owner: &str, size: u64) -> Result<Sparse, StartError> {
        if !self.mlock {
            return Ok(Sparse::new());
        }
        Sparse::locked(size).map_err(|e| {
            let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit fills in the struct we pass.
            let got = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } == 0;
            let hint = if got && limit.rlim_cur != libc::RLIM_INFINITY {
                format!(" (at most {} bytes may be locked: see ulimit -l)", limit.rlim_cur)
            } else {
                String::new()
            };
            StartError(format!(
                "{owner}: allocator=malloc: mlock: cannot lock {size} bytes in RAM: {}{hint}",
                crate::error::io_message(&e)
            ))
        })
    }
}

/// `allocator=sparse|malloc[,mlock=true]` (shared with the data plugin).
/// Both keep the data in pages here; `malloc` reports the whole disk as
/// data in extents, as C's malloc allocator does.
pub(crate) fn allocator(p: &mut Params) -> Result<Allocator, StartError> {
    let owner = p.owner().to_string();
    let value = p.take("allocator").unwrap_or_else(|| "sparse".into());
    let mut words = value.split(',');
    let kind = words.next().unwrap_or("");
    let extra: Vec<&str> = words.collect();
    let mut alloc = Allocator { extents: true, mlock: false };
    match kind {
        "sparse" => {}
        "malloc" => alloc.extents = false,
        "zstd" => {
            return Err(StartError(format!(
                "{owner}: allocator=zstd is not supported by this nbdkit (use sparse or malloc)"
            )))
        }
        _ => return Err(StartError(format!("{owner}: unknown allocator \"{value}\""))),
    }
    for param in extra {
        if kind != "malloc" {
            return Err(StartError(format!(
                "{owner}: allocator={kind} does not take extra parameters"
            )));
        }
        let (k, v) = param.split_once('=').unwrap_or((param, ""));
        if k != "mlock" {
            return Err(StartError(format!("{owner}: allocator=malloc: unknown parameter {k}")));
        }
        let mut one = Params::new(&owner, vec![("mlock".into(), v.into())]);
        alloc.mlock = one.take_bool("mlock")?.unwrap_or(false);
    }
    Ok(alloc)
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
        Disk { size, data, extents }
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
        Ok(Caps::ALL_NATIVE)
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        self.data.read(buf, offset);
        Ok(())
    }

    async fn pread_sparse(
        &self, buf: &mut [u8], offset: u64, _f: Flags, holes: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        self.data.read_sparse(buf, offset, holes);
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        self.data.write(buf, offset);
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        Ok(())
    }

    async fn trim(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.data.zero(count, offset);
        Ok(())
    }

    async fn zero(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.data.zero(count, offset);
        Ok(())
    }

    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        if !self.extents {
            ext.add(offset, count, ExtentFlags::DATA);
            return Ok(());
        }
        self.data.runs(count, offset, |off, len, state| {
            ext.add(off, len, state.flags()) && !(f.req_one && ext.list().len() > 1)
        });
        Ok(())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}
