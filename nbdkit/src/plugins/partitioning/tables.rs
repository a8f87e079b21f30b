//! The partition tables: the disk layout around the files, and the bytes
//! of the MBR (with EBRs past four partitions) or of the GPT (protective
//! MBR, primary header and entries, and the backup copy at the end).
//!
//! The layout rules, which decide every byte and so must match C nbdkit's:
//! - the table comes first: one sector for MBR, or 2 + N sectors for GPT
//!   (protective MBR, header, N = entries / 4 sectors of 128-byte entries,
//!   with room for at least 128 entries, growing by 128);
//! - each file starts on its own alignment, preceded by zero padding, and
//!   is followed by zeroes to the end of its last sector; with MBR and more
//!   than four files, each file from the fourth on is a logical partition
//!   with its EBR sector just before the padding;
//! - GPT ends with the backup entries and then the backup header.

use super::layout::{Kind, Layout};

pub const SECTOR: u64 = 512;

/// Largest alignment, and the default one: 1 MiB.
pub const MAX_ALIGNMENT: u64 = 2048 * SECTOR;

/// Beyond this many bytes of files MBR cannot be used: 2^32 - 1 sectors,
/// less some room for padding.
pub const MAX_MBR_DISK_SIZE: u64 = u32::MAX as u64 * SECTOR - 5 * MAX_ALIGNMENT;

/// Size of one GPT partition entry, and the fewest entries a GPT has.
const GPT_ENTRY: usize = 128;
const GPT_MIN_ENTRIES: usize = 128;
/// Size of the GPT header as C nbdkit writes it (92 bytes of fields,
/// padded to 96; the CRC covers all 96).
const GPT_HEADER: usize = 96;

