//! `tar`: serve one member of an uncompressed tar file that the layer
//! below serves, reading and writing it in place.
//!
//! - `tar-entry=MEMBER` (required): the member's name exactly as the
//!   archive stores it (as `tar tf` prints it).
//! - `tar-limit=SIZE` (default 0, no limit): how far into the archive to
//!   look for it.
//! - `tar=PROGRAM`: accepted and ignored (C nbdkit runs GNU tar to find the
//!   member; we read the headers ourselves: ustar, GNU long names, pax).
//!
//! The export is the member: its size, and reads, writes, trims, zeroes and
//! extents moved to where it lies in the archive. It cannot grow.
//!
//! Example: `nbdkit -U - file data.tar --filter=tar tar-entry=disk.img`

use std::sync::Arc;

use async_trait::async_trait;

use super::window::Window;
use super::FilterInfo;
use crate::backend::{Errno, Error, Filter, Flags, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;
use crate::plugins::tar::find_member_in;

/// The `tar` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "tar",
    description: "serve one member of a tar file served by the plugin",
    config_help: "tar-entry=<PATH>              (required) The path inside the tar file.\n\
                  tar-limit=<SIZE>              How far to look for it (default 0: all).",
    build,
};

struct TarFilter {
    entry: String,
    limit: Option<u64>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let entry = p
        .take("tar-entry")
        .ok_or_else(|| StartError("tar: you must supply tar-entry=<PATH>".into()))?;
    let limit = p.take_size("tar-limit")?.filter(|&l| l > 0);
    let _ = p.take("tar");
    Ok(Arc::new(TarFilter { entry, limit }))
}

#[async_trait]
impl Filter for TarFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        // The header scan reads a block at a time through the layer below;
        // the scanner is synchronous, so it runs as blocking work.
        let archive = next.size().await?;
        let rt = tokio::runtime::Handle::current();
        let found = tokio::task::block_in_place(|| {
            find_member_in(
                &mut |pos, buf| {
                    if pos + buf.len() as u64 > archive {
                        return Err(format!("truncated tar file (at offset {pos})"));
                    }
                    rt.block_on(next.pread(buf, pos, Flags::default())).map_err(|e| e.to_string())
                },
                &self.entry,
                self.limit,
            )
        });
        let (base, size) = found.map_err(|m| Error::new(Errno::Inval, format!("tar: {m}")))?;
        if base + size > archive {
            return Err(Error::new(Errno::Inval, "tar: the member runs past the end of the file"));
        }
        Ok(Arc::new(Window { next, base, size, description: None }))
    }
}
