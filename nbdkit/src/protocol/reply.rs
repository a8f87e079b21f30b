//! Transmission-phase replies: simple replies and structured reply chunks.
//!
//! Read replies are built in place: the caller allocates one buffer with
//! [`read_header_len`] bytes of room in front of the data, the backend reads
//! into the data part, and [`fill_read_header`] writes the header in front,
//! so the whole reply goes out in one write with no copy.

use super::consts::*;

/// Bytes of header in front of the data of a successful read reply.
pub fn read_header_len(structured: bool) -> usize {
    if structured {
        CHUNK_HEADER_SIZE + 8
    } else {
        SIMPLE_REPLY_SIZE
    }
}

/// Write a simple reply header.
pub fn simple_header(out: &mut [u8], cookie: u64, error: u32) {
    out[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    out[4..8].copy_from_slice(&error.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
}

/// Write a structured reply chunk header.
pub fn chunk_header(out: &mut [u8], flags: u16, typ: u16, cookie: u64, len: u32) {
    out[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    out[4..6].copy_from_slice(&flags.to_be_bytes());
    out[6..8].copy_from_slice(&typ.to_be_bytes());
    out[8..16].copy_from_slice(&cookie.to_be_bytes());
    out[16..20].copy_from_slice(&len.to_be_bytes());
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
    /// A structured reply chunk; `len` bytes of payload follow.
    Chunk {
        /// `REPLY_FLAG_*` (DONE on the last chunk).
        flags: u16,
        /// `REPLY_TYPE_*`.
        typ: u16,
        /// The request's cookie.
        cookie: u64,
        /// Bytes of payload.
        len: u32,
    },
}

/// How many bytes follow a reply's 4-byte magic in its header; None for a
/// magic that starts no reply. A client reads the magic, then this many
/// bytes, then calls [`decode_reply_header`].
pub fn reply_header_rest(magic: u32) -> Option<usize> {
    match magic {
        SIMPLE_REPLY_MAGIC => Some(SIMPLE_REPLY_SIZE - 4),
        STRUCTURED_REPLY_MAGIC => Some(CHUNK_HEADER_SIZE - 4),
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
            len: u32_at(12)?,
        }),
        _ => None,
    }
}

/// Fill the header in front of read data (see the module comment). For a
/// structured reply this is one OFFSET_DATA chunk with the DONE flag.
pub fn fill_read_header(buf: &mut [u8], structured: bool, cookie: u64, offset: u64) {
    if structured {
        let data_len = buf.len() - CHUNK_HEADER_SIZE - 8;
        chunk_header(buf, REPLY_FLAG_DONE, REPLY_TYPE_OFFSET_DATA, cookie, (data_len + 8) as u32);
        buf[CHUNK_HEADER_SIZE..CHUNK_HEADER_SIZE + 8].copy_from_slice(&offset.to_be_bytes());
    } else {
        simple_header(buf, cookie, 0);
    }
}

/// A reply with no data: success, or an error with its wire value (see
/// [`super::errno::to_wire`]). Structured connections get a NONE chunk or an
/// ERROR chunk carrying `msg` for the client's log.
pub fn status(structured: bool, cookie: u64, err: Option<(u32, &str)>) -> Vec<u8> {
    if !structured {
        let mut b = vec![0u8; SIMPLE_REPLY_SIZE];
        simple_header(&mut b, cookie, err.map_or(0, |(e, _)| e));
        return b;
    }
    match err {
        None => {
            let mut b = vec![0u8; CHUNK_HEADER_SIZE];
            chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_NONE, cookie, 0);
            b
        }
        Some((errno, msg)) => {
            // The message is optional and capped: it is for humans only.
            let msg = &msg.as_bytes()[..msg.len().min(MAX_STRING)];
            let len = 4 + 2 + msg.len();
            let mut b = vec![0u8; CHUNK_HEADER_SIZE + len];
            chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, cookie, len as u32);
            let p = &mut b[CHUNK_HEADER_SIZE..];
            p[0..4].copy_from_slice(&errno.to_be_bytes());
            p[4..6].copy_from_slice(&(msg.len() as u16).to_be_bytes());
            p[6..].copy_from_slice(msg);
            b
        }
    }
}

/// A BLOCK_STATUS chunk (with DONE) for one context: `(length, flags)` pairs.
pub fn block_status(cookie: u64, context: u32, extents: &[(u32, u32)]) -> Vec<u8> {
    let len = 4 + 8 * extents.len();
    let mut b = Vec::with_capacity(CHUNK_HEADER_SIZE + len);
    b.resize(CHUNK_HEADER_SIZE, 0);
    chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_BLOCK_STATUS, cookie, len as u32);
    b.extend_from_slice(&context.to_be_bytes());
    for &(l, f) in extents {
        b.extend_from_slice(&l.to_be_bytes());
        b.extend_from_slice(&f.to_be_bytes());
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simple_read() {
        let mut b = vec![0u8; read_header_len(false) + 4];
        b[16..].copy_from_slice(b"abcd");
        fill_read_header(&mut b, false, 0x1122, 0);
        assert_eq!(&b[0..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&b[4..8], &[0, 0, 0, 0]);
        assert_eq!(&b[8..16], &0x1122u64.to_be_bytes());
        assert_eq!(&b[16..], b"abcd");
    }

    #[test]
    fn structured_read() {
        let mut b = vec![0u8; read_header_len(true) + 4];
        fill_read_header(&mut b, true, 9, 4096);
        assert_eq!(&b[0..4], &STRUCTURED_REPLY_MAGIC.to_be_bytes());
        assert_eq!(u16::from_be_bytes([b[4], b[5]]), REPLY_FLAG_DONE);
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_OFFSET_DATA);
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 12);
        assert_eq!(u64::from_be_bytes(b[20..28].try_into().unwrap()), 4096);
    }

    #[test]
    fn errors() {
        let b = status(false, 5, Some((ENOSPC, "x")));
        assert_eq!(b.len(), SIMPLE_REPLY_SIZE);
        assert_eq!(u32::from_be_bytes(b[4..8].try_into().unwrap()), ENOSPC);
        let b = status(true, 5, Some((EIO, "boom")));
        assert_eq!(u16::from_be_bytes([b[6], b[7]]), REPLY_TYPE_ERROR);
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 4 + 2 + 4);
        assert_eq!(u32::from_be_bytes(b[20..24].try_into().unwrap()), EIO);
        assert_eq!(&b[26..30], b"boom");
        let b = status(true, 5, None);
        assert_eq!(b.len(), CHUNK_HEADER_SIZE);
    }

    #[test]
    fn extents() {
        let b = block_status(1, 1, &[(4096, STATE_HOLE | STATE_ZERO), (512, 0)]);
        assert_eq!(u32::from_be_bytes(b[16..20].try_into().unwrap()), 4 + 16);
        assert_eq!(b.len(), CHUNK_HEADER_SIZE + 20);
    }
}

#[cfg(test)]
mod codec_tests {
    use super::*;

    #[test]
    fn headers_decode_as_they_were_encoded() {
        let mut b = [0u8; CHUNK_HEADER_SIZE];
        chunk_header(&mut b, REPLY_FLAG_DONE, REPLY_TYPE_ERROR, 42, 9);
        let magic = u32::from_be_bytes(b[..4].try_into().unwrap());
        assert_eq!(reply_header_rest(magic), Some(16));
        assert_eq!(
            decode_reply_header(magic, &b[4..]),
            Some(ReplyHeader::Chunk {
                flags: REPLY_FLAG_DONE,
                typ: REPLY_TYPE_ERROR,
                cookie: 42,
                len: 9
            })
        );
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
