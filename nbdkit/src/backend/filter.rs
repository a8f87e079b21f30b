//! Filters: layers between the server and the plugin (nbdkit-filter(3)).
//!
//! A filter is built once from its parameters. Seen from the layer above it
//! is a [`Plugin`]: a [`Layer`] joins it to the layer below, and every
//! boundary has a [`Guard`] so that each layer sees what C nbdkit's backend
//! would give it: FUA, zero and cache emulated when the layer below lacks
//! them, write capabilities gone under `-r`, extents always answerable.
//!
//! Everything passes through by default: [`Filter::open`] opens the layer
//! below ([`Next`]), and a filter that changes data wraps the guard it gets
//! in its own [`FilterHandle`], whose methods all pass through unless
//! overridden. A filter writes only what it changes: one request kind
//! (`zero`), or every request as one value (`op`).

use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StartError;

use super::{
    BlockSize, Caps, Client, ExportEntry, Extents, Flags, Guard, Handle, Op, OpenArgs, Plugin,
    Result, ThreadModel,
};

/// A filter, built once at start-up.
///
/// A filter that counts requests of every kind, and one that refuses
/// trims, each writing only what it changes:
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use std::sync::Arc;
/// use nbdkit::backend::{Errno, Error, Guard, Next, Result};
/// use nbdkit::{async_trait, Filter, FilterHandle, Flags, Handle, Op, OpenArgs};
///
/// struct Count(Arc<AtomicU64>);
///
/// #[async_trait]
/// impl Filter for Count {
///     async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
///         Ok(Arc::new(Counted { next: next.open(args).await?, n: self.0.clone() }))
///     }
/// }
///
/// struct Counted {
///     next: Arc<Guard>,
///     n: Arc<AtomicU64>,
/// }
///
/// impl FilterHandle for Counted {
///     fn next(&self) -> &Guard {
///         &self.next
///     }
///     // Every request, whatever its kind.
///     async fn op(&self, op: Op<'_>) -> Result<()> {
///         self.n.fetch_add(1, Ordering::Relaxed);
///         self.next.op(op).await
///     }
/// }
///
/// struct NoTrim(Arc<Guard>);
///
/// impl FilterHandle for NoTrim {
///     fn next(&self) -> &Guard {
///         &self.0
///     }
///     // Only trims; everything else passes through.
///     async fn trim(&self, _count: u64, _offset: u64, _f: Flags) -> Result<()> {
///         Err(Error::new(Errno::Perm, "no trims here"))
///     }
/// }
/// ```
#[async_trait]
pub trait Filter: Send + Sync + 'static {
    /// The concurrency this filter tolerates.
    fn thread_model(&self) -> ThreadModel {
        ThreadModel::Parallel
    }

    /// Start-up is over (parameters checked, the chain's thread model
    /// known) and the server is about to bind: the moment to open files.
    fn get_ready(&self, _thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        Ok(())
    }

    /// After any fork into the background, once the layers below have had
    /// theirs (see [`Plugin::after_fork`]).
    fn after_fork(&self) {}

    /// The server has stopped serving and is about to exit normally.
    fn unload(&self) {}

    /// Called in the process that will serve, after any fork into the
    /// background, just before serving starts: where a filter starts its
    /// own threads (a fork would not carry them over). By default nothing.
    fn serving(&self) {}

    /// Open a connection: by default, the layer below's handle, unchanged.
    /// A filter that changes data wraps the guard `next` opens in a
    /// [`FilterHandle`]. `next` can be kept (it is cheap to clone) to
    /// reopen the layer below later (retry).
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        Ok(next.open(args).await?)
    }

    /// A client has connected, before the handshake: by default the layer
    /// below is told.
    async fn preconnect(&self, next: &Next, readonly: bool, client: &Client) -> Result<()> {
        next.preconnect(readonly, client).await
    }

    /// The export list, by default the layer below's.
    async fn list_exports(
        &self, next: &Next, readonly: bool, is_tls: bool,
    ) -> Result<Vec<ExportEntry>> {
        next.list_exports(readonly, is_tls).await
    }

    /// The default export, by default the layer below's.
    async fn default_export(&self, next: &Next, readonly: bool, is_tls: bool) -> Result<String> {
        next.default_export(readonly, is_tls).await
    }
}

