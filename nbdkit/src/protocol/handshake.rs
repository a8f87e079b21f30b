//! The handshake: oldstyle, and fixed newstyle with its option haggling.
//!
//! This module speaks the wire and knows nothing of plugins: what an export
//! is, and whether it can be opened, is asked of the caller through the
//! [`Exports`] trait. Every length the client sends is checked before
//! anything is allocated for it.

use std::future::Future;
use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::consts::*;
use super::request::Negotiated;

/// What the caller tells the handshake about one export.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExportInfo {
    /// Canonical name (the default export's real name when the client sent "").
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Transmission flags (HAS_FLAGS is added by the handshake).
    pub eflags: u16,
    /// Minimum, preferred and maximum block size, if the export has them.
    pub block_size: Option<(u32, u32, u32)>,
    /// Human-readable description, if any.
    pub description: Option<String>,
}

/// One entry of an export list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The export name.
    pub name: String,
    /// Its description, if any.
    pub description: Option<String>,
}

/// The caller's side of the handshake.
pub trait Exports {
    /// The exports to list for NBD_OPT_LIST.
    fn list(&mut self) -> impl Future<Output = Result<Vec<ListEntry>, String>> + Send;
    /// Open an export. With `keep`, it stays open for the transmission phase
    /// (GO, EXPORT_NAME); without, it is only being described (INFO) and is
    /// closed again before this returns.
    fn open(
        &mut self, name: &str, keep: bool,
    ) -> impl Future<Output = Result<ExportInfo, String>> + Send;
}

/// How the server was configured, as far as the handshake cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Use the oldstyle protocol (`-o`).
    pub oldstyle: bool,
    /// Refuse structured replies (`--no-sr`).
    pub no_sr: bool,
    /// Global handshake flags to advertise (`--mask-handshake`).
    pub handshake_mask: u16,
    /// Refuse meta contexts, so no block status (`--no-meta-contexts`).
    pub no_meta_contexts: bool,
    /// Whether STARTTLS is offered, and required.
    pub tls: TlsMode,
}

/// `--tls`: whether TLS is offered, and whether it is required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TlsMode {
    /// Plain connections only: STARTTLS gets NBD_REP_ERR_POLICY.
    #[default]
    Off,
    /// Plain and TLS clients alike.
    On,
    /// Every option but STARTTLS and ABORT gets NBD_REP_ERR_TLS_REQD until
    /// TLS is up.
    Require,
}

/// nbdkit's defaults: newstyle, structured replies and meta contexts
/// offered, every global handshake flag advertised.
impl Default for Settings {
    fn default() -> Settings {
        Settings {
            oldstyle: false,
            no_sr: false,
            handshake_mask: u16::MAX,
            no_meta_contexts: false,
            tls: TlsMode::Off,
        }
    }
}

/// The result of a successful handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What requests are validated against.
    pub negotiated: Negotiated,
    /// The export name the client asked for.
    pub export_name: String,
}

/// How a handshake's first part ends.
#[derive(Debug)]
pub enum Step {
    /// An export was chosen: on to the transmission phase.
    Done(Outcome),
    /// The client asked for STARTTLS and was told yes: the caller wraps the
    /// connection in TLS and calls [`negotiate`] again with this resume
    /// point. Whatever the client sent after the option and before the
    /// TLS handshake must be thrown away, not read as options.
    StartTls(Resume),
}

/// Where the handshake goes on after STARTTLS: options again, under TLS,
/// with nothing remembered from before (structured replies, meta
/// contexts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    no_zeroes: bool,
}

/// Why a handshake ended without a transmission phase.
#[derive(Debug)]
pub enum Failure {
    /// The socket failed or closed.
    Io(io::Error),
    /// The client sent NBD_OPT_ABORT.
    Abort,
    /// The client broke the protocol, or asked for something we cannot give
    /// and the protocol has no error reply for it.
    Protocol(String),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Io(e)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "handshake: {e}"),
            Failure::Abort => f.write_str("client sent NBD_OPT_ABORT"),
            Failure::Protocol(m) => write!(f, "handshake: {m}"),
        }
    }
}

/// Id of `base:allocation` when it is selected.
const BASE_ALLOCATION_ID: u32 = 1;

