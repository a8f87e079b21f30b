//! Finding the `nbdkit` to run, and what it can do.
//!
//! The order, first match wins:
//! 1. [`Builder::binary`](crate::Builder::binary);
//! 2. the `NBDKIT_TEST_BIN` environment variable;
//! 3. the server compiled into the test executable itself (see
//!    `embedded.rs`): nothing needs to be installed.
//!
//! To test against C nbdkit, point either at it:
//! `NBDKIT_TEST_BIN=/usr/bin/nbdkit cargo test`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::{embedded, spawn};

/// The environment variable naming the binary to run.
pub const ENV_BIN: &str = "NBDKIT_TEST_BIN";

/// The server that serves a disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Server {
    /// An nbdkit executable (ours, or C nbdkit).
    Binary(PathBuf),
    /// The server compiled into this executable, which is re-executed.
    Embedded(PathBuf),
}

impl Server {
    /// A command that runs this server (arguments still to add).
    pub(crate) fn command(&self) -> Command {
        match self {
            Server::Binary(p) => Command::new(p),
            Server::Embedded(exe) => {
                let mut c = Command::new(exe);
                c.arg0("nbdkit").env(embedded::ENV, embedded::TOKEN);
                c
            }
        }
    }

    /// How the command line is shown: the binary, or `nbdkit` for the
    /// embedded server.
    pub(crate) fn display(&self) -> &std::ffi::OsStr {
        match self {
            Server::Binary(p) => p.as_os_str(),
            Server::Embedded(_) => std::ffi::OsStr::new("nbdkit"),
        }
    }
}

/// Resolve the server, or say what was wrong.
pub(crate) fn find(explicit: Option<&Path>) -> Result<Server, Error> {
    search(explicit, &|var| std::env::var_os(var))
}

/// The search itself, with the environment passed in so it can be tested.
fn search(
    explicit: Option<&Path>, var: &dyn Fn(&str) -> Option<OsString>,
) -> Result<Server, Error> {
    if let Some(p) = explicit {
        return if is_executable(p) {
            Ok(Server::Binary(p.to_path_buf()))
        } else {
            Err(Error::new(
                ErrorKind::BinaryNotFound,
                format!("nbdkit binary {} is not an executable file", p.display()),
            ))
        };
    }
    match var(ENV_BIN) {
        Some(v) if !v.is_empty() => {
            let p = PathBuf::from(v);
            if is_executable(&p) {
                return Ok(Server::Binary(p));
            }
            // An explicit setting that points nowhere is a mistake: do not
            // quietly fall back to something else.
            Err(Error::new(
                ErrorKind::BinaryNotFound,
                format!("{ENV_BIN}={} is not an executable file", p.display()),
            ))
        }
        _ => embedded::executable().map(Server::Embedded).map_err(|e| {
            Error::new(ErrorKind::BinaryNotFound, "cannot find the running test executable")
                .with_source(e)
        }),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Does this binary have `--print-uri` (ours, and C nbdkit from 1.34)?
/// Asked once per binary per process, from its `--help`; a probe that
/// fails is reported, not remembered.
pub(crate) fn has_print_uri(
    server: &Server, env: &[(OsString, OsString)], deadline: Instant,
) -> Result<bool, Error> {
    let bin = match server {
        Server::Binary(p) => p.as_path(),
        Server::Embedded(_) => return Ok(true),
    };
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
    fn order_is_explicit_env_embedded() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (exe(t.path(), "a"), exe(t.path(), "b"));
        let env = |val: PathBuf| move |name: &str| (name == ENV_BIN).then(|| val.clone().into());
        assert_eq!(search(Some(&a), &env(b.clone())).unwrap(), Server::Binary(a));
        assert_eq!(search(None, &env(b.clone())).unwrap(), Server::Binary(b));
        let me = std::env::current_exe().unwrap();
        assert_eq!(search(None, &none).unwrap(), Server::Embedded(me));
    }

    #[test]
    fn a_setting_that_points_nowhere_is_an_error() {
        let e = search(Some(Path::new("/no/such/nbdkit")), &none).unwrap_err();
        assert!(e.to_string().contains("/no/such/nbdkit"), "{e}");
        let bad = |name: &str| (name == ENV_BIN).then(|| OsString::from("/no/such"));
        let e = search(None, &bad).unwrap_err();
        assert!(e.to_string().starts_with("NBDKIT_TEST_BIN=/no/such"), "{e}");
    }
}
