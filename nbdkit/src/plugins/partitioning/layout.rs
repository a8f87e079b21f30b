//! The virtual disk as a list of regions laid end to end: a partition
//! table, a file, zero padding, ... Built once at start-up, then searched
//! by offset for every request.

/// What a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The `i`th file.
    File(usize),
    /// The `i`th in-memory table (MBR, EBR, GPT primary or secondary).
    Table(usize),
    /// Zeroes: padding for alignment.
    Zero,
}

/// `len` bytes from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub len: u64,
    pub kind: Kind,
}

impl Region {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start + self.len
    }
}

/// Contiguous regions from offset 0, in order.
#[derive(Debug, Default)]
pub struct Layout {
    regions: Vec<Region>,
}

impl Layout {
    /// Size of the disk so far.
    pub fn size(&self) -> u64 {
        self.regions.last().map_or(0, Region::end)
    }

    /// Append a region of `len` (> 0) bytes; returns it.
    pub fn push(&mut self, len: u64, kind: Kind) -> Region {
        debug_assert!(len > 0);
        let r = Region { start: self.size(), len, kind };
        self.regions.push(r);
        r
    }

    /// Pad with zeroes up to a multiple of `align` (a power of two).
    pub fn pad_to(&mut self, align: u64) {
        debug_assert!(align.is_power_of_two());
        let size = self.size();
        let aligned = size.next_multiple_of(align);
        if aligned > size {
            self.push(aligned - size, Kind::Zero);
        }
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region holding the byte at `offset` (which must be on the disk).
    pub fn find(&self, offset: u64) -> usize {
        self.regions.partition_point(|r| r.end() <= offset)
    }

    /// The file region of file `i`.
    pub fn file(&self, i: usize) -> Region {
        *self.regions.iter().find(|r| r.kind == Kind::File(i)).expect("every file has a region")
    }

    /// The region of table `i`.
    pub fn table(&self, i: usize) -> Region {
        *self.regions.iter().find(|r| r.kind == Kind::Table(i)).expect("every table has a region")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_and_lookup() {
        let mut l = Layout::default();
        l.push(512, Kind::Table(0));
        l.pad_to(4096);
        l.push(10, Kind::File(0));
        l.pad_to(512);
        l.pad_to(512);
        assert_eq!(l.size(), 4608);
        assert_eq!(
            l.regions().iter().map(|r| r.kind).collect::<Vec<_>>(),
            [Kind::Table(0), Kind::Zero, Kind::File(0), Kind::Zero]
        );
        assert_eq!(l.find(0), 0);
        assert_eq!(l.find(511), 0);
        assert_eq!(l.find(512), 1);
        assert_eq!(l.find(4096), 2);
        assert_eq!(l.find(4106), 3);
        assert_eq!(l.file(0).start, 4096);
    }
}
