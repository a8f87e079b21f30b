//! A sparse, thread-safe byte array: the storage of the memory plugin.
//!
//! Pages of [`PAGE`] bytes are allocated on first write. They are spread over
//! `SHARDS` independently locked maps, so parallel requests on different
//! pages rarely meet on a lock; reads take a shared lock. A page that becomes
//! all zeroes through zero or trim is freed, so holes come back, unless the
//! array was made [`Sparse::locked`]: then every page is allocated at once,
//! locked in RAM, and kept.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::RwLock;

use crate::backend::ExtentFlags;

mod pages;
use pages::{Page, Pages};

/// Page size in bytes.
pub const PAGE: usize = 32 * 1024;
const PAGE_SHIFT: u32 = PAGE.trailing_zeros();
const SHARDS: usize = 64;

/// Page numbers are already well spread: hash them with one multiply.
#[derive(Default)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u64(&mut self, n: u64) {
        let h = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 29);
    }
}

type Shard = RwLock<HashMap<u64, Page, BuildHasherDefault<PageHasher>>>;

/// The array.
pub struct Sparse {
    shards: Box<[Shard]>,
    /// Every page allocated up front and locked in RAM (`mlock`): pages
    /// are never freed.
    locked: bool,
    /// Where the pages come from (see [`pages`]).
    pages: Pages,
}

impl Default for Sparse {
    fn default() -> Self {
        Sparse::new()
    }
}

/// Split `[offset, offset+len)` into per-page pieces:
/// (page number, offset in page, length, offset in the caller's buffer).
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (u64, usize, usize, usize)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let page = pos >> PAGE_SHIFT;
        let in_page = (pos & (PAGE as u64 - 1)) as usize;
        let n = (PAGE - in_page).min(len - done);
        let item = (page, in_page, n, done);
        done += n;
        Some(item)
    })
}

impl Sparse {
    /// An empty (all zero) array.
    pub fn new() -> Sparse {
        Sparse {
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
            locked: false,
            pages: Pages::default(),
        }
    }

