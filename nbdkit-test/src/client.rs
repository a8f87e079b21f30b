//! A small, blocking NBD client for tests.
//!
//! [`Client`] speaks just enough of the NBD protocol to exercise a server
//! from a test: it negotiates an export (fixed newstyle with `NBD_OPT_GO`,
//! falling back to `NBD_OPT_EXPORT_NAME`, or oldstyle if that is what the
//! server speaks), asks for structured replies and the `base:allocation`
//! meta context, and then reads, writes, flushes, trims, zeroes, caches and
//! queries block status.
//!
//! It is deliberately simple: it uses only blocking `std` sockets, and has
//! exactly one request in flight at a time (send a request, read its whole
//! reply, return). It does not do TLS. It is strict about what the server
//! sends: any violation of the protocol is reported as an
//! [`io::ErrorKind::InvalidData`] error with a precise message, and after
//! such an error (or an I/O error in the middle of a request) the client
//! refuses further requests, since the stream can no longer be trusted.
//! Errors reported by the server are returned as
//! [`io::Error::from_raw_os_error`] with the matching errno, so tests can
//! check `err.raw_os_error() == Some(libc::EIO)`.
//!
//! Its wire constants and its request encoding are the server crate's
//! (`nbdkit::protocol`): one definition of the protocol in the workspace.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use crate::uri::{self, Target};

// Wire constants: the server crate's, named as in the NBD specification
// without the `NBD_` prefix.
use nbdkit::protocol::consts::*;
use nbdkit::protocol::handshake::{self, Info};
use nbdkit::protocol::reply::{self, ReplyHeader};
use nbdkit::protocol::request::{self, CmdFlags, Command, Request};

// ---------------------------------------------------------------------------
// Limits of this client.
// ---------------------------------------------------------------------------

/// Largest option reply payload accepted during the handshake.
const MAX_OPTION_REPLY: u32 = 64 * 1024;
/// Largest structured reply payload accepted for chunks other than data
/// and block status (those are bounded by the request instead).
const MAX_CHUNK_PAYLOAD: u64 = 64 * 1024;
/// Largest length put in one request; longer operations are split.
const MAX_REQUEST: u64 = 32 * 1024 * 1024;
/// How long [`Client::disconnect`] waits for the server to close.
const DISCONNECT_WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Public types.
// ---------------------------------------------------------------------------

/// What the server told us about the export during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The export name the client asked for.
    pub name: String,
    /// Size of the export in bytes.
    pub size: u64,
    /// NBD transmission flags exactly as sent by the server.
    pub flags: u16,
    /// Block size constraints, if the server sent `NBD_INFO_BLOCK_SIZE`.
    pub block_size: Option<BlockSize>,
    /// Description, if the server sent `NBD_INFO_DESCRIPTION`.
    pub description: Option<String>,
}

impl ExportInfo {
    fn flag(&self, flag: u16) -> bool {
        self.flags & flag != 0
    }

    /// `NBD_FLAG_READ_ONLY`: the export refuses writes.
    pub fn read_only(&self) -> bool {
        self.flag(FLAG_READ_ONLY)
    }

    /// `NBD_FLAG_SEND_FLUSH`: the server accepts `NBD_CMD_FLUSH`.
    pub fn can_flush(&self) -> bool {
        self.flag(FLAG_SEND_FLUSH)
    }

    /// `NBD_FLAG_SEND_FUA`: the server honours `NBD_CMD_FLAG_FUA`.
    pub fn can_fua(&self) -> bool {
        self.flag(FLAG_SEND_FUA)
    }

    /// `NBD_FLAG_SEND_TRIM`: the server accepts `NBD_CMD_TRIM`.
    pub fn can_trim(&self) -> bool {
        self.flag(FLAG_SEND_TRIM)
    }

    /// `NBD_FLAG_SEND_WRITE_ZEROES`: the server accepts
    /// `NBD_CMD_WRITE_ZEROES`.
    pub fn can_zero(&self) -> bool {
        self.flag(FLAG_SEND_WRITE_ZEROES)
    }

    /// `NBD_FLAG_SEND_FAST_ZERO`: the server accepts
    /// `NBD_CMD_FLAG_FAST_ZERO`.
    pub fn can_fast_zero(&self) -> bool {
        self.flag(FLAG_SEND_FAST_ZERO)
    }

    /// `NBD_FLAG_SEND_CACHE`: the server accepts `NBD_CMD_CACHE`.
    pub fn can_cache(&self) -> bool {
        self.flag(FLAG_SEND_CACHE)
    }

    /// `NBD_FLAG_CAN_MULTI_CONN`: connections to this export are
    /// consistent with each other.
    pub fn can_multi_conn(&self) -> bool {
        self.flag(FLAG_CAN_MULTI_CONN)
    }

    /// `NBD_FLAG_ROTATIONAL`: the export behaves like a rotating disk.
    pub fn is_rotational(&self) -> bool {
        self.flag(FLAG_ROTATIONAL)
    }

    /// `NBD_FLAG_SEND_DF`: the server accepts `NBD_CMD_FLAG_DF` on reads.
    pub fn can_df(&self) -> bool {
        self.flag(FLAG_SEND_DF)
    }
}

/// Block size constraints from `NBD_INFO_BLOCK_SIZE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Minimum block size (alignment of offsets and lengths).
    pub minimum: u32,
    /// Preferred block size.
    pub preferred: u32,
    /// Maximum size of a read or write payload.
    pub maximum: u32,
}

/// One `base:allocation` extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// Offset of the extent in the export (computed by the client).
    pub offset: u64,
    /// Length in bytes.
    pub length: u64,
    /// `NBD_STATE_*` flags.
    pub flags: u32,
}