/// A filter on top of the layer below.
pub struct Layer {
    filter: Arc<dyn Filter>,
    /// The layer below, behind a guard.
    next: Next,
}

impl Layer {
    /// Put `filter` on top of `next`.
    pub fn new(filter: Arc<dyn Filter>, next: Arc<dyn Plugin>) -> Layer {
        Layer::named(filter, next, "", &crate::log::Log::default())
    }

    /// Put `filter` on top of `next`, whose name (a filter's or the
    /// plugin's) the guard between them uses in `-v` traces to `log`.
    pub fn named(
        filter: Arc<dyn Filter>, next: Arc<dyn Plugin>, next_name: &'static str,
        log: &crate::log::Log,
    ) -> Layer {
        Layer { filter, next: Next { below: next, name: next_name, log: log.clone() } }
    }
}

#[async_trait]
impl Plugin for Layer {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        self.filter.open(&self.next, args).await
    }

    fn unload(&self) {
        self.filter.unload();
        self.next.below.unload()
    }

    fn get_ready(&self, thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        self.next.below.get_ready(thread_model)?;
        self.filter.get_ready(thread_model)
    }

    fn serving(&self) {
        self.next.below.serving();
        self.filter.serving();
    }

    fn after_fork(&self) -> std::result::Result<(), StartError> {
        self.next.below.after_fork()?;
        self.filter.after_fork();
        Ok(())
    }

    async fn preconnect(&self, readonly: bool, client: &Client) -> Result<()> {
        self.filter.preconnect(&self.next, readonly, client).await
    }

    async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        self.filter.list_exports(&self.next, readonly, is_tls).await
    }

    async fn default_export(&self, readonly: bool, is_tls: bool) -> Result<String> {
        self.filter.default_export(&self.next, readonly, is_tls).await
    }
}

/// `-v`: a layer is asked to open an export, as C traces it.
pub fn trace_open(log: &crate::log::Log, name: &str, args: &OpenArgs<'_>) {
    if !name.is_empty() && log.verbose() {
        log.debug(&format!(
            "{name}: open readonly={} exportname={:?} tls={}",
            u8::from(args.readonly),
            args.export,
            u8::from(args.client.tls),
        ));
    }
}

/// The layer below a filter, as the filter sees it: every handle it opens
/// comes behind a [`Guard`].
#[derive(Clone)]
pub struct Next {
    below: Arc<dyn Plugin>,
    /// The layer's name, for `-v` traces.
    name: &'static str,
    log: crate::log::Log,
}

impl Next {
    /// Open the layer below for a connection.
    pub async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<Guard>> {
        trace_open(&self.log, self.name, args);
        let h = self.below.open(args).await?;
        Ok(Arc::new(Guard::new(h, args.readonly).await?.named(self.name, &self.log)))
    }

    /// Tell the layer below a client has connected.
    pub async fn preconnect(&self, readonly: bool, client: &Client) -> Result<()> {
        self.below.preconnect(readonly, client).await
    }

    /// The layer below's export list.
    pub async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        self.below.list_exports(readonly, is_tls).await
    }

    /// The layer below's default export, asked once per connection.
    pub async fn default_export(&self, readonly: bool, is_tls: bool) -> Result<String> {
        let key = Arc::as_ptr(&self.below) as *const () as usize;
        super::cached_default_export(key, self.below.default_export(readonly, is_tls)).await
    }
}

