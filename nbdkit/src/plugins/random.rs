//! `random`: a disk full of repeatable pseudo-random bytes.
//!
//! - `size=SIZE` (magic key; default 0, as C nbdkit's code does although
//!   its help calls it required): the disk size.
//! - `seed=N` (a 32-bit number, C syntax: `0x..` hex, `0..` octal; default
//!   the current time in seconds): the same seed serves the same bytes,
//!   the very bytes C nbdkit serves for it.
//!
//! Byte `i` is the low byte of the third output of xoshiro256** seeded
//! (through splitmix64) with `seed + i`, so any byte can be read without
//! generating the ones before it. Writes succeed only if they write what
//! is already there (else EIO), which lets the disk check a copy made onto
//! itself; trim and zero always fail with EIO. No flush, no extents (it
//! is all data).
//!
//! Example: `nbdkit -U - random 1G seed=42 --run 'nbdcopy "$uri" "$uri"'`

use std::sync::Arc;

use async_trait::async_trait;

use super::{PluginInfo, Shared};
use crate::backend::Fua;
use crate::backend::{Caps, Errno, Error, Flags, Handle, Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;
use crate::prng::Xoshiro;

/// The `random` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "random",
    description: "a disk of repeatable pseudo-random bytes",
    config_help: "size=<SIZE>  (required) Size of the backing disk\n\
                  seed=<SEED>             Random number generator seed",
    magic_config_key: Some("size"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let size = p.take_size("size")?.unwrap_or(0);
    let seed = take_seed(&mut p)?;
    p.finish()?;
    Ok(Arc::new(Shared(Arc::new(Disk { size, seed }))))
}

/// `seed=`, or the time in seconds (truncated to 32 bits, as C's
/// `time (NULL)` stored in a `uint32_t`).
pub(super) fn take_seed(p: &mut Params) -> Result<u32, StartError> {
    Ok(match p.take_uint("seed", u32::MAX.into())? {
        Some(s) => s as u32,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32),
    })
}

struct Disk {
    size: u64,
    seed: u32,
}

/// The byte at `offset` of the disk made from `seed`.
fn byte(seed: u32, offset: u64) -> u8 {
    let mut r = Xoshiro::new(u64::from(seed).wrapping_add(offset));
    r.next();
    r.next();
    r.next() as u8
}

/// Fill `buf` with the disk's bytes from `offset`.
fn fill(seed: u32, buf: &mut [u8], offset: u64) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b = byte(seed, offset.wrapping_add(i as u64));
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
        Ok(Caps {
            flush: false,
            fua: Fua::None,
            fast_zero: false,
            extents: false,
            ..Caps::ALL_NATIVE
        })
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        fill(self.seed, buf, offset);
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
        let same = buf
            .iter()
            .enumerate()
            .all(|(i, b)| *b == byte(self.seed, offset.wrapping_add(i as u64)));
        if !same {
            return Err(Error::new(Errno::Io, "data written does not match expected"));
        }
        Ok(())
    }

    async fn trim(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Err(trim_zero())
    }

    async fn zero(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Err(trim_zero())
    }

    async fn cache(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
        Ok(())
    }
}

fn trim_zero() -> Error {
    Error::new(Errno::Io, "attempt to trim or zero non-sparse random disk")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_depend_on_seed_plus_offset_only() {
        let mut a = [0u8; 64];
        fill(7, &mut a, 100);
        let mut b = [0u8; 32];
        fill(7, &mut b, 132);
        assert_eq!(&a[32..], &b[..]);
        // seed + offset is what matters.
        let mut c = [0u8; 64];
        fill(0, &mut c, 107);
        assert_eq!(a, c);
        assert_ne!(a, [0u8; 64]);
    }
}