impl Extent {
    /// `NBD_STATE_HOLE`: the extent is not allocated.
    pub fn is_hole(&self) -> bool {
        self.flags & STATE_HOLE != 0
    }

    /// `NBD_STATE_ZERO`: the extent reads as zeroes.
    pub fn is_zero(&self) -> bool {
        self.flags & STATE_ZERO != 0
    }
}

/// Flags for [`Client::zero_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZeroFlags {
    /// `NBD_CMD_FLAG_NO_HOLE`: the server must not punch a hole.
    pub no_hole: bool,
    /// `NBD_CMD_FLAG_FAST_ZERO`: fail rather than zero slowly.
    pub fast: bool,
    /// `NBD_CMD_FLAG_FUA`: persist before replying.
    pub fua: bool,
}

/// How long a socket read or write may block by default: generous, so only
/// a server that has stopped answering reaches it.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How [`Client`] negotiates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Ask for extended headers (32-byte headers, 64-bit lengths) before
    /// structured replies. Default true; false tests the compact style
    /// against a server that has both.
    pub extended_headers: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { extended_headers: true }
    }
}

/// A blocking NBD client connection with one request in flight at a time.
///
/// Dropping it sends `NBD_CMD_DISC` (best effort); [`Client::disconnect`]
/// does the same and also waits for the server to close the connection.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    info: ExportInfo,
    structured: bool,
    extended: bool,
    base_allocation: Option<u32>,
    next_cookie: u64,
    /// Set after a protocol violation or an I/O error part-way through a
    /// request: the stream is out of step and no request may be sent.
    broken: bool,
    /// Set once `NBD_CMD_DISC` has been sent.
    closed: bool,
}

impl Client {
    /// Connect to a Unix socket and negotiate `export`.
    pub fn connect_unix(path: impl AsRef<Path>, export: &str) -> io::Result<Client> {
        Client::connect_unix_with(path, export, &Options::default())
    }

