//! `zero`: an empty (0-byte) read-only disk. Deprecated in C nbdkit,
//! which suggests `null` instead.
//!
//! It takes no parameters at all: as in C nbdkit 1.32, `nbdkit zero 1M`
//! and `nbdkit zero size=1M` are start-up errors (for a disk of zeroes of
//! some size, use `nbdkit null 1M`). Unlike `null`, the disk is read-only.
//!
//! Example: `nbdkit -U - zero --run 'nbdinfo "$uri"'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Cache, Caps, Errno, Error, Flags, Handle, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

/// The `zero` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "zero",
    description: "an empty read-only disk; deprecated, use null",
    config_help: "",
    magic_config_key: None,
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    if !p.take_rest().is_empty() {
        return Err(StartError(
            "zero: this plugin does not need command line configuration".into(),
        ));
    }
    Ok(Arc::new(Shared(Arc::new(Disk))))
}

struct Disk;

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(0)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps { cache: Cache::Native, multi_conn: true, ..Caps::READ_ONLY })
    }

    async fn pread(&self, _buf: &mut [u8], _offset: u64, _f: Flags) -> Result<()> {
        // The disk is empty: the server refuses every read before here.
        Err(Error::new(Errno::Io, "unexpected call to pread"))
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}
