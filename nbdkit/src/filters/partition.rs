//! `partition`: serve one partition of a partitioned disk, like
//! `qemu-nbd -P`.
//!
//! - `partition=N` (required, from 1): the partition. On an MBR disk 1-4
//!   are the primary partitions and 5 up the logical partitions in the
//!   extended partition's chain; on a GPT disk N is the entry in the
//!   partition array.
//!
//! The table is read when a client connects; a disk smaller than two
//! sectors, without an MBR or GPT signature, without partition N, or whose
//! partition N lies outside the disk, refuses the connection.
//!
//! Example: `nbdkit -U - --filter=partition file disk.img partition=1`

use std::sync::Arc;

use async_trait::async_trait;

use super::window::Window;
use super::FilterInfo;
use crate::backend::{Errno, Error, Filter, Flags, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::{parse_uint, Params};

/// The `partition` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "partition",
    description: "serve one partition of an MBR or GPT disk",
    config_help: "partition=<PART>    (required) The partition number (counting from 1).",
    build,
};

const SECTOR: u64 = 512;

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let Some(v) = p.take("partition") else {
        return Err(StartError(
            "partition: you must supply the partition parameter on the command line".into(),
        ));
    };
    let n = parse_uint("partition", &v, u64::from(u32::MAX)).map_err(StartError)?;
    if n == 0 {
        return Err(StartError(format!("partition: invalid partition number (partition={v})")));
    }
    Ok(Arc::new(PartitionFilter(n as u32)))
}

struct PartitionFilter(u32);

fn fail(msg: impl Into<String>) -> Error {
    Error::new(Errno::Inval, format!("partition: {}", msg.into()))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// One entry of an MBR (or EBR) partition table.
struct MbrEntry {
    kind: u8,
    start: u32,
    sectors: u32,
}

fn mbr_entry(sector: &[u8], i: usize) -> MbrEntry {
    let at = 0x1be + 16 * i;
    MbrEntry { kind: sector[at + 4], start: le32(sector, at + 8), sectors: le32(sector, at + 12) }
}

/// The partition types that hold logical partitions.
fn is_extended(kind: u8) -> bool {
    matches!(kind, 0x05 | 0x0f | 0x85)
}

async fn read(next: &dyn Handle, len: usize, offset: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    next.pread(&mut buf, offset, Flags::default()).await?;
    Ok(buf)
}

/// Where partition `n` of an MBR disk is: (offset, length) in bytes.
async fn find_mbr(next: &dyn Handle, size: u64, mbr: &[u8], n: u32) -> Result<(u64, u64)> {
    if n <= 4 {
        let e = mbr_entry(mbr, n as usize - 1);
        if e.sectors > 0 && e.kind != 0 && !is_extended(e.kind) {
            return Ok((u64::from(e.start) * SECTOR, u64::from(e.sectors) * SECTOR));
        }
        return Err(fail(format!("MBR partition {n} not found")));
    }
    let Some(ext) =
        (0..4).map(|i| mbr_entry(mbr, i)).find(|e| e.sectors > 0 && is_extended(e.kind))
    else {
        return Err(fail(
            "MBR logical partition selected, but there is no extended partition in the \
             partition table",
        ));
    };
    let ext_start = u64::from(ext.start) * SECTOR;
    let ext_end = (u64::from(ext.start) + u64::from(ext.sectors)) * SECTOR;
    // Each EBR describes one logical partition (relative to the EBR) and
    // links to the next EBR (relative to the extended partition). Links
    // must go forward, so the walk ends.
    let mut ebr = ext_start;
    for i in 5.. {
        if ebr < SECTOR || ebr >= size - SECTOR {
            return Err(fail(
                "invalid EBR chain: next EBR boot sector is located outside disk boundary",
            ));
        }
        let sector = read(next, SECTOR as usize, ebr).await?;
        if i == n {
            let e = mbr_entry(&sector, 0);
            let offset = ebr + u64::from(e.start) * SECTOR;
            let len = u64::from(e.sectors) * SECTOR;
            if offset <= ebr || offset + len > ext_end {
                return Err(fail(format!(
                    "logical partition start or size out of range (offset={offset}, \
                     range={len}, ep:startsect={}, ep:nrsects={})",
                    ext.start, ext.sectors
                )));
            }
            return Ok((offset, len));
        }
        let link = mbr_entry(&sector, 1);
        if link.start == 0 && link.sectors == 0 {
            break;
        }
        let next_ebr = ext_start + u64::from(link.start) * SECTOR;
        if next_ebr <= ebr {
            return Err(fail(format!(
                "invalid EBR chain: next EBR {next_ebr} <= current EBR {ebr}"
            )));
        }
        ebr = next_ebr;
    }
    Err(fail(format!("MBR partition {n} not found")))
}

/// Where partition `n` of a GPT disk is. The partition array is read from
/// LBA 2, as it is on every disk partitioned in practice.
async fn find_gpt(next: &dyn Handle, size: u64, header: &[u8], n: u32) -> Result<(u64, u64)> {
    let entries = le32(header, 80);
    let entry_size = le32(header, 84);
    if n > entries {
        return Err(fail("GPT partition number out of range"));
    }
    if entry_size < 128 {
        return Err(fail("GPT partition entry size is < 128 bytes"));
    }
    if size < 3 * SECTOR + 2 * u64::from(entries) * u64::from(entry_size) {
        return Err(fail("GPT partition table is too large for this disk"));
    }
    let at = 2 * SECTOR + u64::from(n - 1) * u64::from(entry_size);
    let entry = read(next, 128, at).await?;
    if entry[..16].iter().all(|&b| b == 0) {
        return Err(fail(format!("GPT partition {n} not found")));
    }
    let (first, last) = (le64(&entry, 32), le64(&entry, 40));
    let start = first.checked_mul(SECTOR);
    let len =
        last.checked_sub(first).and_then(|d| d.checked_add(1)).and_then(|d| d.checked_mul(SECTOR));
    match (start, len) {
        (Some(s), Some(l)) => Ok((s, l)),
        _ => Err(fail("partition is outside the disk")),
    }
}

#[async_trait]
impl Filter for PartitionFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        let n = self.0;
        let size = next.size().await?;
        if size < 2 * SECTOR {
            return Err(fail("disk is too small to be a partitioned disk"));
        }
        let lba01 = read(&*next, 2 * SECTOR as usize, 0).await?;
        let (kind, (offset, len)) = if size >= 2 * 34 * SECTOR && &lba01[512..520] == b"EFI PART" {
            ("GPT", find_gpt(&*next, size, &lba01[512..], n).await?)
        } else if lba01[0x1fe] == 0x55 && lba01[0x1ff] == 0xaa {
            ("MBR", find_mbr(&*next, size, &lba01, n).await?)
        } else {
            return Err(fail("disk does not contain MBR or GPT partition table signature"));
        };
        if offset.checked_add(len).is_none_or(|end| end > size) || offset >= 1 << 63 {
            return Err(fail("partition is outside the disk"));
        }
        let description =
            next.description().map(|base| format!("partition {n} of {kind} disk: {base}"));
        Ok(Arc::new(Window { next, base: offset, size: len, description }))
    }
}