    /// Connect to a Unix socket and negotiate `export` as `options` say.
    pub fn connect_unix_with(
        path: impl AsRef<Path>, export: &str, options: &Options,
    ) -> io::Result<Client> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|e| {
            io::Error::new(e.kind(), format!("connecting to {}: {e}", path.display()))
        })?;
        Client::negotiate(Stream::Unix(stream), export, options)
    }

    /// Connect over TCP and negotiate `export`.
    pub fn connect_tcp(addr: impl ToSocketAddrs, export: &str) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        Client::negotiate(Stream::Tcp(stream), export, &Options::default())
    }

    /// Connect to an NBD URI: `nbd://host[:port][/export]` (default port
    /// 10809) or `nbd+unix:///[export]?socket=PATH`, with percent-decoding
    /// of the export name and socket path. Other schemes (`nbds`,
    /// `nbds+unix`, vsock) fail with [`io::ErrorKind::Unsupported`].
    pub fn connect_uri(uri: &str) -> io::Result<Client> {
        match uri::parse(uri)? {
            Target::Tcp { host, port, export } => {
                Client::connect_tcp((host.as_str(), port), &export)
            }
            Target::Unix { socket, export } => Client::connect_unix(&socket, &export),
        }
    }

    fn negotiate(mut stream: Stream, export: &str, options: &Options) -> io::Result<Client> {
        // A stalled server fails the test instead of hanging it.
        stream.set_timeouts(Some(DEFAULT_TIMEOUT))?;
        let n = handshake(&mut stream, export, options)?;
        Ok(Client {
            stream,
            info: n.info,
            structured: n.structured,
            extended: n.extended,
            base_allocation: n.base_allocation,
            next_cookie: 1,
            broken: false,
            closed: false,
        })
    }

    /// How long any one read or write on the socket may block before it
    /// fails with `WouldBlock`/`TimedOut` (default [`DEFAULT_TIMEOUT`];
    /// `None` waits forever). After such a timeout the connection is
    /// unusable, as after any I/O error in the middle of a request.
    pub fn set_timeout(&mut self, limit: Option<Duration>) -> io::Result<()> {
        self.stream.set_timeouts(limit)
    }

    /// What the server said about the export.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    /// Size of the export in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// Whether extended headers were negotiated: 32-byte headers and
    /// 64-bit lengths, so that a trim, zero or block status of any length
    /// is one request.
    pub fn extended_headers(&self) -> bool {
        self.extended
    }

    /// The longest length one request without payload may carry.
    fn max_effect(&self) -> u64 {
        if self.extended {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }

    /// How much one trim or zero request covers: the whole range with
    /// extended headers, else pieces of [`MAX_REQUEST`].
    fn max_ranged(&self) -> u64 {
        if self.extended {
            u64::MAX
        } else {
            MAX_REQUEST
        }
    }

    /// Read `len` bytes at `offset` (split into several requests if long).
    pub fn read(&mut self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_into(offset, &mut buf)?;
        Ok(buf)
    }

    /// Read `buf.len()` bytes at `offset` into `buf`.
    pub fn read_into(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let max = self.max_io();
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(max);
            let off = chunk_offset(offset, done)?;
            let piece = &mut buf[done..done + n];
            self.transact(CMD_READ, 0, off, n as u64, &[], Sink::Read(piece))?;
            done += n;
        }
        Ok(())
    }

    /// Write `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_flags(offset, data, 0)
    }

    /// Write `data` at `offset` with `NBD_CMD_FLAG_FUA`.
    pub fn write_fua(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_flags(offset, data, CMD_FLAG_FUA)
    }

    fn write_flags(&mut self, offset: u64, data: &[u8], flags: u16) -> io::Result<()> {
        let max = self.max_io();
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(max);
            let off = chunk_offset(offset, done)?;
            let piece = &data[done..done + n];
            self.transact(CMD_WRITE, flags, off, n as u64, piece, Sink::None)?;
            done += n;
        }
        Ok(())
    }

    /// `NBD_CMD_FLUSH`.
    pub fn flush(&mut self) -> io::Result<()> {
        self.transact(CMD_FLUSH, 0, 0, 0, &[], Sink::None)
    }

    /// `NBD_CMD_TRIM` of `len` bytes at `offset`.
    pub fn trim(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.ranged(CMD_TRIM, 0, offset, len, self.max_ranged())
    }

    /// `NBD_CMD_WRITE_ZEROES`; the server may punch a hole.
    pub fn zero(&mut self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_with(offset, len, ZeroFlags::default())
    }

    /// Write zeroes with explicit flags.
    pub fn zero_with(&mut self, offset: u64, len: u64, flags: ZeroFlags) -> io::Result<()> {
        let mut f = 0;
        if flags.no_hole {
            f |= CMD_FLAG_NO_HOLE;
        }
        if flags.fast {
            f |= CMD_FLAG_FAST_ZERO;
        }
        if flags.fua {
            f |= CMD_FLAG_FUA;
        }
        self.ranged(CMD_WRITE_ZEROES, f, offset, len, self.max_ranged())
    }

    /// `NBD_CMD_CACHE` of `len` bytes at `offset`.
    pub fn cache(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let max = self.max_io() as u64;
        self.ranged(CMD_CACHE, 0, offset, len, max)
    }

    /// `base:allocation` extents covering [offset, offset+len) as the server
    /// reports them: they may stop short of `offset + len` (the caller may
    /// loop), and the last may extend beyond it. Offsets are filled in by
    /// the client. Fails with [`io::ErrorKind::Unsupported`] if the server
    /// did not agree to `base:allocation`. A `len` too long for one request
    /// is shortened.
    pub fn block_status(&mut self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        if self.base_allocation.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server did not agree to the base:allocation meta context",
            ));
        }
        if len == 0 {
            return Ok(Vec::new());
        }
        // The longest request length that keeps the server's alignment.
        let align = u64::from(self.info.block_size.map_or(1, |b| b.minimum.max(1)));
        let cap = self.max_effect() / align * align;
        let n = len.min(cap);
        let mut out = Vec::new();
        self.transact(CMD_BLOCK_STATUS, 0, offset, n, &[], Sink::Status(&mut out))?;
        Ok(out)
    }

    /// Convenience: loops [`Client::block_status`] until [offset,
    /// offset+len) is covered, returning adjacent extents clipped to that
    /// range, with neighbours of equal flags merged.
    pub fn extents(&mut self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let end = offset.checked_add(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset + length overflows")
        })?;
        let mut out: Vec<Extent> = Vec::new();
        let mut cur = offset;
        while cur < end {
            let got = self.block_status(cur, end - cur)?;
            if got.is_empty() {
                return Err(invalid("block status returned no extents"));
            }
            for e in got {
                if e.offset >= end {
                    break;
                }
                let length = e.length.min(end - e.offset);
                cur = e.offset + length;
                match out.last_mut() {
                    Some(last)
                        if last.offset + last.length == e.offset && last.flags == e.flags =>
                    {
                        last.length += length;
                    }
                    _ => out.push(Extent { length, ..e }),
                }
            }
        }
        Ok(out)
    }

    /// Send `NBD_CMD_DISC`, then wait (briefly) for the server to close the
    /// connection.
    pub fn disconnect(mut self) -> io::Result<()> {
        if self.broken {
            // The stream is out of step; just close it.
            self.closed = true;
            return Ok(());
        }
        self.closed = true;
        self.send_request(0, CMD_DISC, 0, 0, &[])?;
        let _ = self.stream.shutdown(Shutdown::Write);
        // Wait for the server to close its end, so that when we return the
        // server has seen the disconnect. Bounded in time and bytes.
        let _ = self.stream.set_read_timeout(Some(DISCONNECT_WAIT));
        let mut scratch = [0u8; 4096];
        let mut total = 0usize;
        while total < 1024 * 1024 {
            match self.stream.read(&mut scratch) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        Ok(())
    }

    /// Largest payload of one read/write/cache request.
    fn max_io(&self) -> usize {
        let mut max = MAX_REQUEST;
        if let Some(bs) = self.info.block_size {
            if bs.maximum > 0 {
                max = max.min(u64::from(bs.maximum));
            }
        }
        max as usize
    }

    /// A command with no payload over [offset, offset+len), split into
    /// requests of at most `max` bytes.
    fn ranged(&mut self, cmd: u16, flags: u16, offset: u64, len: u64, max: u64) -> io::Result<()> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(max);
            let off = offset.checked_add(done).ok_or_else(overflow)?;
            self.transact(cmd, flags, off, n, &[], Sink::None)?;
            done += n;
        }
        Ok(())
    }

    /// Send one request and read its whole reply.
    fn transact(
        &mut self, cmd: u16, flags: u16, offset: u64, len: u64, data: &[u8], sink: Sink<'_>,
    ) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the NBD connection is unusable after an earlier protocol or I/O error",
            ));
        }
        let result = self
            .send_request(flags, cmd, offset, len, data)
            .and_then(|cookie| self.recv_reply(cookie, cmd, offset, len, sink));
        match result {
            Ok(None) => Ok(()),
            Ok(Some(errno)) => Err(nbd_error(errno)),
            Err(e) => {
                self.broken = true;
                Err(e)
            }
        }
    }

    fn send_request(
        &mut self, flags: u16, cmd: u16, offset: u64, len: u64, data: &[u8],
    ) -> io::Result<u64> {
        let cookie = self.next_cookie;
        self.next_cookie = self.next_cookie.wrapping_add(1);
        let mut flags = flags;
        if self.extended && cmd == CMD_WRITE {
            flags |= CMD_FLAG_PAYLOAD_LEN;
        }
        let req =
            Request { flags: CmdFlags(flags), cmd: Command::from_wire(cmd), cookie, offset, len };
        self.stream.write_all(&request::encode(&req, self.extended))?;
        if !data.is_empty() {
            self.stream.write_all(data)?;
        }
        self.stream.flush()?;
        Ok(cookie)
    }

    /// Read the reply to the request `cookie`. `Ok(Some(errno))` is an
    /// error reported by the server (the stream is still in step); `Err` is
    /// an I/O error or a protocol violation.
    fn recv_reply(
        &mut self, cookie: u64, cmd: u16, offset: u64, len: u64, sink: Sink<'_>,
    ) -> io::Result<Option<u32>> {
        let name = cmd_name(cmd);
        self.recv_reply_inner(cookie, cmd, offset, len, sink)
            .map_err(|e| eof_context(e, &format!("waiting for the reply to {name}")))
    }

    fn recv_reply_inner(
        &mut self, cookie: u64, cmd: u16, offset: u64, len: u64, mut sink: Sink<'_>,
    ) -> io::Result<Option<u32>> {
        let name = cmd_name(cmd);
        let s = &mut self.stream;
        let mut error: Option<u32> = None;
        let mut chunks = 0u32;
        // Parts of a read request covered by data or hole chunks, relative
        // to `offset`, as [start, end).
        let mut covered: Vec<(u64, u64)> = Vec::new();
        let mut got_status = false;
        loop {
            let magic = read_u32(s)?;
            let Some(n) = reply::reply_header_rest(magic) else {
                return Err(invalid(format!("bad reply magic 0x{magic:08x} in reply to {name}")));
            };
            let mut rest = [0u8; MAX_REPLY_HEADER_SIZE];
            s.read_exact(&mut rest[..n])?;
            let header = reply::decode_reply_header(magic, &rest[..n]).expect("a known magic");
            if let ReplyHeader::Simple { error: err, cookie: got } = header {
                check_cookie(got, cookie)?;
                if self.extended {
                    return Err(invalid(format!(
                        "simple reply to {name} although extended headers were negotiated"
                    )));
                }
                if chunks > 0 {
                    return Err(invalid(format!(
                        "simple reply in the middle of a structured reply to {name}"
                    )));
                }
                if self.structured && cmd == CMD_READ {
                    return Err(invalid(
                        "simple reply to NBD_CMD_READ although structured replies were negotiated",
                    ));
                }
                if err != 0 {
                    return Ok(Some(err));
                }
                match &mut sink {
                    Sink::Read(buf) => s.read_exact(buf)?,
                    Sink::Status(_) => return Err(invalid(
                        "successful simple reply to NBD_CMD_BLOCK_STATUS (no block status chunk)",
                    )),
                    Sink::None => {}
                }
                return Ok(None);
            }
            let ReplyHeader::Chunk { flags, typ, cookie: got, len: plen, extended } = header else {
                unreachable!("a simple reply returned above");
            };
            if !self.structured {
                return Err(invalid(format!(
                    "structured reply chunk to {name} although structured replies were not negotiated"
                )));
            }
            if extended != self.extended {
                return Err(invalid(format!(
                    "{} reply chunk to {name} although {} were negotiated",
                    if extended { "extended" } else { "compact structured" },
                    if self.extended { "extended headers" } else { "compact headers" },
                )));
            }
            check_cookie(got, cookie)?;
            chunks += 1;
            let done = flags & REPLY_FLAG_DONE != 0;
            let tname = chunk_name(typ);
            let tname = tname.as_str();
            let wrong_cmd = || invalid(format!("{tname} chunk in reply to {name}"));
            match typ {
                REPLY_TYPE_NONE => {
                    if plen != 0 {
                        return Err(invalid(format!(
                            "{tname} chunk with payload length {plen} (must be 0)"
                        )));
                    }
                    if !done {
                        return Err(invalid(format!("{tname} chunk without NBD_REPLY_FLAG_DONE")));
                    }
                }
                REPLY_TYPE_OFFSET_DATA => {
                    let Sink::Read(buf) = &mut sink else {
                        return Err(wrong_cmd());
                    };
                    if plen < 9 {
                        return Err(invalid(format!(
                            "{tname} chunk with payload length {plen} (must be at least 9)"
                        )));
                    }
                    let off = read_u64(s)?;
                    let dlen = plen - 8;
                    let rel = check_range(tname, off, dlen, offset, len)?;
                    s.read_exact(&mut buf[rel as usize..(rel + dlen) as usize])?;
                    covered.push((rel, rel + dlen));
                }
                REPLY_TYPE_OFFSET_HOLE => {
                    let Sink::Read(buf) = &mut sink else {
                        return Err(wrong_cmd());
                    };
                    if plen != 12 {
                        return Err(invalid(format!(
                            "{tname} chunk with payload length {plen} (must be 12)"
                        )));
                    }
                    let off = read_u64(s)?;
                    let hlen = u64::from(read_u32(s)?);
                    if hlen == 0 {
                        return Err(invalid(format!("{tname} chunk with hole size 0")));
                    }
                    let rel = check_range(tname, off, hlen, offset, len)?;
                    buf[rel as usize..(rel + hlen) as usize].fill(0);
                    covered.push((rel, rel + hlen));
                }
                REPLY_TYPE_BLOCK_STATUS | REPLY_TYPE_BLOCK_STATUS_EXT => {
                    let Sink::Status(out) = &mut sink else {
                        return Err(wrong_cmd());
                    };
                    let wide = typ == REPLY_TYPE_BLOCK_STATUS_EXT;
                    if wide != self.extended {
                        return Err(invalid(format!(
                            "{tname} chunk, which is for {}",
                            if wide { "extended headers only" } else { "compact headers only" }
                        )));
                    }
                    // Context id (and with extended headers a descriptor
                    // count), then descriptors of 8 or 16 bytes.
                    let (head, each) = if wide { (8u64, 16u64) } else { (4, 8) };
                    if plen < head + each || (plen - head) % each != 0 {
                        return Err(invalid(format!(
                            "{tname} chunk with payload length {plen} (must be {head} + a positive multiple of {each})"
                        )));
                    }
                    let ctx = read_u32(s)?;
                    if wide && u64::from(read_u32(s)?) != (plen - head) / each {
                        return Err(invalid(format!(
                            "{tname} chunk whose descriptor count does not match its length {plen}"
                        )));
                    }
                    if Some(ctx) != self.base_allocation {
                        // Some other context: not ours to interpret.
                        discard(s, plen - head)?;
                    } else {
                        if got_status {
                            return Err(invalid(format!(
                                "second {tname} chunk for base:allocation in one reply"
                            )));
                        }
                        got_status = true;
                        // Descriptors are read one at a time, so memory use
                        // is proportional to what the server actually sends,
                        // and only the last may go past the requested length.
                        let mut sum = 0u64;
                        for _ in 0..(plen - head) / each {
                            if sum >= len {
                                return Err(invalid(format!(
                                    "block status extents continue after reaching the requested length {len} (only the final extent may exceed it)"
                                )));
                            }
                            let (elen, eflags) = if wide {
                                let (l, f) = (read_u64(s)?, read_u64(s)?);
                                let f = u32::try_from(f).map_err(|_| {
                                    invalid("base:allocation status with bits above 32 set")
                                })?;
                                (l, f)
                            } else {
                                (u64::from(read_u32(s)?), read_u32(s)?)
                            };
                            if elen == 0 {
                                return Err(invalid("block status extent of length 0"));
                            }
                            let eoff = offset.checked_add(sum).ok_or_else(|| {
                                invalid("block status extents extend beyond 2^64")
                            })?;
                            out.push(Extent { offset: eoff, length: elen, flags: eflags });
                            sum += elen;
                        }
                    }
                }
                t if t & REPLY_TYPE_ERROR_BIT != 0 => {
                    if !(6..=MAX_CHUNK_PAYLOAD).contains(&plen) {
                        return Err(invalid(format!(
                            "{tname} chunk with payload length {plen} (must be 6 to {MAX_CHUNK_PAYLOAD})"
                        )));
                    }
                    let mut p = vec![0u8; plen as usize];
                    s.read_exact(&mut p)?;
                    let err = be_u32(&p, 0)?;
                    let mlen = usize::from(be_u16(&p, 4)?);
                    let expected = match t {
                        REPLY_TYPE_ERROR => Some(6 + mlen),
                        REPLY_TYPE_ERROR_OFFSET => Some(6 + mlen + 8),
                        _ => None,
                    };
                    match expected {
                        Some(want) if want != p.len() => {
                            return Err(invalid(format!(
                                "{tname} chunk with payload length {plen} but message length {mlen} (expected payload length {want})"
                            )));
                        }
                        None if 6 + mlen > p.len() => {
                            return Err(invalid(format!(
                                "{tname} chunk with payload length {plen} too short for its message length {mlen}"
                            )));
                        }
                        _ => {}
                    }
                    if t == REPLY_TYPE_ERROR_OFFSET {
                        let eoff = be_u64(&p, 6 + mlen)?;
                        check_range(tname, eoff, 1, offset, len)?;
                    }
                    if err == 0 {
                        return Err(invalid(format!("{tname} chunk with error value 0")));
                    }
                    // The message text is dropped: the errno is what
                    // callers check.
                    error.get_or_insert(err);
                }
                t => {
                    return Err(invalid(format!(
                        "unknown structured reply chunk type {t} in reply to {name}"
                    )));
                }
            }
            if done {
                break;
            }
        }

        // Data and hole chunks must not overlap.
        covered.sort_unstable();
        let mut end = 0;
        let mut total = 0;
        for &(start, stop) in &covered {
            if start < end {
                return Err(invalid(format!(
                    "overlapping data/hole chunks in reply to {name} at offset {}",
                    offset.wrapping_add(start)
                )));
            }
            end = stop;
            total += stop - start;
        }
        if let Some(err) = error {
            return Ok(Some(err));
        }
        match sink {
            Sink::Read(_) if total != len => Err(invalid(format!(
                "successful reply to {name} of {len} bytes at offset {offset} covered only {total} bytes"
            ))),
            Sink::Status(_) if !got_status => Err(invalid(format!(
                "successful reply to {name} without a base:allocation block status chunk"
            ))),
            _ => Ok(None),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if !self.closed && !self.broken {
            self.closed = true;
            let _ = self.send_request(0, CMD_DISC, 0, 0, &[]);
        }
    }
}

