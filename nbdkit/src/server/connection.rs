//! One client, from handshake to close.
//!
//! The connection task reads requests in order and validates them; each
//! valid request then runs in its own task, so replies go out in whatever
//! order the backend finishes them. A semaphore bounds the requests in
//! flight (`-t`, or 1 under the serializing thread models), and a
//! server-wide budget bounds the memory that READ and WRITE data use.
//!
//! Replies go to one writer task per connection. Under load several replies
//! are ready at once, and the writer sends all that are waiting with one
//! vectored write: fewer system calls and fewer wake-ups of the client than
//! one send per reply. A request keeps its in-flight slot and its share of
//! the data budget until its reply has been written, so a client that
//! stops reading replies stops being served, and memory stays bounded.
//!
//! Shutdown: in-flight requests finish; requests that arrive afterwards get
//! ESHUTDOWN; a client still connected after [`GRACE`] is disconnected.

use std::future::Future;
use std::io::IoSlice;
use std::os::fd::RawFd;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::pool::Pool;
use super::sendfile::{self, FileData, Sink};
use super::{Server, Shutdown, BUDGET_UNIT, CONNECTION_BUDGET, GRACE};
use crate::backend::shutdown::{in_connection, InConnection};
use crate::backend::CACHE_CHUNK;
use crate::backend::{Client, Errno, Error, Extent, Flags, Guard, OpenArgs};
use crate::protocol::consts::*;
use crate::protocol::handshake::{self, ExportInfo, Exports, ListEntry, Step};
use crate::protocol::request::{self, Command, Negotiated, Request};
use crate::protocol::{errno, flags, reply};

/// The handshake's view of the plugin: opens exports, keeps the one chosen.
struct Opener<'a> {
    server: &'a Server,
    client: Client,
    export: Option<Guard>,
}

impl Exports for Opener<'_> {
    async fn list(&mut self) -> Result<Vec<ListEntry>, String> {
        let list = self
            .server
            .plugin
            .list_exports(self.server.readonly, self.client.tls)
            .await
            .map_err(|e| e.to_string())?;
        Ok(list
            .into_iter()
            .map(|e| ListEntry { name: e.name, description: e.description })
            .collect())
    }

    async fn open(&mut self, name: &str, keep: bool) -> Result<ExportInfo, String> {
        let srv = self.server;
        let name = if name.is_empty() {
            let top = Arc::as_ptr(&srv.plugin) as *const () as usize;
            crate::backend::cached_default_export(
                top,
                srv.plugin.default_export(srv.readonly, self.client.tls),
            )
            .await
            .map_err(|e| e.to_string())?
        } else {
            name.to_string()
        };
        let args = OpenArgs::new(srv.readonly, &name, &self.client);
        crate::backend::trace_open(&srv.log, srv.top_name, &args);
        // As C: under serialize_all_requests, opening (and the size and
        // caps queries with it) is one of the serialized calls.
        let _serial = srv.serial_all().await;
        let opened = async {
            let h = srv.plugin.open(&args).await?;
            Ok::<_, crate::backend::Error>(
                Guard::new(h, srv.readonly).await?.named(srv.top_name, &srv.log),
            )
        };
        let export = opened.await.map_err(|e| {
            let m = format!("{}: open export '{name}': {e}", srv.plugin_name);
            srv.log.error(&m);
            m
        })?;
        let info = ExportInfo {
            name,
            size: export.export_size(),
            eflags: flags::eflags_of(export.effective_caps(), srv.thread_model),
            block_size: export.export_block_size().map(|b| (b.minimum, b.preferred, b.maximum)),
            description: export.description(),
        };
        if keep {
            self.export = Some(export);
        } else {
            // NBD_OPT_INFO: opened only to describe; closed as C closes it
            // (still serialized, under serialize_all_requests).
            export.close().await;
        }
        Ok(info)
    }
}

