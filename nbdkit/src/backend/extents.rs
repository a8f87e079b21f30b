//! Extents collected for one BLOCK_STATUS request.

use super::{Errno, Error, Result};

/// Extent flag: the range is not allocated (a hole).
pub const HOLE: u32 = 1;
/// Extent flag: the range reads as zeroes.
pub const ZERO: u32 = 2;

/// One run of blocks with the same `base:allocation` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// `base:allocation` flags: [`HOLE`], [`ZERO`].
    pub flags: u32,
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
    pub fn add(&mut self, offset: u64, length: u64, flags: u32) -> bool {
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
        let mut e = Extents::new(100, 100);
        assert!(e.add(0, 150, 3));
        assert!(e.add(150, 10, 3));
        assert!(!e.add(160, 1000, 0));
        assert_eq!(
            e.list(),
            &[
                Extent { offset: 100, length: 60, flags: 3 },
                Extent { offset: 160, length: 40, flags: 0 }
            ]
        );
    }

    #[test]
    fn gaps_end_the_list() {
        let mut e = Extents::new(0, 100);
        e.add(0, 10, 0);
        e.add(20, 10, 3);
        assert_eq!(e.list().len(), 1);
        assert!(Extents::new(0, 1).check().is_err());
    }
}
