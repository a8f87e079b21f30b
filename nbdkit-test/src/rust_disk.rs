//! Disks written in Rust: a [`Plugin`] of the test's own, served inside the
//! test process by the nbdkit server code, on a thread with its own
//! runtime and a private Unix socket.
//!
//! The plugin can share state with the test (an `Arc<Mutex<…>>` of
//! requests seen, a switch that makes reads fail), and any of nbdkit's
//! filters can be stacked on it. Dropping the [`RustDisk`] stops the
//! server, waits for it, and removes the socket and its directory. A test
//! process that dies leaves no server behind (it was a thread); at most an
//! directory remains, which the next [`RustDiskBuilder::start`] in any
//! process removes once its owner is gone.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nbdkit::backend::{Caps, Flags, Fua, Handle, OpenArgs, Plugin, ThreadModel, Zero};
use nbdkit::error::{Errno, Error as NbdError};
use nbdkit::server::{self, Listener, Server, ServerConfig, Shutdown};

use crate::client::Client;
use crate::error::{Error, ErrorKind};

/// Where the private directories go: `$TMPDIR/nbdkit-test-rs-UID/PID-…`,
/// so that sweeping reads only ours.
fn base_directory() -> Result<PathBuf, Error> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let base = std::env::temp_dir().join(format!("nbdkit-test-rs-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io("cannot create the socket directory", e)),
    }
    // Someone else's directory of that name is not ours to use.
    let meta = std::fs::symlink_metadata(&base)
        .map_err(|e| Error::io("cannot create the socket directory", e))?;
    if !meta.is_dir() || meta.uid() != uid {
        return Err(Error::new(
            ErrorKind::Io,
            format!("{} is not a directory of ours", base.display()),
        ));
    }
    Ok(base)
}

/// A Rust plugin being served in this process. Stops when dropped.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nbdkit_test::{MemoryDisk, RustDisk};
/// use nbdkit_test::nbdkit::Errno;
///
/// // A 1 MiB disk whose reads of the second sector fail with EIO.
/// let disk = RustDisk::new(MemoryDisk::new(1 << 20).on_read(|offset, len| {
///     if offset < 1024 && offset + len as u64 > 512 { Err(Errno::Io) } else { Ok(()) }
/// }))?;
/// let mut nbd = disk.connect()?;
/// assert_eq!(nbd.read(0, 512)?, vec![0; 512]);
/// assert!(nbd.read(512, 512).is_err());
/// # Ok(()) }
/// ```
#[must_use = "the server stops as soon as the RustDisk is dropped"]
pub struct RustDisk {
    uri: String,
    socket: PathBuf,
    export_name: String,
    stop: Option<tokio::sync::watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
    // Removed last, after the server has stopped.
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for RustDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustDisk").field("uri", &self.uri).finish()
    }
}

impl RustDisk {
    /// Serve `plugin` with nbdkit's defaults.
    pub fn new(plugin: impl Plugin) -> Result<RustDisk, Error> {
        RustDisk::builder(plugin).start()
    }

    /// A [`RustDiskBuilder`] for `plugin`: filters, read-only, export name,
    /// thread model.
    pub fn builder(plugin: impl Plugin) -> RustDiskBuilder {
        RustDiskBuilder {
            plugin: Arc::new(plugin),
            filters: Vec::new(),
            unknown_filter: None,
            args: Vec::new(),
            readonly: false,
            export_name: String::new(),
            thread_model: ThreadModel::Parallel,
        }
    }

    /// The NBD URI: `nbd+unix:///EXPORT?socket=PATH`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The Unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Open a connection with the crate's small blocking client.
    pub fn connect(&self) -> io::Result<Client> {
        Client::connect_unix(&self.socket, &self.export_name)
    }
}

