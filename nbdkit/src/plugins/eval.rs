//! `eval`: a plugin whose methods are shell snippets on the command line,
//! as nbdkit-eval-plugin(1) describes.
//!
//! - `METHOD=SCRIPT` for any method of the sh plugin (`get_size`, `pread`,
//!   `pwrite`, `can_write`, `open`, `config`, ...): the snippet runs under
//!   `/bin/sh` with the same arguments (`$1` is the method, `$2` the
//!   handle, `$3` the count, `$4` the offset ...), exit codes and
//!   `$tmpdir` as there.
//! - `missing=SCRIPT`: runs for methods given no snippet (default `exit 2`).
//! - Any other `key=value` goes to the `config` snippet.
//!
//! Unlike sh, a missing `can_*` follows its callback: `pwrite` given means
//! writable, likewise `flush`, `trim`, `zero`, `extents`; `can_fua` is
//! emulated when `flush` is given and `can_cache` native when `cache` is.
//! There is no `load`. `--dump-plugin` prints what the `dump_plugin`
//! snippet prints, after `config`.
//!
//! Example: `nbdkit -U - eval get_size='echo 64M' pread='dd if=/dev/zero count=$3 iflag=count_bytes status=none'`

use std::collections::HashSet;
use std::sync::Arc;

use super::sh::script::{Program, Runner};
use super::sh::{dump_script, start, write_executable};
use super::PluginInfo;
use crate::backend::{Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

/// The methods a snippet may be given for.
const METHODS: &[&str] = &[
    "after_fork",
    "block_size",
    "cache",
    "can_cache",
    "can_extents",
    "can_fast_zero",
    "can_flush",
    "can_fua",
    "can_multi_conn",
    "can_trim",
    "can_write",
    "can_zero",
    "close",
    "config",
    "config_complete",
    "default_export",
    "dump_plugin",
    "export_description",
    "extents",
    "flush",
    "get_ready",
    "get_size",
    "is_rotational",
    "list_exports",
    "open",
    "pread",
    "preconnect",
    "pwrite",
    "thread_model",
    "trim",
    "unload",
    "zero",
];

/// The `eval` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "eval",
    description: "a plugin written as shell snippets on the command line",
    config_help:
        "METHOD=<SCRIPT>    A snippet for METHOD (get_size, pread, pwrite, can_write, ...)\n\
                  missing=<SCRIPT>   For methods without a snippet (default: exit 2)\n\
                  [other arguments]  Passed to the config snippet as: config KEY VALUE",
    magic_config_key: None,
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("max_known_status", "3")],
};

fn build(p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let choice = p.thread_model_choice();
    let (runner, rest) = prepare(p)?;
    start(runner, rest, true, "eval", &choice)
}

/// `--dump-plugin`: what the `dump_plugin` snippet prints.
pub(crate) fn dump(
    params: &[(String, String)],
) -> Result<Option<(ThreadModel, String)>, StartError> {
    let (runner, rest) = prepare(Params::new("eval", params.to_vec()))?;
    dump_script(&runner, &rest, "eval").map(Some)
}

/// The snippets, and the parameters left for the `config` snippet.
fn prepare(mut p: Params) -> Result<(Runner, Vec<(String, String)>), StartError> {
    let fail = |m: String| StartError(format!("eval: {m}"));
    let tmpdir = tempfile::Builder::new()
        .prefix("nbdkit-eval-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create $tmpdir: {e}")))?;
    let dir = tmpdir.path().join("methods");
    std::fs::create_dir(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let mut have = HashSet::new();
    for m in METHODS {
        if let Some(snippet) = p.take(m) {
            write_executable(&dir.join(m), format!("#!/bin/sh\n{snippet}\n").as_bytes())
                .map_err(fail)?;
            have.insert(m.to_string());
        }
    }
    let missing = dir.join("missing");
    let snippet = p.take("missing").unwrap_or_else(|| "exit 2".into());
    write_executable(&missing, format!("#!/bin/sh\n{snippet}\n").as_bytes()).map_err(fail)?;
    // Nothing is required at start-up, as in C: a missing get_size refuses
    // each client, a missing pread fails each read.
    let runner = Runner {
        program: Program::Snippets { dir, have, missing },
        tmpdir,
        name: "eval",
        closing: Default::default(),
    };
    Ok((runner, p.take_rest()))
}
