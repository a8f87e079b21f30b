//! The contract between the server and whatever serves the data.
//!
//! - A [`Plugin`] is built once at start-up from its typed parameters. For
//!   every connection it [`Plugin::open`]s a [`Handle`], given the
//!   [`OpenArgs`] (read-only, export name, the [`Client`]).
//! - A [`Handle`] answers the data calls. Every method but `size`, `caps` and
//!   `pread` has a default that says "not supported", so a plugin writes only
//!   what it does.
//! - [`Caps`] is what a handle can do, fetched once per connection. Filters
//!   (which are handles wrapping handles) edit it rather than overriding a
//!   dozen `can_*` methods.
//! - [`Guard`] stands above every layer: it emulates what the layer below
//!   lacks (FUA by flush, zero by writes, cache by reads, extents as "all
//!   data"), so plugins stay small.
//! - A data request travels down the chain as one [`Op`] value: a filter
//!   that treats every request alike handles that one value.

mod extents;
mod filter;
mod guard;
pub mod shutdown;

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::error::{Errno, Error, Result};
pub use extents::{Extent, ExtentFlags, Extents, HOLE, ZERO};
pub use filter::{trace_open, Filter, FilterHandle, Layer, Next};
pub use guard::Guard;
pub(crate) use guard::CACHE_CHUNK;

/// How much concurrency a plugin tolerates (nbdkit-plugin(3), "THREADS").
/// The server enforces it; the strictest model in the chain wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ThreadModel {
    /// One connection at a time.
    SerializeConnections,
    /// One request at a time across all connections.
    SerializeAllRequests,
    /// One request at a time per connection.
    SerializeRequests,
    /// Anything goes.
    Parallel,
}

impl ThreadModel {
    /// The name used by `--dump-plugin`.
    pub fn name(self) -> &'static str {
        match self {
            ThreadModel::SerializeConnections => "serialize_connections",
            ThreadModel::SerializeAllRequests => "serialize_all_requests",
            ThreadModel::SerializeRequests => "serialize_requests",
            ThreadModel::Parallel => "parallel",
        }
    }
}

/// How FUA is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fua {
    /// Not available: the export does not advertise FUA.
    None,
    /// The guard flushes after the write.
    Emulate,
    /// The handle honours [`Flags::fua`] itself.
    Native,
}

/// How WRITE_ZEROES is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zero {
    /// Not advertised.
    None,
    /// The guard writes zeroes with `pwrite`.
    Emulate,
    /// The handle's `zero` is called (and may still return ENOTSUP, in which
    /// case the guard falls back to writing zeroes unless FAST_ZERO was set).
    Native,
}

/// How CACHE is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// Not advertised.
    None,
    /// The guard reads the range and discards the data.
    Emulate,
    /// The handle's `cache` is called.
    Native,
}

/// What a handle can do. Fetched once per connection. Start from a preset
/// ([`Caps::READ_ONLY`], [`Caps::ALL_NATIVE`]) and set what differs
/// (`let mut c = Caps::ALL_NATIVE; c.trim = false;`). More fields may come,
/// each "not supported" in `READ_ONLY`.
///
/// Caps and methods cannot disagree in a way a client sees: the guard
/// calls a handle's method only for what its caps offer (anything else is
/// refused or emulated before it), so caps win. A method a handle offers
/// but does not write answers with its default: EPERM for writes, EINVAL
/// for flush and trim, ENOTSUP for zero (so the guard writes zeroes), and
/// success for cache and extents ("all data").
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Writable: without it the export is read-only (and cannot trim, zero
    /// or take FUA).
    pub write: bool,
    /// The handle's `flush` works (NBD_CMD_FLUSH).
    pub flush: bool,
    /// How FUA is handled.
    pub fua: Fua,
    /// The handle's `trim` works (NBD_CMD_TRIM).
    pub trim: bool,
    /// How WRITE_ZEROES is handled.
    pub zero: Zero,
    /// Zero requests may carry FAST_ZERO (only with `zero` offered).
    pub fast_zero: bool,
    /// How CACHE is handled.
    pub cache: Cache,
    /// The handle's `extents` answers `base:allocation`; otherwise the guard
    /// reports everything as data.
    pub extents: bool,
    /// Several connections may be used at once: a flush on one makes every
    /// connection's finished writes durable (NBD_FLAG_CAN_MULTI_CONN).
    pub multi_conn: bool,
    /// The storage is rotational, so sequential access is faster
    /// (NBD_FLAG_ROTATIONAL).
    pub rotational: bool,
}

