//! The client side of the protocol, for the nbd plugin: negotiate an export
//! with another server, then send requests and read replies, matched by
//! cookie so that many requests can be in flight at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;

use super::consts::*;
use super::errno::from_wire;
use super::handshake::{self, Info};
use super::reply::{decode_reply_header, reply_header_rest, ReplyHeader};
use super::request::{encode, CmdFlags, Command, Request};
use crate::error::{Errno, Error};

/// Most bytes a server may put in one option reply before we stop
/// listening to it.
const MAX_OPTION_REPLY: u32 = 64 * 1024;

/// What was negotiated.
#[derive(Debug, Clone, Copy)]
pub struct Export {
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (`FLAG_READ_ONLY`, `FLAG_SEND_FLUSH` ...).
    pub eflags: u16,
    /// Structured replies were negotiated.
    pub structured: bool,
    /// Extended headers were negotiated (then `structured` is true too).
    pub extended: bool,
    /// The `base:allocation` context id, if the server agreed to it.
    pub base_allocation: Option<u32>,
    /// Minimum, preferred and maximum block size, if the server sent them.
    pub block_size: Option<(u32, u32, u32)>,
}

fn bad(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

async fn send_option<W: AsyncWrite + Unpin>(
    w: &mut W, opt: u32, data: &[u8],
) -> std::io::Result<()> {
    w.write_all(&handshake::encode_option(opt, data)).await
}

/// One option reply: (type, payload).
async fn option_reply<R: AsyncRead + Unpin>(
    r: &mut R, opt: u32,
) -> std::io::Result<(u32, Vec<u8>)> {
    let mut h = [0u8; handshake::OPTION_REPLY_HEADER_SIZE];
    r.read_exact(&mut h).await?;
    let (got, typ, len) = handshake::decode_option_reply_header(&h)
        .map_err(|_| bad("the server's option reply is malformed"))?;
    if got != opt {
        return Err(bad("the server's option reply is malformed"));
    }
    if len > MAX_OPTION_REPLY {
        return Err(bad("the server's option reply is too long"));
    }
    let mut data = vec![0u8; len as usize];
    r.read_exact(&mut data).await?;
    Ok((typ, data))
}

/// How the server greeted us.
enum Greeting {
    /// Oldstyle: the export, at once.
    Old(Export),
    /// Newstyle: options may follow (we have sent our flags).
    New { fixed: bool, no_zeroes: bool },
}

/// Read the server's greeting and, if newstyle, answer with our flags.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> std::io::Result<Greeting> {
    if s.read_u64().await? != NBDMAGIC {
        return Err(bad("not an NBD server"));
    }
    let magic = s.read_u64().await?;
    if magic == OLD_MAGIC {
        let size = s.read_u64().await?;
        let flags = s.read_u32().await?;
        let mut zeroes = [0u8; 124];
        s.read_exact(&mut zeroes).await?;
        return Ok(Greeting::Old(Export {
            size,
            eflags: flags as u16,
            structured: false,
            extended: false,
            base_allocation: None,
            block_size: None,
        }));
    }
    if magic != IHAVEOPT {
        return Err(bad("not an NBD server (unknown handshake)"));
    }
    let hflags = s.read_u16().await?;
    let fixed = hflags & FLAG_FIXED_NEWSTYLE != 0;
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let mut cflags = 0;
    if fixed {
        cflags |= FLAG_C_FIXED_NEWSTYLE;
    }
    if no_zeroes {
        cflags |= FLAG_C_NO_ZEROES;
    }
    s.write_all(&cflags.to_be_bytes()).await?;
    Ok(Greeting::New { fixed, no_zeroes })
}

/// An option the server refused, as an error.
fn refused(what: &str, typ: u32, data: &[u8]) -> std::io::Error {
    let why = String::from_utf8_lossy(data);
    std::io::Error::other(format!(
        "the server refused {what} ({typ:#x}){}",
        if why.is_empty() { String::new() } else { format!(": {why}") }
    ))
}