/// Run the handshake on a connection: from the start (`resume` is None),
/// or under TLS after STARTTLS.
pub async fn negotiate<R, W, E>(
    r: &mut R, w: &mut W, exports: &mut E, settings: &Settings, oldstyle_export: &str,
    resume: Option<Resume>,
) -> Result<Step, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    E: Exports,
{
    if settings.oldstyle {
        return oldstyle(w, exports, oldstyle_export).await.map(Step::Done);
    }
    let using_tls = resume.is_some();
    let no_zeroes = match resume {
        Some(r) => r.no_zeroes,
        None => hello(r, w, settings).await?,
    };
    // Until TLS is up, a server that requires it answers only STARTTLS
    // and ABORT.
    let tls_wall = settings.tls == TlsMode::Require && !using_tls;

    let mut st = State {
        structured: false,
        extended: false,
        base_allocation: false,
        out: Vec::with_capacity(256),
    };
    for _ in 0..MAX_OPTIONS {
        let mut h = [0u8; 16];
        r.read_exact(&mut h).await?;
        let magic = u64::from_be_bytes(h[0..8].try_into().unwrap());
        if magic != IHAVEOPT {
            return Err(Failure::Protocol(format!("bad option magic {magic:#x}")));
        }
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        if len > MAX_OPTION_LENGTH {
            if opt == OPT_EXPORT_NAME {
                return Err(Failure::Protocol(format!("export name too long ({len} bytes)")));
            }
            skip(r, u64::from(len)).await?;
            st.reply(opt, REP_ERR_TOO_BIG, b"option too long");
            st.send(w).await?;
            continue;
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).await?;

        if tls_wall && opt != OPT_STARTTLS && opt != OPT_ABORT {
            if opt == OPT_EXPORT_NAME {
                // No reply can say TLS_REQD to EXPORT_NAME: hang up.
                return Err(Failure::Protocol(
                    "non-TLS client sent NBD_OPT_EXPORT_NAME in --tls=require mode".into(),
                ));
            }
            st.reply(opt, REP_ERR_TLS_REQD, b"TLS is required before this option");
            st.send(w).await?;
            continue;
        }
        match opt {
            OPT_EXPORT_NAME => {
                if st.extended {
                    // EXPORT_NAME has no error reply, and no way to say
                    // that the export is large: the spec forbids it here.
                    return Err(Failure::Protocol(
                        "client sent NBD_OPT_EXPORT_NAME after negotiating extended headers".into(),
                    ));
                }
                let name = string(&data).map_err(Failure::Protocol)?;
                let info = exports.open(&name, true).await.map_err(Failure::Protocol)?;
                let eflags = st.eflags(&info);
                st.out.extend_from_slice(&info.size.to_be_bytes());
                st.out.extend_from_slice(&eflags.to_be_bytes());
                if !no_zeroes {
                    st.out.extend_from_slice(&[0u8; 124]);
                }
                st.send(w).await?;
                return Ok(Step::Done(st.outcome(&info, name)));
            }
            OPT_ABORT => {
                st.reply(opt, REP_ACK, b"");
                // The client may already have gone: that is not an error.
                let _ = st.send(w).await;
                return Err(Failure::Abort);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    st.reply(opt, REP_ERR_INVALID, b"NBD_OPT_LIST: option has unexpected data");
                } else {
                    match exports.list().await {
                        Ok(list) => {
                            for e in list {
                                let mut p = Vec::with_capacity(4 + e.name.len());
                                p.extend_from_slice(&(e.name.len() as u32).to_be_bytes());
                                p.extend_from_slice(e.name.as_bytes());
                                if let Some(d) = &e.description {
                                    p.extend_from_slice(d.as_bytes());
                                }
                                st.reply(opt, REP_SERVER, &p);
                            }
                            st.reply(opt, REP_ACK, b"");
                        }
                        Err(m) => st.reply(opt, REP_ERR_PLATFORM, m.as_bytes()),
                    }
                }
            }
            OPT_STARTTLS => {
                if !data.is_empty() {
                    st.reply(opt, REP_ERR_INVALID, b"NBD_OPT_STARTTLS: option has unexpected data");
                } else if settings.tls == TlsMode::Off {
                    // As C nbdkit does when TLS is off: a policy refusal.
                    st.reply(opt, REP_ERR_POLICY, b"TLS is not enabled on this server");
                } else if using_tls {
                    st.reply(opt, REP_ERR_INVALID, b"TLS is already in use");
                } else {
                    // The ACK goes in the clear; then the TLS handshake.
                    st.reply(opt, REP_ACK, b"");
                    st.send(w).await?;
                    return Ok(Step::StartTls(Resume { no_zeroes }));
                }
            }
            OPT_INFO | OPT_GO => {
                let (name, requests) = match info_request(&data) {
                    Ok(x) => x,
                    Err(m) => {
                        st.reply(opt, REP_ERR_INVALID, m.as_bytes());
                        st.send(w).await?;
                        continue;
                    }
                };
                match exports.open(&name, opt == OPT_GO).await {
                    Err(m) => st.reply(opt, REP_ERR_UNKNOWN, m.as_bytes()),
                    Ok(info) => {
                        st.info_replies(opt, &info, &requests);
                        st.reply(opt, REP_ACK, b"");
                        if opt == OPT_GO {
                            st.send(w).await?;
                            return Ok(Step::Done(st.outcome(&info, name)));
                        }
                    }
                }
            }
            // Extended headers are structured replies and more: --no-sr
            // refuses both, and once extended, there is no going back.
            OPT_STRUCTURED_REPLY | OPT_EXTENDED_HEADERS => {
                let extended = opt == OPT_EXTENDED_HEADERS;
                if !data.is_empty() {
                    let m = if extended {
                        "NBD_OPT_EXTENDED_HEADERS: option has unexpected data"
                    } else {
                        "NBD_OPT_STRUCTURED_REPLY: option has unexpected data"
                    };
                    st.reply(opt, REP_ERR_INVALID, m.as_bytes());
                } else if settings.no_sr {
                    st.reply(opt, REP_ERR_UNSUP, b"structured replies are disabled (--no-sr)");
                } else if st.extended && !extended {
                    st.reply(opt, REP_ERR_EXT_HEADER_REQD, b"extended headers are already in use");
                } else {
                    st.structured = true;
                    st.extended |= extended;
                    st.reply(opt, REP_ACK, b"");
                }
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                let set = opt == OPT_SET_META_CONTEXT;
                // Listing is harmless without structured replies; selecting is not.
                if settings.no_meta_contexts {
                    st.reply(
                        opt,
                        REP_ERR_UNSUP,
                        b"meta contexts are disabled (--no-meta-contexts)",
                    );
                } else if set && !st.structured {
                    st.reply(opt, REP_ERR_INVALID, b"structured replies have not been negotiated");
                } else {
                    match meta_queries(&data) {
                        Err(m) => st.reply(opt, REP_ERR_INVALID, m.as_bytes()),
                        Ok(queries) => {
                            // LIST with no queries lists everything; SET with
                            // none selects nothing. "base:" matches our one
                            // context only when listing.
                            let hit = if queries.is_empty() {
                                !set
                            } else {
                                queries
                                    .iter()
                                    .any(|q| q == CONTEXT_BASE_ALLOCATION || (!set && q == "base:"))
                            };
                            if set {
                                st.base_allocation = hit;
                            }
                            if hit {
                                let id = if set { BASE_ALLOCATION_ID } else { 0 };
                                let mut p = id.to_be_bytes().to_vec();
                                p.extend_from_slice(CONTEXT_BASE_ALLOCATION.as_bytes());
                                st.reply(opt, REP_META_CONTEXT, &p);
                            }
                            st.reply(opt, REP_ACK, b"");
                        }
                    }
                }
            }
            _ => st.reply(opt, REP_ERR_UNSUP, b"option not supported"),
        }
        st.send(w).await?;
    }
    Err(Failure::Protocol(format!("too many options (more than {MAX_OPTIONS})")))
}

