//! Extents collected for one BLOCK_STATUS request.

use std::ops::{BitAnd, BitAndAssign, BitOr, BitOrAssign};

use super::{Errno, Error, Result};

/// The `base:allocation` state of a run of blocks: any combination of
/// [`HOLE`](ExtentFlags::HOLE) and [`ZERO`](ExtentFlags::ZERO);
/// [`DATA`](ExtentFlags::DATA) (the default) is neither. How these map to
/// the bits of a block-status reply is the protocol's business
/// (`protocol::flags::extent_bits` and its inverse).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ExtentFlags(u32);

impl ExtentFlags {
    /// Allocated data: neither a hole nor known to read as zeroes.
    pub const DATA: ExtentFlags = ExtentFlags(0);
    /// The range is not allocated (a hole).
    pub const HOLE: ExtentFlags = ExtentFlags(1);
    /// The range reads as zeroes.
    pub const ZERO: ExtentFlags = ExtentFlags(2);

    /// Whether the range is a hole.
    pub const fn is_hole(self) -> bool {
        self.contains(ExtentFlags::HOLE)
    }

    /// Whether the range reads as zeroes.
    pub const fn is_zero(self) -> bool {
        self.contains(ExtentFlags::ZERO)
    }

    /// Whether every flag set in `other` is set here.
    pub const fn contains(self, other: ExtentFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The flags as bits (`HOLE` is 1, `ZERO` is 2).
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Flags from bits, keeping only the known ones (`HOLE` and `ZERO`).
    pub const fn from_bits_truncate(bits: u32) -> ExtentFlags {
        ExtentFlags(bits & (ExtentFlags::HOLE.0 | ExtentFlags::ZERO.0))
    }
}

impl BitOr for ExtentFlags {
    type Output = ExtentFlags;
    fn bitor(self, rhs: ExtentFlags) -> ExtentFlags {
        ExtentFlags(self.0 | rhs.0)
    }
}

impl BitAnd for ExtentFlags {
    type Output = ExtentFlags;
    fn bitand(self, rhs: ExtentFlags) -> ExtentFlags {
        ExtentFlags(self.0 & rhs.0)
    }
}

impl BitOrAssign for ExtentFlags {
    fn bitor_assign(&mut self, rhs: ExtentFlags) {
        self.0 |= rhs.0;
    }
}

impl BitAndAssign for ExtentFlags {
    fn bitand_assign(&mut self, rhs: ExtentFlags) {
        self.0 &= rhs.0;
    }
}

/// Extent flag: the range is not allocated (a hole); [`ExtentFlags::HOLE`].
pub const HOLE: ExtentFlags = ExtentFlags::HOLE;
/// Extent flag: the range reads as zeroes; [`ExtentFlags::ZERO`].
pub const ZERO: ExtentFlags = ExtentFlags::ZERO;

/// One run of blocks with the same `base:allocation` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Where the run starts.
    pub offset: u64,
    /// How many bytes it covers.
    pub length: u64,
    /// The run's `base:allocation` state.
    pub flags: ExtentFlags,
}

/// The extents of a range `[start, end)`, as a plugin reports them. Extents
/// must be added in order; neighbours with the same flags are merged. The
/// last extent may reach past `end`, up to `limit` (the export's size for a
/// client's request): as in C nbdkit, a plugin that knows a run goes on
/// says so, and the client learns more in one request. Extents that start
/// at or past `end` are not kept.
#[derive(Debug, Clone)]
pub struct Extents {
    start: u64,
    end: u64,
    limit: u64,
    list: Vec<Extent>,
}

/// Hard cap on the extents one reply may carry (8 bytes each on the wire).
const MAX_EXTENTS: usize = 1 << 20;

impl Extents {
    /// An empty collector for `[start, start + len)`, clipped there.
    pub fn new(start: u64, len: u64) -> Extents {
        let end = start.saturating_add(len);
        Extents::with_limit(start, len, end)
    }

    /// An empty collector for `[start, start + len)` whose last extent may
    /// reach up to `limit`.
    pub fn with_limit(start: u64, len: u64, limit: u64) -> Extents {
        let end = start.saturating_add(len);
        Extents { start, end, limit: limit.max(end), list: Vec::new() }
    }

    /// How far the last extent may reach.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Start of the range.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// End of the range (exclusive).
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Where the next extent must begin.
    pub fn next_offset(&self) -> u64 {
        self.list.last().map_or(self.start, |e| e.offset + e.length)
    }

    /// Add an extent. Returns false once the collector is full or the range
    /// is covered, which tells a plugin it can stop.
    pub fn add(&mut self, offset: u64, length: u64, flags: ExtentFlags) -> bool {
        let next = self.next_offset();
        if next >= self.end {
            return false;
        }
        let off = offset.max(next);
        let end = offset.saturating_add(length).min(self.limit);
        if off >= end || off != next {
            // Already covered (go on), or a gap: a gap cannot be
            // described, so everything after it is ignored.
            return off == next;
        }
        let full = self.list.len() >= MAX_EXTENTS;
        match self.list.last_mut() {
            Some(last) if last.flags == flags => last.length += end - off,
            _ if full => return false,
            _ => self.list.push(Extent { offset: off, length: end - off, flags }),
        }
        self.next_offset() < self.end
    }

    /// The collected extents.
    pub fn list(&self) -> &[Extent] {
        &self.list
    }

    /// Check the plugin described at least the first byte.
    pub fn check(&self) -> Result<()> {
        if self.list.is_empty() {
            return Err(Error::new(Errno::Inval, "extents: no extents were returned"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_and_merge() {
        let sparse = ExtentFlags::HOLE | ExtentFlags::ZERO;
        let mut e = Extents::new(100, 100);
        assert!(e.add(0, 150, sparse));
        assert!(e.add(150, 10, sparse));
        assert!(!e.add(160, 1000, ExtentFlags::DATA));
        assert_eq!(
            e.list(),
            &[
                Extent { offset: 100, length: 60, flags: sparse },
                Extent { offset: 160, length: 40, flags: ExtentFlags::DATA }
            ]
        );
    }

    #[test]
    fn gaps_end_the_list() {
        let mut e = Extents::new(0, 100);
        e.add(0, 10, ExtentFlags::DATA);
        e.add(20, 10, ExtentFlags::HOLE | ExtentFlags::ZERO);
        assert_eq!(e.list().len(), 1);
        assert!(Extents::new(0, 1).check().is_err());
    }

    #[test]
    fn flags() {
        let (hole, zero, data) = (ExtentFlags::HOLE, ExtentFlags::ZERO, ExtentFlags::DATA);
        assert_eq!(ExtentFlags::default(), data);
        assert!(!data.is_hole() && !data.is_zero());
        assert!(hole.is_hole() && !hole.is_zero());
        assert!(zero.is_zero() && !zero.is_hole());
        let both = hole | zero;
        assert!(both.is_hole() && both.is_zero());
        assert!(both.contains(hole) && both.contains(data) && !zero.contains(hole));
        assert_eq!(both & zero, zero);
        assert_eq!((hole.bits(), zero.bits(), both.bits()), (1, 2, 3));
        assert_eq!(ExtentFlags::from_bits_truncate(0xff), both);
        assert_eq!(ExtentFlags::from_bits_truncate(4), data);
        let mut f = data;
        f |= zero;
        assert_eq!(f, zero);
        f &= hole;
        assert_eq!(f, data);
        assert_eq!((HOLE, ZERO), (hole, zero));
    }
}
