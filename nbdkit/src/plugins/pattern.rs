//! `pattern`: a read-only disk where every 8-byte word holds its own offset,
//! big-endian (bytes 8..16 read `00 00 00 00 00 00 00 08`).
//!
//! - `size=SIZE` (magic key; default 0, as C nbdkit's code does): the size.
//!
//! Handy to check that a client reads what it thinks it reads: any byte's
//! value follows from its offset.
//!
//! Example: `nbdkit -U - pattern 1G --run 'nbdcopy "$uri" - | sha256sum'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Cache, Caps, Flags, Handle, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

/// The `pattern` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "pattern",
    description: "a read-only disk whose every 8-byte word holds its own offset",
    config_help: "[size=]<SIZE>               Size of the disk (default 0)",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let size = p.take_size("size")?.unwrap_or(0);
    p.finish()?;
    Ok(Arc::new(Shared(Arc::new(Disk(size)))))
}

struct Disk(u64);

/// Fill `buf` with the pattern as seen from `offset`.
pub fn fill(buf: &mut [u8], offset: u64) {
    let head = ((8 - offset % 8) % 8).min(buf.len() as u64) as usize;
    if head > 0 {
        let word = (offset & !7).to_be_bytes();
        let at = (offset % 8) as usize;
        buf[..head].copy_from_slice(&word[at..at + head]);
    }
    let mut pos = offset + head as u64;
    let mut chunks = buf[head..].chunks_exact_mut(8);
    for c in &mut chunks {
        c.copy_from_slice(&pos.to_be_bytes());
        pos += 8;
    }
    let tail = chunks.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&pos.to_be_bytes()[..n]);
}

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.0)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps { cache: Cache::Native, multi_conn: true, ..Caps::READ_ONLY })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        fill(buf, offset);
        Ok(())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::fill;

    #[test]
    fn every_alignment() {
        let mut whole = vec![0u8; 64];
        fill(&mut whole, 0);
        assert_eq!(&whole[8..16], &8u64.to_be_bytes());
        for start in 0..24 {
            for len in 0..30 {
                let mut b = vec![0xaau8; len];
                fill(&mut b, start as u64);
                assert_eq!(&b[..], &whole[start..start + len], "{start}+{len}");
            }
        }
    }
}
