//! `ondemand`: a persistent filesystem per export name, created the first
//! time a client asks for it.
//!
//! - `dir=DIR` (required): where the filesystems live, one file per export.
//! - `size=SIZE` (required; magic key), `type=FS` (default `ext4`),
//!   `label=LABEL` and `command=SCRIPT`: as for the tmpdisk plugin.
//! - `wait=true`: a client asking for an export in use waits for it,
//!   instead of being refused ("filesystem is locked by another client").
//!
//! Export names are at most 255 bytes and may not contain `.`, `/` or `:`;
//! the default export `""` is the file `default`. Each file is locked
//! (`flock`) while a client uses it. `nbdinfo --list` shows `""` (not
//! `default`, as in C) and every other file in the directory that is a
//! valid name. Capabilities are as tmpdisk's.
//!
//! Example: `nbdkit -U - ondemand dir=/var/tmp/exports 1G`

use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::tmpdisk::{Maker, Private};
use super::PluginInfo;
use crate::backend::{Errno, Error, ExportEntry, Handle, OpenArgs, Plugin, Result, ThreadModel};
use crate::error::{io_message, StartError};
use crate::params::Params;

/// The `ondemand` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "ondemand",
    description: "a persistent filesystem per export name, made on demand",
    config_help: "dir=<EXPORTSDIR>            (required) Directory containing filesystems.\n\
                  [size=]<SIZE>               (required) Virtual filesystem size.\n\
                  type=<TYPE>                 The filesystem type (default ext4).\n\
                  label=<LABEL>               The filesystem label.\n\
                  command=<COMMAND>           Alternate command instead of mkfs.\n\
                  wait=true|false             Wait for a locked filesystem (default false).",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

struct OnDemand {
    dir: PathBuf,
    wait: bool,
    maker: Maker,
    /// Making a new export is one client at a time: two clients asking for
    /// the same new name must not both make (and rename over) it.
    making: std::sync::Mutex<()>,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let dir = p
        .take("dir")
        .ok_or_else(|| StartError("ondemand: you must supply dir=<EXPORTSDIR>".into()))?;
    let wait = p.take_bool("wait")?.unwrap_or(false);
    let maker = Maker::from_params(&mut p, "ondemand")?;
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(StartError(format!("ondemand: dir={dir}: not a directory"))),
        Err(e) => return Err(StartError(format!("ondemand: dir={dir}: {}", io_message(&e)))),
    }
    Ok(Arc::new(OnDemand { dir: dir.into(), wait, maker, making: std::sync::Mutex::new(()) }))
}

/// Export names that may become file names here.
fn valid(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && !name.contains(['.', '/', ':'])
}

#[async_trait]
impl Plugin for OnDemand {
    async fn default_export(&self, _readonly: bool, _is_tls: bool) -> Result<String> {
        Ok("default".into())
    }

    async fn list_exports(&self, _readonly: bool, _is_tls: bool) -> Result<Vec<ExportEntry>> {
        let entry = |name: String| ExportEntry { name, description: None };
        let mut out = vec![entry(String::new())];
        let names = tokio::task::block_in_place(|| -> std::io::Result<Vec<String>> {
            let mut v = Vec::new();
            for e in std::fs::read_dir(&self.dir)? {
                let name = e?.file_name().to_string_lossy().into_owned();
                if valid(&name) && name != "default" {
                    v.push(name);
                }
            }
            Ok(v)
        })?;
        out.extend(names.into_iter().map(entry));
        Ok(out)
    }

    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (readonly, export) = (args.readonly, args.export);
        if !valid(export) {
            return Err(Error::new(
                Errno::Inval,
                format!("invalid export name {export:?} (at most 255 bytes, no '.', '/' or ':')"),
            ));
        }
        let path = self.dir.join(export);
        let file = tokio::task::block_in_place(|| -> std::io::Result<std::fs::File> {
            let _making = self.making.lock().unwrap_or_else(|e| e.into_inner());
            if !path.exists() {
                // Made under a temporary name and renamed into place, so a
                // half-made filesystem is never served.
                let tmp = tempfile::Builder::new().prefix(".new-").tempdir_in(&self.dir)?;
                let disk = tmp.path().join("disk");
                self.maker.make(&disk)?;
                std::fs::rename(&disk, &path)?;
            }
            let f = std::fs::OpenOptions::new().read(true).write(true).open(&path)?;
            let op = if self.wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
            // SAFETY: flock on our own descriptor; released when it closes.
            if unsafe { libc::flock(f.as_raw_fd(), op) } == -1 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(std::io::Error::other("filesystem is locked by another client"));
                }
                return Err(e);
            }
            Ok(f)
        })
        .map_err(|e| Error::new(Errno::Io, format!("{export}: {}", io_message(&e))))?;
        let inner = super::file::whole_file(file, !readonly)?;
        Ok(Arc::new(Private(inner)))
    }
}