// ---------------------------------------------------------------------------
// Transport.
// ---------------------------------------------------------------------------

/// The socket under a [`Client`].
#[derive(Debug)]
enum Stream {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Stream {
    fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.shutdown(how),
            Stream::Tcp(s) => s.shutdown(how),
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.set_read_timeout(t),
            Stream::Tcp(s) => s.set_read_timeout(t),
        }
    }

    fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        self.set_read_timeout(t)?;
        match self {
            Stream::Unix(s) => s.set_write_timeout(t),
            Stream::Tcp(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.read(buf),
            Stream::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Unix(s) => s.write(buf),
            Stream::Tcp(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Unix(s) => s.flush(),
            Stream::Tcp(s) => s.flush(),
        }
    }
}

/// Where the payload of a reply goes.
enum Sink<'a> {
    /// The command has no reply payload.
    None,
    /// `NBD_CMD_READ`: the data for exactly the requested range.
    Read(&'a mut [u8]),
    /// `NBD_CMD_BLOCK_STATUS`: base:allocation extents.
    Status(&'a mut Vec<Extent>),
}

// ---------------------------------------------------------------------------
// Handshake.
// ---------------------------------------------------------------------------

/// The outcome of the handshake.
struct Negotiated {
    info: ExportInfo,
    structured: bool,
    extended: bool,
    base_allocation: Option<u32>,
}

fn handshake(s: &mut Stream, export: &str, options: &Options) -> io::Result<Negotiated> {
    handshake_inner(s, export, options).map_err(|e| eof_context(e, "negotiating with the server"))
}

fn handshake_inner(s: &mut Stream, export: &str, options: &Options) -> io::Result<Negotiated> {
    let magic = read_u64(s)?;
    if magic != NBDMAGIC {
        return Err(invalid(format!(
            "not an NBD server: greeting starts with 0x{magic:016x}, not NBDMAGIC"
        )));
    }
    match read_u64(s)? {
        IHAVEOPT => newstyle(s, export, options),
        OLD_MAGIC => {
            let size = read_u64(s)?;
            let flags = read_u32(s)?;
            discard(s, 124)?;
            Ok(Negotiated {
                info: ExportInfo {
                    name: export.to_owned(),
                    size,
                    // Transmission flags are the low 16 bits.
                    flags: flags as u16,
                    block_size: None,
                    description: None,
                },
                structured: false,
                extended: false,
                base_allocation: None,
            })
        }
        m => Err(invalid(format!("unknown handshake magic 0x{m:016x} after NBDMAGIC"))),
    }
}

fn newstyle(s: &mut Stream, export: &str, options: &Options) -> io::Result<Negotiated> {
    let gflags = read_u16(s)?;
    let mut cflags = 0u32;
    if gflags & FLAG_FIXED_NEWSTYLE != 0 {
        cflags |= FLAG_C_FIXED_NEWSTYLE;
    }
    if gflags & FLAG_NO_ZEROES != 0 {
        cflags |= FLAG_C_NO_ZEROES;
    }
    s.write_all(&cflags.to_be_bytes())?;
    let no_zeroes = cflags & FLAG_C_NO_ZEROES != 0;
    if gflags & FLAG_FIXED_NEWSTYLE == 0 {
        return export_name(s, export, no_zeroes, false, None);
    }

    // Extended headers, then structured replies: an error just means the
    // next style down.
    let mut extended = false;
    if options.extended_headers {
        send_option(s, OPT_EXTENDED_HEADERS, &[])?;
        let (typ, data) = read_option_reply(s, OPT_EXTENDED_HEADERS)?;
        extended = match typ {
            REP_ACK if data.is_empty() => true,
            t if t & REP_FLAG_ERROR != 0 => false,
            t => return Err(unexpected_reply(OPT_EXTENDED_HEADERS, t, data.len())),
        };
    }
    let structured = extended || {
        send_option(s, OPT_STRUCTURED_REPLY, &[])?;
        let (typ, data) = read_option_reply(s, OPT_STRUCTURED_REPLY)?;
        match typ {
            REP_ACK if data.is_empty() => true,
            t if t & REP_FLAG_ERROR != 0 => false,
            t => return Err(unexpected_reply(OPT_STRUCTURED_REPLY, t, data.len())),
        }
    };

    let base_allocation = if structured { set_meta_context(s, export)? } else { None };

    let mut n = go(s, export, no_zeroes, structured, extended, base_allocation)?;
    n.extended = extended;
    Ok(n)
}

/// `NBD_OPT_SET_META_CONTEXT` for `base:allocation`; returns its context
/// id, or `None` if the server declined.
fn set_meta_context(s: &mut Stream, export: &str) -> io::Result<Option<u32>> {
    let payload = handshake::encode_meta_request(export, &[CONTEXT_BASE_ALLOCATION]);
    send_option(s, OPT_SET_META_CONTEXT, &payload)?;
    let mut id = None;
    loop {
        let (typ, data) = read_option_reply(s, OPT_SET_META_CONTEXT)?;
        match typ {
            REP_META_CONTEXT => {
                let ctx = be_u32(&data, 0)?;
                let ctx_name = &data[4..];
                if ctx_name != CONTEXT_BASE_ALLOCATION.as_bytes() {
                    return Err(invalid(format!(
                        "server selected meta context {:?}, which was not asked for",
                        String::from_utf8_lossy(ctx_name)
                    )));
                }
                if id.is_some() {
                    return Err(invalid("server selected base:allocation twice"));
                }
                id = Some(ctx);
            }
            REP_ACK if data.is_empty() => return Ok(id),
            t if t & REP_FLAG_ERROR != 0 => return Ok(None),
            t => return Err(unexpected_reply(OPT_SET_META_CONTEXT, t, data.len())),
        }
    }
}

/// `NBD_OPT_GO`, falling back to `NBD_OPT_EXPORT_NAME` if unsupported.
fn go(
    s: &mut Stream, export: &str, no_zeroes: bool, structured: bool, extended: bool,
    base_allocation: Option<u32>,
) -> io::Result<Negotiated> {
    let payload = handshake::encode_info_request(export, &[INFO_BLOCK_SIZE, INFO_DESCRIPTION]);
    send_option(s, OPT_GO, &payload)?;

    let mut size_flags = None;
    let mut block_size = None;
    let mut description = None;
    loop {
        let (typ, data) = read_option_reply(s, OPT_GO)?;
        match typ {
            REP_INFO => match handshake::decode_info(&data).map_err(invalid)? {
                Info::Export { size, eflags } => size_flags = Some((size, eflags)),
                Info::BlockSize { minimum, preferred, maximum } => {
                    block_size = Some(BlockSize { minimum, preferred, maximum });
                }
                Info::Description(d) => {
                    let text = String::from_utf8(d)
                        .map_err(|_| invalid("NBD_INFO_DESCRIPTION is not valid UTF-8"))?;
                    description = Some(text);
                }
                // Unknown information types must be ignored.
                Info::Name(_) | Info::Unknown(_) => {}
            },
            REP_ACK if data.is_empty() => {
                let (size, flags) = size_flags.ok_or_else(|| {
                    invalid("NBD_OPT_GO succeeded without sending NBD_INFO_EXPORT")
                })?;
                return Ok(Negotiated {
                    info: ExportInfo {
                        name: export.to_owned(),
                        size,
                        flags,
                        block_size,
                        description,
                    },
                    structured,
                    extended,
                    base_allocation,
                });
            }
            REP_ERR_UNSUP if extended => {
                return Err(invalid(
                    "NBD_OPT_GO refused as unsupported after extended headers were negotiated",
                ))
            }
            REP_ERR_UNSUP => return export_name(s, export, no_zeroes, structured, base_allocation),
            t if t & REP_FLAG_ERROR != 0 => {
                // Be polite: a soft disconnect. The reply does not matter.
                let _ = send_option(s, OPT_ABORT, &[]);
                let kind = match t {
                    REP_ERR_UNKNOWN => io::ErrorKind::NotFound,
                    REP_ERR_POLICY | REP_ERR_TLS_REQD => io::ErrorKind::PermissionDenied,
                    _ => io::ErrorKind::Other,
                };
                let mut msg = format!("server refused export {export:?}: {}", rep_name(t));
                if !data.is_empty() {
                    msg.push_str(": ");
                    msg.push_str(&String::from_utf8_lossy(&data));
                }
                return Err(io::Error::new(kind, msg));
            }
            t => return Err(unexpected_reply(OPT_GO, t, data.len())),
        }
    }
}

/// `NBD_OPT_EXPORT_NAME`: the server either answers with the export's size
/// and flags or closes the connection.
fn export_name(
    s: &mut Stream, export: &str, no_zeroes: bool, structured: bool, base_allocation: Option<u32>,
) -> io::Result<Negotiated> {
    send_option(s, OPT_EXPORT_NAME, export.as_bytes())?;
    let size = read_u64(s).map_err(|e| {
        eof_context(
            e,
            &format!(
                "waiting for the reply to NBD_OPT_EXPORT_NAME (the server may have refused export {export:?})"
            ),
        )
    })?;
    let flags = read_u16(s)?;
    if !no_zeroes {
        discard(s, 124)?;
    }
    Ok(Negotiated {
        info: ExportInfo {
            name: export.to_owned(),
            size,
            flags,
            block_size: None,
            description: None,
        },
        structured,
        extended: false,
        base_allocation,
    })
}

fn send_option(s: &mut Stream, opt: u32, data: &[u8]) -> io::Result<()> {
    if u32::try_from(data.len()).is_err() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "option data too long"));
    }
    s.write_all(&handshake::encode_option(opt, data))?;
    s.flush()
}

