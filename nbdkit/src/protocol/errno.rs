//! The one place where an [`Errno`] becomes a number on the wire.

use super::consts::*;
use super::request::CmdFlags;
use crate::error::Errno;

/// The NBD error value for an errno, as C nbdkit decides it: ENOTSUP is only
/// reported to a FAST_ZERO request and EOVERFLOW only to a DF read (the spec
/// reserves them for those); anywhere else they become EINVAL.
pub fn to_wire(e: Errno, flags: CmdFlags) -> u32 {
    match e {
        Errno::NotSup if !flags.fast_zero() => EINVAL,
        Errno::Overflow if !flags.df() => EINVAL,
        Errno::Perm => EPERM,
        Errno::Io => EIO,
        Errno::NoMem => ENOMEM,
        Errno::Inval => EINVAL,
        Errno::NoSpc => ENOSPC,
        Errno::Overflow => EOVERFLOW,
        Errno::NotSup => ENOTSUP,
        Errno::Shutdown => ESHUTDOWN,
    }
}

/// The errno for an NBD error value a server sent us (the nbd plugin's
/// backend). Unknown values become EINVAL, as the spec suggests.
pub fn from_wire(n: u32) -> Errno {
    match n {
        EPERM => Errno::Perm,
        EIO => Errno::Io,
        ENOMEM => Errno::NoMem,
        ENOSPC => Errno::NoSpc,
        EOVERFLOW => Errno::Overflow,
        ENOTSUP => Errno::NotSup,
        ESHUTDOWN => Errno::Shutdown,
        _ => Errno::Inval,
    }
}