/// Serve a client until it leaves, breaks the protocol, or shutdown ends it.
///
/// `socket` is the connection's socket, when it is one (valid as long as `r`
/// and `w` are): plain connections send file data from it straight from the
/// page cache.
pub async fn serve<R, W>(
    r: R, w: W, socket: Option<RawFd>, client: Client, server: Arc<Server>, mut shutdown: Shutdown,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let _serial = match server.thread_model {
        crate::backend::ThreadModel::SerializeConnections => tokio::select! {
            p = server.serial_connections.acquire() => Some(p),
            _ = shutdown.wait() => return,
        },
        _ => None,
    };
    if let Err(e) = server.plugin.preconnect(server.readonly, &client).await {
        server.log.error(&format!("{}: preconnect: {e}", server.plugin_name));
        return;
    }
    let mut r = BufReader::with_capacity(64 * 1024, r);
    let mut w = w;
    let mut opener = Opener { server: &server, client, export: None };
    let resume = match handshake(&mut r, &mut w, &mut opener, &mut shutdown, None).await {
        None => return,
        Some(Step::Done(outcome)) => {
            let export = opener.export.take().expect("the handshake opened it");
            return transmit(r, w, socket, export, outcome, &server, shutdown).await;
        }
        Some(Step::StartTls(resume)) => resume,
    };
    let Some(tls) = server.tls.clone() else {
        unreachable!("STARTTLS is refused when TLS is off");
    };
    // The options before STARTTLS were in the clear; bytes the client sent
    // after STARTTLS and before seeing our answer cannot be its TLS hello,
    // so whatever is already buffered is thrown away unread (someone on
    // the path may have injected options there).
    let raw = tokio::io::join(r.into_inner(), w);
    let accept = tls.accept(raw);
    tokio::pin!(accept);
    let stream = tokio::select! {
        s = &mut accept => s,
        _ = shutdown.wait() => match tokio::time::timeout(server.idle_grace, &mut accept).await {
            Ok(s) => s,
            Err(_) => return,
        },
    };
    let Ok(stream) = stream else {
        return;
    };
    server.log.debug("using TLS on this connection");
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(64 * 1024, r);
    opener.client.tls = true;
    if let Some(Step::Done(outcome)) =
        handshake(&mut r, &mut w, &mut opener, &mut shutdown, Some(resume)).await
    {
        let export = opener.export.take().expect("the handshake opened it");
        transmit(r, w, None, export, outcome, &server, shutdown).await;
    }
}

/// The option haggling, from the start or after STARTTLS. None when it
/// ended without an export (any export it opened is closed again).
async fn handshake<R, W>(
    r: &mut BufReader<R>, w: &mut W, opener: &mut Opener<'_>, shutdown: &mut Shutdown,
    resume: Option<handshake::Resume>,
) -> Option<Step>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin,
{
    let server = opener.server;
    let outcome = {
        let negotiate = crate::backend::with_default_export_cache(handshake::negotiate(
            r,
            w,
            opener,
            &server.settings,
            &server.export_name,
            resume,
        ));
        tokio::pin!(negotiate);
        tokio::select! {
            o = &mut negotiate => Some(o),
            // A client in its handshake gets the grace a client in
            // transmission gets, as C lets it finish: the exitlast
            // filter's shutdown, asked for when an NBD_OPT_INFO open
            // closes, must not cut off the NBD_OPT_GO that follows.
            _ = shutdown.wait() => tokio::time::timeout(server.idle_grace, &mut negotiate).await.ok(),
        }
    };
    match outcome {
        Some(Ok(step)) => Some(step),
        failed => {
            match failed {
                Some(Err(handshake::Failure::Io(e))) => server
                    .log
                    .debug(&format!("client closed the connection during the handshake: {e}")),
                Some(Err(e)) => server.log.debug(&e.to_string()),
                _ => {}
            }
            // A handshake that ends badly after opening the export still
            // closes it.
            if let Some(export) = opener.export.take() {
                export.close().await;
            }
            None
        }
    }
}

/// The transmission phase, once the handshake has chosen `export`.
async fn transmit<R, W>(
    r: BufReader<R>, w: W, socket: Option<RawFd>, export: Guard, outcome: handshake::Outcome,
    server: &Arc<Server>, shutdown: Shutdown,
) where
    R: AsyncRead + Send + Unpin + 'static,
    W: AsyncWrite + Send + Unpin + 'static,
{
    let neg = &outcome.negotiated;
    let style = match (neg.extended, neg.structured) {
        (true, _) => "extended headers",
        (false, true) => "structured replies",
        (false, false) => "simple replies",
    };
    server.log.debug(&format!(
        "transmission: export '{}' size {} flags {:#x}, {style}",
        outcome.export_name, neg.size, neg.eflags
    ));
    let pool = Arc::new(Pool::new(server.inflight()));
    let (replies, queue) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_replies(w, socket, queue, pool.clone(), server.log.clone()));
    let conn = Arc::new(Conn {
        zero_copy: socket.is_some(),
        export,
        neg: outcome.negotiated,
        replies,
        pool,
        budget: Arc::new(Semaphore::new(CONNECTION_BUDGET / BUDGET_UNIT)),
        server: server.clone(),
    });
    transmission(r, conn, server.clone(), shutdown, writer).await;
}

