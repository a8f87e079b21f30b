//! `sparse-random`: a sparse disk of repeatable random data, shaped like a
//! virtual machine's disk: runs of data blocks between runs of holes.
//!
//! - `size=SIZE` (magic key; default 0, as C nbdkit's code does although
//!   its help calls it required): the disk size.
//! - `seed=N` (32-bit, C syntax; default the time in seconds): the same
//!   seed gives the same disk, the very one C nbdkit gives for it.
//! - `percent=P` (default 10): the share of data, 0 to 100, read as C's
//!   `sscanf("%lf")` does (so `5x` is 5 and `nan` is accepted, giving no
//!   data at all). 0 gives no data and 100 nothing but data.
//! - `runlength=N` (default 16777216): the mean length of a data run in
//!   bytes; a plain number as C parses it, so no `16M`, and not 0.
//! - `random-content=BOOL` (default false): each data block holds random
//!   bytes instead of one random non-zero byte repeated.
//!
//! The disk is made of 4096-byte blocks. At start-up one walk over the
//! blocks (in whole bytes of the bitmap: multiples of 8 blocks) decides
//! which hold data: from a hole the walk turns to data with probability
//! `percent/100 / runlength_in_blocks / (1 - percent/100)`, and from data
//! back to holes with probability `1 / runlength_in_blocks`, each step
//! comparing one xoshiro256** output (seeded with `seed`) with that
//! probability times 2^64. A data block's bytes come from xoshiro256**
//! seeded with `seed + offset`, where, as in C, `offset` is where the read
//! begins within that block, so a read starting in the middle of a data
//! block does not see what an aligned read sees there.
//!
//! Extents report holes (hole and zero) and data exactly. Writes succeed
//! only if they write what a read at the same place returns (else EIO),
//! flush does nothing, and trim and zero succeed only on holes: so a copy
//! of the disk onto itself checks the copier.
//!
//! Example: `nbdkit -U - sparse-random 1T --run 'nbdcopy "$uri" "$uri"'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::{Caps, Errno, Error, Extents, Flags, Fua, Handle, Plugin, Result};
use crate::backend::{ExtentFlags, ThreadModel};
use crate::error::StartError;
use crate::params::Params;
use crate::prng::Xoshiro;

/// The `sparse-random` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "sparse-random",
    description: "a sparse disk of repeatable random data",
    config_help: "size=<SIZE>  (required) Size of the backing disk\n\
                  seed=<SEED>             Random number generator seed\n\
                  percent=<PERCENT>       Percentage of data\n\
                  runlength=<BYTES>       Expected average run length of data\n\
                  random-content=true     Fully random content in each block",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

/// Block size: one bit of the map each.
const BLOCK: u64 = 4096;

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let err = |m: String| StartError(format!("sparse-random: {m}"));
    let size = p.take_size("size")?.unwrap_or(0);
    let seed = super::random::take_seed(&mut p)?;
    let percent = match p.take("percent") {
        None => 10.0,
        Some(v) => match scan_double(&v) {
            // C checks `percent < 0 || percent > 100`, which NaN passes.
            Some(x) if x.is_nan() || (0.0..=100.0).contains(&x) => x,
            _ => return Err(err(format!("cannot parse percent parameter: {v}"))),
        },
    };
    let runlength = p.take_uint("runlength", u64::MAX)?.unwrap_or(16 << 20);
    if runlength == 0 {
        return Err(err("runlength parameter must be > 0".into()));
    }
    let random_content = p.take_bool("random-content")?.unwrap_or(false);
    p.finish()?;
    let map = Map::generate(size, seed, percent, runlength).map_err(err)?;
    Ok(Arc::new(Shared(Arc::new(Disk { size, seed, random_content, map }))))
}

/// Read a floating-point number as glibc's `sscanf("%lf")` does: leading
/// blanks, then the longest prefix that is a number (`1e` is 1, `5x` is 5),
/// including `nan`, `inf`/`infinity` and hexadecimal (`0x1p3`). None if no
/// number starts the string.
fn scan_double(s: &str) -> Option<f64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let b = t.as_bytes();
    let starts = |w: &str| b.len() >= w.len() && b[..w.len()].eq_ignore_ascii_case(w.as_bytes());
    let magnitude = if starts("nan") {
        f64::NAN
    } else if starts("inf") {
        // Having begun "infinity", scanf cannot take back the letters.
        if b.get(3).is_some_and(|c| c.eq_ignore_ascii_case(&b'i')) && !starts("infinity") {
            return None;
        }
        f64::INFINITY
    } else if starts("0x") {
        scan_hex(&b[2..])?
    } else {
        let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
        let int = digits(0);
        let mut end = int;
        let mut frac = 0;
        if b.get(end) == Some(&b'.') {
            frac = digits(end + 1);
            end += 1 + frac;
        }
        if int + frac == 0 {
            return None;
        }
        if matches!(b.get(end), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(b.get(end + 1), Some(b'+' | b'-')));
            let exp = digits(end + 1 + sign);
            if exp > 0 {
                end += 1 + sign + exp;
            }
        }
        t[..end].parse().ok()?
    };
    Some(if neg { -magnitude } else { magnitude })
}