impl Drop for RustDisk {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Everything a [`RustDisk`] may set before it starts.
#[must_use = "a RustDiskBuilder does nothing until .start() is called"]
pub struct RustDiskBuilder {
    plugin: Arc<dyn Plugin>,
    filters: Vec<&'static nbdkit::filters::FilterInfo>,
    unknown_filter: Option<String>,
    args: Vec<(String, String)>,
    readonly: bool,
    export_name: String,
    thread_model: ThreadModel,
}

impl RustDiskBuilder {
    /// Stack one of nbdkit's filters (`"delay"`, `"error"`, …) on the
    /// plugin; the first one given is closest to the client, as with
    /// `--filter`. An unknown name is an error at [`start`](Self::start).
    pub fn filter(mut self, name: &str) -> RustDiskBuilder {
        match nbdkit::filters::FILTERS.iter().find(|f| f.name == name) {
            Some(f) => self.filters.push(f),
            None => self.unknown_filter = Some(name.into()),
        }
        self
    }

    /// A filter parameter, `"key=value"` (e.g. `"delay-read=10ms"`).
    pub fn arg(mut self, kv: &str) -> RustDiskBuilder {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        self.args.push((k.into(), v.into()));
        self
    }

    /// Serve read-only (`-r`).
    pub fn readonly(mut self) -> RustDiskBuilder {
        self.readonly = true;
        self
    }

    /// The export name clients ask for (it goes into the URI).
    pub fn export_name(mut self, name: impl Into<String>) -> RustDiskBuilder {
        self.export_name = name.into();
        self
    }

    /// Serialize requests or connections, as a C plugin's thread model
    /// would (the default is parallel).
    pub fn thread_model(mut self, model: ThreadModel) -> RustDiskBuilder {
        self.thread_model = model;
        self
    }