    /// An all-zero array of `size` bytes whose pages are all allocated now
    /// and locked in RAM, so that they are never swapped out. Fails (with
    /// the OS error, e.g. ENOMEM when `ulimit -l` is too low) if they
    /// cannot all be locked.
    pub fn locked(size: u64) -> std::io::Result<Sparse> {
        let mut s = Sparse::new();
        s.locked = true;
        for page in 0..size.div_ceil(PAGE as u64) {
            let p = s.pages.alloc();
            // SAFETY: mlock on memory we own, for its length; the box is
            // kept (never freed while the array lives).
            if unsafe { libc::mlock(p.bytes().as_ptr().cast(), PAGE) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let (shard, key) = s.shard(page);
            shard.write().unwrap_or_else(|e| e.into_inner()).insert(key, p);
        }
        Ok(s)
    }

    fn shard(&self, page: u64) -> (&Shard, u64) {
        (&self.shards[page as usize % SHARDS], page / SHARDS as u64)
    }

    /// Read into `buf` from `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) {
        for (page, at, n, b) in pieces(offset, buf.len()) {
            let (shard, key) = self.shard(page);
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(p) => buf[b..b + n].copy_from_slice(&p.bytes()[at..at + n]),
                None => buf[b..b + n].fill(0),
            }
        }
    }

    /// Read into `buf` from `offset`, except the never-written pages,
    /// which are left as they are and pushed to `holes` as `(start,
    /// length)` relative to `offset` (adjacent ones merged).
    pub fn read_sparse(&self, buf: &mut [u8], offset: u64, holes: &mut Vec<(u64, u64)>) {
        for (page, at, n, b) in pieces(offset, buf.len()) {
            let (shard, key) = self.shard(page);
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            match map.get(&key) {
                Some(p) => buf[b..b + n].copy_from_slice(&p.bytes()[at..at + n]),
                None => match holes.last_mut() {
                    Some((start, len)) if *start + *len == b as u64 => *len += n as u64,
                    _ => holes.push((b as u64, n as u64)),
                },
            }
        }
    }

    /// Write `buf` at `offset`, allocating pages as needed.
    pub fn write(&self, buf: &[u8], offset: u64) {
        for (page, at, n, b) in pieces(offset, buf.len()) {
            let (shard, key) = self.shard(page);
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            let p = map.entry(key).or_insert_with(|| self.pages.alloc());
            p.bytes_mut()[at..at + n].copy_from_slice(&buf[b..b + n]);
        }
    }

    /// How many pages are allocated.
    fn allocated_pages(&self) -> u64 {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|e| e.into_inner()).len() as u64).sum()
    }

    /// The allocated pages among pages `[first, last)`, in order.
    fn allocated_in(&self, first: u64, last: u64) -> Vec<u64> {
        let mut v = Vec::new();
        for (i, shard) in self.shards.iter().enumerate() {
            let map = shard.read().unwrap_or_else(|e| e.into_inner());
            v.extend(
                map.keys()
                    .map(|k| k * SHARDS as u64 + i as u64)
                    .filter(|p| (first..last).contains(p)),
            );
        }
        v.sort_unstable();
        v
    }

    /// Make `[offset, offset+len)` read as zeroes, freeing pages that end up
    /// all zero. A range of more pages than are allocated costs what the
    /// allocated pages cost, not what the range does (extended headers
    /// allow a zero of the whole disk, however large, in one request).
    pub fn zero(&self, len: u64, offset: u64) {
        let page = PAGE as u64;
        let end = offset + len;
        let (first, last) = (offset.div_ceil(page), end / page);
        if !self.locked && last > first + 64 && last - first > self.allocated_pages() {
            for (i, shard) in self.shards.iter().enumerate() {
                let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
                let gone: Vec<u64> = map
                    .keys()
                    .copied()
                    .filter(|k| (first..last).contains(&(k * SHARDS as u64 + i as u64)))
                    .collect();
                for k in gone {
                    if let Some(p) = map.remove(&k) {
                        self.pages.free(p);
                    }
                }
            }
            self.zero_pages(offset, (first * page).min(end));
            self.zero_pages((last * page).max(offset), end);
            return;
        }
        self.zero_pages(offset, end);
    }

    /// [`Sparse::zero`], page by page.
    fn zero_pages(&self, offset: u64, end: u64) {
        let mut pos = offset;
        while pos < end {
            let page = pos >> PAGE_SHIFT;
            let at = (pos & (PAGE as u64 - 1)) as usize;
            let n = ((PAGE - at) as u64).min(end - pos) as usize;
            let (shard, key) = self.shard(page);
            let mut map = shard.write().unwrap_or_else(|e| e.into_inner());
            if n == PAGE && !self.locked {
                if let Some(p) = map.remove(&key) {
                    self.pages.free(p);
                }
            } else if let Some(p) = map.get_mut(&key) {
                p.bytes_mut()[at..at + n].fill(0);
                if !self.locked && p.bytes().iter().all(|&b| b == 0) {
                    if let Some(p) = map.remove(&key) {
                        self.pages.free(p);
                    }
                }
            }
            pos += n as u64;
        }
    }

    /// Whether the page holding `offset` is allocated.
    pub fn allocated(&self, offset: u64) -> bool {
        let (shard, key) = self.shard(offset >> PAGE_SHIFT);
        shard.read().unwrap_or_else(|e| e.into_inner()).contains_key(&key)
    }

    /// What the page holding `offset` is: unallocated, allocated but all
    /// zero, or holding data.
    pub fn state(&self, offset: u64) -> PageState {
        let (shard, key) = self.shard(offset >> PAGE_SHIFT);
        let map = shard.read().unwrap_or_else(|e| e.into_inner());
        match map.get(&key) {
            None => PageState::Hole,
            Some(p) if p.bytes().iter().all(|&b| b == 0) => PageState::Zero,
            Some(_) => PageState::Data,
        }
    }

    /// Call `f(offset, length, state)` for each page touching
    /// `[offset, offset+len)`, from `offset` to the end of its page (so the
    /// last run may reach past the range: C's 32 KiB granularity), in
    /// order, until `f` returns false. The state is that of the bytes
    /// reported, as C's allocator judges it.
    ///
    /// Over a range of more pages than are allocated, the unallocated
    /// pages between two allocated ones come as one run, so the cost is
    /// that of the allocated pages.
    pub fn runs(&self, len: u64, offset: u64, mut f: impl FnMut(u64, u64, PageState) -> bool) {
        let end = offset + len;
        let (first, last) = (offset >> PAGE_SHIFT, end.div_ceil(PAGE as u64));
        // The allocated pages, when the range is larger than they are.
        let mut sparse = (last - first > 64 && last - first > self.allocated_pages())
            .then(|| self.allocated_in(first, last).into_iter().peekable());
        let mut pos = offset;
        while pos < end {
            let page_end = ((pos >> PAGE_SHIFT) + 1) << PAGE_SHIFT;
            if let Some(next) = sparse.as_mut() {
                let page = pos >> PAGE_SHIFT;
                while next.peek().is_some_and(|&p| p < page) {
                    next.next();
                }
                if next.peek() != Some(&page) {
                    // Unallocated up to the next allocated page, or to
                    // the end of the range's last page.
                    let hole_end = next.peek().map_or(last << PAGE_SHIFT, |&p| p << PAGE_SHIFT);
                    if !f(pos, hole_end - pos, PageState::Hole) {
                        return;
                    }
                    pos = hole_end;
                    continue;
                }
            }
            let n = page_end - pos;
            if !f(pos, n, self.state_from(pos)) {
                return;
            }
            pos += n;
        }
    }

    /// The state of the bytes from `offset` to the end of its page.
    fn state_from(&self, offset: u64) -> PageState {
        let (shard, key) = self.shard(offset >> PAGE_SHIFT);
        let map = shard.read().unwrap_or_else(|e| e.into_inner());
        let at = (offset & (PAGE as u64 - 1)) as usize;
        match map.get(&key) {
            None => PageState::Hole,
            Some(p) if p.bytes()[at..].iter().all(|&b| b == 0) => PageState::Zero,
            Some(_) => PageState::Data,
        }
    }
}

