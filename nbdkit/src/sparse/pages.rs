//! Where the pages of a [`Sparse`](super::Sparse) array live.
//!
//! Pages are carved from slabs of anonymous memory, which the kernel gives
//! zeroed, and each slab is populated 1 MiB at a time
//! (`MADV_POPULATE_WRITE`): one call instead of a page fault per 4 KiB.
//! With one zeroed allocation per page, the faults and the zeroing were a
//! third of the server's CPU while a client filled a fresh memory disk. A
//! freed page goes back to the kernel (`MADV_DONTNEED`), so trimming still
//! returns memory, and is reused first; it reads as zeroes either way.
//!
//! The cost: a disk holds up to 1 MiB of RAM beyond its pages. (Huge
//! pages would save the faults too, but on virtual machines zeroing fresh
//! 2 MiB pages made filling a disk three times slower.)

use std::ptr::NonNull;
use std::sync::Mutex;

use super::PAGE;

/// Size of one slab: mapped at once, populated as it is handed out. Small,
/// because under `--swap` (mlockall) a mapping is locked whole at once.
const SLAB: usize = 2 << 20;
/// How much of a slab is populated at once: it divides `SLAB`.
const POPULATE: usize = 1 << 20;
/// Linux's `MADV_POPULATE_WRITE` (5.14).
const MADV_POPULATE_WRITE: libc::c_int = 23;

/// One page: `PAGE` bytes owned by the array entry holding it, as a
/// `Box<[u8]>` would be, but returned to [`Pages`] rather than freed.
pub struct Page(NonNull<u8>);

// SAFETY: a page is plain memory owned by one map entry; access goes
// through the entry (& for reads, &mut for writes), as with a Box.
unsafe impl Send for Page {}
// SAFETY: as above.
unsafe impl Sync for Page {}

impl Page {
    /// The page's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: PAGE bytes, valid while the slab is mapped (as long as
        // the `Pages` that made this page), and not written through any
        // other path while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), PAGE) }
    }

    /// The page's bytes, to change.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `self` is borrowed uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), PAGE) }
    }
}

/// The page allocator of one array.
pub struct Pages {
    inner: Mutex<Inner>,
}

struct Inner {
    /// Every slab (start, length), unmapped when the array goes.
    slabs: Vec<(NonNull<u8>, usize)>,
    /// The untouched rest of the newest slab.
    next: usize,
    end: usize,

    /// Pages given back (zero again), to hand out first.
    free: Vec<NonNull<u8>>,
}

// SAFETY: the pointers are to mappings this allocator owns; all access to
// them is under the mutex.
unsafe impl Send for Inner {}

impl Default for Pages {
    fn default() -> Self {
        Pages { inner: Mutex::new(Inner { slabs: Vec::new(), next: 0, end: 0, free: Vec::new() }) }
    }
}

impl Pages {
    /// A zeroed page. Out of memory is fatal, as for any allocation.
    pub fn alloc(&self) -> Page {
        let (page, populate) = {
            let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(p) = g.free.pop() {
                return Page(p);
            }
            if g.next == g.end {
                let (start, len) = new_slab().unwrap_or_else(|| {
                    std::alloc::handle_alloc_error(
                        std::alloc::Layout::from_size_align(SLAB, PAGE).expect("valid layout"),
                    )
                });
                g.slabs.push((start, len));
                g.next = start.as_ptr() as usize;
                g.end = g.next + len;
            }
            let p = g.next;
            g.next += PAGE;
            // A slab's start is where its populated stretches start.
            let slab = g.slabs.last().expect("a slab").0.as_ptr() as usize;
            (p, (p - slab).is_multiple_of(POPULATE))
        };
        if populate {
            // Outside the lock: other pages of the range may be handed out
            // meanwhile, and a page touched before it is populated simply
            // faults in. If the kernel cannot (before Linux 5.14), every
            // page faults in.
            // SAFETY: populating part of our own mapping.
            unsafe { libc::madvise(page as *mut libc::c_void, POPULATE, MADV_POPULATE_WRITE) };
        }
        Page(NonNull::new(page as *mut u8).expect("inside a mapping"))
    }

    /// Take back a page of this allocator: its memory returns to the
    /// kernel, and reads as zeroes when it is handed out again.
    pub fn free(&self, page: Page) {
        // SAFETY: the page is ours and no longer referenced (we own it
        // by value); MADV_DONTNEED on an anonymous private mapping makes
        // the range read as zeroes.
        let r = unsafe { libc::madvise(page.0.as_ptr().cast(), PAGE, libc::MADV_DONTNEED) };
        if r != 0 {
            // Not returned to the kernel: zero it ourselves.
            let mut page = page;
            page.bytes_mut().fill(0);
            return self.keep(page);
        }
        self.keep(page)
    }

    fn keep(&self, page: Page) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).free.push(page.0);
    }
}

impl Drop for Pages {
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        for &(start, len) in &g.slabs {
            // SAFETY: our own mapping; every page of it belonged to the
            // array, which is being dropped.
            unsafe { libc::munmap(start.as_ptr().cast(), len) };
        }
    }
}

/// Map a slab of `SLAB` bytes.
fn new_slab() -> Option<(NonNull<u8>, usize)> {
    // SAFETY: a fresh anonymous private mapping, checked below.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SLAB,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return None;
    }
    Some((NonNull::new(raw.cast())?, SLAB))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_zero_distinct_and_reused_as_zero() {
        let pages = Pages::default();
        let mut a = pages.alloc();
        let b = pages.alloc();
        assert!(a.bytes().iter().all(|&x| x == 0));
        assert_ne!(a.0, b.0);
        a.bytes_mut().fill(7);
        let at = a.0;
        pages.free(a);
        let c = pages.alloc();
        assert_eq!(c.0, at, "a freed page is handed out first");
        assert!(c.bytes().iter().all(|&x| x == 0));
    }

    #[test]
    fn slabs_follow_one_another() {
        let pages = Pages::default();
        let _first = pages.alloc();
        let many: Vec<Page> = (0..SLAB / PAGE + 1).map(|_| pages.alloc()).collect();
        assert_eq!(pages.inner.lock().unwrap().slabs.len(), 2);
        assert!(many.iter().all(|p| p.bytes()[PAGE - 1] == 0));
    }
}
