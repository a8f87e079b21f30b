//! `xz`: serve the uncompressed contents of an xz file the plugin serves.
//!
//! - `xz-max-block=SIZE`, `xz-max-depth=N`: accepted for compatibility;
//!   they tune C nbdkit's block cache, which this filter does not have.
//!
//! Unlike C nbdkit, which decompresses xz blocks on demand, the first
//! client's open decompresses the whole stream (lzma-rs, pure Rust) into an
//! unlinked temporary file, as the gzip filter does. The export is
//! read-only.
//!
//! Example: `nbdkit --filter=xz file disk.img.xz`

use std::io::Read;
use std::sync::Arc;

use super::gzip::Decompress;
use super::FilterInfo;
use crate::backend::Filter;
use crate::error::StartError;
use crate::params::Params;

/// The `xz` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "xz",
    description: "decompress an xz-compressed disk image",
    config_help: "xz-max-block=<SIZE>           (ignored: no block cache here)\n\
                  xz-max-depth=<N>              (ignored: no block cache here)",
    build,
};

fn unxz(r: Box<dyn Read + '_>, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut r = std::io::BufReader::new(r);
    lzma_rs::xz_decompress(&mut r, &mut std::io::BufWriter::new(w))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}")))
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    p.take_size("xz-max-block")?;
    let _ = p.take("xz-max-depth");
    Ok(Arc::new(Decompress::new("xz", unxz)))
}