/// The server's exports, by `NBD_OPT_LIST`: (name, description), the
/// description empty if there is none. The handshake is then abandoned
/// (`NBD_OPT_ABORT`).
pub async fn list_exports<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> std::io::Result<Vec<(String, String)>> {
    let Greeting::New { fixed: true, .. } = greet(s).await? else {
        return Err(bad("the server cannot list its exports (no fixed newstyle handshake)"));
    };
    send_option(s, OPT_LIST, &[]).await?;
    let mut out = Vec::new();
    loop {
        let (typ, data) = option_reply(s, OPT_LIST).await?;
        match typ {
            REP_SERVER if data.len() >= 4 => {
                let n = u32::from_be_bytes(data[..4].try_into().expect("4")) as usize;
                let name = data
                    .get(4..4 + n)
                    .ok_or_else(|| bad("the server's export list is malformed"))?;
                out.push((
                    String::from_utf8_lossy(name).into_owned(),
                    String::from_utf8_lossy(&data[4 + n..]).into_owned(),
                ));
            }
            REP_ACK => break,
            t if t & REP_FLAG_ERROR != 0 => return Err(refused("to list its exports", t, &data)),
            _ => return Err(bad("unexpected reply to NBD_OPT_LIST")),
        }
    }
    let _ = send_option(s, OPT_ABORT, &[]).await;
    Ok(out)
}

/// The server's canonical name for its default export (`""`), by
/// `NBD_OPT_INFO` asking for `NBD_INFO_NAME`; None if it does not say.
/// The handshake is then abandoned.
pub async fn default_export_name<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> std::io::Result<Option<String>> {
    let Greeting::New { fixed: true, .. } = greet(s).await? else {
        return Ok(None);
    };
    send_option(s, OPT_INFO, &handshake::encode_info_request("", &[INFO_NAME])).await?;
    let mut name = None;
    loop {
        let (typ, data) = option_reply(s, OPT_INFO).await?;
        match typ {
            REP_INFO => {
                if let Ok(Info::Name(n)) = handshake::decode_info(&data) {
                    name = Some(String::from_utf8_lossy(&n).into_owned());
                }
            }
            _ => break,
        }
    }
    let _ = send_option(s, OPT_ABORT, &[]).await;
    Ok(name)
}

