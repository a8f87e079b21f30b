//! Transmission-phase replies: simple replies and structured reply chunks.
//!
//! Read replies are built in place: the caller allocates one buffer with
//! [`read_header_len`] bytes of room in front of the data, the backend reads
//! into the data part, and [`fill_read_header`] writes the header in front,
//! so the whole reply goes out in one write with no copy.

use super::consts::*;

/// Which kind of reply a request gets, as negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Simple replies (no structured replies, or a command that C answers
    /// simply even when they are).
    Simple,
    /// Structured reply chunks with 20-byte headers.
    Structured,
    /// Extended reply chunks with 32-byte headers (extended headers).
    Extended,
}

impl Style {
    /// The style of the reply to `cmd` on a connection that negotiated
    /// this much.
    pub fn of(structured: bool, extended: bool, cmd: super::request::Command) -> Style {
        if extended {
            Style::Extended
        } else if structured && cmd.structured_reply() {
            Style::Structured
        } else {
            Style::Simple
        }
    }

    /// Size of a chunk header in this style (a simple reply's header for
    /// [`Style::Simple`]).
    pub fn header_len(self) -> usize {
        match self {
            Style::Simple => SIMPLE_REPLY_SIZE,
            Style::Structured => CHUNK_HEADER_SIZE,
            Style::Extended => EXTENDED_REPLY_SIZE,
        }
    }
}

/// The request a reply answers: what every header repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct To {
    /// The reply's style.
    pub style: Style,
    /// The request's cookie.
    pub cookie: u64,
    /// The request's offset (repeated in extended headers).
    pub offset: u64,
}

/// Bytes of header in front of the data of a successful read reply.
pub fn read_header_len(style: Style) -> usize {
    match style {
        Style::Simple => SIMPLE_REPLY_SIZE,
        s => s.header_len() + 8,
    }
}

/// Write a simple reply header.
pub fn simple_header(out: &mut [u8], cookie: u64, error: u32) {
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

/// Write a chunk header, structured or extended as `to` says, into the
/// first [`Style::header_len`] bytes of `out`.
pub fn chunk_header(out: &mut [u8], flags: u16, typ: u16, to: &To, len: u64) {
    let magic = match to.style {
        Style::Extended => EXTENDED_REPLY_MAGIC,
        _ => STRUCTURED_REPLY_MAGIC,
    };
    out[0..4].copy_from_slice(&magic.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&typ.to_be_bytes());
    out[8..16].copy_from_slice(&to.cookie.to_be_bytes());
    if to.style == Style::Extended {
        out[16..24].copy_from_slice(&to.offset.to_be_bytes());
        out[24..32].copy_from_slice(&len.to_be_bytes());
    } else {
        out[16..20].copy_from_slice(&(len as u32).to_be_bytes());
    }
}

/// A reply header as a client reads it: the inverse of [`simple_header`]
/// and [`chunk_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHeader {
    /// A simple reply (its data, for a successful read, follows).
    Simple {
        /// The wire error value (0 for success).
        error: u32,
        /// The request's cookie.
        cookie: u64,
    },
    /// A structured or extended reply chunk; `len` bytes of payload follow.
    Chunk {
        /// `REPLY_FLAG_*` (DONE on the last chunk).
        flags: u16,
        /// `REPLY_TYPE_*`.
        typ: u16,
        /// The request's cookie.
        cookie: u64,
        /// Bytes of payload.
        len: u64,
        /// The header was extended (and then repeated the request's
        /// offset, which a client has no use for).
        extended: bool,
    },
}

/// How many bytes follow a reply's 4-byte magic in its header; None for a
/// magic that starts no reply. A client reads the magic, then this many
/// bytes, then calls [`decode_reply_header`].
pub fn reply_header_rest(magic: u32) -> Option<usize> {
    match magic {
        SIMPLE_REPLY_MAGIC => Some(SIMPLE_REPLY_SIZE - 4),
        STRUCTURED_REPLY_MAGIC => Some(CHUNK_HEADER_SIZE - 4),
        EXTENDED_REPLY_MAGIC => Some(EXTENDED_REPLY_SIZE - 4),
        _ => None,
    }
}