/// Read one option reply to `opt`: (reply type, payload).
fn read_option_reply(s: &mut Stream, opt: u32) -> io::Result<(u32, Vec<u8>)> {
    let header = read_array::<{ handshake::OPTION_REPLY_HEADER_SIZE }>(s)?;
    let (ropt, typ, len) = handshake::decode_option_reply_header(&header).map_err(|magic| {
        invalid(format!("bad option reply magic 0x{magic:016x} in reply to {}", opt_name(opt)))
    })?;
    if ropt != opt {
        return Err(invalid(format!(
            "option reply for option {ropt} while waiting for the reply to {}",
            opt_name(opt)
        )));
    }
    if len > MAX_OPTION_REPLY {
        return Err(invalid(format!(
            "option reply to {} with payload length {len} (this client accepts at most {MAX_OPTION_REPLY})",
            opt_name(opt)
        )));
    }
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data)?;
    Ok((typ, data))
}

fn unexpected_reply(opt: u32, typ: u32, len: usize) -> io::Error {
    invalid(format!(
        "unexpected reply {} (payload length {len}) to {}",
        rep_name(typ),
        opt_name(opt)
    ))
}

// ---------------------------------------------------------------------------
// Small helpers.
// ---------------------------------------------------------------------------

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn overflow() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "offset + length overflows")
}

