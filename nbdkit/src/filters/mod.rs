//! The filters, one file each, and the table that finds them by name.
//!
//! A filter's parameters share the command line with the plugin's: each
//! filter takes the keys it knows (in `--filter` order), the plugin takes
//! the rest, and any key nobody took is an error naming it.

use std::sync::Arc;

use crate::backend::Filter;
use crate::error::StartError;
use crate::params::Params;

pub mod blocksize;
pub mod blocksize_policy;
pub mod cache;
pub mod cacheextents;
pub mod checkwrite;
pub mod cow;
pub mod ddrescue;
pub mod delay;
pub mod error;
pub mod exitlast;
pub mod exitwhen;
pub mod exportname;
pub mod extentlist;
pub mod fua;
pub mod gzip;
pub mod ip;
pub mod limit;
pub mod log;
pub mod multi_conn;
pub mod nocache;
pub mod noextents;
pub mod nofilter;
pub mod noparallel;
pub mod nozero;
pub mod offset;
pub mod partition;
pub mod pause;
pub mod protect;
pub mod rate;
pub mod readahead;
pub mod retry;
pub mod retry_request;
pub mod scan;
pub mod stats;
pub mod swab;
pub mod tar;
pub mod tls_fallback;
pub mod truncate;
mod window;
pub mod xz;

/// What the server knows about a filter before building it.
pub struct FilterInfo {
    /// Name on the command line (`--filter=NAME`).
    pub name: &'static str,
    /// One line for `--help`.
    pub description: &'static str,
    /// The parameters, for `--help`.
    pub config_help: &'static str,
    /// Build the filter, taking its keys from the shared parameters.
    pub build: fn(&mut Params) -> Result<Arc<dyn Filter>, StartError>,
}

impl std::fmt::Debug for FilterInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterInfo").field("name", &self.name).finish()
    }
}

/// Every filter, in the order `--help` lists them.
pub static FILTERS: &[&FilterInfo] = &[
    &blocksize::INFO,
    &blocksize_policy::INFO,
    &cache::INFO,
    &cacheextents::INFO,
    &checkwrite::INFO,
    &cow::INFO,
    &ddrescue::INFO,
    &delay::INFO,
    &error::INFO,
    &exitlast::INFO,
    &exitwhen::INFO,
    &exportname::INFO,
    &extentlist::INFO,
    &fua::INFO,
    &gzip::INFO,
    &ip::INFO,
    &limit::INFO,
    &log::INFO,
    &multi_conn::INFO,
    &nocache::INFO,
    &noextents::INFO,
    &nofilter::INFO,
    &noparallel::INFO,
    &nozero::INFO,
    &offset::INFO,
    &partition::INFO,
    &pause::INFO,
    &protect::INFO,
    &rate::INFO,
    &readahead::INFO,
    &retry::INFO,
    &retry_request::INFO,
    &scan::INFO,
    &stats::INFO,
    &swab::INFO,
    &tar::INFO,
    &tls_fallback::INFO,
    &truncate::INFO,
    &xz::INFO,
];

/// Find a filter by name.
pub fn lookup(name: &str) -> Option<&'static FilterInfo> {
    FILTERS.iter().copied().find(|f| f.name == name)
}

/// A duration as the delay-style filters take it: seconds (`2`, `0.5`) or
/// milliseconds (`250ms`).
pub fn parse_duration(v: &str) -> Option<std::time::Duration> {
    let (num, scale) = match v.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (v.strip_suffix('s').unwrap_or(v), 1.0),
    };
    let x: f64 = num.trim().parse().ok()?;
    if !x.is_finite() || x < 0.0 {
        return None;
    }
    Some(std::time::Duration::from_secs_f64(x * scale))
}

/// Extents from `next` for `[offset, offset + count)` (both multiples of
/// `align`) made of whole `align`-sized blocks, added to `ext`, as C's
/// `nbdkit_extents_aligned` makes them: the first extent that ends
/// mid-block is cut back to the block boundary and ends the list; if the
/// very first extent is shorter than a block, it is merged with what
/// follows (asking again if need be) into one block whose flags are only
/// what is true of all of it (the bitwise and: a hole only if all is hole,
/// zero only if all reads as zero).
pub(crate) async fn aligned_extents(
    next: &crate::backend::Guard, count: u64, offset: u64, flags: crate::backend::Flags,
    align: u64, ext: &mut crate::backend::Extents,
) -> crate::backend::Result<()> {
    use crate::backend::{Extent, Extents, Flags};
    let mut below = Extents::with_limit(offset, count, ext.limit());
    next.extents(count, offset, flags, &mut below).await?;
    below.check()?;
    let mut list = below.list().to_vec();
    if let Some(i) = list.iter().position(|e| e.length % align != 0) {
        let e = list[i];
        if e.offset + e.length > offset + align {
            let cut = e.length / align * align;
            list.truncate(i);
            if cut > 0 {
                list.push(Extent { length: cut, ..e });
            }
        } else {
            // The first extent is shorter than a block.
            let mut have = e.length;
            let mut common = e.flags;
            let mut rest: Vec<Extent> = list[1..].to_vec();
            let mut k = 0;
            while have < align {
                if k == rest.len() {
                    let at = offset + have;
                    let mut more = Extents::new(at, align - have);
                    let f = Flags { req_one: false, ..flags };
                    next.extents(align - have, at, f, &mut more).await?;
                    more.check()?;
                    rest = more.list().to_vec();
                    k = 0;
                }
                have += rest[k].length;
                common &= rest[k].flags;
                k += 1;
            }
            list = vec![Extent { offset, length: align, flags: common }];
        }
    }
    for e in list {
        if !ext.add(e.offset, e.length, e.flags) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("-1"), None);
        assert_eq!(parse_duration("soon"), None);
    }
}