    /// Start serving; returns once the socket accepts connections.
    pub fn start(self) -> Result<RustDisk, Error> {
        let base = base_directory()?;
        sweep_dead_directories(&base);
        if let Some(name) = &self.unknown_filter {
            return Err(Error::new(ErrorKind::Usage, format!("unknown filter '{name}'")));
        }
        let chain = self.chain()?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-", std::process::id()))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir_in(&base)
            .map_err(|e| Error::io("cannot create the socket directory", e))?;
        let socket = dir.path().join("socket");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(|e| Error::io("cannot bind the socket", e))?;
        listener.set_nonblocking(true).map_err(|e| Error::io("cannot set up the socket", e))?;
        let mut cfg = ServerConfig::new(chain, "rust");
        cfg.readonly = self.readonly;
        cfg.thread_model = self.thread_model;
        cfg.log.send_to(nbdkit::log::LogTo::Null);
        // Dropping the disk hangs up on idle clients at once (requests in
        // flight still finish).
        cfg.idle_grace = std::time::Duration::ZERO;
        let (stop, shutdown) = Shutdown::new();
        let thread = std::thread::Builder::new()
            .name("nbdkit-test-disk".into())
            .spawn(move || serve(listener, cfg, shutdown))
            .map_err(|e| Error::io("cannot start the server thread", e))?;
        let uri = crate::uri::unix(&socket, &self.export_name);
        Ok(RustDisk {
            uri,
            socket,
            export_name: self.export_name,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The filters, built from their parameters, over the plugin.
    fn chain(&self) -> Result<Arc<dyn Plugin>, Error> {
        let bad = |e: nbdkit::StartError| Error::new(ErrorKind::Usage, e.to_string());
        let mut params = nbdkit::params::Params::new("rust", self.args.clone());
        let mut built = Vec::new();
        for f in &self.filters {
            built.push((f.name, (f.build)(&mut params).map_err(bad)?));
        }
        if let Some((k, _)) = params.take_rest().first() {
            return Err(Error::new(ErrorKind::Usage, format!("unknown parameter '{k}'")));
        }
        let log = nbdkit::log::Log::new(false);
        let mut top = self.plugin.clone();
        let mut below = "rust";
        for (name, f) in built.into_iter().rev() {
            top = Arc::new(nbdkit::backend::Layer::named(f, top, below, &log));
            below = name;
        }
        let thread_model = self.thread_model;
        top.get_ready(thread_model).map_err(bad)?;
        Ok(top)
    }
}

/// The server thread: a small runtime of its own, until shutdown.
fn serve(listener: std::os::unix::net::UnixListener, cfg: ServerConfig, shutdown: Shutdown) {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        return;
    };
    rt.block_on(async move {
        let Ok(l) = tokio::net::UnixListener::from_std(listener) else {
            return;
        };
        server::run(vec![Listener::Unix(l)], Arc::new(Server::new(cfg)), shutdown).await;
    });
}

/// Remove the directories of processes that died without dropping their
/// disks (the socket is all that is left in them).
fn sweep_dead_directories(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name: OsString = e.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.split('-').next()?.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: kill with signal 0 only checks that the process exists.
        let gone = unsafe { libc::kill(pid, 0) } != 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// A hook on reads or writes: given the offset and length, `Ok` lets the
/// request go on, an errno fails it with that error.
pub type Hook = Arc<dyn Fn(u64, usize) -> Result<(), Errno> + Send + Sync>;

/// A RAM disk for [`RustDisk`], with optional hooks that see (and may fail)
/// each read and write. Its contents are shared with the test through
/// [`MemoryDisk::data`].
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nbdkit_test::{MemoryDisk, RustDisk};
///
/// let disk = MemoryDisk::from_vec(b"hello, world".repeat(100));
/// let data = disk.data();
/// let served = RustDisk::new(disk)?;
/// served.connect()?.write(0, b"HELLO")?;
/// assert_eq!(&data.lock().unwrap()[..12], b"HELLO, world");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryDisk {
    data: Arc<Mutex<Vec<u8>>>,
    on_read: Option<Hook>,
    on_write: Option<Hook>,
}

impl MemoryDisk {
    /// `size` bytes of zeroes.
    pub fn new(size: usize) -> MemoryDisk {
        MemoryDisk::from_vec(vec![0; size])
    }

    /// A disk holding `bytes` (its size is their length).
    pub fn from_vec(bytes: Vec<u8>) -> MemoryDisk {
        MemoryDisk { data: Arc::new(Mutex::new(bytes)), on_read: None, on_write: None }
    }

    /// Call `f(offset, len)` before every read; an `Err(errno)` fails the
    /// read with it.
    pub fn on_read(
        mut self, f: impl Fn(u64, usize) -> Result<(), Errno> + Send + Sync + 'static,
    ) -> MemoryDisk {
        self.on_read = Some(Arc::new(f));
        self
    }

    /// Call `f(offset, len)` before every write; an `Err(errno)` fails the
    /// write with it (and the disk is not changed).
    pub fn on_write(
        mut self, f: impl Fn(u64, usize) -> Result<(), Errno> + Send + Sync + 'static,
    ) -> MemoryDisk {
        self.on_write = Some(Arc::new(f));
        self
    }

    /// The contents, shared with the served disk.
    pub fn data(&self) -> Arc<Mutex<Vec<u8>>> {
        self.data.clone()
    }
}

#[nbdkit::async_trait]
impl Plugin for MemoryDisk {
    async fn open(&self, _args: &OpenArgs<'_>) -> nbdkit::backend::Result<Arc<dyn Handle>> {
        Ok(Arc::new(self.clone()))
    }
}

fn refused(errno: Errno, what: &str, offset: u64) -> NbdError {
    NbdError::new(errno, format!("{what} at {offset} refused by the test's hook"))
}

#[nbdkit::async_trait]
impl Handle for MemoryDisk {
    async fn size(&self) -> nbdkit::backend::Result<u64> {
        Ok(self.data.lock().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }

    async fn caps(&self) -> nbdkit::backend::Result<Caps> {
        let mut c = Caps::READ_ONLY;
        c.write = true;
        c.flush = true;
        c.fua = Fua::Emulate;
        c.zero = Zero::Emulate;
        c.multi_conn = true;
        Ok(c)
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> nbdkit::backend::Result<()> {
        if let Some(h) = &self.on_read {
            h(offset, buf.len()).map_err(|e| refused(e, "read", offset))?;
        }
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let o = offset as usize;
        buf.copy_from_slice(&d[o..o + buf.len()]);
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, _f: Flags) -> nbdkit::backend::Result<()> {
        if let Some(h) = &self.on_write {
            h(offset, buf.len()).map_err(|e| refused(e, "write", offset))?;
        }
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let o = offset as usize;
        d[o..o + buf.len()].copy_from_slice(buf);
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> nbdkit::backend::Result<()> {
        Ok(())
    }
}