/// What the request tasks of one connection share.
struct Conn {
    /// Large reads of a file's cached pages may go straight from the page
    /// cache (see [`sendfile`]).
    zero_copy: bool,
    export: Guard,
    neg: Negotiated,
    /// To the writer task. Unbounded, but every entry holds an in-flight
    /// slot, so there are never more than `inflight` of them.
    replies: mpsc::UnboundedSender<Outgoing>,
    pool: Arc<Pool>,
    /// This connection's share of the data budget (see CONNECTION_BUDGET).
    budget: Arc<Semaphore>,
    server: Arc<Server>,
}

/// A request's share of the data budget: the connection's and the
/// server's.
type Budget = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// A reply on its way to the socket, with what it must hold until sent.
struct Outgoing {
    buf: Vec<u8>,
    /// The reply's data, to send after `buf` from a file's page cache.
    file: Option<FileData>,
    _slot: OwnedSemaphorePermit,
    _budget: Option<Budget>,
}

/// Requests moving at most this much data may run on the connection's own
/// task (see [`Handle::never_blocks`](crate::backend::Handle::never_blocks)).
/// Bigger ones are mostly copying, which goes faster spread over the
/// runtime's threads, overlapping with the next request.
const INLINE_MAX: usize = 64 * 1024;

/// Most replies sent by one vectored write.
const MAX_BATCH: usize = 64;

/// The writer task: send replies in the order they are ready, batching
/// whatever is waiting. After a write error it keeps draining the queue, so
/// that requests release their slots and the connection can wind down.
async fn write_replies<W>(
    mut w: W, socket: Option<RawFd>, mut queue: mpsc::UnboundedReceiver<Outgoing>, pool: Arc<Pool>,
    log: crate::log::Log,
) where
    W: AsyncWrite + Unpin,
{
    let mut batch: Vec<Outgoing> = Vec::with_capacity(MAX_BATCH);
    let mut broken = false;
    // Made for the first reply that needs it.
    let mut sink: Option<Sink> = None;
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if !broken {
            // (A flush costs nothing on a socket, and pushes out what a TLS
            // stream has buffered.)
            let sent = async {
                // What is in memory goes in one vectored write, up to each
                // reply whose data follows from a file.
                let mut from = 0;
                for (i, out) in batch.iter().enumerate() {
                    let Some(data) = &out.file else { continue };
                    // Checked again now, just before the header goes: the
                    // pages may have left the cache since the request ran.
                    if sink.is_none() {
                        sink = socket.and_then(|fd| Sink::new(fd).ok());
                    }
                    let sendable = sink.is_some() && data.src.cached(data.len) == Some(true);
                    if !sendable {
                        write_all_vectored(&mut w, &batch[from..i]).await?;
                        w.write_all(&data.copied(&out.buf, &log).await).await?;
                        from = i + 1;
                        continue;
                    }
                    write_all_vectored(&mut w, &batch[from..=i]).await?;
                    w.flush().await?;
                    from = i + 1;
                    let s = sink.as_ref().expect("checked above");
                    if !s.send(&mut w, data).await? {
                        log.error("pread: the file is shorter than it was: zeroes were sent");
                    }
                }
                write_all_vectored(&mut w, &batch[from..]).await?;
                w.flush().await
            };
            if let Err(e) = sent.await {
                log.debug(&format!("write reply: {e}"));
                broken = true;
                // The client may be waiting for data a header promised
                // (sendfile failed reading the file): end the connection
                // rather than leave it hanging.
                if let Some(fd) = socket {
                    // SAFETY: shutdown on the connection's own socket,
                    // alive as long as `w` is.
                    unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
                }
            }
        }
        for out in batch.drain(..) {
            pool.put(out.buf);
        }
    }
    let _ = w.shutdown().await;
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    w: &mut W, batch: &[Outgoing],
) -> std::io::Result<()> {
    if let [one] = batch {
        return w.write_all(&one.buf).await;
    }
    let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|o| IoSlice::new(&o.buf)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let n = w.write_vectored(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, n);
    }
    Ok(())
}