/// An option as a client sends it: `IHAVEOPT`, the option, the length of
/// its data, the data (what [`negotiate`] reads).
pub fn encode_option(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend_from_slice(&IHAVEOPT.to_be_bytes());
    b.extend_from_slice(&opt.to_be_bytes());
    b.extend_from_slice(&(data.len() as u32).to_be_bytes());
    b.extend_from_slice(data);
    b
}

/// Bytes in front of an option reply's data.
pub const OPTION_REPLY_HEADER_SIZE: usize = 20;

/// An option reply's header: the magic, the option answered, the reply
/// type, the data length.
fn encode_option_reply_header(opt: u32, typ: u32, len: u32) -> [u8; OPTION_REPLY_HEADER_SIZE] {
    let mut b = [0u8; OPTION_REPLY_HEADER_SIZE];
    b[0..8].copy_from_slice(&REP_MAGIC.to_be_bytes());
    b[8..12].copy_from_slice(&opt.to_be_bytes());
    b[12..16].copy_from_slice(&typ.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// A client's reading of an option reply header: `(option, type, data
/// length)`, or the magic it found instead of `REP_MAGIC`.
pub fn decode_option_reply_header(
    b: &[u8; OPTION_REPLY_HEADER_SIZE],
) -> Result<(u32, u32, u32), u64> {
    let magic = u64::from_be_bytes(b[0..8].try_into().expect("8"));
    if magic != REP_MAGIC {
        return Err(magic);
    }
    let at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().expect("4"));
    Ok((at(8), at(12), at(16)))
}

/// A string with its 32-bit length in front, as options carry names.
fn put_string32(b: &mut Vec<u8>, s: &str) {
    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(s.as_bytes());
}

/// The data of NBD_OPT_INFO or NBD_OPT_GO: the export name and the
/// `NBD_INFO_*` items asked for (what the server's handshake reads back).
pub fn encode_info_request(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(6 + name.len() + 2 * infos.len());
    put_string32(&mut b, name);
    b.extend_from_slice(&(infos.len() as u16).to_be_bytes());
    for i in infos {
        b.extend_from_slice(&i.to_be_bytes());
    }
    b
}

/// The data of NBD_OPT_LIST_META_CONTEXT or NBD_OPT_SET_META_CONTEXT: the
/// export name and the queries.
pub fn encode_meta_request(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut b = Vec::new();
    put_string32(&mut b, export);
    b.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        put_string32(&mut b, q);
    }
    b
}