impl Caps {
    /// A read-only handle that can do nothing but read.
    pub const READ_ONLY: Caps = Caps {
        write: false,
        flush: false,
        fua: Fua::None,
        trim: false,
        zero: Zero::None,
        fast_zero: false,
        cache: Cache::None,
        extents: false,
        multi_conn: false,
        rotational: false,
    };

    /// A handle that does everything itself (a RAM disk): writable, with
    /// flush, FUA, trim, zero (fast), cache, extents and multi-conn.
    pub const ALL_NATIVE: Caps = Caps {
        write: true,
        flush: true,
        fua: Fua::Native,
        trim: true,
        zero: Zero::Native,
        fast_zero: true,
        cache: Cache::Native,
        extents: true,
        multi_conn: true,
        rotational: false,
    };
}

/// Flags on a data call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// Force unit access: the data is on stable storage when the call returns.
    pub fua: bool,
    /// `zero` may punch a hole (the client did not send NO_HOLE).
    pub may_trim: bool,
    /// `zero` must fail with ENOTSUP rather than be slow.
    pub fast_zero: bool,
    /// `extents` may stop after the first extent.
    pub req_one: bool,
}

/// One data request on its way down the chain. A filter that treats every
/// request alike (counting, logging, delaying, failing them) handles this
/// one value ([`FilterHandle::op`]); one that changes a single kind of
/// request overrides just that method. Trim, zero, extents and cache
/// counts are 64-bit; reads and writes are bounded by the server (64 MiB).
#[non_exhaustive]
pub enum Op<'a> {
    /// Fill all of `buf` from `offset` (`pread`).
    Read {
        /// The buffer to fill.
        buf: &'a mut [u8],
        /// Where to read from.
        offset: u64,
        /// The call's flags.
        flags: Flags,
    },
    /// Write all of `buf` at `offset` (`pwrite`).
    Write {
        /// The data to write.
        buf: &'a [u8],
        /// Where to write it.
        offset: u64,
        /// The call's flags.
        flags: Flags,
    },
    /// Make previous writes durable (`flush`).
    Flush {
        /// The call's flags.
        flags: Flags,
    },
    /// Discard a range (`trim`).
    Trim {
        /// How many bytes.
        count: u64,
        /// Where the range starts.
        offset: u64,
        /// The call's flags.
        flags: Flags,
    },
    /// Make a range read as zeroes (`zero`).
    Zero {
        /// How many bytes.
        count: u64,
        /// Where the range starts.
        offset: u64,
        /// The call's flags.
        flags: Flags,
    },
    /// Describe a range's allocation into `ext` (`extents`).
    Extents {
        /// How many bytes.
        count: u64,
        /// Where the range starts.
        offset: u64,
        /// The call's flags.
        flags: Flags,
        /// The collector the extents are added to.
        ext: &'a mut Extents,
    },
    /// Prefetch a range (`cache`).
    Cache {
        /// How many bytes.
        count: u64,
        /// Where the range starts.
        offset: u64,
        /// The call's flags.
        flags: Flags,
    },
}

/// Hand an [`Op`] to the method of its kind on `$target` (`pread`,
/// `pwrite`, `flush`, `trim`, `zero`, `extents`, `cache`), and await it:
/// the one place that spells out the dispatch.
macro_rules! dispatch_op {
    ($target:expr, $op:expr) => {
        match $op {
            Op::Read { buf, offset, flags } => $target.pread(buf, offset, flags).await,
            Op::Write { buf, offset, flags } => $target.pwrite(buf, offset, flags).await,
            Op::Flush { flags } => $target.flush(flags).await,
            Op::Trim { count, offset, flags } => $target.trim(count, offset, flags).await,
            Op::Zero { count, offset, flags } => $target.zero(count, offset, flags).await,
            Op::Extents { count, offset, flags, ext } => {
                $target.extents(count, offset, flags, ext).await
            }
            Op::Cache { count, offset, flags } => $target.cache(count, offset, flags).await,
        }
    };
}
pub(crate) use dispatch_op;

/// What kind of request an [`Op`] is, without its data: for filters that
/// count, log or aim at kinds of request.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// [`Op::Read`].
    Read,
    /// [`Op::Write`].
    Write,
    /// [`Op::Flush`].
    Flush,
    /// [`Op::Trim`].
    Trim,
    /// [`Op::Zero`].
    Zero,
    /// [`Op::Extents`].
    Extents,
    /// [`Op::Cache`].
    Cache,
}