/// Decode the rest of a reply header (see [`reply_header_rest`]).
pub fn decode_reply_header(magic: u32, rest: &[u8]) -> Option<ReplyHeader> {
    let u16_at = |i: usize| Some(u16::from_be_bytes(rest.get(i..i + 2)?.try_into().ok()?));
    let u32_at = |i: usize| Some(u32::from_be_bytes(rest.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_be_bytes(rest.get(i..i + 8)?.try_into().ok()?));
    match magic {
        SIMPLE_REPLY_MAGIC => Some(ReplyHeader::Simple { error: u32_at(0)?, cookie: u64_at(4)? }),
        STRUCTURED_REPLY_MAGIC => Some(ReplyHeader::Chunk {
            flags: u16_at(0)?,
            typ: u16_at(2)?,
            cookie: u64_at(4)?,
            len: u64::from(u32_at(12)?),
            extended: false,
        }),
        EXTENDED_REPLY_MAGIC => Some(ReplyHeader::Chunk {
            flags: u16_at(0)?,
            typ: u16_at(2)?,
            cookie: u64_at(4)?,
            len: u64_at(20)?,
            extended: true,
        }),
        _ => None,
    }
}

/// Fill the header in front of read data (see the module comment). For a
/// structured or extended reply this is one OFFSET_DATA chunk with the
/// DONE flag.
pub fn fill_read_header(buf: &mut [u8], to: &To) {
    let data_len = (buf.len() - read_header_len(to.style)) as u64;
    read_header_for(buf, to, data_len);
}

/// The header of a successful read reply of `data_len` bytes, on its own:
/// for data sent separately (from a file's page cache).
pub fn read_header(to: &To, data_len: u64) -> Vec<u8> {
    let mut h = vec![0u8; read_header_len(to.style)];
    read_header_for(&mut h, to, data_len);
    h
}

/// Write the header of a read reply of `data_len` bytes at the start of
/// `out`.
fn read_header_for(out: &mut [u8], to: &To, data_len: u64) {
    if to.style == Style::Simple {
        simple_header(out, to.cookie, 0);
        return;
    }
    let h = to.style.header_len();
    chunk_header(out, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, to, data_len + 8);
    out[h..h + 8].copy_from_slice(&to.offset.to_be_bytes());
}

/// A read reply in several chunks: the data of `data` (which starts at
/// the request's offset) as OFFSET_DATA chunks, except the `holes` (sorted,
/// disjoint `(start, length)` ranges relative to the request's offset,
/// each shorter than 4 GiB), which go as OFFSET_HOLE chunks with no data.
/// Chunks follow the export's order; the last one carries DONE.
pub fn sparse_read(to: &To, data: &[u8], holes: &[(u64, u64)]) -> Vec<u8> {
    let h = to.style.header_len();
    let mut pieces: Vec<(bool, u64, u64)> = Vec::with_capacity(holes.len() * 2 + 1);
    let mut at = 0u64;
    for &(start, len) in holes {
        if start > at {
            pieces.push((false, at, start - at));
        }
        pieces.push((true, start, len));
        at = start + len;
    }
    if at < data.len() as u64 {
        pieces.push((false, at, data.len() as u64 - at));
    }
    let size: usize =
        pieces.iter().map(|&(hole, _, n)| h + 8 + if hole { 4 } else { n as usize }).sum();
    let mut b = vec![0u8; size];
    let mut p = 0;
    let last = pieces.len().saturating_sub(1);
    for (i, &(hole, start, n)) in pieces.iter().enumerate() {
        let flags = if i == last { REPLY_FLAG_DONE } else { 0 };
        let (typ, payload) =
            if hole { (REPLY_TYPE_OFFSET_HOLE, 12) } else { (REPLY_TYPE_OFFSET_DATA, 8 + n) };
        chunk_header(&mut b[p..], flags, typ, to, payload);
        p += h;
        b[p..p + 8].copy_from_slice(&(to.offset + start).to_be_bytes());
        p += 8;
        if hole {
            b[p..p + 4].copy_from_slice(&(n as u32).to_be_bytes());
            p += 4;
        } else {
            let n = n as usize;
            b[p..p + n].copy_from_slice(&data[start as usize..start as usize + n]);
            p += n;
        }
    }
    b
}

/// A reply with no data: success, or an error with its wire value (see
/// [`super::errno::to_wire`]). Structured and extended replies are a NONE
/// chunk or an ERROR chunk carrying `msg` for the client's log.
pub fn status(to: &To, err: Option<(u32, &str)>) -> Vec<u8> {
    if to.style == Style::Simple {
        let mut b = vec![0u8; SIMPLE_REPLY_SIZE];
        simple_header(&mut b, to.cookie, err.map_or(0, |(e, _)| e));
        return b;
    }
    let h = to.style.header_len();
    match err {
        None => {
            let mut b = vec![0u8; h];
            chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_NONE, to, 0);
            b
        }
        Some((errno, msg)) => {
            // The message is optional and capped: it is for humans only.
            let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
            let len = 4 + 2 + msg.len();
            let mut b = vec![0u8; h + len];
            chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, to, len as u64);
            let p = &mut b[h..];
            p[0..4].copy_from_slice(&errno.to_be_bytes());
            p[4..6].copy_from_slice(&(msg.len() as u16).to_be_bytes());
            p[6..].copy_from_slice(msg);
            b
        }
    }
}