/// Offset of the chunk starting `done` bytes into an operation at `offset`.
fn chunk_offset(offset: u64, done: usize) -> io::Result<u64> {
    offset.checked_add(done as u64).ok_or_else(overflow)
}

/// Give an "unexpected end of file" error a message saying what we were
/// doing; other errors pass through unchanged.
fn eof_context(e: io::Error, what: &str) -> io::Error {
    if e.kind() == io::ErrorKind::UnexpectedEof && e.get_ref().is_none() {
        io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("server closed the connection while {what}"),
        )
    } else {
        e
    }
}

fn check_cookie(got: u64, want: u64) -> io::Result<()> {
    if got != want {
        return Err(invalid(format!(
            "reply cookie 0x{got:x} does not match the request's cookie 0x{want:x}"
        )));
    }
    Ok(())
}

/// Check that [off, off+n) lies within the request [req_off, req_off+req_len)
/// and return `off - req_off`.
fn check_range(what: &str, off: u64, n: u64, req_off: u64, req_len: u64) -> io::Result<u64> {
    match off.checked_sub(req_off) {
        Some(rel) if rel.checked_add(n).is_some_and(|end| end <= req_len) => Ok(rel),
        _ => Err(invalid(format!(
            "{what} chunk covers {n} bytes at offset {off}, outside the request ({req_len} bytes at offset {req_off})"
        ))),
    }
}