/// Negotiate `export` (oldstyle or fixed newstyle, preferring extended
/// headers, then structured replies, `base:allocation` and `NBD_OPT_GO`).
/// Without `extended`, extended headers are not asked for.
pub async fn negotiate<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S, export: &str, extended: bool,
) -> std::io::Result<Export> {
    let (fixed, no_zeroes) = match greet(s).await? {
        Greeting::Old(e) => return Ok(e),
        Greeting::New { fixed, no_zeroes } => (fixed, no_zeroes),
    };
    let mut structured = false;
    let mut base_allocation = None;
    let mut extended = extended && fixed;
    if extended {
        send_option(s, OPT_EXTENDED_HEADERS, &[]).await?;
        extended = option_reply(s, OPT_EXTENDED_HEADERS).await?.0 == REP_ACK;
        structured = extended;
    }
    if fixed {
        if !structured {
            send_option(s, OPT_STRUCTURED_REPLY, &[]).await?;
            structured = option_reply(s, OPT_STRUCTURED_REPLY).await?.0 == REP_ACK;
        }
        if structured {
            let q = handshake::encode_meta_request(export, &[CONTEXT_BASE_ALLOCATION]);
            send_option(s, OPT_SET_META_CONTEXT, &q).await?;
            loop {
                let (typ, data) = option_reply(s, OPT_SET_META_CONTEXT).await?;
                match typ {
                    REP_META_CONTEXT if data.len() >= 4 => {
                        if &data[4..] == CONTEXT_BASE_ALLOCATION.as_bytes() {
                            base_allocation =
                                Some(u32::from_be_bytes(data[..4].try_into().expect("4")));
                        }
                    }
                    REP_ACK => break,
                    t if t & REP_FLAG_ERROR != 0 => break,
                    _ => return Err(bad("unexpected reply to NBD_OPT_SET_META_CONTEXT")),
                }
            }
        }
        let go = handshake::encode_info_request(export, &[INFO_BLOCK_SIZE]);
        send_option(s, OPT_GO, &go).await?;
        let mut size_flags = None;
        let mut block_size = None;
        loop {
            let (typ, data) = option_reply(s, OPT_GO).await?;
            match typ {
                REP_INFO => match handshake::decode_info(&data) {
                    Ok(Info::Export { size, eflags }) => size_flags = Some((size, eflags)),
                    Ok(Info::BlockSize { minimum, preferred, maximum }) => {
                        block_size = Some((minimum, preferred, maximum))
                    }
                    // Other items, and malformed ones, are not ours to use.
                    _ => {}
                },
                REP_ACK => {
                    let (size, eflags) =
                        size_flags.ok_or_else(|| bad("the server sent no export size"))?;
                    return Ok(Export {
                        size,
                        eflags,
                        structured,
                        extended,
                        base_allocation,
                        block_size,
                    });
                }
                // Old servers: fall back to NBD_OPT_EXPORT_NAME below
                // (which a server that took extended headers must not
                // make us do).
                REP_ERR_UNSUP if !extended => break,
                t if t & REP_FLAG_ERROR != 0 => {
                    let why = String::from_utf8_lossy(&data);
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!(
                            "the server refused export \"{export}\" ({t:#x}){}",
                            if why.is_empty() { String::new() } else { format!(": {why}") }
                        ),
                    ));
                }
                _ => {}
            }
        }
    }
    send_option(s, OPT_EXPORT_NAME, export.as_bytes()).await?;
    let size = s.read_u64().await?;
    let eflags = s.read_u16().await?;
    if !no_zeroes {
        let mut zeroes = [0u8; 124];
        s.read_exact(&mut zeroes).await?;
    }
    Ok(Export {
        size,
        eflags,
        structured,
        extended: false,
        base_allocation: None,
        block_size: None,
    })
}

/// What a completed request gives back.
#[derive(Debug, Default)]
pub struct Answer {
    /// READ data (holes filled with zeroes).
    pub data: Vec<u8>,
    /// BLOCK_STATUS (length, flags) pairs for base:allocation.
    pub extents: Vec<(u64, u32)>,
}

struct Pending {
    offset: u64,
    read: Option<Vec<u8>>,
    extents: Vec<(u64, u32)>,
    error: Option<Error>,
    done: oneshot::Sender<Result<Answer, Error>>,
}

/// A connection in transmission, shared by many concurrent requests.
pub struct Connection {
    writer: tokio::sync::Mutex<Box<dyn AsyncWrite + Send + Unpin>>,
    pending: Arc<Mutex<HashMap<u64, Pending>>>,
    next: AtomicU64,
    dead: Arc<AtomicBool>,
    /// What was negotiated.
    pub export: Export,
}

/// Marks the connection dead and fails every pending request, when dropped.
struct Drain(Arc<Mutex<HashMap<u64, Pending>>>, Arc<AtomicBool>);

impl Drop for Drain {
    fn drop(&mut self) {
        // Under the lock, so no request is added after the drain.
        let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
        self.1.store(true, Ordering::SeqCst);
        for (_, w) in p.drain() {
            let _ = w.done.send(Err(lost()));
        }
    }
}

fn lost() -> Error {
    Error::new(Errno::Io, "nbd: the connection to the server was lost")
}

impl Connection {
    /// Start serving replies from `r` in a task of its own.
    pub fn new(
        r: Box<dyn AsyncRead + Send + Unpin>, w: Box<dyn AsyncWrite + Send + Unpin>, export: Export,
    ) -> Connection {
        let pending: Arc<Mutex<HashMap<u64, Pending>>> = Arc::default();
        let dead = Arc::new(AtomicBool::new(false));
        let (p, d) = (pending.clone(), dead.clone());
        tokio::spawn(async move {
            // However the reader ends (error, panic, cancellation), every
            // waiting request hears of it.
            let _drain = Drain(p.clone(), d);
            let mut r = r;
            // An error ends every waiting request (the drain), which is
            // how it is reported.
            let _ = read_replies(&mut r, &p, &export).await;
        });
        Connection {
            writer: tokio::sync::Mutex::new(w),
            pending,
            next: AtomicU64::new(1),
            dead,
            export,
        }
    }

