//! `nofilter`: passes everything through unchanged (for testing the filter
//! chain itself).
//!
//! No parameters. Example: `nbdkit --filter=nofilter memory 1G`

use std::sync::Arc;

use super::FilterInfo;
use crate::backend::Filter;
use crate::error::StartError;
use crate::params::Params;

/// The `nofilter` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "nofilter",
    description: "a filter that changes nothing",
    config_help: "(no parameters)",
    build,
};

struct NoFilter;

impl Filter for NoFilter {}

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(NoFilter))
}
