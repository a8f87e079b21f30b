//! `extentlist`: serve extents from a list in a file instead of the
//! plugin's.
//!
//! - `extentlist=FILE` (required): one extent per line, `offset length
//!   [type]`; sizes in nbdkit's size syntax, type a number or `hole`,
//!   `zero`, `hole,zero` (default 0: data). Lines need not be in order but
//!   must not overlap; what they leave out is a hole.
//!
//! The list does not follow writes: use with `-r`.
//!
//! Example: `nbdkit -r --filter=extentlist file disk.img extentlist=disk.extents`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, ExtentFlags, Extents, Filter, FilterHandle, Flags, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;
use crate::size::parse_size;

/// The `extentlist` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "extentlist",
    description: "place a static list of extents on top of the plugin",
    config_help: "extentlist=<FILENAME>         (required) The file with the extents.",
    build,
};

/// (offset, length, flags), sorted, not overlapping.
type List = Arc<Vec<(u64, u64, ExtentFlags)>>;

struct ExtentList(List);

/// Parse the list (shared with tests).
fn parse(text: &str) -> std::result::Result<Vec<(u64, u64, ExtentFlags)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() || f[0].starts_with('#') {
            continue;
        }
        let bad = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
        if f.len() < 2 || f.len() > 3 {
            return Err(bad("expected: offset length [type]"));
        }
        let off = parse_size(f[0]).map_err(|_| bad("bad offset"))?;
        let len = parse_size(f[1]).map_err(|_| bad("bad length"))?;
        let mut flags = ExtentFlags::DATA;
        if let Some(t) = f.get(2) {
            match t.parse::<u32>() {
                Ok(v) => flags = ExtentFlags::from_bits_truncate(v),
                Err(_) => {
                    for w in t.split(',') {
                        flags |= match w {
                            "hole" => ExtentFlags::HOLE,
                            "zero" => ExtentFlags::ZERO,
                            _ => return Err(bad("bad type")),
                        };
                    }
                }
            }
        }
        if len > 0 {
            out.push((off, len, flags));
        }
    }
    out.sort_by_key(|&(off, len, _)| (off, len));
    for w in out.windows(2) {
        if w[0].0 + w[0].1 > w[1].0 {
            return Err(format!("extents at {} and {} overlap", w[0].0, w[1].0));
        }
    }
    Ok(out)
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let path = p
        .take("extentlist")
        .ok_or_else(|| StartError("extentlist: you must supply extentlist=<FILENAME>".into()))?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| StartError(format!("extentlist: {path}: {}", crate::error::io_message(&e))))?;
    let list = parse(&text).map_err(|m| StartError(format!("extentlist: {path}: {m}")))?;
    Ok(Arc::new(ExtentList(Arc::new(list))))
}

#[async_trait]
impl Filter for ExtentList {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(Listed { next, list: self.0.clone() }))
    }
}

struct Listed {
    next: Arc<Guard>,
    list: List,
}

impl FilterHandle for Listed {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.next.caps().await?;
        c.extents = true;
        Ok(c)
    }
    async fn extents(&self, count: u64, offset: u64, _f: Flags, ext: &mut Extents) -> Result<()> {
        let end = offset + count;
        let mut pos = offset;
        for &(o, l, flags) in self.list.iter() {
            if o + l <= pos {
                continue;
            }
            if o >= end {
                break;
            }
            if o > pos {
                ext.add(pos, o - pos, ExtentFlags::HOLE | ExtentFlags::ZERO);
                pos = o;
            }
            let stop = (o + l).min(end);
            ext.add(pos, stop - pos, flags);
            pos = stop;
        }
        if pos < end {
            ext.add(pos, end - pos, ExtentFlags::HOLE | ExtentFlags::ZERO);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let (hole, zero) = (ExtentFlags::HOLE, ExtentFlags::ZERO);
        assert_eq!(
            parse("1M 9M hole,zero\n0 1M\n# c\n\n").unwrap(),
            [(0, 1 << 20, ExtentFlags::DATA), (1 << 20, 9 << 20, hole | zero)]
        );
        assert_eq!(parse("0 10 2").unwrap(), [(0, 10, zero)]);
        // Numbers keep only the bits that mean something.
        assert_eq!(parse("0 10 7").unwrap(), [(0, 10, hole | zero)]);
        assert!(parse("0 10\n5 10").unwrap_err().contains("overlap"));
        assert!(parse("0").is_err());
        assert!(parse("0 1 sparkly").is_err());
    }
}