/// What the tables need to know about one file.
#[derive(Debug, Clone)]
pub struct Part {
    /// The name as given on the command line (the GPT partition name).
    pub name: String,
    pub size: u64,
    pub alignment: u64,
    pub mbr_id: u8,
    pub type_guid: [u8; 16],
    /// The unique partition GUID (GPT).
    pub guid: [u8; 16],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartType {
    Mbr,
    Gpt,
}

/// The disk: its regions, and the tables that `Kind::Table(i)` refers to.
pub struct Disk {
    pub layout: Layout,
    pub tables: Vec<Vec<u8>>,
}

/// Lay out the disk and fill in its partition tables.
pub fn build(parts: &[Part], kind: PartType) -> Disk {
    match kind {
        PartType::Mbr => mbr(parts),
        PartType::Gpt => gpt(parts),
    }
}

/// Add file `i` after its padding, then pad it to a whole sector.
fn push_file(layout: &mut Layout, i: usize, part: &Part) {
    layout.pad_to(part.alignment);
    layout.push(part.size, Kind::File(i));
    layout.pad_to(SECTOR);
}

fn put_u32(out: &mut [u8], at: usize, v: u32) {
    out[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A 16-byte MBR partition entry for `len` bytes from `start` (a sector
/// boundary, relative to whatever the table's format says). The CHS
/// fields all say "beyond CHS": cylinder 1023, head 254, sector 63.
fn mbr_entry(out: &mut [u8], start: u64, len: u64, bootable: bool, id: u8) {
    const CHS_MAX: [u8; 3] = [254, 0xc0 | 63, 0xff];
    debug_assert_eq!(start % SECTOR, 0);
    let first = u32::try_from(start / SECTOR).expect("MBR start sector fits");
    let count = u32::try_from(len.div_ceil(SECTOR)).expect("MBR sector count fits");
    out[0] = if bootable { 0x80 } else { 0 };
    out[1..4].copy_from_slice(&CHS_MAX);
    out[4] = id;
    out[5..8].copy_from_slice(&CHS_MAX);
    put_u32(out, 8, first);
    put_u32(out, 12, count);
}

/// The four entries of a sector-sized table start here.
const MBR_ENTRIES: usize = 0x1be;

fn boot_signature(sector: &mut [u8]) {
    sector[0x1fe] = 0x55;
    sector[0x1ff] = 0xaa;
}

fn mbr(parts: &[Part]) -> Disk {
    let logical = parts.len() > 4;
    // Table 0 is the MBR, table 1 + k the EBR of file 3 + k.
    let ntables = 1 + if logical { parts.len() - 3 } else { 0 };
    let mut tables = vec![vec![0u8; SECTOR as usize]; ntables];
    let mut layout = Layout::default();
    layout.push(SECTOR, Kind::Table(0));
    for (i, part) in parts.iter().enumerate() {
        if logical && i >= 3 {
            layout.push(SECTOR, Kind::Table(i - 2));
        }
        push_file(&mut layout, i, part);
    }
    let disk_size = layout.size();

    let mbr = &mut tables[0];
    boot_signature(mbr);
    let primaries = if logical { 3 } else { parts.len() };
    for (i, part) in parts.iter().take(primaries).enumerate() {
        let r = layout.file(i);
        let at = MBR_ENTRIES + 16 * i;
        mbr_entry(&mut mbr[at..], r.start, r.len, i == 0, part.mbr_id);
    }
    if logical {
        // Partition 4 is the extended partition: from the first EBR to the
        // end of the disk. Its EBRs form a chain, one per logical partition.
        let first_ebr = layout.table(1);
        let at = MBR_ENTRIES + 16 * 3;
        mbr_entry(&mut mbr[at..], first_ebr.start, disk_size - first_ebr.start, false, 0x0f);
        for i in 3..parts.len() {
            let ebr_region = layout.table(i - 2);
            let file = layout.file(i);
            let ebr = &mut tables[i - 2];
            boot_signature(ebr);
            // The logical partition, relative to its own EBR.
            mbr_entry(
                &mut ebr[MBR_ENTRIES..],
                file.start - ebr_region.start,
                file.len,
                false,
                parts[i].mbr_id,
            );
            // The next EBR, relative to the extended partition, and the
            // extent of that EBR with its partition.
            if i + 1 < parts.len() {
                let next_ebr = layout.table(i - 1);
                let next_file = layout.file(i + 1);
                mbr_entry(
                    &mut ebr[MBR_ENTRIES + 16..],
                    next_ebr.start - first_ebr.start,
                    next_file.end() - next_ebr.start,
                    false,
                    0x0f,
                );
            }
        }
    }
    Disk { layout, tables }
}

fn gpt(parts: &[Part]) -> Disk {
    let entries = parts.len().next_multiple_of(GPT_MIN_ENTRIES);
    let entry_sectors = (entries * GPT_ENTRY) as u64 / SECTOR;
    let mut layout = Layout::default();
    layout.push((2 + entry_sectors) * SECTOR, Kind::Table(0));
    for (i, part) in parts.iter().enumerate() {
        push_file(&mut layout, i, part);
    }
    layout.push((entry_sectors + 1) * SECTOR, Kind::Table(1));
    let disk_size = layout.size();
    let sectors = disk_size / SECTOR;

    // The entries, the same in both copies.
    let mut array = vec![0u8; entries * GPT_ENTRY];
    for (i, part) in parts.iter().enumerate() {
        let r = layout.file(i);
        let e = &mut array[i * GPT_ENTRY..(i + 1) * GPT_ENTRY];
        e[0..16].copy_from_slice(&part.type_guid);
        e[16..32].copy_from_slice(&part.guid);
        put_u64(e, 32, r.start / SECTOR);
        put_u64(e, 40, (r.end() - 1) / SECTOR);
        // The first partition has the "legacy BIOS bootable" attribute.
        put_u64(e, 48, if i == 0 { 4 } else { 0 });
        // Names of up to 35 ASCII characters become UTF-16LE; others are
        // left blank.
        if part.name.len() < 36 && part.name.is_ascii() {
            for (k, b) in part.name.bytes().enumerate() {
                e[56 + 2 * k] = b;
            }
        }
    }
    let array_crc = crc32(&array);
    let header = |primary: bool| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&[0, 0, 1, 0]);
        put_u32(&mut h, 12, GPT_HEADER as u32);
        let (me, other, array_at) = if primary {
            (1, sectors - 1, 2)
        } else {
            (sectors - 1, 1, sectors - entry_sectors - 1)
        };
        put_u64(&mut h, 24, me);
        put_u64(&mut h, 32, other);
        put_u64(&mut h, 40, 2 + entry_sectors);
        put_u64(&mut h, 48, sectors - entry_sectors - 2);
        // Bytes 56..72, the disk GUID, stay zero as in C nbdkit.
        put_u64(&mut h, 72, array_at);
        put_u32(&mut h, 80, entries as u32);
        put_u32(&mut h, 84, GPT_ENTRY as u32);
        put_u32(&mut h, 88, array_crc);
        let crc = crc32(&h[..GPT_HEADER]);
        put_u32(&mut h, 16, crc);
        h
    };

    let mut primary = vec![0u8; layout.table(0).len as usize];
    // The protective MBR: one partition of type 0xee over the whole disk
    // after sector 0, or as much of it as MBR can describe.
    let end = (disk_size - 1).min(u32::MAX as u64 * SECTOR);
    mbr_entry(&mut primary[MBR_ENTRIES..], SECTOR, end - SECTOR + 1, false, 0xee);
    boot_signature(&mut primary);
    let s = SECTOR as usize;
    primary[s..2 * s].copy_from_slice(&header(true));
    primary[2 * s..].copy_from_slice(&array);

    let mut secondary = array;
    secondary.extend_from_slice(&header(false));
    Disk { layout, tables: vec![primary, secondary] }
}

/// CRC-32 as GPT uses it (IEEE 802.3: reflected polynomial 0xEDB88320,
/// all ones in and out).
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    !data.iter().fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8))
}