/// The part of a hexadecimal float after `0x`: digits, an optional point
/// and more digits, an optional binary exponent `p[+-]N`.
fn scan_hex(b: &[u8]) -> Option<f64> {
    let mut mantissa = 0f64;
    let mut scale = 0i64;
    let mut seen = false;
    let mut point = false;
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'.' && !point {
            point = true;
        } else if let Some(d) = (c as char).to_digit(16) {
            mantissa = mantissa * 16.0 + f64::from(d);
            seen = true;
            if point {
                scale -= 4;
            }
        } else {
            break;
        }
        i += 1;
    }
    if !seen {
        return None;
    }
    if matches!(b.get(i), Some(b'p' | b'P')) {
        let neg = b.get(i + 1) == Some(&b'-');
        let sign = usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
        let digits: Vec<u8> =
            b[i + 1 + sign..].iter().copied().take_while(u8::is_ascii_digit).collect();
        if !digits.is_empty() {
            let e: i64 = std::str::from_utf8(&digits).ok()?.parse().unwrap_or(i64::MAX / 2);
            scale += if neg { -e } else { e };
        }
    }
    Some(mantissa * 2f64.powi(scale.clamp(-4000, 4000) as i32))
}

/// Which blocks hold data: one bit each.
struct Map {
    words: Vec<u64>,
}

impl Map {
    /// Walk the blocks as C nbdkit does, for the very same map.
    fn generate(size: u64, seed: u32, percent: f64, runlength: u64) -> Result<Map, String> {
        // The walk covers the bitmap's whole bytes: 8 blocks each.
        let blocks = size.div_ceil(BLOCK * 8) * 8;
        let nwords = usize::try_from(blocks.div_ceil(64))
            .map_err(|_| "bitmap too large for this architecture".to_string())?;
        let mut words = Vec::new();
        words
            .try_reserve_exact(nwords)
            .map_err(|_| "cannot allocate memory for the bitmap".to_string())?;
        words.resize(nwords, 0u64);
        let mut map = Map { words };
        if percent == 0.0 {
            return Ok(map);
        }
        if percent == 100.0 {
            for b in 0..blocks {
                map.set(b);
            }
            return Ok(map);
        }
        let p_dh = 1.0 / (runlength as f64 / BLOCK as f64);
        let p_hd = (percent / 100.0) * p_dh / (1.0 - percent / 100.0);
        // The probabilities times UINT64_MAX, which as a double is 2^64.
        let two64 = u64::MAX as f64;
        let (leave_data, leave_hole) = (p_dh * two64, p_hd * two64);
        let mut rng = Xoshiro::new(u64::from(seed));
        let mut data = false;
        for b in 0..blocks {
            if data {
                map.set(b);
            }
            let limit = if data { leave_data } else { leave_hole };
            if rng.next() as f64 <= limit {
                data = !data;
            }
        }
        Ok(map)
    }

    fn set(&mut self, b: u64) {
        self.words[(b / 64) as usize] |= 1 << (b % 64);
    }

    /// Whether block `b` holds data (blocks past the map are holes).
    fn get(&self, b: u64) -> bool {
        usize::try_from(b / 64)
            .ok()
            .and_then(|w| self.words.get(w))
            .is_some_and(|w| w >> (b % 64) & 1 != 0)
    }

    /// The first block from `b` (and before `limit`) whose state differs
    /// from `b`'s, or `limit`.
    fn run_end(&self, b: u64, limit: u64) -> u64 {
        let data = self.get(b);
        let mut at = b;
        while at < limit {
            let w =
                usize::try_from(at / 64).ok().and_then(|w| self.words.get(w)).copied().unwrap_or(0);
            let differ = if data { !w } else { w } >> (at % 64);
            if differ != 0 {
                return (at + u64::from(differ.trailing_zeros())).min(limit);
            }
            at = (at / 64 + 1) * 64;
        }
        limit
    }
}

struct Disk {
    size: u64,
    seed: u32,
    random_content: bool,
    map: Map,
}

/// A request cut at block boundaries: `(block, offset, skip, len)`: the
/// piece is `len` bytes of `block` from byte `skip`, and `offset` is where
/// it starts on the disk (the seed of a data block's bytes).
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, u64, usize, usize)> {
    let end = offset + len as u64;
    let mut at = offset;
    std::iter::from_fn(move || {
        (at < end).then(|| {
            let skip = at % BLOCK;
            let n = (BLOCK - skip).min(end - at);
            let piece = (at / BLOCK, at, skip as usize, n as usize);
            at += n;
            piece
        })
    })
}

