//! `partitioning`: a virtual disk with a partition table, each partition
//! being one file.
//!
//! Parameters, read in order (the per-partition settings apply to every
//! `file=` after them):
//! - `file=PATH` (magic key; at least one): a partition. Opened read-write
//!   at start-up (even with `-r`, as in C nbdkit); it must not be empty.
//! - `partition-type=mbr|dos|gpt`: default GPT if there are more than 4
//!   files or they total more than MBR can address (about 2 TB), else MBR.
//!   With MBR and more than 4 files, files 4 onwards are logical
//!   partitions 5 onwards inside an extended partition 4.
//! - `alignment=SIZE`: where following partitions start, a power of two
//!   from 512 to 1M (the default).
//! - `mbr-id=0xN|default`: MBR type byte of following partitions (C number
//!   syntax; default 0x83, Linux).
//! - `type-guid=GUID|default`: GPT type of following partitions (default
//!   0FC63DAF-8483-4772-8E79-3D69D8477DE4, Linux filesystem).
//!
//! The disk is the table, then each file preceded by zero padding up to
//! its alignment and followed by zeroes to a whole sector, then (GPT) the
//! backup table: byte for byte what C nbdkit 1.32 serves. As in C, each
//! partition's GPT unique GUID comes from xoshiro256** seeded with the
//! start time in seconds, and the GPT disk GUID is all zeroes. GPT
//! partition names are the `file=` values when ASCII and under 36 bytes.
//!
//! Reads and writes reach the files; writing to the tables or the padding
//! is allowed only if it changes nothing (EIO otherwise). Flush
//! fdatasyncs every file; FUA, zero and cache are emulated; no trim or
//! extents; multi-conn (all connections share the files).
//!
//! Difference from C nbdkit: an alignment that is not a power of two is
//! refused at start-up (C 1.32 aborts on an assertion).
//!
//! Example: `nbdkit -U - partitioning boot.img mbr-id=0x82 swap.img mbr-id=default root.img`

mod layout;
mod tables;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::file::{blocking, read_file};
use super::{PluginInfo, Shared};
use crate::backend::{
    Cache, Caps, Errno, Error, Flags, Fua, Handle, Plugin, Result, ThreadModel, Zero,
};
use crate::error::{io_message, StartError};
use crate::params::Params;
use crate::prng::Xoshiro;
use crate::size::parse_size;
use layout::{Kind, Region};
use tables::{PartType, MAX_ALIGNMENT, MAX_MBR_DISK_SIZE, SECTOR};

