//! `example2`: serve a file read-only; the smallest plugin with a debug flag.
//!
//! - `file=FILENAME` (required): the file to serve, resolved to an absolute
//!   path at start-up. Each connection opens it and serves it as it is then
//!   (its size is looked up on connect).
//!
//! Read-only; requests are serialized across all connections, as in C
//! nbdkit's example2. `--dump-plugin` adds `example2_extra=hello`.
//!
//! Debug flag: `-D example2.extra=1` (with `-v`) logs the file's size when
//! a client connects.
//!
//! Example: `nbdkit -U - -v -D example2.extra=1 example2 file=disk.img --run 'nbdinfo "$uri"'`

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::{Caps, Error, Flags, Handle, OpenArgs, Plugin, Result, ThreadModel};
use crate::error::{io_message, StartError};
use crate::params::Params;

/// The `example2` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "example2",
    description: "serve a file read-only (an example with a debug flag)",
    config_help: "file=<FILENAME>     (required) The filename to serve.",
    magic_config_key: None,
    thread_model: ThreadModel::SerializeAllRequests,
    build,
    dump: &[("example2_extra", "hello")],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    // Asked first, so that a flag is known even when the rest fails.
    let extra = (p.debug_flag("extra") != 0).then(|| p.log());
    let file = p.take("file");
    p.finish()?;
    let Some(file) = file else {
        return Err(StartError(
            "example2: you must supply the file=<FILENAME> parameter after the plugin name on the command line".into(),
        ));
    };
    let path = std::fs::canonicalize(&file)
        .map_err(|e| StartError(format!("example2: realpath: {file}: {}", io_message(&e))))?;
    Ok(Arc::new(Example2 { path, extra }))
}

struct Example2 {
    path: PathBuf,
    /// With `-D example2.extra=1`, the log to say more in.
    extra: Option<crate::log::Log>,
}

#[async_trait]
impl Plugin for Example2 {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (_readonly, _export) = (args.readonly, args.export);
        let file = File::open(&self.path).map_err(|e| {
            let e = Error::from(e);
            Error::new(e.errno, format!("open: {}: {}", self.path.display(), e.msg))
        })?;
        Ok(Arc::new(Conn { file, extra: self.extra.clone() }))
    }
}

struct Conn {
    file: File,
    extra: Option<crate::log::Log>,
}

#[async_trait]
impl Handle for Conn {
    async fn size(&self) -> Result<u64> {
        let size = self.file.metadata()?.len();
        if let Some(log) = &self.extra {
            log.debug(&format!("extra debugging: the file is {size} bytes"));
        }
        Ok(size)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps::READ_ONLY)
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        super::file::read_file(&self.file, buf, offset).map_err(Error::from)
    }
}
