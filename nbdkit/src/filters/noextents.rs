//! `noextents`: hide the layer below's allocation map, so that clients
//! see the whole disk as allocated data (no parameters).
//!
//! Example: `nbdkit --filter=noextents file disk.img`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Caps, Filter, FilterHandle, Guard, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `noextents` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "noextents",
    description: "disable extents in the underlying plugin",
    config_help: "",
    build,
};

struct NoExtents;

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(NoExtents))
}

#[async_trait]
impl Filter for NoExtents {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(NoExtentsHandle(next)))
    }
}

struct NoExtentsHandle(Arc<Guard>);

impl FilterHandle for NoExtentsHandle {
    fn next(&self) -> &Guard {
        &self.0
    }
    async fn caps(&self) -> Result<Caps> {
        // Without extents the guard above answers "all data".
        Ok(Caps { extents: false, ..self.0.caps().await? })
    }
}
