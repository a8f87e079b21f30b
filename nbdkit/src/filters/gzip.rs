//! `gzip`: serve the uncompressed contents of a gzip file the plugin
//! serves.
//!
//! No parameters. The first client's open decompresses the whole file
//! (flate2, pure Rust) into an unlinked temporary file in `$TMPDIR`
//! (default `/var/tmp`), which every connection then reads. The export is
//! read-only and reports no holes.
//!
//! Example: `nbdkit --filter=gzip file disk.img.gz`

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::FilterInfo;
use crate::backend::{Cache, Caps, Errno, Error, Filter, Flags, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `gzip` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "gzip",
    description: "decompress a gzip-compressed disk image",
    config_help: "(no parameters)",
    build,
};

/// How a compressed stream is turned into plain bytes.
pub(crate) type Decoder = fn(Box<dyn Read + '_>, &mut dyn std::io::Write) -> std::io::Result<()>;

fn gunzip(r: Box<dyn Read + '_>, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut d = flate2::read::MultiGzDecoder::new(r);
    std::io::copy(&mut d, w).map(drop)
}

fn build(_p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(Decompress::new("gzip", gunzip)))
}

/// The shared machinery of the gzip and xz filters.
pub(crate) struct Decompress {
    name: &'static str,
    decode: Decoder,
    /// The plain bytes, made once: (file, size).
    plain: OnceCell<Arc<(File, u64)>>,
}

impl Decompress {
    pub(crate) fn new(name: &'static str, decode: Decoder) -> Decompress {
        Decompress { name, decode, plain: OnceCell::new() }
    }

    /// Decompress everything the layer below serves into a temporary file.
    async fn inflate(&self, below: Arc<dyn Handle>) -> Result<Arc<(File, u64)>> {
        let size = below.size().await?;
        let rt = tokio::runtime::Handle::current();
        let name = self.name;
        let decode = self.decode;
        tokio::task::block_in_place(move || {
            let dir = std::env::var_os("TMPDIR").unwrap_or_else(|| "/var/tmp".into());
            let mut out = tempfile::tempfile_in(dir)?;
            let reader = Below { h: below, rt, pos: 0, size };
            decode(Box::new(reader), &mut out)?;
            let len = out.metadata()?.len();
            Ok::<_, std::io::Error>(Arc::new((out, len)))
        })
        .map_err(|e| Error::new(Errno::Io, format!("{name}: {}", crate::error::io_message(&e))))
    }
}

/// The compressed bytes, read through the layer below.
struct Below {
    h: Arc<dyn Handle>,
    rt: tokio::runtime::Handle,
    pos: u64,
    size: u64,
}

impl Read for Below {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = ((self.size - self.pos) as usize).min(buf.len()).min(1 << 20);
        if n == 0 {
            return Ok(0);
        }
        self.rt
            .block_on(self.h.pread(&mut buf[..n], self.pos, Flags::default()))
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[async_trait]
impl Filter for Decompress {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let below = next.open(&args.with_readonly(true)).await?;
        let plain = self.plain.get_or_try_init(|| self.inflate(below)).await?.clone();
        Ok(Arc::new(Plain(plain)))
    }
}

/// A connection's view of the decompressed bytes.
struct Plain(Arc<(File, u64)>);

#[async_trait]
impl Handle for Plain {
    async fn size(&self) -> Result<u64> {
        Ok(self.0 .1)
    }
    async fn caps(&self) -> Result<Caps> {
        Ok(Caps { cache: Cache::Emulate, multi_conn: true, ..Caps::READ_ONLY })
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        tokio::task::block_in_place(|| self.0 .0.read_exact_at(buf, offset)).map_err(Error::from)
    }
}
