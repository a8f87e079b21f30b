//! Transmission-phase requests: decoding the header (28 bytes compact, 32
//! bytes once extended headers are negotiated) and validating it against
//! what was negotiated, before anything reaches the backend.

use super::consts::*;
use crate::error::{Errno, Error};

/// A command, decoded at the edge. Unknown numbers are kept, not guessed at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `NBD_CMD_READ`.
    Read,
    /// `NBD_CMD_WRITE`.
    Write,
    /// `NBD_CMD_DISC`.
    Disc,
    /// `NBD_CMD_FLUSH`.
    Flush,
    /// `NBD_CMD_TRIM`.
    Trim,
    /// `NBD_CMD_CACHE`.
    Cache,
    /// `NBD_CMD_WRITE_ZEROES`.
    WriteZeroes,
    /// `NBD_CMD_BLOCK_STATUS`.
    BlockStatus,
    /// A number this server does not know.
    Unknown(u16),
}

impl Command {
    /// The command a wire number stands for.
    pub fn from_wire(n: u16) -> Command {
        match n {
            CMD_READ => Command::Read,
            CMD_WRITE => Command::Write,
            CMD_DISC => Command::Disc,
            CMD_FLUSH => Command::Flush,
            CMD_TRIM => Command::Trim,
            CMD_CACHE => Command::Cache,
            CMD_WRITE_ZEROES => Command::WriteZeroes,
            CMD_BLOCK_STATUS => Command::BlockStatus,
            n => Command::Unknown(n),
        }
    }

    /// The wire number (the inverse of [`Command::from_wire`]).
    pub fn to_wire(self) -> u16 {
        match self {
            Command::Read => CMD_READ,
            Command::Write => CMD_WRITE,
            Command::Disc => CMD_DISC,
            Command::Flush => CMD_FLUSH,
            Command::Trim => CMD_TRIM,
            Command::Cache => CMD_CACHE,
            Command::WriteZeroes => CMD_WRITE_ZEROES,
            Command::BlockStatus => CMD_BLOCK_STATUS,
            Command::Unknown(n) => n,
        }
    }

    /// Whether, once structured replies are negotiated, this command's
    /// replies (errors included) are structured. Only READ and
    /// BLOCK_STATUS: C nbdkit answers everything else with simple replies,
    /// which the spec allows and some clients expect.
    pub fn structured_reply(self) -> bool {
        matches!(self, Command::Read | Command::BlockStatus)
    }

    /// The name C nbdkit uses in its log messages.
    pub fn name(self) -> &'static str {
        match self {
            Command::Read => "NBD_CMD_READ",
            Command::Write => "NBD_CMD_WRITE",
            Command::Disc => "NBD_CMD_DISC",
            Command::Flush => "NBD_CMD_FLUSH",
            Command::Trim => "NBD_CMD_TRIM",
            Command::Cache => "NBD_CMD_CACHE",
            Command::WriteZeroes => "NBD_CMD_WRITE_ZEROES",
            Command::BlockStatus => "NBD_CMD_BLOCK_STATUS",
            Command::Unknown(_) => "unknown command",
        }
    }
}

/// Request flags, as a typed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CmdFlags(pub u16);

impl CmdFlags {
    /// Force unit access.
    pub fn fua(self) -> bool {
        self.0 & CMD_FLAG_FUA != 0
    }
    /// Zeroes must not be a hole.
    pub fn no_hole(self) -> bool {
        self.0 & CMD_FLAG_NO_HOLE != 0
    }
    /// Don't fragment the read reply.
    pub fn df(self) -> bool {
        self.0 & CMD_FLAG_DF != 0
    }
    /// One extent is enough.
    pub fn req_one(self) -> bool {
        self.0 & CMD_FLAG_REQ_ONE != 0
    }
    /// Fail a zero that would be slow.
    pub fn fast_zero(self) -> bool {
        self.0 & CMD_FLAG_FAST_ZERO != 0
    }
    /// The length is a payload's (extended headers).
    pub fn payload_len(self) -> bool {
        self.0 & CMD_FLAG_PAYLOAD_LEN != 0
    }
}

