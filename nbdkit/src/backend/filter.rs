//! Filters: layers between the server and the plugin (nbdkit-filter(3)).
//!
//! A filter is built once from its parameters. Seen from the layer above it
//! is a [`Plugin`]: a [`Layer`] joins it to the layer below, and every
//! boundary has a guard ([`Export`]) so that each layer sees what C
//! nbdkit's backend would give it: FUA, zero and cache emulated when the
//! layer below lacks them, write capabilities gone under `-r`, extents
//! always answerable.
//!
//! Everything passes through by default: a filter's [`Filter`] methods
//! open the layer below, and its per-connection handle implements
//! [`FilterHandle`], whose methods all call `next()` unless overridden. A
//! filter writes only what it changes.

use std::sync::Arc;

use async_trait::async_trait;

use crate::error::StartError;

use super::{
    BlockSize, Caps, Client, Export, ExportEntry, Extents, Flags, Handle, Plugin, Result,
    ThreadModel, Zero,
};

/// A filter, built once at start-up.
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
    /// A filter that changes data wraps it in a [`FilterHandle`].
    async fn open(
        &self,
        next: &dyn Plugin,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        next.open_for(readonly, export, client).await
    }

    /// [`Filter::open`] with the layer below held by reference count, for
    /// filters that must reopen it later (retry). By default, `open`.
    async fn open_shared(
        &self,
        next: &Arc<dyn Plugin>,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        self.open(&**next, readonly, export, client).await
    }

    /// A client has connected, before the handshake: by default the layer
    /// below is told.
    async fn preconnect(&self, next: &dyn Plugin, readonly: bool, client: &Client) -> Result<()> {
        next.preconnect(readonly, client).await
    }

    /// The export list, by default the layer below's.
    async fn list_exports(&self, next: &dyn Plugin, readonly: bool) -> Result<Vec<ExportEntry>> {
        next.list_exports(readonly).await
    }

    /// The default export, by default the layer below's.
    async fn default_export(&self, next: &dyn Plugin, readonly: bool) -> Result<String> {
        next.default_export(readonly).await
    }
}

/// A filter on top of the layer below.
pub struct Layer {
    filter: Arc<dyn Filter>,
    /// The layer below, behind a guard.
    next: Arc<dyn Plugin>,
    below: Arc<dyn Plugin>,
}

impl Layer {
    /// Put `filter` on top of `next`.
    pub fn new(filter: Arc<dyn Filter>, next: Arc<dyn Plugin>) -> Layer {
        Layer::named(filter, next, "")
    }

    /// Put `filter` on top of `next`, whose name (a filter's or the
    /// plugin's) the guard between them uses in `-v` traces.
    pub fn named(filter: Arc<dyn Filter>, next: Arc<dyn Plugin>, next_name: &'static str) -> Layer {
        Layer {
            filter,
            next: Arc::new(Guarded(next.clone(), next_name)),
            below: next,
        }
    }
}

#[async_trait]
impl Plugin for Layer {
    fn thread_model(&self) -> ThreadModel {
        self.filter.thread_model().min(self.below.thread_model())
    }

    async fn open(&self, readonly: bool, export: &str) -> Result<Arc<dyn Handle>> {
        let client = Client {
            peer: super::Peer::Unknown,
        };
        self.open_for(readonly, export, &client).await
    }

    async fn open_for(
        &self,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        self.filter
            .open_shared(&self.next, readonly, export, client)
            .await
    }

    fn unload(&self) {
        self.below.unload()
    }

    fn after_fork(&self) -> std::result::Result<(), StartError> {
        self.below.after_fork()?;
        self.filter.after_fork();
        Ok(())
    }

    async fn preconnect(&self, readonly: bool, client: &Client) -> Result<()> {
        self.filter.preconnect(&*self.next, readonly, client).await
    }

    async fn list_exports(&self, readonly: bool) -> Result<Vec<ExportEntry>> {
        self.filter.list_exports(&*self.next, readonly).await
    }

    async fn default_export(&self, readonly: bool) -> Result<String> {
        self.filter.default_export(&*self.next, readonly).await
    }
}

/// `-v`: a layer is asked to open an export, as C traces it.
pub fn trace_open(name: &str, readonly: bool, export: &str) {
    if !name.is_empty() && crate::log::verbose() {
        crate::log::debug(&format!(
            "{name}: open readonly={} exportname={export:?} tls=0",
            u8::from(readonly)
        ));
    }
}

