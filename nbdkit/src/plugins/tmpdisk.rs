//! `tmpdisk`: a fresh, private filesystem for each client, deleted when
//! the client disconnects.
//!
//! - `size=SIZE` (required; magic key): the disk size (with `command=`,
//!   only a suggestion: the disk is whatever the command makes).
//! - `type=FS` (default `ext4`) and `label=LABEL`: passed to mkfs.
//! - `command=SCRIPT`: run this shell snippet instead of mkfs. It gets
//!   `$disk` (the file to create, absolute), `$size` (in bytes), and every
//!   parameter of the plugin as a variable (`$type`, `$label`, or any other
//!   `key=value` given).
//!
//! Each client's disk is created in `$TMPDIR` (default `/var/tmp`) and is
//! gone (unlinked, then closed) when it disconnects. As C's, the export is
//! writable, with flush, FUA, trim and zero (fast zero too), and no
//! extents, cache or multi-conn.
//!
//! Example: `nbdkit -U - tmpdisk 1G --run 'nbdinfo "$uri"'`

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::{
    BlockSize, Cache, Caps, Errno, Error, Extents, Flags, Handle, OpenArgs, Plugin, Result,
    ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;

/// The `tmpdisk` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "tmpdisk",
    description: "a fresh filesystem for each client, deleted on disconnect",
    config_help: "[size=]<SIZE>               (required) Virtual filesystem size.\n\
                  type=<TYPE>                  The filesystem type (default ext4).\n\
                  label=<LABEL>                The filesystem label.\n\
                  command=<COMMAND>            Alternate command instead of mkfs.",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

/// The default command: mkfs with the options each filesystem wants to
/// format a file without asking, and its label option.
const MKFS: &str = r#"
type="${type:-ext4}"
labelopt=-L
case "$type" in
    ext?) extra=-F ;;
    *fat|msdos) extra=-I ;;
    ntfs) extra='-Q -F'; labelopt=-n ;;
    xfs) extra=-f ;;
    *) extra= ;;
esac
truncate -s "$size" "$disk"
if [ -z "$label" ]; then
    mkfs -t "$type" $extra "$disk"
else
    mkfs -t "$type" $extra $labelopt "$label" "$disk"
fi
"#;

/// How disks are made (shared with ondemand).
pub(crate) struct Maker {
    command: String,
    /// `size`, `type`, `label` and any other parameters, as variables.
    vars: BTreeMap<String, String>,
}

impl Maker {
    /// Take `size=`, `type=`, `label=`, `command=` and the rest of `p`.
    pub(crate) fn from_params(p: &mut Params, owner: &str) -> Result<Maker, StartError> {
        let size = p.require_size("size")?;
        let command = p.take("command").unwrap_or_else(|| MKFS.to_string());
        let mut vars: BTreeMap<String, String> = p.take_rest().into_iter().collect();
        for k in vars.keys() {
            if k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                || k.as_bytes()[0].is_ascii_digit()
            {
                return Err(StartError(format!(
                    "{owner}: parameter '{k}' cannot be a shell variable name"
                )));
            }
        }
        vars.insert("size".into(), size.to_string());
        Ok(Maker { command, vars })
    }

    /// Run the command to create `disk` (blocking: call it off the runtime).
    pub(crate) fn make(&self, disk: &Path) -> std::io::Result<()> {
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(&self.command)
            .envs(&self.vars)
            .env("disk", disk)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            return Err(std::io::Error::other(format!(
                "command failed ({}){}{last}",
                out.status,
                if last.is_empty() { "" } else { ": " }
            )));
        }
        Ok(())
    }
}

struct TmpDisk {
    maker: Maker,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let maker = Maker::from_params(&mut p, "tmpdisk")?;
    Ok(Arc::new(TmpDisk { maker }))
}

#[async_trait]
impl Plugin for TmpDisk {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (readonly, _export) = (args.readonly, args.export);
        let file = tokio::task::block_in_place(|| -> std::io::Result<std::fs::File> {
            let base = std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into());
            let dir = tempfile::Builder::new().prefix("tmpdisk").tempdir_in(base)?;
            let disk = dir.path().join("disk");
            self.maker.make(&disk)?;
            // Open it, then let the directory (and the name) go: the disk
            // lives exactly as long as this connection's descriptor.
            std::fs::OpenOptions::new().read(true).write(true).open(&disk)
        })
        .map_err(|e| Error::new(Errno::Io, crate::error::io_message(&e)))?;
        let inner = super::file::whole_file(file, !readonly)?;
        Ok(Arc::new(Private(inner)))
    }
}

/// A private disk: the file plugin's handle, with the capabilities C's
/// tmpdisk and ondemand plugins advertise.
pub(crate) struct Private(pub(crate) Arc<dyn Handle>);

#[async_trait]
impl Handle for Private {
    async fn size(&self) -> Result<u64> {
        self.0.size().await
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.0.caps().await?;
        c.cache = Cache::None;
        c.extents = false;
        c.multi_conn = false;
        c.fast_zero = true;
        Ok(c)
    }
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        self.0.block_size().await
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, f: Flags) -> Result<()> {
        self.0.pread(buf, offset, f).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, f: Flags) -> Result<()> {
        self.0.pwrite(buf, offset, f).await
    }
    async fn flush(&self, f: Flags) -> Result<()> {
        self.0.flush(f).await
    }
    async fn trim(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        self.0.trim(count, offset, f).await
    }
    async fn zero(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        self.0.zero(count, offset, f).await
    }
    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        self.0.extents(count, offset, f, ext).await
    }
}