/// A request read off the wire, ready to run.
struct Incoming {
    req: Request,
    /// WRITE payload.
    payload: Vec<u8>,
    /// Why the request is refused, if it is.
    invalid: Option<Error>,
    /// Share of the data budget (READ and WRITE), held until the reply is
    /// sent.
    budget: Option<Budget>,
}

async fn transmission<R>(
    mut r: BufReader<R>, conn: Arc<Conn>, server: Arc<Server>, mut shutdown: Shutdown,
    writer: tokio::task::JoinHandle<()>,
) where
    R: AsyncRead + Send + Unpin + 'static,
{
    let slots = Arc::new(Semaphore::new(server.inflight()));
    let mut deadline: Option<Instant> = None;
    // `end` wakes requests sleeping in `shutdown::sleep` (the delay
    // filter) once the server stops or the client is gone; through
    // `disconnect` a request asks for the connection to close (a C
    // plugin's nbdkit_disconnect).
    let here = InConnection::default();
    let end = here.end.clone();
    let mut forced = false;
    loop {
        let next = next_request(&mut r, &conn, &slots);
        tokio::pin!(next);
        // Poll the same future across shutdown, so a half-read request is
        // never lost; only the grace deadline abandons it.
        let got = loop {
            tokio::select! {
                got = &mut next => break Some(got),
                _ = shutdown.wait(), if deadline.is_none() => {
                    deadline = Some(Instant::now() + server.idle_grace);
                    end.fire();
                }
                _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    server.log.debug("shutdown: grace period over, closing the connection");
                    break None;
                }
                force = here.disconnect.wait() => {
                    server.log.debug("a request asked for this connection to be closed");
                    forced = force;
                    break None;
                }
            }
        };
        let Some(got) = got else { break };
        let (slot, mut inc) = match got {
            Ok(Some(x)) => x,
            Ok(None) => break, // NBD_CMD_DISC or a clean EOF
            Err(e) => {
                server.log.debug(&format!("connection: {e}"));
                break;
            }
        };
        if shutdown.started() && inc.invalid.is_none() {
            inc.invalid = Some(Error::new(Errno::Shutdown, "server is shutting down"));
        }
        let small = inc.req.len <= INLINE_MAX as u64;
        let task = {
            let conn = conn.clone();
            let here = here.clone();
            async move { in_connection(here, run_request(&conn, inc, slot)).await }
        };
        if small && conn.export.never_blocks() {
            // Run it here until it first waits; most requests on such a
            // plugin never do. One that does becomes a task of its own,
            // which polls it again with a real waker.
            let mut task = Box::pin(task);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if task.as_mut().poll(&mut cx).is_pending() {
                tokio::spawn(task);
            }
        } else {
            tokio::spawn(task);
        }
    }
    end.fire();
    if forced {
        // At once: the socket goes now, and replies still to come with
        // it. The requests in flight still finish in the plugin before
        // the handle is closed below.
        drop(r);
        writer.abort();
    }
    // Let in-flight requests finish and send their replies; if shutdown is
    // under way, only within the grace period.
    let all = slots.acquire_many(server.inflight() as u32);
    let waited = match deadline {
        Some(d) => tokio::time::timeout_at(d + GRACE, all).await.is_ok(),
        None => tokio::select! {
            _ = all => true,
            _ = async { shutdown.wait().await; tokio::time::sleep(GRACE * 2).await } => false,
        },
    };
    if !waited {
        server.log.debug("connection: requests still in flight at close");
        writer.abort();
        return;
    }
    // Every connection end closes the handle, as in C: a goodbye
    // (NBD_CMD_DISC), a client that vanished, or the server stopping (then
    // bounded by the grace period, since a filter may delay its close).
    // (Under serialize_all_requests, closing is one of the serialized
    // calls: the wait for the lock counts against the grace period too.)
    let close = async {
        let _serial = server.serial_all().await;
        conn.export.close().await;
    };
    if shutdown.started() {
        let _ = tokio::time::timeout(GRACE, close).await;
    } else {
        close.await;
    }
    // Every reply has been written (each held a slot until then). Closing
    // the queue ends the writer, which shuts the socket down.
    drop(conn);
    let _ = writer.await;
}

