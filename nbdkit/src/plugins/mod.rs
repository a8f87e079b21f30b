//! The plugins, one file each, and the table that finds them by name.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{Handle, OpenArgs, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

pub mod cabi;
pub mod data;
pub mod eval;
pub mod example1;
pub mod example2;
pub mod file;
pub mod full;
pub mod info;
pub mod memory;
pub mod nbd;
pub mod null;
pub mod ondemand;
pub mod partitioning;
pub mod pattern;
pub mod random;
pub mod sh;
pub mod sparse_random;
pub mod split;
pub mod tar;
pub mod tmpdisk;
pub mod zero;

/// What the server knows about a plugin before building it.
pub struct PluginInfo {
    /// Name on the command line.
    pub name: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// The parameters, for `nbdkit PLUGIN --help`.
    pub config_help: &'static str,
    /// The key a bare `VALUE` on the command line stands for.
    pub magic_config_key: Option<&'static str>,
    /// The most concurrency the plugin allows.
    pub thread_model: ThreadModel,
    /// Build the plugin from its parameters; unknown keys are an error.
    pub build: fn(Params) -> Result<Arc<dyn Plugin>, StartError>,
    /// Extra `key=value` lines for `--dump-plugin`.
    pub dump: &'static [(&'static str, &'static str)],
}

impl std::fmt::Debug for PluginInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginInfo").field("name", &self.name).finish()
    }
}

/// A plugin whose connections all share one handle: the disk itself.
pub struct Shared(pub Arc<dyn Handle>);

#[async_trait]
impl Plugin for Shared {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (_readonly, _export) = (args.readonly, args.export);
        Ok(self.0.clone())
    }
}

/// Every plugin, in the order `--help` lists them.
pub static PLUGINS: &[&PluginInfo] = &[
    &data::INFO,
    &eval::INFO,
    &example1::INFO,
    &example2::INFO,
    &file::INFO,
    &full::INFO,
    &info::INFO,
    &memory::INFO,
    &nbd::INFO,
    &null::INFO,
    &ondemand::INFO,
    &partitioning::INFO,
    &pattern::INFO,
    &random::INFO,
    &sh::INFO,
    &sparse_random::INFO,
    &split::INFO,
    &tar::INFO,
    &tmpdisk::INFO,
    &zero::INFO,
];

/// What `--dump-plugin` learns from the parameters, for the plugins that
/// ask their script: the thread model it chooses, and the lines its
/// `dump_plugin` adds after the fixed ones.
pub fn dump_more(
    p: &PluginInfo, params: &[(String, String)],
) -> Result<Option<(ThreadModel, String)>, StartError> {
    match p.name {
        "sh" => sh::dump(params),
        "eval" => eval::dump(params),
        _ => Ok(None),
    }
}

/// Find a plugin by name.
pub fn lookup(name: &str) -> Option<&'static PluginInfo> {
    PLUGINS.iter().copied().find(|p| p.name == name)
}