impl Disk {
    /// Fill `dst` with bytes `skip..` of `block` as read from `offset`.
    fn block(&self, block: u64, offset: u64, skip: usize, dst: &mut [u8]) {
        if !self.map.get(block) {
            dst.fill(0);
            return;
        }
        let mut rng = Xoshiro::new(u64::from(self.seed).wrapping_add(offset));
        if self.random_content {
            for _ in 0..skip {
                rng.next();
            }
            for b in dst {
                *b = rng.next() as u8;
            }
        } else {
            dst.fill((rng.next() as u8).max(1));
        }
    }
}

#[async_trait]
impl Handle for Disk {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.size)
    }

    async fn caps(&self) -> Result<Caps> {
        Ok(Caps { fua: Fua::Emulate, fast_zero: false, ..Caps::ALL_NATIVE })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let mut out = &mut buf[..];
        for (block, at, skip, n) in pieces(offset, out.len()) {
            let (dst, rest) = out.split_at_mut(n);
            self.block(block, at, skip, dst);
            out = rest;
        }
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        let mut expect = [0u8; BLOCK as usize];
        let mut data = buf;
        for (block, at, skip, n) in pieces(offset, data.len()) {
            let (got, rest) = data.split_at(n);
            self.block(block, at, skip, &mut expect[..n]);
            if got != &expect[..n] {
                return Err(Error::new(Errno::Io, "data written does not match expected"));
            }
            data = rest;
        }
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        Ok(())
    }

    async fn trim(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.only_holes(count, offset)
    }

    async fn zero(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.only_holes(count, offset)
    }

    async fn extents(&self, count: u64, offset: u64, _f: Flags, ext: &mut Extents) -> Result<()> {
        let end = offset + count;
        let last = end.div_ceil(BLOCK);
        let mut b = offset / BLOCK;
        while b < last {
            let next = self.map.run_end(b, last);
            let flags = if self.map.get(b) {
                ExtentFlags::DATA
            } else {
                ExtentFlags::HOLE | ExtentFlags::ZERO
            };
            let from = (b * BLOCK).max(offset);
            if !ext.add(from, next * BLOCK - from, flags) {
                break;
            }
            b = next;
        }
        Ok(())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}

impl Disk {
    /// Trim and zero may only touch holes, which already read as zeroes.
    fn only_holes(&self, count: u64, offset: u64) -> Result<()> {
        let first = offset / BLOCK;
        let last = (offset + count).div_ceil(BLOCK);
        // (A zero-length request at an unaligned offset still checks its
        // block, as in C.)
        let data = first < last && (self.map.get(first) || self.map.run_end(first, last) < last);
        if data {
            return Err(Error::new(Errno::Io, "trying to trim or zero non-hole in disk"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_is_read_as_sscanf_reads_it() {
        for (s, v) in [
            ("10", 10.0),
            ("  5", 5.0),
            ("5x", 5.0),
            ("1e", 1.0),
            ("1e+", 1.0),
            ("1e1", 10.0),
            ("+.5e+1", 5.0),
            ("1.", 1.0),
            ("1.2.3", 1.2),
            ("00012", 12.0),
            ("-0", 0.0),
            ("0x10", 16.0),
            ("0x.8", 0.5),
            ("0X1P-2", 0.25),
            ("0x1p", 1.0),
            ("0x1.8p1x", 3.0),
            ("infx", f64::INFINITY),
            ("infinity", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
        ] {
            assert_eq!(scan_double(s), Some(v), "{s}");
        }
        for s in ["nan", "NaN", "-nan", "nan(abc)"] {
            assert!(scan_double(s).unwrap().is_nan(), "{s}");
        }
        for s in ["", "  ", "abc", ".", "+", "0x", "0xg", "in", "infinit"] {
            assert_eq!(scan_double(s), None, "{s}");
        }
    }

    fn map(size: u64, seed: u32, percent: f64, runlength: u64) -> Map {
        Map::generate(size, seed, percent, runlength).unwrap()
    }

    #[test]
    fn run_end_finds_the_next_change() {
        let m = map(1 << 24, 3, 50.0, 8 * BLOCK);
        let blocks = (1u64 << 24) / BLOCK;
        for b in 0..blocks {
            let end = m.run_end(b, blocks);
            assert!((b..end).all(|x| m.get(x) == m.get(b)), "{b}");
            assert!(end == blocks || m.get(end) != m.get(b), "{b}");
        }
        assert_eq!(m.run_end(5, 5), 5);
    }

    #[test]
    fn percent_0_and_100() {
        let m = map(100_000, 1, 0.0, 1);
        assert!((0..32).all(|b| !m.get(b)));
        let m = map(100_000, 1, 100.0, 1);
        // The whole bitmap, up to its last byte (32 blocks here).
        assert!((0..32).all(|b| m.get(b)));
        assert!(!m.get(32));
    }

    #[test]
    fn pieces_cut_at_blocks() {
        let v: Vec<_> = pieces(4000, 5000).collect();
        assert_eq!(v, [(0, 4000, 4000, 96), (1, 4096, 0, 4096), (2, 8192, 0, 808)]);
        assert_eq!(pieces(0, 0).count(), 0);
    }
}
