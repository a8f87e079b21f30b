//! Reusable request and reply buffers, per connection.
//!
//! A connection with N requests in flight needs at most N buffers, and
//! clients tend to use one request size, so keeping the buffers saves an
//! allocation (and for large ones, page faults) per request.

use std::sync::Mutex;

/// Buffers above this size are not kept.
const MAX_KEPT: usize = 8 << 20;

/// Nor are small ones (simple replies): they are cheap to allocate, and
/// kept they would crowd the pool and push out the data buffers.
const MIN_KEPT: usize = 4096;

pub struct Pool {
    bufs: Mutex<Vec<Vec<u8>>>,
    keep: usize,
}

impl Pool {
    /// A pool keeping at most `keep` buffers.
    pub fn new(keep: usize) -> Pool {
        Pool { bufs: Mutex::new(Vec::with_capacity(keep)), keep }
    }

    /// A buffer of exactly `len` bytes. Its contents are unspecified: the
    /// caller overwrites all of it.
    pub fn get(&self, len: usize) -> Vec<u8> {
        let found = {
            let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
            let i = bufs.iter().position(|b| b.capacity() >= len);
            i.map(|i| bufs.swap_remove(i))
        };
        let mut b = found.unwrap_or_default();
        if b.len() >= len {
            b.truncate(len);
        } else {
            b.resize(len, 0);
        }
        b
    }

    /// Give a buffer back.
    pub fn put(&self, b: Vec<u8>) {
        if b.capacity() > MAX_KEPT || b.capacity() < MIN_KEPT {
            return;
        }
        let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
        if bufs.len() < self.keep {
            bufs.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_data_buffers_not_small_ones() {
        let pool = Pool::new(2);
        let big = pool.get(8192);
        let addr = big.as_ptr();
        pool.put(vec![0u8; 16]); // a simple reply: not kept
        pool.put(big);
        // The data buffer comes back, not a fresh allocation.
        let again = pool.get(4096);
        assert_eq!(again.as_ptr(), addr);
        assert_eq!(again.len(), 4096);
        assert!(pool.bufs.lock().unwrap().is_empty());
    }
}
