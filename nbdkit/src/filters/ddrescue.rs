//! `ddrescue`: fail reads of the areas a GNU ddrescue mapfile does not
//! mark as rescued.
//!
//! - `ddrescue-mapfile=FILE` (required): the mapfile. Areas with status
//!   `+` (finished) read normally; any other status (`-` bad, `?`, `*`,
//!   `/` untried or unfinished) fails with EIO, as the bad sectors did.
//!
//! The export is read-only.
//!
//! Example: `nbdkit --filter=ddrescue file disk.img ddrescue-mapfile=disk.map`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Errno, Error, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `ddrescue` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "ddrescue",
    description: "fail reads of the areas a ddrescue mapfile marks bad",
    config_help: "ddrescue-mapfile=<FILE>       (required) The GNU ddrescue mapfile.",
    build,
};

/// Rescued ranges (start, end), sorted.
struct DdRescue(Arc<Vec<(u64, u64)>>);

fn number(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The rescued ranges of a mapfile.
fn parse(text: &str) -> std::result::Result<Vec<(u64, u64)>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    // The status line: current position and status.
    lines.next().ok_or("empty mapfile")?;
    let mut good = Vec::new();
    for l in lines {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 3 {
            return Err(format!("bad line {l:?}"));
        }
        let (pos, size) = (number(f[0]), number(f[1]));
        let (Some(pos), Some(size)) = (pos, size) else {
            return Err(format!("bad line {l:?}"));
        };
        if f[2] == "+" {
            good.push((pos, pos + size));
        }
    }
    good.sort();
    Ok(good)
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let path = p
        .take("ddrescue-mapfile")
        .ok_or_else(|| StartError("ddrescue: you must supply ddrescue-mapfile=<FILE>".into()))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| StartError(format!("ddrescue: {path}: {}", crate::error::io_message(&e))))?;
    let good = parse(&text).map_err(|m| StartError(format!("ddrescue: {path}: {m}")))?;
    Ok(Arc::new(DdRescue(Arc::new(good))))
}

#[async_trait]
impl Filter for DdRescue {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(&args.with_readonly(true)).await?;
        Ok(Arc::new(Rescued { next, good: self.0.clone() }))
    }
}

struct Rescued {
    next: Arc<Guard>,
    good: Arc<Vec<(u64, u64)>>,
}

impl FilterHandle for Rescued {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.next.caps().await?;
        c.write = false;
        Ok(c)
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        // Every byte asked for must lie in a rescued range.
        let end = offset + buf.len() as u64;
        let mut pos = offset;
        for &(s, e) in self.good.iter() {
            if e <= pos {
                continue;
            }
            if s > pos {
                break;
            }
            pos = e;
            if pos >= end {
                break;
            }
        }
        if pos < end {
            return Err(Error::new(Errno::Io, format!("ddrescue: offset {pos} was not rescued")));
        }
        self.next.pread(buf, offset, flags).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapfile() {
        let m = "# Mapfile\n# current_pos  current_status\n0x00000000     +\n#      pos        size  status\n0x00000000  0x00000200  +\n0x00000200  0x00000200  -\n0x00000400  0x00000400  +\n";
        assert_eq!(parse(m).unwrap(), [(0, 512), (1024, 2048)]);
        assert!(parse("").is_err());
        assert!(parse("0 +\nzz 1 +").is_err());
    }
}