impl OpKind {
    /// The callback's name, as C nbdkit spells it (`pread`, `zero`, ...).
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "pread",
            OpKind::Write => "pwrite",
            OpKind::Flush => "flush",
            OpKind::Trim => "trim",
            OpKind::Zero => "zero",
            OpKind::Extents => "extents",
            OpKind::Cache => "cache",
        }
    }
}

impl Op<'_> {
    /// The same request again, borrowing this one's buffers: for a filter
    /// that may send a request more than once (retry-request).
    pub fn reborrow(&mut self) -> Op<'_> {
        match self {
            Op::Read { buf, offset, flags } => Op::Read { buf, offset: *offset, flags: *flags },
            Op::Write { buf, offset, flags } => Op::Write { buf, offset: *offset, flags: *flags },
            Op::Flush { flags } => Op::Flush { flags: *flags },
            Op::Trim { count, offset, flags } => {
                Op::Trim { count: *count, offset: *offset, flags: *flags }
            }
            Op::Zero { count, offset, flags } => {
                Op::Zero { count: *count, offset: *offset, flags: *flags }
            }
            Op::Extents { count, offset, flags, ext } => {
                Op::Extents { count: *count, offset: *offset, flags: *flags, ext }
            }
            Op::Cache { count, offset, flags } => {
                Op::Cache { count: *count, offset: *offset, flags: *flags }
            }
        }
    }

    /// Which kind of request this is.
    pub fn kind(&self) -> OpKind {
        match self {
            Op::Read { .. } => OpKind::Read,
            Op::Write { .. } => OpKind::Write,
            Op::Flush { .. } => OpKind::Flush,
            Op::Trim { .. } => OpKind::Trim,
            Op::Zero { .. } => OpKind::Zero,
            Op::Extents { .. } => OpKind::Extents,
            Op::Cache { .. } => OpKind::Cache,
        }
    }

    /// The request's name, as C nbdkit's log and debug output spell it.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// Where the request starts (0 for flush).
    pub fn offset(&self) -> u64 {
        match self {
            Op::Read { offset, .. }
            | Op::Write { offset, .. }
            | Op::Trim { offset, .. }
            | Op::Zero { offset, .. }
            | Op::Extents { offset, .. }
            | Op::Cache { offset, .. } => *offset,
            Op::Flush { .. } => 0,
        }
    }

    /// How many bytes it covers (0 for flush).
    pub fn count(&self) -> u64 {
        match self {
            Op::Read { buf, .. } => buf.len() as u64,
            Op::Write { buf, .. } => buf.len() as u64,
            Op::Trim { count, .. }
            | Op::Zero { count, .. }
            | Op::Extents { count, .. }
            | Op::Cache { count, .. } => *count,
            Op::Flush { .. } => 0,
        }
    }

    /// Its flags.
    pub fn flags(&self) -> Flags {
        match self {
            Op::Read { flags, .. }
            | Op::Write { flags, .. }
            | Op::Flush { flags }
            | Op::Trim { flags, .. }
            | Op::Zero { flags, .. }
            | Op::Extents { flags, .. }
            | Op::Cache { flags, .. } => *flags,
        }
    }
}

/// Block size constraints (NBD_INFO_BLOCK_SIZE), in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    /// Requests should be multiples of this (a power of 2, 1 to 64 KiB).
    pub minimum: u32,
    /// Requests this large (and aligned) work best.
    pub preferred: u32,
    /// No request may be larger (reads and writes).
    pub maximum: u32,
}

impl BlockSize {
    /// Constraints from their minimum, preferred and maximum sizes.
    pub const fn new(minimum: u32, preferred: u32, maximum: u32) -> BlockSize {
        BlockSize { minimum, preferred, maximum }
    }
}

/// One entry of an export list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportEntry {
    /// The export's name.
    pub name: String,
    /// Its description, if it has one.
    pub description: Option<String>,
}

/// Where a client connects from (what C nbdkit's `nbdkit_peer_name` gives).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A TCP client.
    Tcp(std::net::SocketAddr),
    /// A client on a Unix domain socket (whose address says nothing), with
    /// its credentials when the kernel gave them (SO_PEERCRED).
    Unix(Option<Cred>),
    /// Not on a socket (`-s` on pipes), or the address could not be read.
    Unknown,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Tcp(a) => write!(f, "{a}"),
            Peer::Unix(_) => f.write_str("unix socket"),
            Peer::Unknown => f.write_str("unknown peer"),
        }
    }
}