/// Parse a GUID written `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`, optionally
/// in braces, into GPT's byte order: the first three groups little-endian,
/// the last two as written.
pub fn parse_guid(s: &str) -> Option<[u8; 16]> {
    let s = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(s);
    let groups: Vec<&str> = s.split('-').collect();
    let lens = groups.iter().map(|g| g.len()).collect::<Vec<_>>();
    if lens != [8, 4, 4, 4, 12] || !groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return None;
    }
    let hex = |g: &str| -> Vec<u8> {
        (0..g.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&g[k..k + 2], 16).expect("checked hex"))
            .collect()
    };
    let mut out = Vec::with_capacity(16);
    for (k, g) in groups.iter().enumerate() {
        let mut b = hex(g);
        if k < 3 {
            b.reverse();
        }
        out.extend(b);
    }
    out.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, size: u64) -> Part {
        Part {
            name: name.into(),
            size,
            alignment: MAX_ALIGNMENT,
            mbr_id: 0x83,
            type_guid: parse_guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap(),
            guid: [7; 16],
        }
    }

    #[test]
    fn crc32_check_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn guids_in_gpt_byte_order() {
        let g = parse_guid("0FC63DAF-8483-4772-8E79-3D69D8477DE4").unwrap();
        assert_eq!(
            g,
            [
                0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47,
                0x7d, 0xe4
            ]
        );
        assert_eq!(parse_guid("{0fc63daf-8483-4772-8e79-3d69d8477de4}"), Some(g));
        for bad in [
            "",
            "0FC63DAF-8483-4772-8E79-3D69D8477DE",
            "0FC63DAF-8483-4772-8E79+3D69D8477DE4",
            "0FC63DAG-8483-4772-8E79-3D69D8477DE4",
            "{0FC63DAF-8483-4772-8E79-3D69D8477DE4",
            "0FC63DAF84-83-4772-8E79-3D69D8477DE4",
        ] {
            assert_eq!(parse_guid(bad), None, "{bad}");
        }
    }

    #[test]
    fn mbr_with_logical_partitions() {
        let parts: Vec<Part> = (0..5).map(|i| part("p", 1000 + i)).collect();
        let d = build(&parts, PartType::Mbr);
        // MBR, then per file: [EBR] padding file padding.
        let kinds: Vec<Kind> = d.layout.regions().iter().map(|r| r.kind).collect();
        assert_eq!(kinds[0], Kind::Table(0));
        assert_eq!(d.tables.len(), 3);
        let ebr1 = d.layout.table(1);
        // The EBR follows the previous partition; padding follows the EBR.
        assert_eq!(ebr1.start, d.layout.file(2).end().next_multiple_of(SECTOR));
        assert_eq!(d.layout.file(3).start, ebr1.end().next_multiple_of(MAX_ALIGNMENT));
        // Partition 4 is extended (0x0f) and starts at the first EBR.
        let e4 = &d.tables[0][0x1ee..0x1fe];
        assert_eq!(e4[4], 0x0f);
        assert_eq!(u32::from_le_bytes(e4[8..12].try_into().unwrap()) as u64, ebr1.start / SECTOR);
        // The last EBR has no link.
        assert_eq!(d.tables[2][0x1ce..0x1de], [0; 16]);
        assert_eq!(d.tables[1][0x1ce + 4], 0x0f);
    }

    #[test]
    fn gpt_headers_check_out() {
        let d = build(&[part("a", 10), part("b", 3000)], PartType::Gpt);
        let p = &d.tables[0];
        let h = &p[512..512 + GPT_HEADER];
        let mut zeroed = h.to_vec();
        zeroed[16..20].fill(0);
        assert_eq!(&h[16..20], crc32(&zeroed).to_le_bytes());
        assert_eq!(d.layout.size() % SECTOR, 0);
        // The backup header is the last sector; its entries come before it.
        let s = &d.tables[1];
        assert_eq!(&s[s.len() - 512..s.len() - 504], b"EFI PART");
        assert_eq!(&s[..s.len() - 512], &p[1024..]);
        // Name "a" in UTF-16LE.
        assert_eq!(&p[1024 + 56..1024 + 60], b"a\0\0\0");
    }
}
