//! Where the backend's types meet the wire's bits, each mapping beside its
//! inverse: capabilities and transmission flags (the server advertises
//! them; the nbd plugin reads a remote server's), call flags and command
//! flags (the server decodes them; the nbd plugin sends them), and extent
//! flags and `base:allocation` state bits (the server replies with them;
//! the nbd plugin reads a remote server's).

use crate::backend::{Cache, Caps, ExtentFlags, Flags, Fua, ThreadModel, Zero};
use crate::protocol::consts::*;
use crate::protocol::request::CmdFlags;

/// Transmission flags for what an export can do.
pub fn eflags_of(caps: &Caps, model: ThreadModel) -> u16 {
    let mut f = 0;
    if !caps.write {
        f |= FLAG_READ_ONLY;
    }
    if caps.flush {
        f |= FLAG_SEND_FLUSH;
    }
    if caps.fua != Fua::None {
        f |= FLAG_SEND_FUA;
    }
    if caps.rotational {
        f |= FLAG_ROTATIONAL;
    }
    if caps.trim {
        f |= FLAG_SEND_TRIM;
    }
    if caps.zero != Zero::None {
        f |= FLAG_SEND_WRITE_ZEROES;
        if caps.fast_zero {
            f |= FLAG_SEND_FAST_ZERO;
        }
    }
    // Multi-conn promises consistency across connections, which only holds
    // when connections may actually run side by side.
    if caps.multi_conn && model > ThreadModel::SerializeConnections {
        f |= FLAG_CAN_MULTI_CONN;
    }
    if caps.cache != Cache::None {
        f |= FLAG_SEND_CACHE;
    }
    f
}

/// What a remote server's transmission flags say it can do (the inverse
/// of [`eflags_of`]); `extents` is whether it agreed to `base:allocation`.
pub fn caps_of(eflags: u16, extents: bool) -> Caps {
    let has = |bit: u16| eflags & bit != 0;
    let mut c = Caps::READ_ONLY;
    c.write = !has(FLAG_READ_ONLY);
    c.flush = has(FLAG_SEND_FLUSH);
    c.fua = if has(FLAG_SEND_FUA) { Fua::Native } else { Fua::None };
    c.trim = has(FLAG_SEND_TRIM);
    c.zero = if has(FLAG_SEND_WRITE_ZEROES) { Zero::Native } else { Zero::Emulate };
    c.fast_zero = has(FLAG_SEND_FAST_ZERO);
    c.cache = if has(FLAG_SEND_CACHE) { Cache::Native } else { Cache::None };
    c.extents = extents;
    c.multi_conn = has(FLAG_CAN_MULTI_CONN);
    c.rotational = has(FLAG_ROTATIONAL);
    c
}

/// A request's command flags as the call flags a handle sees.
pub fn flags_of(cmd: CmdFlags) -> Flags {
    Flags {
        fua: cmd.fua(),
        may_trim: !cmd.no_hole(),
        fast_zero: cmd.fast_zero(),
        req_one: cmd.req_one(),
    }
}

/// Call flags as command flags to send (the inverse of [`flags_of`]);
/// FUA only where the command may carry it.
pub fn cmd_flags(f: &Flags, fua_ok: bool) -> u16 {
    let mut n = 0;
    if f.fua && fua_ok {
        n |= CMD_FLAG_FUA;
    }
    if !f.may_trim {
        n |= CMD_FLAG_NO_HOLE;
    }
    if f.fast_zero {
        n |= CMD_FLAG_FAST_ZERO;
    }
    if f.req_one {
        n |= CMD_FLAG_REQ_ONE;
    }
    n
}

/// An extent's flags as `base:allocation` state bits in a block-status
/// reply.
pub fn extent_bits(f: ExtentFlags) -> u32 {
    let mut n = 0;
    if f.is_hole() {
        n |= STATE_HOLE;
    }
    if f.is_zero() {
        n |= STATE_ZERO;
    }
    n
}

/// A remote server's `base:allocation` state bits as extent flags (the
/// inverse of [`extent_bits`]); bits `base:allocation` does not define are
/// dropped.
pub fn extent_flags_of(bits: u32) -> ExtentFlags {
    let mut f = ExtentFlags::DATA;
    if bits & STATE_HOLE != 0 {
        f |= ExtentFlags::HOLE;
    }
    if bits & STATE_ZERO != 0 {
        f |= ExtentFlags::ZERO;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_eflags_round_trip() {
        let f = eflags_of(&Caps::ALL_NATIVE, ThreadModel::Parallel);
        assert_eq!(caps_of(f, true), Caps::ALL_NATIVE);
        // A remote server without WRITE_ZEROES still lets us zero (by
        // writing); a read-only one stays read-only.
        let ro = caps_of(eflags_of(&Caps::READ_ONLY, ThreadModel::Parallel), false);
        assert!(!ro.write && ro.zero == Zero::Emulate && !ro.flush);
        for f in
            [Flags::default(), Flags { fua: true, may_trim: true, fast_zero: true, req_one: true }]
        {
            assert_eq!(flags_of(CmdFlags(cmd_flags(&f, true))), f);
        }
    }

    #[test]
    fn extent_flags_and_state_bits_round_trip() {
        let (hole, zero) = (ExtentFlags::HOLE, ExtentFlags::ZERO);
        for (f, bits) in [
            (ExtentFlags::DATA, 0),
            (hole, STATE_HOLE),
            (zero, STATE_ZERO),
            (hole | zero, STATE_HOLE | STATE_ZERO),
        ] {
            assert_eq!(extent_bits(f), bits);
            assert_eq!(extent_flags_of(bits), f);
        }
        // Bits base:allocation does not define are not passed on.
        assert_eq!(extent_flags_of(!0), hole | zero);
        assert_eq!(extent_bits(extent_flags_of(1 << 7)), 0);
    }
}