/// One decoded request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Command flags.
    pub flags: CmdFlags,
    /// The command.
    pub cmd: Command,
    /// The client's handle for matching the reply.
    pub cookie: u64,
    /// Where in the export.
    pub offset: u64,
    /// How many bytes: of the export (the effect length), or, for a WRITE
    /// and any request with `NBD_CMD_FLAG_PAYLOAD_LEN`, of the payload
    /// that follows. 32 bits on the wire unless extended headers are in
    /// use.
    pub len: u64,
}

impl Request {
    /// Bytes of payload that follow this header on the wire: a WRITE's
    /// data, and with extended headers that of any request whose flags
    /// say `NBD_CMD_FLAG_PAYLOAD_LEN`. (The spec has a WRITE say so too,
    /// but qemu's client does not, and qemu's server takes it either way:
    /// so do we.)
    pub fn payload(&self, extended: bool) -> u64 {
        let has = self.cmd == Command::Write || (extended && self.flags.payload_len());
        if has {
            self.len
        } else {
            0
        }
    }
}

/// The header did not start with the request magic: the stream is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadMagic(pub u32);

/// Size of a request header in the style negotiated.
pub fn header_size(extended: bool) -> usize {
    if extended {
        EXTENDED_REQUEST_SIZE
    } else {
        REQUEST_SIZE
    }
}

/// Decode a request header of [`header_size`] bytes: compact (28 bytes,
/// 32-bit length) or extended (32 bytes, 64-bit length). A header of the
/// other style than the one negotiated is a bad magic.
pub fn decode(b: &[u8], extended: bool) -> Result<Request, BadMagic> {
    let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
    let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
    assert_eq!(b.len(), header_size(extended), "a whole request header");
    let (magic, len) = if extended {
        (EXTENDED_REQUEST_MAGIC, u64_at(24))
    } else {
        (REQUEST_MAGIC, u64::from(u32_at(24)))
    };
    if u32_at(0) != magic {
        return Err(BadMagic(u32_at(0)));
    }
    Ok(Request {
        flags: CmdFlags(u16_at(4)),
        cmd: Command::from_wire(u16_at(6)),
        cookie: u64_at(8),
        offset: u64_at(16),
        len,
    })
}

/// Encode a request header (used by tests and by clients): compact, whose
/// length field has 32 bits (a longer `len` is cut to them), or extended.
pub fn encode(r: &Request, extended: bool) -> Vec<u8> {
    let mut b = Vec::with_capacity(EXTENDED_REQUEST_SIZE);
    let magic = if extended { EXTENDED_REQUEST_MAGIC } else { REQUEST_MAGIC };
    b.extend_from_slice(&magic.to_be_bytes());
    b.extend_from_slice(&r.flags.0.to_be_bytes());
    b.extend_from_slice(&r.cmd.to_wire().to_be_bytes());
    b.extend_from_slice(&r.cookie.to_be_bytes());
    b.extend_from_slice(&r.offset.to_be_bytes());
    if extended {
        b.extend_from_slice(&r.len.to_be_bytes());
    } else {
        b.extend_from_slice(&(r.len as u32).to_be_bytes());
    }
    b
}

/// What the request is checked against: fixed once the handshake is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Export size in bytes.
    pub size: u64,
    /// Transmission flags sent to the client.
    pub eflags: u16,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// `base:allocation` was selected, with this context id.
    pub base_allocation: Option<u32>,
    /// Extended headers were negotiated (which implies `structured`).
    pub extended: bool,
}

impl Negotiated {
    fn has(&self, flag: u16) -> bool {
        self.eflags & flag != 0
    }
}

