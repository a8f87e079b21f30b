//! Typed `key=value` parameters for a plugin (and later its filters).
//!
//! The command line gives an ordered list of pairs. A plugin takes the keys it
//! knows (`take_size("size")`, `take("file")`, ...) and then calls
//! [`Params::finish`], which rejects anything left over, naming it.

use crate::error::StartError;
use crate::size::parse_size;

/// The parameters given to one plugin.
#[derive(Debug, Clone, Default)]
pub struct Params {
    owner: String,
    items: Vec<(String, String)>,
}

impl Params {
    /// Parameters for the plugin called `owner`.
    pub fn new(owner: &str, items: Vec<(String, String)>) -> Params {
        Params {
            owner: owner.to_string(),
            items,
        }
    }

    /// The plugin these belong to (for messages).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Take every value of `key`, in command-line order.
    pub fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        self.items.retain(|(k, v)| {
            if k == key {
                out.push(v.clone());
                false
            } else {
                true
            }
        });
        out
    }

    /// Take everything not taken yet (for plugins whose other parameters
    /// are free-form, like `data`'s `$VAR`s).
    pub fn take_rest(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.items)
    }

    /// Take `key`; if it was given more than once the last one wins, as in C
    /// nbdkit where each `config` call overwrites the previous one.
    pub fn take(&mut self, key: &str) -> Option<String> {
        self.take_all(key).pop()
    }

    /// Take `key` as a size (`1M`, `512`, `2s` ...).
    pub fn take_size(&mut self, key: &str) -> Result<Option<u64>, StartError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => parse_size(&v)
                .map(Some)
                .map_err(|e| StartError(format!("{}: {key}: {e}", self.owner))),
        }
    }

    /// Take a required size.
    pub fn require_size(&mut self, key: &str) -> Result<u64, StartError> {
        self.take_size(key)?.ok_or_else(|| {
            StartError(format!(
                "{}: you must specify {key}=<SIZE> on the command line",
                self.owner
            ))
        })
    }

    /// Take `key` as a boolean (`1/0`, `true/false`, `yes/no`, `on/off`).
    pub fn take_bool(&mut self, key: &str) -> Result<Option<bool>, StartError> {
        match self.take(key) {
            None => Ok(None),
            Some(v) => match v.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(Some(true)),
                "0" | "false" | "no" | "off" => Ok(Some(false)),
                _ => Err(StartError(format!(
                    "{}: {key}: could not decipher boolean ({v})",
                    self.owner
                ))),
            },
        }
    }

    /// Reject whatever was not taken.
    pub fn finish(self) -> Result<(), StartError> {
        match self.items.first() {
            None => Ok(()),
            Some((k, _)) => Err(StartError(format!(
                "{}: unknown parameter '{k}' (see '{} --help' for the parameters)",
                self.owner, self.owner
            ))),
        }
    }
}