/// Read the next request: wait for a free slot, read the header, validate
/// it, read (or skip) the payload. `Ok(None)` means the client is done.
async fn next_request<R>(
    r: &mut BufReader<R>, conn: &Conn, slots: &Arc<Semaphore>,
) -> std::io::Result<Option<(OwnedSemaphorePermit, Incoming)>>
where
    R: AsyncRead + Send + Unpin,
{
    let slot = match slots.clone().try_acquire_owned() {
        Ok(slot) => slot,
        // Every slot is busy: meanwhile, notice a client that has gone.
        Err(_) => tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("never closed"),
            more = r.fill_buf() => {
                if more?.is_empty() {
                    return Ok(None);
                }
                slots.clone().acquire_owned().await.expect("never closed")
            }
        },
    };
    let extended = conn.neg.extended;
    let mut hdr = [0u8; EXTENDED_REQUEST_SIZE];
    let hdr = &mut hdr[..request::header_size(extended)];
    // The magic first: a header of the other style is refused at once,
    // not after waiting for bytes that a client sending 28 will never
    // send.
    match r.read_exact(&mut hdr[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let want = if extended { EXTENDED_REQUEST_MAGIC } else { REQUEST_MAGIC };
    if hdr[..4] == want.to_be_bytes() {
        r.read_exact(&mut hdr[4..]).await?;
    }
    let req = request::decode(hdr, extended).map_err(|m| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid request: 'magic' field is incorrect ({:#x})", m.0),
        )
    })?;
    if req.cmd == Command::Disc {
        conn.server.log.debug("client sent NBD_CMD_DISC, closing connection");
        return Ok(None);
    }
    let payload = req.payload(extended);
    if extended && payload > u64::from(MAX_REQUEST_SIZE) {
        // The spec's answer to a payload beyond the maximum: a hard
        // disconnect (skipping it could take forever).
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("invalid request: payload is too large ({payload} > {MAX_REQUEST_SIZE})"),
        ));
    }
    let invalid = request::validate(&req, &conn.neg).err();
    let mut inc = Incoming { req, payload: Vec::new(), invalid, budget: None };
    // Reads and writes carry data, and a CACHE may read into a buffer of up
    // to CACHE_CHUNK: each waits for its share of the server-wide budget
    // before its buffer exists.
    if inc.invalid.is_none() && matches!(req.cmd, Command::Read | Command::Write | Command::Cache) {
        let len = match req.cmd {
            Command::Cache => (req.len as usize).min(CACHE_CHUNK),
            _ => req.len as usize,
        };
        let units = len.div_ceil(BUDGET_UNIT) as u32;
        // The connection's share first, so its backlog never holds any of
        // the server's beyond that share.
        let mine = conn.budget.clone().acquire_many_owned(units).await;
        let all = conn.server.budget.clone().acquire_many_owned(units).await;
        inc.budget = Some((mine.expect("never closed"), all.expect("never closed")));
    }
    if payload > 0 {
        if inc.invalid.is_some() {
            // Skip the payload without storing it; the connection goes on.
            handshake::skip(r, payload).await?;
        } else {
            inc.payload = conn.pool.get(req.len as usize);
            r.read_exact(&mut inc.payload).await?;
        }
    }
    Ok(Some((slot, inc)))
}

/// Run one request and queue its reply.
async fn run_request(conn: &Conn, inc: Incoming, slot: OwnedSemaphorePermit) {
    let Incoming { req, payload, invalid, budget } = inc;
    let to = reply_to(&conn.neg, &req);
    let wire_err = |e: &Error| (errno::to_wire(e.errno, req.flags), e.msg.clone());
    let mut file = None;
    let reply: Vec<u8> = match invalid {
        Some(e) => {
            conn.server.log.debug(&format!("sending error reply: {e}"));
            let (n, m) = wire_err(&e);
            reply::status(&to, Some((n, &m)))
        }
        None => {
            let _serial = conn.server.serial_all().await;
            match zero_copy(conn, &req, &to) {
                Some((header, data)) => {
                    file = Some(data);
                    header
                }
                None => execute(conn, &req, &payload).await.unwrap_or_else(|e| {
                    conn.server.log.error(&format!("{}: {}", req.cmd.name(), e));
                    let (n, m) = wire_err(&e);
                    reply::status(&to, Some((n, &m)))
                }),
            }
        }
    };
    if !payload.is_empty() {
        conn.pool.put(payload);
    }
    // Fails only if the writer is gone, and then the client is too.
    let _ = conn.replies.send(Outgoing { buf: reply, file, _slot: slot, _budget: budget });
}