/// The `partitioning` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "partitioning",
    description: "a partitioned virtual disk made of files",
    config_help: "file=<FILENAME>  (required) File(s) containing partitions\n\
                  partition-type=mbr|gpt      Partition type\n\
                  alignment=<N>               Set the alignment (bytes)\n\
                  mbr-id=default|0xN          Set the MBR type byte\n\
                  type-guid=default|GUID      Set the GPT partition type GUID",
    magic_config_key: Some("file"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

const DEFAULT_MBR_ID: u8 = 0x83;
const DEFAULT_TYPE_GUID: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let fail = |m: String| StartError(format!("partitioning: {m}"));
    let default_guid = tables::parse_guid(DEFAULT_TYPE_GUID).expect("valid default GUID");
    // C nbdkit seeds with time(NULL) when the plugin is loaded.
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut rng = Xoshiro::new(seed);
    let (mut alignment, mut mbr_id, mut type_guid) = (MAX_ALIGNMENT, DEFAULT_MBR_ID, default_guid);
    let mut parttype = None;
    let mut parts = Vec::new();
    let mut files = Vec::new();
    for (key, value) in p.take_rest() {
        match key.as_str() {
            "file" => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&value)
                    .map_err(|e| fail(format!("{value}: {}", io_message(&e))))?;
                let size = file
                    .metadata()
                    .map_err(|e| fail(format!("{value}: stat: {}", io_message(&e))))?
                    .len();
                if size == 0 {
                    return Err(fail(format!("{value}: zero length partitions are not allowed")));
                }
                let mut guid = [0u8; 16];
                for b in &mut guid {
                    *b = (rng.next() & 0xff) as u8;
                }
                parts.push(tables::Part { name: value, size, alignment, mbr_id, type_guid, guid });
                files.push(file);
            }
            "partition-type" => {
                parttype = Some(match value.to_ascii_lowercase().as_str() {
                    "mbr" | "dos" => PartType::Mbr,
                    "gpt" => PartType::Gpt,
                    _ => return Err(fail(format!("unknown partition-type: {value}"))),
                })
            }
            "alignment" => {
                let n = parse_size(&value).map_err(|e| fail(format!("alignment: {e}")))?;
                if !(SECTOR..=MAX_ALIGNMENT).contains(&n) {
                    return Err(fail(format!(
                        "partition alignment {n} should be >= sector size {SECTOR} \
                         and <= maximum alignment {MAX_ALIGNMENT}"
                    )));
                }
                if n % SECTOR != 0 {
                    return Err(fail(format!(
                        "partition alignment {n} should be a multiple of sector size {SECTOR}"
                    )));
                }
                if !n.is_power_of_two() {
                    return Err(fail(format!("partition alignment {n} should be a power of 2")));
                }
                alignment = n;
            }
            "mbr-id" => {
                mbr_id = if value.eq_ignore_ascii_case("default") {
                    DEFAULT_MBR_ID
                } else {
                    parse_uint8(&value).map_err(|e| fail(format!("mbr-id: {e}")))?
                }
            }
            "type-guid" => {
                type_guid = if value.eq_ignore_ascii_case("default") {
                    default_guid
                } else {
                    tables::parse_guid(&value)
                        .ok_or_else(|| fail(format!("could not validate GUID: {value}")))?
                }
            }
            _ => Params::new(p.owner(), vec![(key, value)]).finish()?,
        }
    }
    if parts.is_empty() {
        return Err(fail("at least one file= parameter must be supplied".into()));
    }
    let total: u64 = parts.iter().map(|p| p.size).sum();
    let needs_gpt = total > MAX_MBR_DISK_SIZE;
    let kind = match parttype {
        None if needs_gpt || parts.len() > 4 => PartType::Gpt,
        None => PartType::Mbr,
        Some(PartType::Mbr) if needs_gpt => {
            return Err(fail(format!(
                "{} partition(s) of {total} bytes in all are too big for an MBR \
                 partition table (at most {MAX_MBR_DISK_SIZE} bytes, about 2 TB): \
                 use partition-type=gpt",
                parts.len()
            )))
        }
        Some(k) => k,
    };
    let disk = tables::build(&parts, kind);
    let names = parts.into_iter().map(|p| p.name).collect();
    Ok(Arc::new(Shared(Arc::new(Partitioned { files, names, disk }))))
}

/// An unsigned byte in C's number syntax (`strtoul` base 0: `0x` hex,
/// leading-0 octal, else decimal; leading blanks and `+` allowed), with
/// the messages of C nbdkit's `nbdkit_parse_uint8_t`.
fn parse_uint8(s: &str) -> std::result::Result<u8, String> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    if t.starts_with('-') {
        return Err("negative numbers are not allowed".into());
    }
    let t = t.strip_prefix('+').unwrap_or(t);
    let b = t.as_bytes();
    let (digits, radix) =
        if b.len() > 2 && b[0] == b'0' && (b[1] | 0x20) == b'x' && b[2].is_ascii_hexdigit() {
            (&t[2..], 16)
        } else if b.first() == Some(&b'0') {
            (t, 8)
        } else {
            (t, 10)
        };
    let n = digits.bytes().take_while(|&c| (c as char).is_digit(radix)).count();
    if n == 0 {
        return Err("empty string where we expected a number".into());
    }
    if n < digits.len() {
        return Err(format!("could not parse number: {s:?}: trailing garbage"));
    }
    u64::from_str_radix(&digits[..n], radix)
        .ok()
        .and_then(|v| u8::try_from(v).ok())
        .ok_or_else(|| format!("could not parse number: {s:?}: Numerical result out of range"))
}