/// A filter's per-connection handle. Every method passes through to the
/// guard below (`next()`) unless the filter overrides it: one request kind
/// (`pread`, `zero`, ...), or all of them at once (`op`, which by default
/// hands each request to its own method). The methods return plain futures
/// (write them as `async fn`): a request costs one boxed future per layer,
/// where it enters the layer. See [`Filter`] for examples.
pub trait FilterHandle: Send + Sync + 'static {
    /// The guard below.
    fn next(&self) -> &Guard;

    /// Size in bytes.
    fn size(&self) -> impl Future<Output = Result<u64>> + Send {
        self.next().size()
    }
    /// What this handle can do.
    fn caps(&self) -> impl Future<Output = Result<Caps>> + Send {
        self.next().caps()
    }
    /// Block size constraints, if any.
    fn block_size(&self) -> impl Future<Output = Result<Option<BlockSize>>> + Send {
        self.next().block_size()
    }
    /// A description for NBD_INFO_DESCRIPTION.
    fn description(&self) -> Option<String> {
        self.next().description()
    }
    /// A server-internal scheduling hint: true if no call ever blocks the
    /// thread (see `Handle::never_blocks`).
    fn never_blocks(&self) -> bool {
        self.next().never_blocks()
    }
    /// Every data request, as one value. By default each goes to its own
    /// method below.
    fn op(&self, op: Op<'_>) -> impl Future<Output = Result<()>> + Send {
        async move { super::dispatch_op!(self, op) }
    }
    /// Fill all of `buf` from `offset`.
    fn pread(
        &self, buf: &mut [u8], offset: u64, flags: Flags,
    ) -> impl Future<Output = Result<()>> + Send {
        self.next().pread(buf, offset, flags)
    }
    /// Write all of `buf` at `offset`.
    fn pwrite(
        &self, buf: &[u8], offset: u64, flags: Flags,
    ) -> impl Future<Output = Result<()>> + Send {
        self.next().pwrite(buf, offset, flags)
    }
    /// Make previous writes durable.
    fn flush(&self, flags: Flags) -> impl Future<Output = Result<()>> + Send {
        self.next().flush(flags)
    }
    /// Discard a range.
    fn trim(
        &self, count: u64, offset: u64, flags: Flags,
    ) -> impl Future<Output = Result<()>> + Send {
        self.next().trim(count, offset, flags)
    }
    /// Make a range read as zeroes.
    fn zero(
        &self, count: u64, offset: u64, flags: Flags,
    ) -> impl Future<Output = Result<()>> + Send {
        self.next().zero(count, offset, flags)
    }
    /// Describe allocation from `offset` into `ext`.
    fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> impl Future<Output = Result<()>> + Send {
        self.next().extents(count, offset, flags, ext)
    }
    /// Prefetch a range.
    fn cache(
        &self, count: u64, offset: u64, flags: Flags,
    ) -> impl Future<Output = Result<()>> + Send {
        self.next().cache(count, offset, flags)
    }
    /// The connection is ending: called once, after the last request.
    fn close(&self) -> impl Future<Output = ()> + Send {
        self.next().close()
    }
}

/// What the layer above calls: the one boxed step into a filter's handle.
/// Each request becomes an [`Op`] for [`FilterHandle::op`].
#[async_trait]
impl<T: FilterHandle> Handle for T {
    async fn size(&self) -> Result<u64> {
        FilterHandle::size(self).await
    }
    async fn caps(&self) -> Result<Caps> {
        FilterHandle::caps(self).await
    }
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        FilterHandle::block_size(self).await
    }
    fn description(&self) -> Option<String> {
        FilterHandle::description(self)
    }
    fn never_blocks(&self) -> bool {
        FilterHandle::never_blocks(self)
    }
    fn takes_fua_flag(&self) -> bool {
        true
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.op(Op::Read { buf, offset, flags }).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.op(Op::Write { buf, offset, flags }).await
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        self.op(Op::Flush { flags }).await
    }
    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.op(Op::Trim { count, offset, flags }).await
    }
    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.op(Op::Zero { count, offset, flags }).await
    }
    async fn extents(
        &self, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        self.op(Op::Extents { count, offset, flags, ext }).await
    }
    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.op(Op::Cache { count, offset, flags }).await
    }
    async fn close(&self) {
        FilterHandle::close(self).await
    }
}