/// A READ answered from a file's page cache (see [`sendfile`]): its reply
/// header, and the data to send after it. None where it goes the usual way.
fn zero_copy(conn: &Conn, req: &Request, to: &reply::To) -> Option<(Vec<u8>, FileData)> {
    if !conn.zero_copy || req.cmd != Command::Read || req.len < sendfile::MIN {
        return None;
    }
    let src = conn.export.zero_copy_source(req.offset, req.len)?;
    Some((reply::read_header(to, req.len), FileData { src, len: req.len, to: *to }))
}

/// Where and how the reply to `req` goes.
fn reply_to(neg: &Negotiated, req: &Request) -> reply::To {
    let style = reply::Style::of(neg.structured, neg.extended, req.cmd);
    reply::To { style, cookie: req.cookie, offset: req.offset }
}

/// Holes shorter than this are sent as zeroes: a hole chunk costs a
/// header, and so does the data chunk after it.
const MIN_HOLE: u64 = 4096;

async fn execute(conn: &Conn, req: &Request, payload: &[u8]) -> Result<Vec<u8>, Error> {
    let ex = &conn.export;
    let to = reply_to(&conn.neg, req);
    let flags = flags::flags_of(req.flags);
    let ok = || reply::status(&to, None);
    Ok(match req.cmd {
        Command::Read => {
            let h = reply::read_header_len(to.style);
            let mut buf = conn.pool.get(h + req.len as usize);
            // Holes can go as hole chunks when the reply is chunked and the
            // client allowed fragmenting it.
            let sparse = to.style != reply::Style::Simple && !req.flags.df();
            let mut holes = Vec::new();
            let read = if sparse {
                ex.pread_sparse(&mut buf[h..], req.offset, flags, &mut holes).await
            } else {
                ex.pread(&mut buf[h..], req.offset, flags).await
            };
            if let Err(e) = read {
                conn.pool.put(buf);
                return Err(e);
            }
            if !holes.is_empty() {
                // Small holes are filled in and sent as data.
                holes.retain(|&(start, len)| {
                    let small = len < MIN_HOLE && len < req.len;
                    if small {
                        buf[h + start as usize..h + (start + len) as usize].fill(0);
                    }
                    !small
                });
            }
            if holes.is_empty() {
                reply::fill_read_header(&mut buf, &to);
                buf
            } else {
                let out = reply::sparse_read(&to, &buf[h..], &holes);
                conn.pool.put(buf);
                out
            }
        }
        Command::Write => {
            ex.pwrite(payload, req.offset, flags).await?;
            ok()
        }
        Command::Flush => {
            ex.flush(Flags::default()).await?;
            ok()
        }
        Command::Trim => {
            ex.trim(req.len, req.offset, flags).await?;
            ok()
        }
        Command::WriteZeroes => {
            ex.zero(req.len, req.offset, flags).await?;
            ok()
        }
        Command::Cache => {
            ex.cache(req.len, req.offset, flags).await?;
            ok()
        }
        Command::BlockStatus => {
            // As C sends them: with REQ_ONE the first extent, no longer than
            // the request; else every extent, the last one possibly reaching
            // past the request. Compact replies carry 32-bit lengths: a
            // longer extent is cut to 4 GiB - 1, as C cuts it, and ends the
            // list (what followed would be misplaced).
            let ext = ex.block_status(req.len, req.offset, flags.req_one).await?;
            let state = |e: &Extent| flags::extent_bits(e.flags);
            let max =
                if to.style == reply::Style::Extended { u64::MAX } else { u64::from(u32::MAX) };
            let mut pairs: Vec<(u64, u32)> = Vec::with_capacity(ext.list().len());
            for e in ext.list() {
                let mut len = e.length;
                if flags.req_one {
                    len = len.min(req.len);
                }
                pairs.push((len.min(max), state(e)));
                if flags.req_one || len > max {
                    break;
                }
            }
            let id = conn.neg.base_allocation.unwrap_or(0);
            reply::block_status(&to, id, &pairs)
        }
        Command::Disc | Command::Unknown(_) => {
            return Err(Error::new(Errno::Inval, "unexpected command"))
        }
    })
}
