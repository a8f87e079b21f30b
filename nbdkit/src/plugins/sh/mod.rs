//! `sh`: a plugin written as a script (or any executable), called once per
//! method as nbdkit-sh-plugin(3) describes.
//!
//! - `script=PATH` (magic key, so `nbdkit sh ./disk.sh` works; `-` reads
//!   the script from stdin): run as `PATH METHOD ARGS...`, with `$tmpdir`
//!   a private directory removed when nbdkit exits.
//! - Every other `key=value` is passed on as `PATH config KEY VALUE`.
//!
//! Exit status 0 is success, 2 "not implemented", 3 "false" (for `can_*`
//! and `is_rotational`); any other status is an error, the errno being the
//! first word on stderr (`ENOSPC Out of space`), else EIO. As in C nbdkit
//! 1.32, statuses 4 and above are plain errors. Start-up calls: `load`,
//! `config`, `config_complete`, `thread_model` (default, and for output it
//! does not recognise, `serialize_all_requests`), `get_ready`. Per connection: `open`
//! (prints the handle), `get_size`, `block_size`, the `can_*` methods
//! (missing means false: a script must say what it can do),
//! `is_rotational`, `export_description`, then `pread`, `pwrite` (data on
//! stdin), `flush`, `trim`, `zero`, `extents`, `cache`, and `close`.
//! `list_exports` and `default_export` answer the handshake,
//! `preconnect` (an error refuses the client) comes before it, and `unload`
//! runs as nbdkit exits. `--dump-plugin` runs `load`, `config` and then
//! `dump_plugin`, and prints what it prints. Not supported:
//! `magic_config_key`.
//!
//! Example: `nbdkit -U - sh ./disk.sh --run 'nbdinfo "$uri"'`

pub(crate) mod script;
#[doc(hidden)]
pub use script::fuzz_outputs;

use std::path::PathBuf;
use std::sync::Arc;

use super::PluginInfo;
use crate::backend::{Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::{Params, ThreadModelChoice};
use script::{Outcome, Program, Runner, ScriptPlugin};

/// The `sh` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "sh",
    description: "a plugin written as a shell script (or any executable)",
    config_help: "script=<FILENAME>     (required) The script to run ('-' reads stdin).\n\
                  [other arguments]     Passed to the script as: config KEY VALUE",
    magic_config_key: Some("script"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("max_known_status", "3")],
};

fn build(p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let choice = p.thread_model_choice();
    let (runner, rest) = prepare(p)?;
    start(runner, rest, false, "sh", &choice)
}

/// `--dump-plugin`: the script's thread model and `dump_plugin` output
/// (nothing without a script).
pub(crate) fn dump(
    params: &[(String, String)],
) -> Result<Option<(ThreadModel, String)>, StartError> {
    if !params.iter().any(|(k, _)| k == "script") {
        return Ok(None);
    }
    let (runner, rest) = prepare(Params::new("sh", params.to_vec()))?;
    dump_script(&runner, &rest, "sh").map(Some)
}

/// The script to run, and the parameters left for its `config`.
fn prepare(mut p: Params) -> Result<(Runner, Vec<(String, String)>), StartError> {
    let fail = |m: String| StartError(format!("sh: {m}"));
    let mut scripts = p.take_all("script");
    if scripts.len() > 1 {
        return Err(fail(
            "script= can only be given once (the first bare value is the script)".into(),
        ));
    }
    let Some(script) = scripts.pop() else {
        return Err(fail("you must supply script=<FILENAME>".into()));
    };
    let tmpdir = tempfile::Builder::new()
        .prefix("nbdkit-sh-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create $tmpdir: {e}")))?;
    if script == "-" && !p.stdio_safe() {
        return Err(fail("inline script is incompatible with -s".into()));
    }
    let path = if script == "-" {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text)
            .map_err(|e| fail(format!("reading the script from stdin: {e}")))?;
        let p = tmpdir.path().join("inline-script.sh");
        write_executable(&p, &text).map_err(fail)?;
        p
    } else {
        let p = PathBuf::from(&script);
        let p = std::fs::canonicalize(&p)
            .map_err(|e| fail(format!("{script}: {}", crate::error::io_message(&e))))?;
        if !is_executable(&p) {
            return Err(fail(format!("{script}: not an executable file")));
        }
        p
    };
    let runner = Runner {
        program: Program::File { via_shell: !runs_directly(&path), path },
        tmpdir,
        name: "sh",
        closing: Default::default(),
    };
    Ok((runner, p.take_rest()))
}