/// A block status chunk (with DONE) for one context: `(length, flags)`
/// pairs. Structured replies get BLOCK_STATUS, whose lengths have 32 bits
/// (the caller keeps them so); extended ones get BLOCK_STATUS_EXT.
pub fn block_status(to: &To, context: u32, extents: &[(u64, u32)]) -> Vec<u8> {
    let h = to.style.header_len();
    let extended = to.style == Style::Extended;
    let (typ, head, each) = if extended {
        (REPLY_TYPE_BLOCK_STATUS_EXT, 8, 16)
    } else {
        (REPLY_TYPE_BLOCK_STATUS, 4, 8)
    };
    let len = head + each * extents.len();
    let mut b = Vec::with_capacity(h + len);
    b.resize(h, 0);
    chunk_header(&mut b, REPLY_FLAG_DONE, typ, to, len as u64);
    b.extend_from_slice(&context.to_be_bytes());
    if extended {
        b.extend_from_slice(&(extents.len() as u32).to_be_bytes());
    }
    for &(l, f) in extents {
        if extended {
            b.extend_from_slice(&l.to_be_bytes());
            b.extend_from_slice(&u64::from(f).to_be_bytes());
        } else {
            b.extend_from_slice(&(l as u32).to_be_bytes());
            b.extend_from_slice(&f.to_be_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(style: Style) -> To {
        To { style, cookie: 9, offset: 4096 }
    }

    #[test]
    fn simple_read() {
        let mut b = vec![0u8; read_header_len(Style::Simple) + 4];
        b[16..].copy_from_slice(b"abcd");
        fill_read_header(&mut b, &To { style: Style::Simple, cookie: 0x1122, offset: 0 });
        assert_eq!(&b[0..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(&b[8..16], &0x1122u64.to_be_bytes());
        assert_eq!(&b[16..], b"abcd");
    }

    #[test]
    fn structured_read() {
        let mut b = vec![0u8; read_header_len(Style::Structured) + 4];
        fill_read_header(&mut b, &to(Style::Structured));
        assert_eq!(&b[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u16::from_be_bytes([b[4], b[5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 12);
        assert_eq!(u64::from_be_bytes(b[20..28].try_into().unwrap()), 4096);
    }

    #[test]
    fn extended_read() {
        let mut b = vec![0u8; read_header_len(Style::Extended) + 4];
        assert_eq!(b.len(), 32 + 8 + 4);
        fill_read_header(&mut b, &to(Style::Extended));
        assert_eq!(&b[0..4], &EXTENDED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u64::from_be_bytes(b[8..16].try_into().unwrap()), 9);
        // The request's offset, then the payload length, then the data's offset.
        assert_eq!(u64::from_be_bytes(b[16..24].try_into().unwrap()), 4096);
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), 12);
        assert_eq!(u64::from_be_bytes(b[32..40].try_into().unwrap()), 4096);
    }

    #[test]
    fn errors() {
        let b = status(&to(Style::Simple), Some((ENOSPC, "x")));
        assert_eq!(b.len(), SIMPLE_REPLY_SIZE);
        assert_eq!(u32::from_be_bytes(b[4..8].try_into().unwrap()), ENOSPC);
        let b = status(&to(Style::Structured), Some((EIO, "boom")));
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_ERROR);
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 4 + 2 + 4);
        assert_eq!(u32::from_be_bytes(b[20..24].try_into().unwrap()), EIO);
        assert_eq!(&b[26..30], b"boom");
        assert_eq!(status(&to(Style::Structured), None).len(), CHUNK_HEADER_SIZE);
        let b = status(&to(Style::Extended), Some((EIO, "boom")));
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), 4 + 2 + 4);
        assert_eq!(&b[38..42], b"boom");
        // Extended headers never use simple replies, even for success.
        let b = status(&to(Style::Extended), None);
        assert_eq!(b.len(), EXTENDED_REPLY_SIZE);
        assert_eq!(u16::from_be_bytes([b[4], b[5]]), REPLY_FLAG_DONE);
    }

    #[test]
    fn extents() {
        let b =
            block_status(&to(Style::Structured), 1, &[(4096, STATE_HOLE | STATE_ZERO), (512, 0)]);
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 4 + 16);
        assert_eq!(b.len(), CHUNK_HEADER_SIZE + 20);
        let b = block_status(&to(Style::Extended), 1, &[(5 << 30, STATE_HOLE), (512, 0)]);
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_BLOCK_STATUS_EXT);
        assert_eq!(u64::from_be_bytes(b[24..32].try_into().unwrap()), 8 + 32);
        assert_eq!(u32::from_be_bytes(b[36..40].try_into().unwrap()), 2);
        assert_eq!(u64::from_be_bytes(b[40..48].try_into().unwrap()), 5 << 30);
        assert_eq!(u64::from_be_bytes(b[48..56].try_into().unwrap()), u64::from(STATE_HOLE));
        assert_eq!(b.len(), 32 + 8 + 32);
    }

    #[test]
    fn sparse_reads() {
        let data: Vec<u8> = (0..100u8).collect();
        for style in [Style::Structured, Style::Extended] {
            let h = style.header_len();
            // data 0..10, hole 10..60, data 60..100
            let b = sparse_read(&to(style), &data, &[(10, 50)]);
            assert_eq!(b.len(), 3 * (h + 8) + 10 + 4 + 40);
            let typ = |at: usize| u16::from_be_bytes([b[at + 6], b[at + 7]]);
            let flags = |at: usize| u16::from_be_bytes([b[at + 4], b[at + 5]]);
            let off = |at: usize| u64::from_be_bytes(b[at + h..at + h + 8].try_into().unwrap());
            assert_eq!((typ(0), flags(0), off(0)), (REPLY_TYPE_OFFSET_DATA, 0, 4096));
            let second = h + 18;
            assert_eq!(
                (typ(second), flags(second), off(second)),
                (REPLY_TYPE_OFFSET_HOLE, 0, 4106)
            );
            let hole_len =
                u32::from_be_bytes(b[second + h + 8..second + h + 12].try_into().unwrap());
            assert_eq!(hole_len, 50);
            let third = second + h + 12;
            assert_eq!(
                (typ(third), flags(third), off(third)),
                (REPLY_TYPE_OFFSET_DATA, REPLY_FLAG_DONE, 4156)
            );
            assert_eq!(&b[third + h + 8..], &data[60..]);
            // All hole: one chunk.
            let b = sparse_read(&to(style), &data, &[(0, 100)]);
            assert_eq!(b.len(), h + 12);
            assert_eq!(u16::from_be_bytes([b[4], b[5]]), REPLY_FLAG_DONE);
        }
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    #[test]
    fn headers_decode_as_they_were_encoded() {
        for (style, extended) in [(Style::Structured, false), (Style::Extended, true)] {
            let mut b = [0u8; MAX_REPLY_HEADER_SIZE];
            let to = To { style, cookie: 42, offset: 7 };
            chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, &to, 9);
            let magic = u32::from_be_bytes(b[..4].try_into().unwrap());
            assert_eq!(reply_header_rest(magic), Some(style.header_len() - 4));
            assert_eq!(
                decode_reply_header(magic, &b[4..style.header_len()]),
                Some(ReplyHeader::Chunk {
                    flags: REPLY_FLAG_DONE,
                    typ: REPLY_TYPE_ERROR,
                    cookie: 42,
                    len: 9,
                    extended,
                })
            );
        }
        let mut b = [0u8; SIMPLE_REPLY_SIZE];
        simple_header(&mut b, 7, EIO);
        let magic = u32::from_be_bytes(b[..4].try_into().unwrap());
        assert_eq!(reply_header_rest(magic), Some(12));
        assert_eq!(
            decode_reply_header(magic, &b[4..]),
            Some(ReplyHeader::Simple { error: EIO, cookie: 7 })
        );
        assert_eq!(reply_header_rest(0xdead_beef), None);
        assert_eq!(decode_reply_header(SIMPLE_REPLY_MAGIC, &b[4..8]), None);
    }
}
