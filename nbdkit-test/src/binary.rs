//! Finding the `nbdkit` to run, and what it can do.
//!
//! The order, first match wins:
//! 1. [`Builder::binary`](crate::Builder::binary);
//! 2. the `NBDKIT_TEST_BIN` environment variable;
//! 3. `CARGO_BIN_EXE_nbdkit` in the environment (pass it explicitly with
//!    `.binary(env!("CARGO_BIN_EXE_nbdkit"))` from a crate that builds an
//!    `nbdkit` binary: cargo only sets it at compile time);
//! 4. an `nbdkit` in the cargo target directory of the running test
//!    (beside `target/debug/deps/`), then in this workspace's
//!    `target/debug` and `target/release`;
//! 5. `nbdkit` on `PATH`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::spawn;

/// The environment variable naming the binary to run.
pub const ENV_BIN: &str = "NBDKIT_TEST_BIN";

/// Resolve the binary, or say everything that was tried.
pub(crate) fn find(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    search(
        explicit,
        &|var| std::env::var_os(var),
        target_candidates(),
        std::env::var_os("PATH").unwrap_or_default(),
    )
}

/// The search itself, with the environment passed in so it can be tested.
fn search(
    explicit: Option<&Path>, var: &dyn Fn(&str) -> Option<OsString>, targets: Vec<PathBuf>,
    path: OsString,
) -> Result<PathBuf, Error> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(p.to_path_buf())
        } else {
            Err(Error::new(
                ErrorKind::BinaryNotFound,
                format!("nbdkit binary {} is not an executable file", p.display()),
            ))
        };
    }
    let mut tried = Vec::new();
    for name in [ENV_BIN, "CARGO_BIN_EXE_nbdkit"] {
        match var(name) {
            Some(v) if !v.is_empty() => {
                let p = PathBuf::from(v);
                if is_executable(&p) {
                    return Ok(p);
                }
                // An explicit setting that points nowhere is a mistake:
                // do not quietly fall back to something else.
                return Err(Error::new(
                    ErrorKind::BinaryNotFound,
                    format!("{name}={} is not an executable file", p.display()),
                ));
            }
            _ => tried.push(format!("${name} (unset)")),
        }
    }
    for p in targets {
        if is_executable(&p) {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    for dir in std::env::split_paths(&path) {
        let p = dir.join("nbdkit");
        if is_executable(&p) {
            return Ok(p);
        }
    }
    tried.push(format!("nbdkit on PATH ({})", path.to_string_lossy()));
    Err(Error::new(
        ErrorKind::BinaryNotFound,
        format!(
            "no nbdkit binary found; tried: {}. Build it (cargo build -p nbdkit), \
             install it, set {ENV_BIN}, or call Builder::binary",
            tried.join(", ")
        ),
    ))
}

/// Cargo target directories near us, most specific first.
fn target_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    // A test binary lives in target/<profile>/deps/, an example in
    // target/<profile>/examples/; the package's binaries sit one level up.
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps" || n == "examples") {
                if let Some(profile) = deps.parent() {
                    out.push(profile.join("nbdkit"));
                }
            } else {
                out.push(deps.join("nbdkit"));
            }
        }
    }
    let mut roots: Vec<PathBuf> = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        roots.push(PathBuf::from(t));
    }
    // This crate's own workspace, as it was when it was compiled.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    roots.push(manifest.parent().unwrap_or(manifest).join("target"));
    for root in roots {
        for profile in ["debug", "release"] {
            let p = root.join(profile).join("nbdkit");
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Does this binary have `--print-uri` (ours, and C nbdkit from 1.34)?
/// Asked once per binary per process, from its `--help`; a probe that
/// fails is reported, not remembered.
pub(crate) fn has_print_uri(
    bin: &Path, env: &[(OsString, OsString)], deadline: Instant,
) -> Result<bool, Error> {
    static CACHE: Mutex<Option<HashMap<PathBuf, bool>>> = Mutex::new(None);
    let cached = |f: &dyn Fn(&mut HashMap<PathBuf, bool>) -> Option<bool>| {
        f(CACHE.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new))
    };
    if let Some(v) = cached(&|m| m.get(bin).copied()) {
        return Ok(v);
    }
    let shown = format!("{} --help", bin.display());
    let mut cmd = Command::new(bin);
    cmd.arg("--help")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = spawn::spawn_retrying(&mut cmd)
        .map_err(|e| Error::new(ErrorKind::Spawn, format!("cannot run {shown}")).with_source(e))?;
    let out = child.stdout.take().map(OwnedFd::from);
    let text = out.and_then(|o| spawn::read_all(&o, deadline));
    let Some(text) = text else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::new(
            ErrorKind::Timeout,
            format!("{shown} did not finish before the start timeout"),
        ));
    };
    let _ = child.wait();
    let v = String::from_utf8_lossy(&text).contains("--print-uri");
    cached(&|m| {
        m.insert(bin.to_path_buf(), v);
        None
    });
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn exe(dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn none(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn order_is_explicit_env_cargo_target_path() {
        let t = tempfile::tempdir().unwrap();
        let (a, b, c) = (exe(t.path(), "a"), exe(t.path(), "b"), exe(t.path(), "c/nbdkit"));
        let target = exe(t.path(), "target/debug/nbdkit");
        let path = OsString::from(t.path().join("c"));
        let env = |want: &'static str, val: PathBuf| {
            move |name: &str| (name == want).then(|| val.clone().into_os_string())
        };
        let found = |explicit: Option<&Path>, var: &dyn Fn(&str) -> Option<OsString>, targets| {
            search(explicit, var, targets, path.clone()).unwrap()
        };
        assert_eq!(found(Some(&a), &env(ENV_BIN, b.clone()), vec![]), a);
        assert_eq!(found(None, &env(ENV_BIN, b.clone()), vec![target.clone()]), b);
        assert_eq!(found(None, &env("CARGO_BIN_EXE_nbdkit", a.clone()), vec![target.clone()]), a);
        assert_eq!(found(None, &none, vec![target.clone()]), target);
        assert_eq!(found(None, &none, vec![]), c);
    }

    #[test]
    fn a_setting_that_points_nowhere_is_an_error() {
        let e = search(Some(Path::new("/no/such/nbdkit")), &none, vec![], "".into()).unwrap_err();
        assert!(e.to_string().contains("/no/such/nbdkit"), "{e}");
        let bad = |name: &str| (name == ENV_BIN).then(|| OsString::from("/no/such"));
        let e = search(None, &bad, vec![], "".into()).unwrap_err();
        assert!(e.to_string().starts_with("NBDKIT_TEST_BIN=/no/such"), "{e}");
    }

    #[test]
    fn not_found_lists_everything_tried() {
        let e = search(None, &none, vec!["/t/debug/nbdkit".into()], "/p1:/p2".into()).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::BinaryNotFound));
        let msg = e.to_string();
        for want in [
            "$NBDKIT_TEST_BIN (unset)",
            "$CARGO_BIN_EXE_nbdkit (unset)",
            "/t/debug/nbdkit",
            "PATH (/p1:/p2)",
        ] {
            assert!(msg.contains(want), "{want} missing from {msg}");
        }
    }
}