    /// The longest request this connection can send: 64 bits of length
    /// with extended headers, else 32, kept to whole 64 KiB blocks (the
    /// largest minimum block size a server may ask for).
    pub fn max_len(&self) -> u64 {
        if self.export.extended {
            !0xffff_u64
        } else {
            u64::from(u32::MAX) & !0xffff
        }
    }

    /// Send one request (with `payload` for a write) and wait for its reply.
    /// A length beyond [`Connection::max_len`] is refused here.
    pub async fn request(
        &self, cmd: Command, flags: u16, offset: u64, len: u64, payload: &[u8],
    ) -> Result<Answer, Error> {
        if len > self.max_len() {
            return Err(Error::new(Errno::Inval, "nbd: request too long for the connection"));
        }
        let extended = self.export.extended;
        let mut flags = flags;
        if extended && !payload.is_empty() {
            flags |= CMD_FLAG_PAYLOAD_LEN;
        }
        let cookie = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            // Checked under the lock the drain takes, so a request is never
            // left waiting on a dead connection.
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if self.dead.load(Ordering::SeqCst) {
                return Err(lost());
            }
            pending.insert(
                cookie,
                Pending {
                    offset,
                    read: (cmd == Command::Read).then(|| vec![0u8; len as usize]),
                    extents: Vec::new(),
                    error: None,
                    done: tx,
                },
            );
        }
        let req = Request { flags: CmdFlags(flags), cmd, cookie, offset, len };
        let sent = {
            let mut w = self.writer.lock().await;
            let mut r = w.write_all(&encode(&req, extended)).await;
            if r.is_ok() && !payload.is_empty() {
                r = w.write_all(payload).await;
            }
            r
        };
        if sent.is_err() {
            self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&cookie);
            return Err(lost());
        }
        rx.await.unwrap_or_else(|_| Err(lost()))
    }

    /// Say goodbye (best effort).
    pub async fn disconnect(&self) {
        let req = Request { flags: CmdFlags(0), cmd: Command::Disc, cookie: 0, offset: 0, len: 0 };
        let mut w = self.writer.lock().await;
        let _ = w.write_all(&encode(&req, self.export.extended)).await;
        let _ = w.shutdown().await;
    }
}

/// The reply reader: fill in each pending request, complete it when done.
async fn read_replies<R: AsyncRead + Unpin>(
    r: &mut R, pending: &Mutex<HashMap<u64, Pending>>, export: &Export,
) -> std::io::Result<()> {
    let take = |cookie: u64| pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&cookie);
    loop {
        let magic = r.read_u32().await?;
        let n =
            reply_header_rest(magic).ok_or_else(|| bad(format!("bad reply magic {magic:#x}")))?;
        let mut rest = [0u8; MAX_REPLY_HEADER_SIZE];
        r.read_exact(&mut rest[..n]).await?;
        match decode_reply_header(magic, &rest[..n]).expect("a known magic") {
            ReplyHeader::Simple { .. } if export.extended => {
                return Err(bad("a simple reply, after extended headers were negotiated"))
            }
            ReplyHeader::Simple { error: errno, cookie } => {
                let mut p = take(cookie).ok_or_else(|| bad("a reply to no request"))?;
                if errno == 0 {
                    if let Some(buf) = p.read.as_mut() {
                        r.read_exact(buf).await?;
                    }
                    let data = p.read.take().unwrap_or_default();
                    let _ = p.done.send(Ok(Answer { data, extents: Vec::new() }));
                } else {
                    let _ = p.done.send(Err(Error::new(
                        from_wire(errno),
                        "nbd: the server replied with an error",
                    )));
                }
            }
            ReplyHeader::Chunk { flags, typ, cookie, len, extended }
                if export.structured && extended == export.extended =>
            {
                if !pending.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&cookie) {
                    return Err(bad("a reply to no request"));
                }
                // Payloads are bounded by the request they answer (reads)
                // or small; read them without holding the lock.
                if len > (64 << 20) + 64 {
                    return Err(bad("an oversized reply chunk"));
                }
                let mut body = vec![0u8; len as usize];
                r.read_exact(&mut body).await?;
                let finished = {
                    let mut guard = pending.lock().unwrap_or_else(|e| e.into_inner());
                    let p = guard.get_mut(&cookie).ok_or_else(|| bad("a reply to no request"))?;
                    chunk(p, typ, &body)?;
                    if flags & REPLY_FLAG_DONE != 0 {
                        guard.remove(&cookie)
                    } else {
                        None
                    }
                };
                if let Some(p) = finished {
                    let result = match p.error {
                        Some(e) => Err(e),
                        None => Ok(Answer { data: p.read.unwrap_or_default(), extents: p.extents }),
                    };
                    let _ = p.done.send(result);
                }
            }
            ReplyHeader::Chunk { .. } => {
                return Err(bad("a reply chunk of a kind that was not negotiated"))
            }
        }
    }
}