/// Map an NBD error value to an `io::Error` with the host's errno.
fn nbd_error(err: u32) -> io::Error {
    io::Error::from_raw_os_error(nbdkit::protocol::errno::from_wire(err).to_os())
}

fn read_array<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn read_u16(r: &mut impl Read) -> io::Result<u16> {
    read_array(r).map(u16::from_be_bytes)
}

fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    read_array(r).map(u32::from_be_bytes)
}

fn read_u64(r: &mut impl Read) -> io::Result<u64> {
    read_array(r).map(u64::from_be_bytes)
}

/// Read and throw away exactly `n` bytes.
fn discard(r: &mut impl Read, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut (&mut *r).take(n), &mut io::sink())?;
    if copied != n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn be_bytes<const N: usize>(b: &[u8], at: usize) -> io::Result<[u8; N]> {
    b.get(at..at + N)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| invalid(format!("payload of {} bytes is too short", b.len())))
}

fn be_u16(b: &[u8], at: usize) -> io::Result<u16> {
    be_bytes(b, at).map(u16::from_be_bytes)
}

fn be_u32(b: &[u8], at: usize) -> io::Result<u32> {
    be_bytes(b, at).map(u32::from_be_bytes)
}

fn be_u64(b: &[u8], at: usize) -> io::Result<u64> {
    be_bytes(b, at).map(u64::from_be_bytes)
}