/// The disk, shared by every connection.
struct Partitioned {
    files: Vec<File>,
    names: Vec<String>,
    disk: tables::Disk,
}

impl Partitioned {
    /// The parts of `[offset, offset + len)` region by region: the region,
    /// the offset within it, and the range of the caller's buffer.
    fn spans(
        &self, offset: u64, len: usize,
    ) -> impl Iterator<Item = (Region, u64, std::ops::Range<usize>)> + '_ {
        let regions = self.disk.layout.regions();
        let first = self.disk.layout.find(offset);
        let end = offset + len as u64;
        regions[first..].iter().take_while(move |r| r.start < end).map(move |r| {
            let from = offset.max(r.start);
            let to = end.min(r.end());
            let at = (from - offset) as usize..(to - offset) as usize;
            (*r, from - r.start, at)
        })
    }

    fn table(&self, i: usize, at: u64, n: usize) -> &[u8] {
        &self.disk.tables[i][at as usize..at as usize + n]
    }
}

#[async_trait]
impl Handle for Partitioned {
    async fn size(&self) -> Result<u64> {
        Ok(self.disk.layout.size())
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps {
            fua: Fua::Emulate,
            trim: false,
            zero: Zero::Emulate,
            cache: Cache::Emulate,
            extents: false,
            ..Caps::ALL_NATIVE
        })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        for (region, at, range) in self.spans(offset, buf.len()) {
            let part = &mut buf[range];
            match region.kind {
                Kind::File(i) => read_file(&self.files[i], part, at).map_err(|e| {
                    let why = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        "the file ended early (was it truncated?)".to_string()
                    } else {
                        io_message(&e)
                    };
                    Error::new(Error::from(e).errno, format!("pread: {}: {why}", self.names[i]))
                })?,
                Kind::Table(i) => part.copy_from_slice(self.table(i, at, part.len())),
                Kind::Zero => part.fill(0),
            }
        }
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        // Refuse before writing anything if the tables or padding would change.
        for (region, at, range) in self.spans(offset, buf.len()) {
            let part = &buf[range];
            match region.kind {
                Kind::File(_) => {}
                Kind::Table(i) if part != self.table(i, at, part.len()) => {
                    return Err(Error::new(
                        Errno::Io,
                        "the partition table of the virtual disk cannot be changed",
                    ));
                }
                Kind::Zero if part.iter().any(|&b| b != 0) => {
                    return Err(Error::new(
                        Errno::Io,
                        "only zeroes can be written to the padding between partitions",
                    ));
                }
                _ => {}
            }
        }
        blocking(|| {
            for (region, at, range) in self.spans(offset, buf.len()) {
                if let Kind::File(i) = region.kind {
                    self.files[i].write_all_at(&buf[range], at).map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("pwrite: {}: {}", self.names[i], io_message(&e)),
                        )
                    })?;
                }
            }
            Ok(())
        })
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        blocking(|| {
            for f in &self.files {
                f.sync_data()?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_uint8;

    #[test]
    fn uint8_like_c() {
        assert_eq!(parse_uint8("0x83"), Ok(0x83));
        assert_eq!(parse_uint8("0X0f"), Ok(0x0f));
        assert_eq!(parse_uint8("010"), Ok(8));
        assert_eq!(parse_uint8(" +255"), Ok(255));
        assert_eq!(parse_uint8("0"), Ok(0));
        for (bad, why) in [
            ("256", "out of range"),
            ("0x100", "out of range"),
            ("99999999999999999999999", "out of range"),
            ("-1", "negative"),
            ("x", "empty string"),
            ("", "empty string"),
            ("0x", "trailing garbage"),
            ("08", "trailing garbage"),
            ("12 ", "trailing garbage"),
        ] {
            let e = parse_uint8(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