/// Apply one structured reply chunk to its request.
fn chunk(p: &mut Pending, typ: u16, body: &[u8]) -> std::io::Result<()> {
    let u32_at =
        |i: usize| body.get(i..i + 4).map(|b| u32::from_be_bytes(b.try_into().expect("4")));
    let u64_at =
        |i: usize| body.get(i..i + 8).map(|b| u64::from_be_bytes(b.try_into().expect("8")));
    match typ {
        REPLY_TYPE_NONE => {}
        REPLY_TYPE_OFFSET_DATA | REPLY_TYPE_OFFSET_HOLE => {
            let off = u64_at(0).ok_or_else(|| bad("short data chunk"))?;
            let buf =
                p.read.as_mut().ok_or_else(|| bad("data for a request that is not a read"))?;
            let start =
                off.checked_sub(p.offset).ok_or_else(|| bad("data before the request"))? as usize;
            if typ == REPLY_TYPE_OFFSET_DATA {
                let data = &body[8..];
                let dst = buf
                    .get_mut(start..start + data.len())
                    .ok_or_else(|| bad("data beyond the request"))?;
                dst.copy_from_slice(data);
            } else {
                let n = u32_at(8).ok_or_else(|| bad("short hole chunk"))? as usize;
                buf.get_mut(start..start + n)
                    .ok_or_else(|| bad("a hole beyond the request"))?
                    .fill(0);
            }
        }
        REPLY_TYPE_BLOCK_STATUS => {
            if p.extents.len() > 1 << 20 {
                return Err(bad("too many block status extents"));
            }
            for pair in body.get(4..).unwrap_or(&[]).chunks_exact(8) {
                let n = |i: usize| u32::from_be_bytes(pair[i..i + 4].try_into().expect("4"));
                p.extents.push((u64::from(n(0)), n(4)));
            }
        }
        REPLY_TYPE_BLOCK_STATUS_EXT => {
            if p.extents.len() > 1 << 20 {
                return Err(bad("too many block status extents"));
            }
            // Context id, descriptor count, then (length, status) pairs;
            // base:allocation's status has 32 bits.
            for pair in body.get(8..).unwrap_or(&[]).chunks_exact(16) {
                let n = |i: usize| u64::from_be_bytes(pair[i..i + 8].try_into().expect("8"));
                p.extents.push((n(0), n(8) as u32));
            }
        }
        REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
            let errno = u32_at(0).ok_or_else(|| bad("short error chunk"))?;
            let mlen = body.get(4..6).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
            let msg = String::from_utf8_lossy(body.get(6..6 + mlen).unwrap_or(&[])).into_owned();
            p.error.get_or_insert(Error::new(from_wire(errno), format!("nbd: server: {msg}")));
        }
        t if t & REPLY_TYPE_ERROR_BIT != 0 => {
            p.error.get_or_insert(Error::new(Errno::Io, format!("nbd: unknown error chunk {t}")));
        }
        _ => {}
    }
    Ok(())
}