/// A page as extents report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Never written (or zeroed whole): reads as zero, no memory.
    Hole,
    /// Allocated, and every byte is zero.
    Zero,
    /// Allocated, with data.
    Data,
}

impl PageState {
    /// The extent flags for this state.
    pub fn flags(self) -> ExtentFlags {
        match self {
            PageState::Hole => ExtentFlags::HOLE | ExtentFlags::ZERO,
            PageState::Zero => ExtentFlags::ZERO,
            PageState::Data => ExtentFlags::DATA,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_zero() {
        let s = Sparse::new();
        let mut buf = vec![1u8; PAGE * 3];
        s.read(&mut buf, 12345);
        assert!(buf.iter().all(|&b| b == 0));
        let data: Vec<u8> = (0..PAGE * 2 + 100).map(|i| i as u8).collect();
        s.write(&data, PAGE as u64 - 50);
        let mut back = vec![0u8; data.len()];
        s.read(&mut back, PAGE as u64 - 50);
        assert_eq!(back, data);
        assert!(s.allocated(0));
        assert!(s.allocated(PAGE as u64));
        s.zero(PAGE as u64, PAGE as u64);
        assert!(!s.allocated(PAGE as u64), "whole page freed");
        s.zero(50, PAGE as u64 - 50);
        assert!(!s.allocated(0), "page freed once all zero");
        let mut runs = vec![];
        s.runs(PAGE as u64 * 4, 0, |o, l, a| {
            runs.push((o, l, a));
            true
        });
        let states: Vec<PageState> = runs.iter().map(|r| r.2).collect();
        use PageState::*;
        assert_eq!(states, [Hole, Hole, Data, Data]);
        // A page written with zeroes only is allocated but reads as zero.
        s.write(&[0u8; 10], 0);
        assert_eq!(s.state(0), Zero);
    }

    #[test]
    fn a_freed_page_comes_back_as_zeroes_elsewhere() {
        // Zeroing a whole page frees it, and the next new page reuses its
        // memory: what that page was never written must read as zero.
        let s = Sparse::new();
        s.write(&vec![0xaa; PAGE], 0);
        s.zero(PAGE as u64, 0);
        assert!(!s.allocated(0));
        let far = 1000 * PAGE as u64;
        s.write(b"x", far + 7);
        let mut back = vec![1u8; PAGE];
        s.read(&mut back, far);
        assert_eq!(back[7], b'x');
        back[7] = 0;
        assert!(back.iter().all(|&b| b == 0));
    }

    #[test]
    fn locked_pages_are_all_there_and_stay() {
        let s = Sparse::locked(PAGE as u64 * 2 + 1).unwrap();
        for page in 0..3 {
            assert!(s.allocated(page * PAGE as u64));
        }
        assert!(!s.allocated(3 * PAGE as u64));
        s.write(b"abc", 10);
        s.zero(PAGE as u64 * 2, 0);
        assert!(s.allocated(0), "zeroing keeps a locked page");
        let mut buf = [1u8; 3];
        s.read(&mut buf, 10);
        assert_eq!(buf, [0, 0, 0]);
    }

    /// The page-by-page answer: what `runs` gives when the range is small.
    fn naive_runs(s: &Sparse, len: u64, offset: u64) -> Vec<(u64, u64, PageState)> {
        let mut out: Vec<(u64, u64, PageState)> = Vec::new();
        let mut pos = offset;
        while pos < offset + len {
            let n = PAGE as u64 - (pos % PAGE as u64);
            let st = s.state_from(pos);
            match out.last_mut() {
                Some(l) if l.2 == st && l.0 + l.1 == pos => l.1 += n,
                _ => out.push((pos, n, st)),
            }
            pos += n;
        }
        out
    }

    fn merged_runs(s: &Sparse, len: u64, offset: u64) -> Vec<(u64, u64, PageState)> {
        let mut out: Vec<(u64, u64, PageState)> = Vec::new();
        s.runs(len, offset, |o, n, st| {
            match out.last_mut() {
                Some(l) if l.2 == st && l.0 + l.1 == o => l.1 += n,
                _ => out.push((o, n, st)),
            }
            true
        });
        out
    }

    #[test]
    fn large_ranges_cost_what_is_allocated() {
        let s = Sparse::new();
        let g = 1u64 << 30;
        for at in [0, 5 * PAGE as u64 + 7, g / 2, g - 1] {
            s.write(&[1; 100], at);
        }
        s.write(&[0; 10], 3 * PAGE as u64); // allocated, all zero
                                            // Ranges far larger than the 5 allocated pages take the fast path;
                                            // the answer is the page-by-page one.
        for (off, len) in [(0, g), (100, g - 200), (g / 2 - 1, 3), (7, g + 100)] {
            assert_eq!(merged_runs(&s, len, off), naive_runs(&s, len, off), "{off} {len}");
        }
        // Far past the data: one hole run to the end of the last page.
        let far = merged_runs(&s, 1 << 40, 7);
        let want = ((1u64 << 40) + PAGE as u64, PageState::Hole);
        assert_eq!(far.last().map(|r| (r.0 + r.1, r.2)), Some(want));
        // A zero of nearly all of it: whole pages dropped, the edges zeroed.
        s.zero(g - 2 * PAGE as u64, PAGE as u64 + 1);
        let mut b = [9u8; 8];
        s.read(&mut b, 0);
        assert_eq!(b, [1; 8]);
        s.read(&mut b, PAGE as u64 + 1);
        assert_eq!(b, [0; 8]);
        assert!(!s.allocated(g / 2) && !s.allocated(5 * PAGE as u64));
        s.read(&mut b, g - 8);
        assert_eq!(b[7], 1);
        assert_eq!(s.allocated_pages(), 3); // the first, the last, and page 1's edge
                                            // A zero of an exabyte from a small sparse array is instant.
        s.zero(1 << 60, 0);
        assert_eq!(s.allocated_pages(), 0);
    }
}