/// One `NBD_REP_INFO` item, as a client reads it (the inverse of what the
/// server's `info_replies` writes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    /// `NBD_INFO_EXPORT`: size and transmission flags.
    Export {
        /// Size in bytes.
        size: u64,
        /// Transmission flags.
        eflags: u16,
    },
    /// `NBD_INFO_NAME`.
    Name(Vec<u8>),
    /// `NBD_INFO_DESCRIPTION`.
    Description(Vec<u8>),
    /// `NBD_INFO_BLOCK_SIZE`: minimum, preferred, maximum.
    BlockSize {
        /// Alignment of offsets and lengths.
        minimum: u32,
        /// The size that performs best.
        preferred: u32,
        /// The largest payload.
        maximum: u32,
    },
    /// An item type this side does not know (to be ignored).
    Unknown(u16),
}

/// Decode the data of an `NBD_REP_INFO`; Err names what is malformed.
pub fn decode_info(data: &[u8]) -> Result<Info, String> {
    let kind = data
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or("NBD_REP_INFO shorter than 2 bytes")?;
    let want = match kind {
        INFO_EXPORT => Some(12),
        INFO_BLOCK_SIZE => Some(14),
        _ => None,
    };
    if let Some(want) = want {
        if data.len() != want {
            return Err(format!(
                "NBD_REP_INFO of type {kind} with length {} (must be {want})",
                data.len()
            ));
        }
    }
    let u32_at = |i: usize| u32::from_be_bytes(data[i..i + 4].try_into().expect("4"));
    Ok(match kind {
        INFO_EXPORT => Info::Export {
            size: u64::from_be_bytes(data[2..10].try_into().expect("8")),
            eflags: u16::from_be_bytes([data[10], data[11]]),
        },
        INFO_NAME => Info::Name(data[2..].to_vec()),
        INFO_DESCRIPTION => Info::Description(data[2..].to_vec()),
        INFO_BLOCK_SIZE => {
            Info::BlockSize { minimum: u32_at(2), preferred: u32_at(6), maximum: u32_at(10) }
        }
        k => Info::Unknown(k),
    })
}