/// What the server knows about the client a handle is opened for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Where it connects from.
    pub peer: Peer,
    /// The connection is using TLS (it has been through STARTTLS).
    pub tls: bool,
}

/// What a layer is opened with, for one connection. More may come (TLS):
/// read the fields, and build changed copies with the `with_` methods.
#[non_exhaustive]
#[derive(Debug, Clone, Copy)]
pub struct OpenArgs<'a> {
    /// Open read-only (`-r`, or a filter that only reads below).
    pub readonly: bool,
    /// The export name.
    pub export: &'a str,
    /// Who is connecting.
    pub client: &'a Client,
}

impl<'a> OpenArgs<'a> {
    /// The arguments for opening `export`, read-only or not, for `client`.
    pub fn new(readonly: bool, export: &'a str, client: &'a Client) -> OpenArgs<'a> {
        OpenArgs { readonly, export, client }
    }

    /// The same, read-only or not.
    pub fn with_readonly(self, readonly: bool) -> OpenArgs<'a> {
        OpenArgs { readonly, ..self }
    }

    /// The same, for another export.
    pub fn with_export<'b>(self, export: &'b str) -> OpenArgs<'b>
    where
        'a: 'b,
    {
        OpenArgs { readonly: self.readonly, export, client: self.client }
    }
}

/// A Unix socket client's process, user and group, as they were when it
/// connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cred {
    /// The process ID.
    pub pid: i32,
    /// The user ID.
    pub uid: u32,
    /// The group ID.
    pub gid: u32,
}

/// A plugin, built once at start-up.
///
/// A plugin opens a [`Handle`] for each connection. A RAM disk shared by
/// every client:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use nbdkit::{async_trait, Caps, Flags, Handle, OpenArgs, Plugin};
/// use nbdkit::backend::Result;
///
/// struct Ram(Arc<Mutex<Vec<u8>>>);
///
/// #[async_trait]
/// impl Plugin for Ram {
///     async fn open(&self, _args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
///         Ok(Arc::new(Ram(self.0.clone())))
///     }
/// }
///
/// #[async_trait]
/// impl Handle for Ram {
///     async fn size(&self) -> Result<u64> {
///         Ok(self.0.lock().unwrap().len() as u64)
///     }
///     async fn caps(&self) -> Result<Caps> {
///         let mut caps = Caps::READ_ONLY;
///         caps.write = true;
///         Ok(caps)
///     }
///     async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
///         let at = offset as usize;
///         buf.copy_from_slice(&self.0.lock().unwrap()[at..at + buf.len()]);
///         Ok(())
///     }
///     async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> Result<()> {
///         let at = offset as usize;
///         self.0.lock().unwrap()[at..at + buf.len()].copy_from_slice(buf);
///         Ok(())
///     }
/// }
/// # let _ = Ram(Arc::new(Mutex::new(vec![0; 512])));
/// ```
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    /// Open a connection's handle: on export `args.export` (already
    /// resolved: "" has been replaced by [`Plugin::default_export`]),
    /// read-only if `args.readonly`, for client `args.client`.
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>>;

    /// nbdkit is exiting, after serving: remove what the plugin made for
    /// itself (a script's `$tmpdir`). Through a filter chain each filter
    /// goes first, top down, then the plugin. By default nothing.
    fn unload(&self) {}

    /// Start-up is over (parameters checked, the chain's thread model
    /// known) and the server is about to bind: the moment to open files.
    /// Through a filter chain it reaches the plugin first, then each filter
    /// from the bottom up. By default nothing.
    fn get_ready(
        &self, _thread_model: ThreadModel,
    ) -> std::result::Result<(), crate::error::StartError> {
        Ok(())
    }

    /// Called in the process that will serve, just before serving starts,
    /// after any fork: where a layer starts its own threads (a fork would
    /// not carry them over). Plugin first, then filters, bottom up. By
    /// default nothing.
    fn serving(&self) {}

    /// Called once in the process that will serve, after any fork into the
    /// background and after the pidfile is written, before the first
    /// client; in the foreground too, as C nbdkit calls it. An error stops
    /// the server. Through a filter chain it reaches the plugin first, then
    /// each filter from the bottom up. By default nothing.
    fn after_fork(&self) -> std::result::Result<(), crate::error::StartError> {
        Ok(())
    }

    /// A client has connected, before the handshake; an error closes the
    /// connection. By default nothing.
    async fn preconnect(&self, _readonly: bool, _client: &Client) -> Result<()> {
        Ok(())
    }

    /// The exports to list. By default, just the default export.
    async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        let key = self as *const Self as *const () as usize;
        Ok(vec![ExportEntry {
            name: cached_default_export(key, self.default_export(readonly, is_tls)).await?,
            description: None,
        }])
    }

    /// The canonical name of the export a client gets when it asks for "".
    async fn default_export(&self, _readonly: bool, _is_tls: bool) -> Result<String> {
        Ok(String::new())
    }
}

