//! The plugins, one file each, and the table that finds them by name.

use std::sync::Arc;

use crate::backend::{Plugin, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

pub mod file;
pub mod memory;
pub mod null;
pub mod pattern;

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
        f.debug_struct("PluginInfo")
            .field("name", &self.name)
            .finish()
    }
}

/// Every plugin, in the order `--help` lists them.
pub static PLUGINS: &[&PluginInfo] = &[&file::INFO, &memory::INFO, &null::INFO, &pattern::INFO];

/// Find a plugin by name.
pub fn lookup(name: &str) -> Option<&'static PluginInfo> {
    PLUGINS.iter().copied().find(|p| p.name == name)
}
