//! `offset`: serve only the bytes `[offset, offset+range)` of the layer
//! below.
//!
//! - `offset=SIZE`: where the served range starts (default 0).
//! - `range=SIZE`: how many bytes to serve (default: through to the end).
//!
//! A range that reaches past the end of the layer below makes the export
//! fail to open (use the truncate filter to grow a plugin).
//!
//! Example: `nbdkit --filter=offset file disk.img offset=1M range=100M`

use std::sync::Arc;

use async_trait::async_trait;

use super::window::Window;
use super::FilterInfo;
use crate::backend::{Errno, Error, Filter, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `offset` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "offset",
    description: "serve a byte range of the plugin",
    config_help: "offset=<OFFSET>            The start offset to serve (default 0).\n\
                  range=<LENGTH>             The total size to serve (default rest of file).",
    build,
};

struct OffsetFilter {
    offset: u64,
    range: Option<u64>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let offset = p.take_size("offset")?.unwrap_or(0);
    let range = p.take_size("range")?;
    Ok(Arc::new(OffsetFilter { offset, range }))
}

#[async_trait]
impl Filter for OffsetFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let real = next.size().await?;
        let size = match self.range {
            Some(r) if self.offset.checked_add(r).is_none_or(|end| end > real) => {
                return Err(Error::new(
                    Errno::Inval,
                    format!(
                        "offset+range ({}+{r}) is larger than the real size ({real}) \
                         of the underlying file or device",
                        self.offset
                    ),
                ))
            }
            Some(r) => r,
            None if self.offset > real => {
                return Err(Error::new(
                    Errno::Inval,
                    format!(
                        "offset ({}) is larger than the real size ({real}) \
                         of the underlying file or device",
                        self.offset
                    ),
                ))
            }
            None => real - self.offset,
        };
        Ok(Arc::new(Window { next, base: self.offset, size, description: None }))
    }
}