tokio::task_local! {
    /// Each layer's default export name, asked once per connection (keyed
    /// by the layer's address), as C nbdkit caches it: a script plugin's
    /// `default_export` runs once however often the handshake needs it.
    static DEFAULT_EXPORTS: std::cell::RefCell<std::collections::HashMap<usize, String>>;
}

/// Run `f` (the `default_export` of the layer at address `layer`) with the
/// answers cached for the
/// connection; outside one (no cache in scope) it just runs.
pub async fn cached_default_export(
    layer: usize, f: impl std::future::Future<Output = Result<String>>,
) -> Result<String> {
    let key = layer;
    let hit = DEFAULT_EXPORTS.try_with(|m| m.borrow().get(&key).cloned()).ok().flatten();
    if let Some(name) = hit {
        return Ok(name);
    }
    let name = f.await?;
    let _ = DEFAULT_EXPORTS.try_with(|m| m.borrow_mut().insert(key, name.clone()));
    Ok(name)
}

/// Run a connection's handshake with its own cache of default export names
/// (see [`cached_default_export`]).
pub async fn with_default_export_cache<T>(f: impl std::future::Future<Output = T>) -> T {
    DEFAULT_EXPORTS.scope(Default::default(), f).await
}

/// See [`Handle::zero_copy_source`]: the bytes of a read, as a range of a
/// file whose pages are in the page cache.
#[doc(hidden)]
#[derive(Clone)]
pub struct ZeroCopySource {
    /// The file.
    pub file: Arc<std::fs::File>,
    /// Where the read's first byte is in the file.
    pub offset: u64,
}

impl ZeroCopySource {
    /// Whether every page of the `len` bytes from here is in the page
    /// cache now (`cachestat`, Linux 6.5), so that sending them cannot
    /// block; None if the kernel will not say for this file (EPERM: a file
    /// neither ours nor writable by us). Once it has answered ENOSYS, it
    /// is not asked again.
    pub fn cached(&self, len: u64) -> Option<bool> {
        use std::os::fd::AsRawFd;
        use std::sync::atomic::{AtomicBool, Ordering};
        /// `cachestat` answered ENOSYS: this kernel has none.
        static NO_SYSCALL: AtomicBool = AtomicBool::new(false);
        #[repr(C)]
        struct Range {
            off: u64,
            len: u64,
        }
        #[repr(C)]
        #[derive(Default)]
        struct Stat {
            nr_cache: u64,
            nr_dirty: u64,
            nr_writeback: u64,
            nr_evicted: u64,
            nr_recently_evicted: u64,
        }
        /// The system call's number (the same on x86_64 and aarch64).
        const SYS_CACHESTAT: libc::c_long = 451;
        if NO_SYSCALL.load(Ordering::Relaxed) {
            return Some(false);
        }
        if len == 0 {
            return Some(true);
        }
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        let first = self.offset / page;
        let pages = (self.offset + len).div_ceil(page) - first;
        let range = Range { off: first * page, len: pages * page };
        let mut st = Stat::default();
        // SAFETY: cachestat reads `range` and fills `st`, both ours and
        // alive for the call.
        let r = unsafe {
            libc::syscall(
                SYS_CACHESTAT,
                self.file.as_raw_fd(),
                &range as *const Range,
                &mut st as *mut Stat,
                0,
            )
        };
        if r == 0 {
            return Some(st.nr_cache >= pages);
        }
        match std::io::Error::last_os_error().raw_os_error() {
            Some(libc::ENOSYS) => {
                NO_SYSCALL.store(true, Ordering::Relaxed);
                Some(false)
            }
            Some(libc::EPERM) => None,
            _ => Some(false),
        }
    }
}

/// A connection's view of an export. Offsets and counts are already checked
/// against the size; flags only contain what [`Caps`] allows. A handle
/// writes `size`, `caps`, `pread` and whatever else its caps offer; see
/// [`Plugin`] for an example.
#[async_trait]
pub trait Handle: Send + Sync {
    /// Size in bytes.
    async fn size(&self) -> Result<u64>;