/// Check a request as C nbdkit does, in the same order, so that a client sees
/// the same errno from both servers: read-only first, then command and range,
/// flags, size, and what the export supports. Errors carry a message for the
/// log. NBD_CMD_DISC never comes here.
pub fn validate(r: &Request, n: &Negotiated) -> Result<(), Error> {
    let inval = |what: String| Err(Error::new(Errno::Inval, format!("invalid request: {what}")));
    let writes = matches!(r.cmd, Command::Write | Command::Trim | Command::WriteZeroes);
    if writes && n.has(FLAG_READ_ONLY) {
        return Err(Error::new(
            Errno::Perm,
            format!("invalid request: {}: write request on readonly connection", r.cmd.name()),
        ));
    }
    match r.cmd {
        Command::Read
        | Command::Write
        | Command::Trim
        | Command::Cache
        | Command::WriteZeroes
        | Command::BlockStatus => {
            let end = r.offset.checked_add(r.len);
            if r.len == 0 || end.is_none_or(|e| e > n.size) {
                let errno = match r.cmd {
                    Command::Write | Command::WriteZeroes => Errno::NoSpc,
                    _ => Errno::Inval,
                };
                return Err(Error::new(
                    errno,
                    format!(
                        "invalid request: {}: offset and count are out of range: offset={} count={}",
                        r.cmd.name(),
                        r.offset,
                        r.len
                    ),
                ));
            }
        }
        Command::Flush => {
            if r.offset != 0 || r.len != 0 {
                return inval("NBD_CMD_FLUSH: expecting offset and count = 0".into());
            }
        }
        Command::Disc => {}
        Command::Unknown(c) => return inval(format!("unknown command ({c}) ignored")),
    }

    let mut known =
        CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_DF | CMD_FLAG_REQ_ONE | CMD_FLAG_FAST_ZERO;
    if n.extended {
        known |= CMD_FLAG_PAYLOAD_LEN;
    }
    let f = r.flags;
    if f.0 & !known != 0 {
        return inval(format!("unknown flag ({:#x})", f.0 & !known));
    }
    // With extended headers only a WRITE has a payload (BLOCK_STATUS's
    // payload form is not offered: NBD_FLAG_BLOCK_STATUS_PAYLOAD is never
    // set).
    if f.payload_len() && r.cmd != Command::Write {
        return inval(format!("{}: this command takes no payload", r.cmd.name()));
    }
    if f.no_hole() && r.cmd != Command::WriteZeroes {
        return inval("NO_HOLE flag only valid with NBD_CMD_WRITE_ZEROES".into());
    }
    if f.fast_zero() && r.cmd != Command::WriteZeroes {
        return inval("FAST_ZERO flag only valid with NBD_CMD_WRITE_ZEROES".into());
    }
    if f.df() && r.cmd != Command::Read {
        return inval("DF flag only valid with NBD_CMD_READ".into());
    }
    if f.req_one() && r.cmd != Command::BlockStatus {
        return inval("REQ_ONE flag only valid with NBD_CMD_BLOCK_STATUS".into());
    }
    if f.fua() && !n.has(FLAG_SEND_FUA) {
        return inval("FUA flag not supported".into());
    }
    // C nbdkit 1.32 does not check FAST_ZERO against the export flags (and
    // aborts later on such a request); refusing it here is what the spec asks.
    if f.fast_zero() && !n.has(FLAG_SEND_FAST_ZERO) {
        return inval("FAST_ZERO flag not supported".into());
    }
    if f.df() && !n.structured {
        return inval("NBD_CMD_READ: structured replies was not negotiated".into());
    }

    if matches!(r.cmd, Command::Read | Command::Write) && r.len > u64::from(MAX_REQUEST_SIZE) {
        return Err(Error::new(
            Errno::NoMem,
            format!(
                "invalid request: {}: data request is too large ({} > {})",
                r.cmd.name(),
                r.len,
                MAX_REQUEST_SIZE
            ),
        ));
    }

    let unsupported = match r.cmd {
        Command::Flush => !n.has(FLAG_SEND_FLUSH),
        Command::Trim => !n.has(FLAG_SEND_TRIM),
        Command::WriteZeroes => !n.has(FLAG_SEND_WRITE_ZEROES),
        Command::Cache => !n.has(FLAG_SEND_CACHE),
        _ => false,
    };
    if unsupported {
        return inval(format!("{}: not supported by this export", r.cmd.name()));
    }
    if r.cmd == Command::BlockStatus {
        if !n.structured {
            return inval("NBD_CMD_BLOCK_STATUS: structured replies was not negotiated".into());
        }
        if n.base_allocation.is_none() {
            return inval("NBD_CMD_BLOCK_STATUS: base:allocation was not negotiated".into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn neg() -> Negotiated {
        Negotiated {
            size: 1 << 20,
            eflags: FLAG_HAS_FLAGS
                | FLAG_SEND_FLUSH
                | FLAG_SEND_FUA
                | FLAG_SEND_TRIM
                | FLAG_SEND_WRITE_ZEROES
                | FLAG_SEND_DF
                | FLAG_SEND_CACHE,
            structured: true,
            base_allocation: Some(1),
            extended: false,
        }
    }

    fn req(cmd: Command, flags: u16, offset: u64, len: u64) -> Request {
        Request { flags: CmdFlags(flags), cmd, cookie: 7, offset, len }
    }

    fn errno(r: Request, n: &Negotiated) -> Option<Errno> {
        validate(&r, n).err().map(|e| e.errno)
    }

    #[test]
    fn round_trip() {
        let r = req(Command::Write, CMD_FLAG_FUA, 4096, 512);
        assert_eq!(decode(&encode(&r, false), false).unwrap(), r);
        let r = req(Command::Unknown(99), 0, 0, 0);
        assert_eq!(decode(&encode(&r, false), false).unwrap(), r);
        let r = req(Command::WriteZeroes, 0, 1 << 40, 5 << 30);
        let b = encode(&r, true);
        assert_eq!(b.len(), EXTENDED_REQUEST_SIZE);
        assert_eq!(decode(&b, true).unwrap(), r);
    }

    #[test]
    fn bad_magic() {
        let mut b = encode(&req(Command::Read, 0, 0, 1), false);
        b[0] = 0;
        assert!(decode(&b, false).is_err());
        // Each style's magic is refused in the other style.
        let b = encode(&req(Command::Read, 0, 0, 1), true);
        assert_eq!(decode(&b[..REQUEST_SIZE], false), Err(BadMagic(EXTENDED_REQUEST_MAGIC)));
        let b = encode(&req(Command::Read, 0, 0, 1), false);
        let mut long = b.clone();
        long.extend_from_slice(&[0; 4]);
        assert_eq!(decode(&long, true), Err(BadMagic(REQUEST_MAGIC)));
    }

    #[test]
    fn extended_payloads() {
        let mut n = neg();
        n.size = 8 << 30;
        // Compact: the PAYLOAD_LEN flag does not exist.
        assert_eq!(errno(req(Command::Write, CMD_FLAG_PAYLOAD_LEN, 0, 1), &n), Some(Errno::Inval));
        n.extended = true;
        let w = req(Command::Write, CMD_FLAG_PAYLOAD_LEN, 0, 512);
        assert_eq!(errno(w, &n), None);
        assert_eq!(w.payload(true), 512);
        // A write's length is its payload's, flag or not (qemu leaves it
        // out); nothing else may have a payload.
        let bare = req(Command::Write, 0, 0, 512);
        assert_eq!(errno(bare, &n), None);
        assert_eq!(bare.payload(true), 512);
        assert_eq!(bare.payload(false), 512);
        let r = req(Command::Read, CMD_FLAG_PAYLOAD_LEN, 0, 512);
        assert_eq!(errno(r, &n), Some(Errno::Inval));
        assert_eq!(r.payload(true), 512);
        // 64-bit effect lengths for everything but READ and WRITE.
        assert_eq!(errno(req(Command::WriteZeroes, 0, 0, 5 << 30), &n), None);
        assert_eq!(errno(req(Command::Trim, 0, 1 << 30, 7 << 30), &n), None);
        assert_eq!(errno(req(Command::Cache, 0, 0, 8 << 30), &n), None);
        assert_eq!(errno(req(Command::BlockStatus, 0, 0, 8 << 30), &n), None);
        assert_eq!(errno(req(Command::Trim, 0, 1 << 30, 8 << 30), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::Read, 0, 0, 1 << 32), &n), Some(Errno::NoMem));
    }

    #[test]
    fn ranges() {
        let n = neg();
        assert_eq!(errno(req(Command::Read, 0, 0, 512), &n), None);
        assert_eq!(errno(req(Command::Read, 0, (1 << 20) - 1, 1), &n), None);
        assert_eq!(errno(req(Command::Read, 0, 1 << 20, 1), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::Read, 0, 0, 0), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::Write, 0, 1 << 20, 1), &n), Some(Errno::NoSpc));
        assert_eq!(errno(req(Command::WriteZeroes, 0, 0, 0), &n), Some(Errno::NoSpc));
        assert_eq!(errno(req(Command::Trim, 0, u64::MAX, 2), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::Flush, 0, 1, 0), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::Flush, 0, 0, 0), &n), None);
        assert_eq!(errno(req(Command::Unknown(42), 0, 0, 0), &n), Some(Errno::Inval));
    }

    #[test]
    fn too_large() {
        let mut n = neg();
        n.size = u64::MAX / 2;
        let max = u64::from(MAX_REQUEST_SIZE);
        assert_eq!(errno(req(Command::Read, 0, 0, max + 1), &n), Some(Errno::NoMem));
        assert_eq!(errno(req(Command::Write, 0, 0, max + 1), &n), Some(Errno::NoMem));
        assert_eq!(errno(req(Command::Read, 0, 0, max), &n), None);
        assert_eq!(errno(req(Command::Trim, 0, 0, u64::from(u32::MAX)), &n), None);
    }

    #[test]
    fn flags() {
        let n = neg();
        assert_eq!(errno(req(Command::Write, CMD_FLAG_FUA, 0, 1), &n), None);
        assert_eq!(errno(req(Command::Write, 1 << 9, 0, 1), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::Write, CMD_FLAG_NO_HOLE, 0, 1), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::WriteZeroes, CMD_FLAG_NO_HOLE, 0, 1), &n), None);
        assert_eq!(
            errno(req(Command::WriteZeroes, CMD_FLAG_FAST_ZERO, 0, 1), &n),
            Some(Errno::Inval)
        );
        assert_eq!(errno(req(Command::Read, CMD_FLAG_DF, 0, 1), &n), None);
        assert_eq!(errno(req(Command::Write, CMD_FLAG_DF, 0, 1), &n), Some(Errno::Inval));
        assert_eq!(errno(req(Command::BlockStatus, CMD_FLAG_REQ_ONE, 0, 1), &n), None);
        assert_eq!(errno(req(Command::Read, CMD_FLAG_REQ_ONE, 0, 1), &n), Some(Errno::Inval));
        let mut no_fua = n;
        no_fua.eflags &= !FLAG_SEND_FUA;
        assert_eq!(errno(req(Command::Write, CMD_FLAG_FUA, 0, 1), &no_fua), Some(Errno::Inval));
    }

    #[test]
    fn capabilities() {
        let mut ro = neg();
        ro.eflags |= FLAG_READ_ONLY;
        assert_eq!(errno(req(Command::Write, 0, 0, 1), &ro), Some(Errno::Perm));
        // Read-only is checked before the range.
        assert_eq!(errno(req(Command::Write, 0, 1 << 40, 1), &ro), Some(Errno::Perm));
        assert_eq!(errno(req(Command::Trim, 0, 0, 1), &ro), Some(Errno::Perm));
        assert_eq!(errno(req(Command::WriteZeroes, 0, 0, 1), &ro), Some(Errno::Perm));
        assert_eq!(errno(req(Command::Read, 0, 0, 1), &ro), None);
        let mut bare = neg();
        bare.eflags = FLAG_HAS_FLAGS;
        for cmd in [Command::Flush, Command::Trim, Command::WriteZeroes, Command::Cache] {
            let len = if cmd == Command::Flush { 0 } else { 1 };
            assert_eq!(errno(req(cmd, 0, 0, len), &bare), Some(Errno::Inval), "{cmd:?}");
        }
        let mut no_meta = neg();
        no_meta.base_allocation = None;
        assert_eq!(errno(req(Command::BlockStatus, 0, 0, 1), &no_meta), Some(Errno::Inval));
        no_meta.structured = false;
        assert_eq!(errno(req(Command::BlockStatus, 0, 0, 1), &no_meta), Some(Errno::Inval));
    }
}