/// The server's greeting and the client's flags; true if the client
/// asked for no zeroes.
async fn hello<R, W>(r: &mut R, w: &mut W, settings: &Settings) -> Result<bool, Failure>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let gflags = (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES) & settings.handshake_mask;
    let mut hello = [0u8; 18];
    hello[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    hello[8..16].copy_from_slice(&IHAVEOPT.to_be_bytes());
    hello[16..18].copy_from_slice(&gflags.to_be_bytes());
    w.write_all(&hello).await?;
    w.flush().await?;

    let cflags = r.read_u32().await?;
    let allowed = u32::from(gflags) & (FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    if cflags & !allowed != 0 {
        return Err(Failure::Protocol(format!(
            "client sent unknown or unadvertised flags {cflags:#x}"
        )));
    }
    Ok(cflags & FLAG_C_NO_ZEROES != 0)
}

struct State {
    structured: bool,
    extended: bool,
    base_allocation: bool,
    /// Replies are collected here and sent with one write per option.
    out: Vec<u8>,
}

impl State {
    fn reply(&mut self, opt: u32, typ: u32, data: &[u8]) {
        self.out.extend_from_slice(&encode_option_reply_header(opt, typ, data.len() as u32));
        self.out.extend_from_slice(data);
    }

    fn info_replies(&mut self, opt: u32, info: &ExportInfo, requests: &[u16]) {
        let mut p = Vec::with_capacity(12);
        p.extend_from_slice(&INFO_EXPORT.to_be_bytes());
        p.extend_from_slice(&info.size.to_be_bytes());
        p.extend_from_slice(&self.eflags(info).to_be_bytes());
        self.reply(opt, REP_INFO, &p);
        for &req in requests {
            match req {
                INFO_NAME => {
                    let mut p = INFO_NAME.to_be_bytes().to_vec();
                    p.extend_from_slice(info.name.as_bytes());
                    self.reply(opt, REP_INFO, &p);
                }
                INFO_DESCRIPTION => {
                    if let Some(d) = &info.description {
                        let mut p = INFO_DESCRIPTION.to_be_bytes().to_vec();
                        p.extend_from_slice(d.as_bytes());
                        self.reply(opt, REP_INFO, &p);
                    }
                }
                INFO_BLOCK_SIZE => {
                    if let Some((min, pref, max)) = info.block_size {
                        let mut p = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                        for v in [min, pref, max] {
                            p.extend_from_slice(&v.to_be_bytes());
                        }
                        self.reply(opt, REP_INFO, &p);
                    }
                }
                _ => {}
            }
        }
    }

    async fn send<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(&self.out).await?;
        w.flush().await?;
        self.out.clear();
        Ok(())
    }

    /// Transmission flags: DF comes with structured replies.
    fn eflags(&self, info: &ExportInfo) -> u16 {
        let mut eflags = info.eflags | FLAG_HAS_FLAGS;
        if self.structured {
            eflags |= FLAG_SEND_DF;
        }
        eflags
    }

    fn outcome(&self, info: &ExportInfo, export_name: String) -> Outcome {
        Outcome {
            negotiated: Negotiated {
                size: info.size,
                eflags: self.eflags(info),
                structured: self.structured,
                base_allocation: (self.structured && self.base_allocation)
                    .then_some(BASE_ALLOCATION_ID),
                extended: self.extended,
            },
            export_name,
        }
    }
}

async fn oldstyle<W, E>(w: &mut W, exports: &mut E, name: &str) -> Result<Outcome, Failure>
where
    W: AsyncWrite + Unpin,
    E: Exports,
{
    let info = exports.open(name, true).await.map_err(Failure::Protocol)?;
    let eflags = info.eflags | FLAG_HAS_FLAGS;
    let mut b = vec![0u8; 8 + 8 + 8 + 4 + 124];
    b[0..8].copy_from_slice(&NBDMAGIC.to_be_bytes());
    b[8..16].copy_from_slice(&OLD_MAGIC.to_be_bytes());
    b[16..24].copy_from_slice(&info.size.to_be_bytes());
    b[24..28].copy_from_slice(&u32::from(eflags).to_be_bytes());
    w.write_all(&b).await?;
    w.flush().await?;
    Ok(Outcome {
        negotiated: Negotiated {
            size: info.size,
            eflags,
            structured: false,
            base_allocation: None,
            extended: false,
        },
        export_name: name.to_string(),
    })
}

/// Discard `n` bytes from the client without buffering them.
pub async fn skip<R: AsyncRead + Unpin>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = tokio::io::copy(&mut r.take(n), &mut tokio::io::sink()).await?;
    if copied < n {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(())
}

fn string(b: &[u8]) -> Result<String, String> {
    if b.len() > MAX_STRING {
        return Err(format!("string too long ({} bytes)", b.len()));
    }
    if b.contains(&0) {
        return Err("string contains a NUL byte".into());
    }
    String::from_utf8(b.to_vec()).map_err(|_| "string is not valid UTF-8".to_string())
}

/// A cursor over an option's payload; every read is bounds-checked.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("option payload is truncated".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.u32()? as usize;
        string(self.take(n)?)
    }
}

/// Payload of INFO and GO: name, then a list of NBD_INFO_* requests.
fn info_request(data: &[u8]) -> Result<(String, Vec<u16>), String> {
    let mut c = Cursor(data);
    let name = c.string()?;
    let n = c.u16()? as usize;
    let mut reqs = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        reqs.push(c.u16()?);
    }
    if !c.0.is_empty() {
        return Err("option payload has trailing bytes".into());
    }
    Ok((name, reqs))
}