    /// What this handle can do.
    async fn caps(&self) -> Result<Caps>;

    /// Block size constraints, if any.
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(None)
    }

    /// A description for NBD_INFO_DESCRIPTION.
    fn description(&self) -> Option<String> {
        None
    }

    /// The connection is ending, however it ends (NBD_CMD_DISC, the client
    /// gone, the server stopping): called once, after the last request, as
    /// C calls `.close`. By default nothing.
    async fn close(&self) {}

    /// A server-internal scheduling hint, not part of the plugin API (it
    /// may change or go away): plugins leave it false.
    ///
    /// True if the handle takes the FUA flag even when its caps say FUA
    /// is emulated: a filter passes it on (or acts on it). The guard above
    /// then passes FUA down instead of turning it into a flush, so, as in
    /// C nbdkit, FUA is emulated only at the plugin, and a filter sees the
    /// flag the client sent.
    #[doc(hidden)]
    fn takes_fua_flag(&self) -> bool {
        false
    }

    /// A server-internal scheduling hint, not part of the plugin API (it
    /// may change or go away); the default, false, is always safe.
    ///
    /// True if no call ever blocks the thread: each either finishes at
    /// once (memory copies, arithmetic) or awaits. The server then runs a
    /// request on the connection's own task until it first waits, saving a
    /// task spawn and a hop between threads per request. Anything that
    /// makes blocking system calls (file I/O through `block_in_place`)
    /// must leave this false, or one connection's requests would run one
    /// at a time.
    #[doc(hidden)]
    fn never_blocks(&self) -> bool {
        false
    }

    /// Fill all of `buf` from `offset`.
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()>;

    /// Fill `buf` from `offset` as [`Handle::pread`] does, except that a
    /// handle that knows, without looking at data, that parts of the range
    /// read as zeroes (never-written pages, a disk of zeroes) may leave
    /// those parts of `buf` as they are and list them in `holes` instead:
    /// `(start, length)` pairs relative to `offset`, in order, not
    /// overlapping. Clients that negotiated structured replies then get
    /// them as hole chunks, with no data on the wire. By default, `pread`
    /// and no holes; a filter's handle never passes holes up unless it
    /// says so, since it may change the data.
    async fn pread_sparse(
        &self, buf: &mut [u8], offset: u64, flags: Flags, _holes: &mut Vec<(u64, u64)>,
    ) -> Result<()> {
        self.pread(buf, offset, flags).await
    }

    /// A server-internal hint, not part of the plugin API (it may change or
    /// go away); the default, None, is always safe.
    ///
    /// Where the `len` bytes at `offset` can be read straight from a file
    /// without blocking: they are exactly the file's bytes at the returned
    /// offset, and all of them are in the page cache now. The server may
    /// then send them to a client from the page cache (`sendfile`), with no
    /// copy of its own. A filter never passes it up (it may change data).
    #[doc(hidden)]
    fn zero_copy_source(&self, _offset: u64, _len: u64) -> Option<ZeroCopySource> {
        None
    }

    /// Write all of `buf` at `offset`.
    async fn pwrite(&self, _buf: &[u8], _offset: u64, _flags: Flags) -> Result<()> {
        Err(Error::new(Errno::Perm, "write is not supported"))
    }

    /// Make previous writes durable.
    async fn flush(&self, _flags: Flags) -> Result<()> {
        Err(Error::new(Errno::Inval, "flush is not supported"))
    }

    /// Discard a range (advisory: reads may return old data or zeroes).
    async fn trim(&self, _count: u64, _offset: u64, _flags: Flags) -> Result<()> {
        Err(Error::new(Errno::Inval, "trim is not supported"))
    }

    /// Make a range read as zeroes. ENOTSUP lets the guard fall back to
    /// writing zeroes.
    async fn zero(&self, _count: u64, _offset: u64, _flags: Flags) -> Result<()> {
        Err(Error::new(Errno::NotSup, "zero is not supported"))
    }

    /// Describe allocation from `offset`: add at least one extent to `ext`.
    async fn extents(
        &self, count: u64, offset: u64, _flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        ext.add(offset, count, ExtentFlags::DATA);
        Ok(())
    }

    /// Prefetch a range.
    async fn cache(&self, _count: u64, _offset: u64, _flags: Flags) -> Result<()> {
        Ok(())
    }
}
