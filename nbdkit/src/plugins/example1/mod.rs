//! `example1`: a small, read-only example disk built into nbdkit.
//!
//! No parameters. Serves 100 MiB with the shape of C nbdkit's example1: an
//! MBR partition table with one Linux (0x83) partition. Ours is of our own
//! making: the partition starts at sector 2048 and holds an ext2
//! filesystem labelled `example1` with one file, `hello.txt`. The
//! filesystem is stored as its non-zero bytes only (`fs.runs`, under 3 KiB;
//! `make-fs.sh` regenerates it). As C's, the disk is read-only and offers
//! no flush, trim, zero, cache or multi-conn, and extents report it all as
//! data. (C's partition is empty and starts at sector 128; its MBR carries
//! boot code, ours none.)
//!
//! Example: `nbdkit -U - example1 --run 'qemu-img convert "$nbd" disk.img'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Caps, Flags, Handle, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;

/// The `example1` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "example1",
    description: "a small read-only example disk (MBR, one ext2 partition)",
    config_help: "(no parameters)",
    magic_config_key: None,
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

/// The whole disk: 100 MiB.
const SIZE: u64 = 100 << 20;
const SECTOR: u64 = 512;
/// The partition: from sector 2048 to the end.
const PART_START: u64 = 2048;
const PART_SECTORS: u64 = SIZE / SECTOR - PART_START;

/// The filesystem's non-zero bytes (see `make-fs.sh` for the format).
static FS_RUNS: &[u8] = include_bytes!("fs.runs");

fn build(p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    p.finish()?;
    let mut runs = vec![(0, mbr().to_vec())];
    runs.extend(fs_runs(FS_RUNS).map_err(|m| StartError(format!("example1: {m}")))?);
    Ok(Arc::new(Shared(Arc::new(Disk { runs }))))
}

/// The MBR: no boot code, a disk signature, one partition, 0x55 0xAA.
fn mbr() -> [u8; 512] {
    let mut m = [0u8; 512];
    m[440..444].copy_from_slice(b"nbk1");
    let e = &mut m[446..462];
    e[0] = 0; // not bootable
    e[1..4].copy_from_slice(&chs(PART_START));
    e[4] = 0x83; // Linux
    e[5..8].copy_from_slice(&chs(PART_START + PART_SECTORS - 1));
    e[8..12].copy_from_slice(&(PART_START as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(PART_SECTORS as u32).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// A sector's cylinder/head/sector address, for 255 heads and 63 sectors
/// per track, as MBR entries store it.
fn chs(lba: u64) -> [u8; 3] {
    let (heads, sectors) = (255, 63);
    let c = lba / (heads * sectors);
    let h = (lba / sectors) % heads;
    let s = lba % sectors + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8 & 3) << 6), c as u8]
}

/// Decode `fs.runs` into (disk offset, bytes).
fn fs_runs(mut b: &[u8]) -> std::result::Result<Vec<(u64, Vec<u8>)>, String> {
    b = b.strip_prefix(b"NBDKRUNS").ok_or("fs.runs: bad header")?;
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 12 {
            return Err("fs.runs: truncated record".into());
        }
        let off = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")) as usize;
        let data = b.get(12..12 + len).ok_or("fs.runs: truncated data")?;
        let at = PART_START * SECTOR + off;
        if at + len as u64 > SIZE {
            return Err("fs.runs: data beyond the disk".into());
        }
        out.push((at, data.to_vec()));
        b = &b[12 + len..];
    }
    Ok(out)
}

struct Disk {
    /// Non-zero bytes, by offset; everything else reads as zero.
    runs: Vec<(u64, Vec<u8>)>,
}

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(SIZE)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps::READ_ONLY)
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        buf.fill(0);
        let end = offset + buf.len() as u64;
        for (at, data) in &self.runs {
            let (s, e) = ((*at).max(offset), (at + data.len() as u64).min(end));
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&data[(s - at) as usize..(e - at) as usize]);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_of_known_sectors() {
        assert_eq!(chs(0), [0, 1, 0]);
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(204799), [190, 50, 12]);
    }

    #[test]
    fn the_embedded_filesystem_decodes() {
        let runs = fs_runs(FS_RUNS).unwrap();
        assert!(runs.len() > 10);
        // The ext2 superblock magic, 1024 + 56 bytes into the partition.
        let magic_at = PART_START * SECTOR + 1024 + 56;
        let (at, data) =
            runs.iter().find(|(at, d)| *at <= magic_at && magic_at < at + d.len() as u64).unwrap();
        let i = (magic_at - at) as usize;
        assert_eq!(&data[i..i + 2], &[0x53, 0xef]);
        assert!(fs_runs(b"NBDKRUNX").is_err());
        assert!(fs_runs(b"NBDKRUNS\0\0\0\0\0\0\0\0\x05\0\0\0ab").is_err());
    }
}