/// Whether the kernel runs `path` itself: a `#!` script or an ELF
/// program. Anything else is a shell script for `/bin/sh`.
fn runs_directly(path: &std::path::Path) -> bool {
    let mut head = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    head[..n].starts_with(b"#!") || head[..n] == *b"\x7fELF"
}

/// The start-up sequence both script plugins share: load (sh only),
/// config for each parameter, config_complete, thread_model, get_ready.
pub(crate) fn start(
    runner: Runner, config: Vec<(String, String)>, infer_caps: bool, name: &str,
    choice: &ThreadModelChoice,
) -> Result<Arc<dyn Plugin>, StartError> {
    let must = |method: &str, args: &[&str]| must(&runner, method, args, name);
    configure(&runner, &config, name)?;
    must("config_complete", &[])?;
    choice.narrow(script_thread_model(&runner, name)?);
    must("get_ready", &[])?;
    Ok(Arc::new(ScriptPlugin { runner: Arc::new(runner), infer_caps }))
}

/// The script's `thread_model`; without one, `serialize_all_requests`, as
/// in C.
fn script_thread_model(runner: &Runner, name: &str) -> Result<ThreadModel, StartError> {
    Ok(match must(runner, "thread_model", &[], name)? {
        None => ThreadModel::SerializeAllRequests,
        Some(out) => match String::from_utf8_lossy(&out).trim() {
            "serialize_connections" => ThreadModel::SerializeConnections,
            "serialize_all_requests" => ThreadModel::SerializeAllRequests,
            "serialize_requests" => ThreadModel::SerializeRequests,
            "parallel" => ThreadModel::Parallel,
            // As C: output it does not recognise is ignored.
            _ => ThreadModel::SerializeAllRequests,
        },
    })
}

/// Run a start-up method: its output, None if missing (or false), or the
/// error it reported.
fn must(
    runner: &Runner, method: &str, args: &[&str], name: &str,
) -> Result<Option<Vec<u8>>, StartError> {
    match runner.call_sync(method, args) {
        Outcome::Ok(out) => Ok(Some(out)),
        Outcome::Missing | Outcome::False => Ok(None),
        Outcome::Failed(e) => {
            Err(StartError(format!("{name}: {}", e.msg.trim_start_matches(&format!("{name}: ")))))
        }
    }
}

/// `load` (sh only), then `config` for each parameter.
fn configure(runner: &Runner, config: &[(String, String)], name: &str) -> Result<(), StartError> {
    if name == "sh" {
        must(runner, "load", &[], name)?;
    }
    for (k, v) in config {
        if must(runner, "config", &[k, v], name)?.is_none() {
            return Err(StartError(format!(
                "{name}: unknown parameter '{k}' (the script has no config method)"
            )));
        }
    }
    Ok(())
}

/// `--dump-plugin` for a script plugin: as C, `load` and `config` run (not
/// `config_complete`), then `thread_model` (the script's choice is the
/// `thread_model=` line) and `dump_plugin`, whose output is printed as it
/// is (nothing if it is missing or fails), then `unload`.
pub(crate) fn dump_script(
    runner: &Runner, config: &[(String, String)], name: &str,
) -> Result<(ThreadModel, String), StartError> {
    configure(runner, config, name)?;
    let thread_model = script_thread_model(runner, name)?;
    let out = match runner.call_sync("dump_plugin", &[]) {
        Outcome::Ok(out) => String::from_utf8_lossy(&out).into_owned(),
        Outcome::Missing | Outcome::Failed(_) => String::new(),
        Outcome::False => {
            crate::log::Log::default()
                .error(&format!("{name}: dump_plugin method returned unexpected code (3/false)"));
            String::new()
        }
    };
    let _ = runner.call_sync("unload", &[]);
    Ok((thread_model, out))
}

fn is_executable(p: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Write a script file the plugin can exec.
pub(crate) fn write_executable(
    p: &std::path::Path, text: &[u8],
) -> std::result::Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("{}: {e}", p.display()))
}