/// Payload of LIST_META_CONTEXT and SET_META_CONTEXT: name, then queries.
fn meta_queries(data: &[u8]) -> Result<Vec<String>, String> {
    let mut c = Cursor(data);
    let _export = c.string()?;
    let n = c.u32()? as usize;
    let mut qs = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        qs.push(c.string()?);
    }
    if !c.0.is_empty() {
        return Err("option payload has trailing bytes".into());
    }
    Ok(qs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};

    struct One;
    impl Exports for One {
        async fn list(&mut self) -> Result<Vec<ListEntry>, String> {
            Ok(vec![ListEntry { name: "a".into(), description: Some("disk".into()) }])
        }
        async fn open(&mut self, name: &str, _keep: bool) -> Result<ExportInfo, String> {
            if name == "missing" {
                return Err("no such export".into());
            }
            Ok(ExportInfo {
                name: if name.is_empty() { "a".into() } else { name.into() },
                size: 1 << 20,
                eflags: FLAG_SEND_FLUSH,
                block_size: None,
                description: Some("disk".into()),
            })
        }
    }

    const SETTINGS: Settings = Settings {
        oldstyle: false,
        no_sr: false,
        handshake_mask: 0xffff,
        no_meta_contexts: false,
        tls: TlsMode::Off,
    };

    /// Run the server side on one end of a duplex pipe.
    fn server(
        settings: Settings,
    ) -> (DuplexStream, tokio::task::JoinHandle<Result<Outcome, Failure>>) {
        let (client, h) = server_steps(settings);
        let h = tokio::spawn(async move {
            match h.await.unwrap()? {
                Step::Done(o) => Ok(o),
                Step::StartTls(_) => Err(Failure::Protocol("STARTTLS".into())),
            }
        });
        (client, h)
    }

    fn server_steps(
        settings: Settings,
    ) -> (DuplexStream, tokio::task::JoinHandle<Result<Step, Failure>>) {
        let (client, srv) = duplex(1 << 16);
        let h = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(srv);
            negotiate(&mut r, &mut w, &mut One, &settings, "", None).await
        });
        (client, h)
    }

    #[test]
    fn client_encoders_are_the_servers_decoders_inverted() {
        let q = encode_info_request("disk", &[INFO_NAME, INFO_BLOCK_SIZE]);
        assert_eq!(
            info_request(&q).unwrap(),
            ("disk".to_string(), vec![INFO_NAME, INFO_BLOCK_SIZE])
        );
        let q = encode_meta_request("disk", &["base:allocation", "qemu:dirty-bitmap:x"]);
        assert_eq!(meta_queries(&q).unwrap(), ["base:allocation", "qemu:dirty-bitmap:x"]);
        let h = encode_option_reply_header(OPT_GO, REP_ERR_UNKNOWN, 7);
        assert_eq!(decode_option_reply_header(&h), Ok((OPT_GO, REP_ERR_UNKNOWN, 7)));
        let mut bad = h;
        bad[0] ^= 1;
        assert!(decode_option_reply_header(&bad).is_err());
        let o = encode_option(OPT_LIST, b"xy");
        assert_eq!(o.len(), 18);
        assert_eq!(&o[..8], &IHAVEOPT.to_be_bytes());
        // What the server writes for NBD_OPT_GO's items reads back.
        let mut st =
            State { structured: false, extended: false, base_allocation: false, out: Vec::new() };
        let info = ExportInfo {
            name: "n".into(),
            size: 1 << 30,
            eflags: FLAG_READ_ONLY,
            block_size: Some((512, 4096, 1 << 20)),
            description: Some("d".into()),
        };
        st.info_replies(OPT_GO, &info, &[INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE]);
        let mut items = Vec::new();
        let mut rest = &st.out[..];
        while !rest.is_empty() {
            let (_, typ, len) = decode_option_reply_header(rest[..20].try_into().unwrap()).unwrap();
            assert_eq!(typ, REP_INFO);
            items.push(decode_info(&rest[20..20 + len as usize]).unwrap());
            rest = &rest[20 + len as usize..];
        }
        assert_eq!(
            items,
            [
                Info::Export { size: 1 << 30, eflags: FLAG_READ_ONLY | FLAG_HAS_FLAGS },
                Info::Name(b"n".to_vec()),
                Info::Description(b"d".to_vec()),
                Info::BlockSize { minimum: 512, preferred: 4096, maximum: 1 << 20 },
            ]
        );
        assert!(decode_info(&INFO_EXPORT.to_be_bytes()).is_err());
        assert_eq!(decode_info(&[0, 99]), Ok(Info::Unknown(99)));
    }

    #[tokio::test]
    async fn tls_required_then_starttls() {
        let (mut c, h) = server_steps(Settings { tls: TlsMode::Require, ..SETTINGS });
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        // Before TLS, everything but STARTTLS and ABORT is refused.
        for o in [OPT_LIST, OPT_STRUCTURED_REPLY, OPT_GO, 99] {
            opt(&mut c, o, if o == OPT_GO { b"\0\0\0\0\0\0" } else { b"" }).await;
            let refused = b"TLS is required before this option".to_vec();
            assert_eq!(reply(&mut c).await, (o, REP_ERR_TLS_REQD, refused));
        }
        opt(&mut c, OPT_STARTTLS, b"x").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_INVALID);
        opt(&mut c, OPT_STARTTLS, b"").await;
        assert_eq!(reply(&mut c).await, (OPT_STARTTLS, REP_ACK, vec![]));
        match h.await.unwrap() {
            Ok(Step::StartTls(r)) => assert!(!r.no_zeroes),
            other => panic!("{other:?}"),
        }
        // EXPORT_NAME has no error reply: the server hangs up.
        let (mut c, h) = server_steps(Settings { tls: TlsMode::Require, ..SETTINGS });
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        opt(&mut c, OPT_EXPORT_NAME, b"").await;
        assert!(matches!(h.await.unwrap(), Err(Failure::Protocol(_))));
    }

    async fn opt(c: &mut DuplexStream, opt: u32, data: &[u8]) {
        c.write_u64(IHAVEOPT).await.unwrap();
        c.write_u32(opt).await.unwrap();
        c.write_u32(data.len() as u32).await.unwrap();
        c.write_all(data).await.unwrap();
    }

    async fn reply(c: &mut DuplexStream) -> (u32, u32, Vec<u8>) {
        assert_eq!(c.read_u64().await.unwrap(), REP_MAGIC);
        let o = c.read_u32().await.unwrap();
        let t = c.read_u32().await.unwrap();
        let mut d = vec![0; c.read_u32().await.unwrap() as usize];
        c.read_exact(&mut d).await.unwrap();
        (o, t, d)
    }

    async fn hello(c: &mut DuplexStream, flags: u32) {
        assert_eq!(c.read_u64().await.unwrap(), NBDMAGIC);
        assert_eq!(c.read_u64().await.unwrap(), IHAVEOPT);
        assert_eq!(c.read_u16().await.unwrap(), FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        c.write_u32(flags).await.unwrap();
    }

    fn go_payload(name: &str, infos: &[u16]) -> Vec<u8> {
        let mut p = (name.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            p.extend_from_slice(&i.to_be_bytes());
        }
        p
    }

    #[tokio::test]
    async fn extended_headers() {
        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
        opt(&mut c, OPT_EXTENDED_HEADERS, b"x").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_INVALID);
        opt(&mut c, OPT_EXTENDED_HEADERS, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        // No going back to the compact style; meta contexts are allowed.
        opt(&mut c, OPT_STRUCTURED_REPLY, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_EXT_HEADER_REQD);
        let q = encode_meta_request("", &[CONTEXT_BASE_ALLOCATION]);
        opt(&mut c, OPT_SET_META_CONTEXT, &q).await;
        assert_eq!(reply(&mut c).await.1, REP_META_CONTEXT);
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        opt(&mut c, OPT_GO, &go_payload("", &[])).await;
        assert_eq!(reply(&mut c).await.1, REP_INFO);
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        let out = h.await.unwrap().unwrap();
        assert!(out.negotiated.extended && out.negotiated.structured);
        assert!(out.negotiated.base_allocation.is_some());

        // EXPORT_NAME has no error reply: after extended headers, a hang-up.
        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
        opt(&mut c, OPT_EXTENDED_HEADERS, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        opt(&mut c, OPT_EXPORT_NAME, b"").await;
        assert!(matches!(h.await.unwrap(), Err(Failure::Protocol(_))));

        // --no-sr refuses them too.
        let (mut c, _h) = server(Settings { no_sr: true, ..SETTINGS });
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        opt(&mut c, OPT_EXTENDED_HEADERS, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_UNSUP);
    }

    #[tokio::test]
    async fn go_with_structured_replies() {
        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
        opt(&mut c, 99, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_UNSUP);
        opt(&mut c, OPT_STRUCTURED_REPLY, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        let mut q = 0u32.to_be_bytes().to_vec();
        q.extend_from_slice(&1u32.to_be_bytes());
        q.extend_from_slice(&15u32.to_be_bytes());
        q.extend_from_slice(b"base:allocation");
        opt(&mut c, OPT_SET_META_CONTEXT, &q).await;
        let (_, t, d) = reply(&mut c).await;
        assert_eq!(t, REP_META_CONTEXT);
        assert_eq!(&d[4..], b"base:allocation");
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        opt(&mut c, OPT_GO, &go_payload("missing", &[])).await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_UNKNOWN);
        opt(&mut c, OPT_GO, &go_payload("", &[INFO_NAME])).await;
        let (_, t, d) = reply(&mut c).await;
        assert_eq!(t, REP_INFO);
        assert_eq!(u64::from_be_bytes(d[2..10].try_into().unwrap()), 1 << 20);
        let (_, _, d) = reply(&mut c).await;
        assert_eq!(&d[..], &[0, 1, b'a']);
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        let out = h.await.unwrap().unwrap();
        assert!(out.negotiated.structured);
        assert_eq!(out.negotiated.base_allocation, Some(1));
        assert_ne!(out.negotiated.eflags & FLAG_SEND_DF, 0);
    }

    #[tokio::test]
    async fn export_name_with_zeroes() {
        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        opt(&mut c, OPT_EXPORT_NAME, b"x").await;
        assert_eq!(c.read_u64().await.unwrap(), 1 << 20);
        assert_eq!(c.read_u16().await.unwrap(), FLAG_SEND_FLUSH | FLAG_HAS_FLAGS);
        let mut z = [1u8; 124];
        c.read_exact(&mut z).await.unwrap();
        assert_eq!(z, [0u8; 124]);
        assert_eq!(h.await.unwrap().unwrap().export_name, "x");
    }

    #[tokio::test]
    async fn list_and_bad_payloads() {
        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES).await;
        opt(&mut c, OPT_LIST, b"").await;
        let (_, t, d) = reply(&mut c).await;
        assert_eq!(t, REP_SERVER);
        assert_eq!(&d[..], b"\0\0\0\x01adisk");
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        // Meta context before structured replies; truncated GO; name length lies.
        opt(&mut c, OPT_SET_META_CONTEXT, &[0; 8]).await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_INVALID);
        opt(&mut c, OPT_GO, &[0, 0, 0]).await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_INVALID);
        opt(&mut c, OPT_INFO, &[0xff, 0xff, 0xff, 0xff, 0, 0]).await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_INVALID);
        opt(&mut c, OPT_STARTTLS, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_POLICY);
        // An oversized option is skipped without being stored.
        c.write_u64(IHAVEOPT).await.unwrap();
        c.write_u32(OPT_INFO).await.unwrap();
        c.write_u32(MAX_OPTION_LENGTH + 1).await.unwrap();
        c.write_all(&vec![0u8; MAX_OPTION_LENGTH as usize + 1]).await.unwrap();
        assert_eq!(reply(&mut c).await.1, REP_ERR_TOO_BIG);
        opt(&mut c, OPT_ABORT, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ACK);
        assert!(matches!(h.await.unwrap(), Err(Failure::Abort)));
    }

    #[tokio::test]
    async fn garbage_and_truncation() {
        let (mut c, h) = server(SETTINGS);
        hello(&mut c, 0x8000_0000).await;
        assert!(matches!(h.await.unwrap(), Err(Failure::Protocol(_))));

        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        c.write_all(b"GARBAGE GARBAGE GARBAGE").await.unwrap();
        assert!(matches!(h.await.unwrap(), Err(Failure::Protocol(_))));

        let (mut c, h) = server(SETTINGS);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        c.write_u64(IHAVEOPT).await.unwrap();
        drop(c);
        assert!(matches!(h.await.unwrap(), Err(Failure::Io(_))));
    }

    #[tokio::test]
    async fn oldstyle_and_no_sr() {
        let s = Settings { oldstyle: true, ..SETTINGS };
        let (mut c, h) = server(s);
        assert_eq!(c.read_u64().await.unwrap(), NBDMAGIC);
        assert_eq!(c.read_u64().await.unwrap(), OLD_MAGIC);
        assert_eq!(c.read_u64().await.unwrap(), 1 << 20);
        assert_eq!(c.read_u32().await.unwrap(), u32::from(FLAG_SEND_FLUSH | FLAG_HAS_FLAGS));
        let mut z = [1u8; 124];
        c.read_exact(&mut z).await.unwrap();
        assert!(h.await.unwrap().is_ok());

        let s = Settings { no_sr: true, ..SETTINGS };
        let (mut c, _h) = server(s);
        hello(&mut c, FLAG_C_FIXED_NEWSTYLE).await;
        opt(&mut c, OPT_STRUCTURED_REPLY, b"").await;
        assert_eq!(reply(&mut c).await.1, REP_ERR_UNSUP);
    }
}