/// The layer below a filter, with a guard on every handle it opens.
struct Guarded(Arc<dyn Plugin>, &'static str);

#[async_trait]
impl Plugin for Guarded {
    fn thread_model(&self) -> ThreadModel {
        self.0.thread_model()
    }

    async fn open(&self, readonly: bool, export: &str) -> Result<Arc<dyn Handle>> {
        trace_open(self.1, readonly, export);
        let h = self.0.open(readonly, export).await?;
        Ok(Arc::new(Export::new(h, readonly).await?.named(self.1)))
    }

    async fn open_for(
        &self,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        trace_open(self.1, readonly, export);
        let h = self.0.open_for(readonly, export, client).await?;
        Ok(Arc::new(Export::new(h, readonly).await?.named(self.1)))
    }

    fn unload(&self) {
        self.0.unload()
    }

    async fn preconnect(&self, readonly: bool, client: &Client) -> Result<()> {
        self.0.preconnect(readonly, client).await
    }

    async fn list_exports(&self, readonly: bool) -> Result<Vec<ExportEntry>> {
        self.0.list_exports(readonly).await
    }

    async fn default_export(&self, readonly: bool) -> Result<String> {
        let key = Arc::as_ptr(&self.0) as *const () as usize;
        super::cached_default_export(key, self.0.default_export(readonly)).await
    }
}

/// A guard is itself a handle: what the layer above sees. What it emulates
/// looks native from above, except extents, FUA and cache, as in C: a
/// layer above learns whether the layer below really has extents (so, for
/// example, the error filter injects no extents errors over a plugin
/// without extents), and still gets one data extent when it asks anyway;
/// it learns whether FUA is emulated below (so the blocksize filter
/// flushes once after a split write instead of once per piece), and may
/// still send the flag; and it learns whether cache is emulated (so the
/// readahead filter stays idle), and may still ask (the guard reads).
#[async_trait]
impl Handle for Export {
    async fn size(&self) -> Result<u64> {
        Ok(Export::size(self))
    }

    async fn caps(&self) -> Result<Caps> {
        let c = *Export::caps(self);
        Ok(Caps {
            zero: if c.zero == Zero::None {
                Zero::None
            } else {
                Zero::Native
            },
            ..c
        })
    }

    async fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(Export::block_size(self))
    }

    fn description(&self) -> Option<String> {
        Export::description(self)
    }

    fn never_blocks(&self) -> bool {
        Export::never_blocks(self)
    }

    fn takes_fua_flag(&self) -> bool {
        true
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        Export::pread(self, buf, offset, flags).await
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        Export::pwrite(self, buf, offset, flags).await
    }

    async fn flush(&self, _flags: Flags) -> Result<()> {
        Export::flush(self).await
    }

    async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        Export::trim(self, count, offset, flags).await
    }

    async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        Export::zero(self, count, offset, flags).await
    }

    async fn extents(
        &self,
        count: u32,
        offset: u64,
        flags: Flags,
        ext: &mut Extents,
    ) -> Result<()> {
        Export::extents_into(self, count, offset, flags.req_one, ext).await
    }

    async fn cache(&self, count: u32, offset: u64, _flags: Flags) -> Result<()> {
        Export::cache(self, count, offset).await
    }

    async fn close(&self) {
        Export::close(self).await
    }
}

/// A filter's per-connection handle: every method passes through to
/// `next()` unless the filter overrides it.
#[async_trait]
pub trait FilterHandle: Send + Sync + 'static {
    /// The layer below.
    fn next(&self) -> &Arc<dyn Handle>;

    async fn size(&self) -> Result<u64> {
        self.next().size().await
    }
    async fn caps(&self) -> Result<Caps> {
        self.next().caps().await
    }
    async fn block_size(&self) -> Result<Option<BlockSize>> {
        self.next().block_size().await
    }
    fn description(&self) -> Option<String> {
        self.next().description()
    }
    fn never_blocks(&self) -> bool {
        self.next().never_blocks()
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.next().pread(buf, offset, flags).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        self.next().pwrite(buf, offset, flags).await
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        self.next().flush(flags).await
    }
    async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.next().trim(count, offset, flags).await
    }
    async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.next().zero(count, offset, flags).await
    }
    async fn extents(
        &self,
        count: u32,
        offset: u64,
        flags: Flags,
        ext: &mut Extents,
    ) -> Result<()> {
        self.next().extents(count, offset, flags, ext).await
    }
    async fn cache(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        self.next().cache(count, offset, flags).await
    }
    async fn close(&self) {
        self.next().close().await
    }
}

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
        FilterHandle::pread(self, buf, offset, flags).await
    }
    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        FilterHandle::pwrite(self, buf, offset, flags).await
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        FilterHandle::flush(self, flags).await
    }
    async fn trim(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        FilterHandle::trim(self, count, offset, flags).await
    }
    async fn zero(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        FilterHandle::zero(self, count, offset, flags).await
    }
    async fn extents(
        &self,
        count: u32,
        offset: u64,
        flags: Flags,
        ext: &mut Extents,
    ) -> Result<()> {
        FilterHandle::extents(self, count, offset, flags, ext).await
    }
    async fn cache(&self, count: u32, offset: u64, flags: Flags) -> Result<()> {
        FilterHandle::cache(self, count, offset, flags).await
    }
    async fn close(&self) {
        FilterHandle::close(self).await
    }
}
