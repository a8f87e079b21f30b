//! `nbdkit-test`: throwaway NBD disks for tests.
//!
//! Not implemented yet: this crate is reserved for `CaptiveDisk` (see the
//! project issue "The nbdkit-test crate"). It has no public API today.