fn cmd_name(cmd: u16) -> &'static str {
    Command::from_wire(cmd).name()
}

fn chunk_name(typ: u16) -> String {
    match typ {
        REPLY_TYPE_NONE => "NBD_REPLY_TYPE_NONE".into(),
        REPLY_TYPE_OFFSET_DATA => "NBD_REPLY_TYPE_OFFSET_DATA".into(),
        REPLY_TYPE_OFFSET_HOLE => "NBD_REPLY_TYPE_OFFSET_HOLE".into(),
        REPLY_TYPE_BLOCK_STATUS => "NBD_REPLY_TYPE_BLOCK_STATUS".into(),
        REPLY_TYPE_ERROR => "NBD_REPLY_TYPE_ERROR".into(),
        REPLY_TYPE_ERROR_OFFSET => "NBD_REPLY_TYPE_ERROR_OFFSET".into(),
        t => format!("reply type {t}"),
    }
}

fn opt_name(opt: u32) -> &'static str {
    match opt {
        OPT_EXPORT_NAME => "NBD_OPT_EXPORT_NAME",
        OPT_ABORT => "NBD_OPT_ABORT",
        OPT_GO => "NBD_OPT_GO",
        OPT_STRUCTURED_REPLY => "NBD_OPT_STRUCTURED_REPLY",
        OPT_SET_META_CONTEXT => "NBD_OPT_SET_META_CONTEXT",
        _ => "an unknown option",
    }
}

fn rep_name(typ: u32) -> String {
    let name = match typ {
        REP_ACK => "NBD_REP_ACK",
        REP_INFO => "NBD_REP_INFO",
        REP_META_CONTEXT => "NBD_REP_META_CONTEXT",
        REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP",
        REP_ERR_POLICY => "NBD_REP_ERR_POLICY",
        REP_ERR_INVALID => "NBD_REP_ERR_INVALID",
        REP_ERR_PLATFORM => "NBD_REP_ERR_PLATFORM",
        REP_ERR_TLS_REQD => "NBD_REP_ERR_TLS_REQD",
        REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN",
        REP_ERR_SHUTDOWN => "NBD_REP_ERR_SHUTDOWN",
        REP_ERR_BLOCK_SIZE_REQD => "NBD_REP_ERR_BLOCK_SIZE_REQD",
        REP_ERR_TOO_BIG => "NBD_REP_ERR_TOO_BIG",
        REP_ERR_EXT_HEADER_REQD => "NBD_REP_ERR_EXT_HEADER_REQD",
        t if t & REP_FLAG_ERROR != 0 => return format!("error reply 0x{t:08x}"),
        t => return format!("reply type {t}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_mapping() {
        assert_eq!(nbd_error(EIO).raw_os_error(), Some(libc::EIO));
        assert_eq!(nbd_error(ENOSPC).raw_os_error(), Some(libc::ENOSPC));
        assert_eq!(nbd_error(ESHUTDOWN).raw_os_error(), Some(libc::ESHUTDOWN));
        assert_eq!(nbd_error(9999).raw_os_error(), Some(libc::EINVAL));
    }
}
