//! Listeners and connections.
//!
//! [`run`] accepts on every listener until shutdown, giving each client its
//! own task (`connection::serve`); then it waits for those tasks, which
//! finish their in-flight requests and give idle clients a short grace
//! period before closing.

mod connection;
mod pool;
mod sendfile;
pub mod stdio;
pub mod tls;

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, watch, Mutex, Semaphore};

use crate::backend::{Client, Peer, Plugin, ThreadModel};
use crate::protocol::handshake::{Settings, TlsMode};

/// Grace period a connected client gets to leave once shutdown starts.
pub const GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes of request payload the whole server holds at once. A request
/// waits for its share before its buffer is allocated, so no number of
/// clients can make the server allocate without bound.
const PAYLOAD_BUDGET: usize = 1 << 30;
/// Unit of the payload budget.
const BUDGET_UNIT: usize = 64 * 1024;
/// The most of the budget one connection may hold (at least one maximal
/// request): a client that stops reading its replies cannot starve the
/// others.
const CONNECTION_BUDGET: usize = 256 << 20;

/// Shutdown, passed down as a value: `true` once the server must stop.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// A shutdown switch and its first receiver.
    pub fn new() -> (watch::Sender<bool>, Shutdown) {
        let (tx, rx) = watch::channel(false);
        (tx, Shutdown(rx))
    }

    /// Resolves once shutdown has started (at once if it already has).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|&stop| stop).await;
    }

    /// Whether shutdown has started.
    pub fn started(&self) -> bool {
        *self.0.borrow()
    }
}

/// What every connection shares.
pub struct Server {
    /// The top of the chain (a filter layer or the plugin).
    pub plugin: Arc<dyn Plugin>,
    /// The plugin's name, for messages.
    pub plugin_name: &'static str,
    /// The handshake settings (TLS off when there are no credentials).
    pub settings: Settings,
    /// Serve read-only (`-r`).
    pub readonly: bool,
    /// Export served to oldstyle clients (`-e`).
    pub export_name: String,
    /// Requests in flight per connection (`-t`).
    pub threads: usize,
    /// The chain's thread model (the strictest of its layers').
    pub thread_model: ThreadModel,
    /// The name of the top layer (the first filter, else the plugin), for
    /// the `-v` trace of each call; "" for none.
    pub top_name: &'static str,
    /// Where messages go.
    pub log: crate::log::Log,
    /// The TLS credentials, when STARTTLS is offered.
    pub tls: Option<Arc<tls::Tls>>,
    /// How long a client that is between requests (or still in its
    /// handshake) may stay once shutdown starts.
    pub idle_grace: std::time::Duration,
    /// One permit per connected client.
    connections: Arc<Semaphore>,
    /// The limit those permits stand for, for the log.
    max_connections: usize,
    /// Held for a whole connection under `serialize_connections`.
    serial_connections: Semaphore,
    /// Set by [`Server::close_if_idle`]: accept no more connections.
    closed: std::sync::Mutex<bool>,
    /// Held around each request, and each open and close, under
    /// `serialize_all_requests`.
    serial_requests: Mutex<()>,
    budget: Arc<Semaphore>,
}

/// How to serve: everything a [`Server`] is made from. Start from
/// [`ServerConfig::new`] and set what differs.
#[non_exhaustive]
pub struct ServerConfig {
    /// The top of the chain (a filter layer or the plugin).
    pub plugin: Arc<dyn Plugin>,
    /// The plugin's name, for messages.
    pub plugin_name: &'static str,
    /// The name of the top layer, for `-v` traces ("" for none).
    pub top_name: &'static str,
    /// The handshake settings (`-o`, `--no-sr`, `--mask-handshake`,
    /// `--no-meta-contexts`, `--tls`).
    pub settings: Settings,
    /// Serve read-only (`-r`).
    pub readonly: bool,
    /// Export served to oldstyle clients (`-e`).
    pub export_name: String,
    /// Requests in flight per connection (`-t`).
    pub threads: usize,
    /// The chain's thread model (the strictest of its layers').
    pub thread_model: ThreadModel,
    /// TLS credentials: with them, `settings.tls` says whether STARTTLS
    /// is offered or required; without, TLS is off.
    pub tls: Option<Arc<tls::Tls>>,
    /// Where messages go.
    pub log: crate::log::Log,
    /// How long an idle client may stay once shutdown starts ([`GRACE`]
    /// by default; in-flight requests always get their grace to finish).
    pub idle_grace: std::time::Duration,
    /// Most clients connected at once; one more is accepted, told so in
    /// the log, and closed at once (no limit by default; nbdkit sets one
    /// from its file descriptor limit).
    pub max_connections: usize,
}

impl ServerConfig {
    /// Serve `plugin` with nbdkit's defaults: newstyle, read-write, the
    /// parallel thread model, 16 requests in flight per connection.
    pub fn new(plugin: Arc<dyn Plugin>, plugin_name: &'static str) -> ServerConfig {
        ServerConfig {
            plugin,
            plugin_name,
            top_name: "",
            settings: Settings::default(),
            readonly: false,
            export_name: String::new(),
            threads: crate::cli::DEFAULT_THREADS,
            thread_model: ThreadModel::Parallel,
            log: Default::default(),
            tls: None,
            idle_grace: GRACE,
            max_connections: usize::MAX,
        }
    }
}

impl Server {
    /// Under `serialize_all_requests`, the lock every call into the
    /// plugin holds (requests, opens, closes); otherwise nothing.
    pub(crate) async fn serial_all(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.thread_model {
            crate::backend::ThreadModel::SerializeAllRequests => {
                Some(self.serial_requests.lock().await)
            }
            _ => None,
        }
    }

    /// Shared state for one server.
    pub fn new(cfg: ServerConfig) -> Server {
        Server {
            plugin: cfg.plugin,
            plugin_name: cfg.plugin_name,
            // Without credentials, TLS is off whatever the settings say.
            settings: Settings {
                tls: if cfg.tls.is_some() { cfg.settings.tls } else { TlsMode::Off },
                ..cfg.settings
            },
            tls: cfg.tls,
            idle_grace: cfg.idle_grace,
            connections: Arc::new(Semaphore::new(cfg.max_connections.min(Semaphore::MAX_PERMITS))),
            max_connections: cfg.max_connections,
            readonly: cfg.readonly,
            export_name: cfg.export_name,
            threads: cfg.threads,
            thread_model: cfg.thread_model,
            top_name: cfg.top_name,
            log: cfg.log,
            serial_connections: Semaphore::new(1),
            closed: std::sync::Mutex::new(false),
            serial_requests: Mutex::new(()),
            budget: Arc::new(Semaphore::new(PAYLOAD_BUDGET / BUDGET_UNIT)),
        }
    }

    /// Once the server is stopping: if no client is connected, accept no
    /// more (a connection accepted from now on is dropped at once) and say
    /// so; then nothing of the server needs waiting for.
    pub fn close_if_idle(&self) -> bool {
        let mut closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        let idle = self.connections.available_permits()
            == self.max_connections.min(Semaphore::MAX_PERMITS);
        *closed |= idle;
        idle
    }

    /// Requests one connection may have in flight under the thread model.
    fn inflight(&self) -> usize {
        match self.thread_model {
            ThreadModel::Parallel => self.threads.max(1),
            _ => 1,
        }
    }
}

/// A socket we accept on.
pub enum Listener {
    /// A TCP socket.
    Tcp(TcpListener),
    /// A Unix domain socket.
    Unix(UnixListener),
}

/// Accept on every listener until shutdown, then wait for every connection
/// to finish.
pub async fn run(listeners: Vec<Listener>, server: Arc<Server>, shutdown: Shutdown) {
    // Every connection task holds a clone of `done_tx`; when all are gone,
    // `done_rx` yields None and every connection has finished.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut accepters = Vec::new();
    for l in listeners {
        let server = server.clone();
        let mut shutdown = shutdown.clone();
        let done_tx = done_tx.clone();
        accepters.push(tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = accept(&l) => a,
                    _ = shutdown.wait() => break,
                };
                match accepted {
                    Ok((r, w, peer, socket)) => {
                        // Counted under the lock `close_if_idle` takes: a
                        // connection accepted as the server stops is either
                        // counted (and waited for) or dropped here.
                        let permit = {
                            let closed = server.closed.lock().unwrap_or_else(|e| e.into_inner());
                            if *closed {
                                break;
                            }
                            server.connections.clone().try_acquire_owned().ok()
                        };
                        let Some(permit) = permit else {
                            // Refused clearly: logged, and closed before the
                            // greeting, so the client sees the end at once.
                            server.log.error(&format!(
                                "refusing connection from {peer}: too many connections (limit {})",
                                server.max_connections
                            ));
                            continue;
                        };
                        server.log.debug(&format!("accepted connection from {peer}"));
                        let server = server.clone();
                        let shutdown = shutdown.clone();
                        let done = done_tx.clone();
                        let client = Client { peer, tls: false };
                        tokio::spawn(async move {
                            connection::serve(r, w, Some(socket), client, server, shutdown).await;
                            drop(permit);
                            drop(done);
                        });
                    }
                    Err(e) => {
                        // EMFILE and friends: log, pause briefly, go on.
                        server.log.error(&format!("accept: {e}"));
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    drop(done_tx);
    for a in accepters {
        let _ = a.await;
    }
    let _ = done_rx.recv().await;
}

type BoxRead = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type BoxWrite = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// Accept a client: its streams, where it comes from, and the socket's
/// descriptor (valid as long as the streams are).
async fn accept(l: &Listener) -> std::io::Result<(BoxRead, BoxWrite, Peer, RawFd)> {
    Ok(match l {
        Listener::Tcp(t) => {
            let (s, peer) = t.accept().await?;
            let _ = s.set_nodelay(true);
            big_send_buffer(&s);
            let fd = s.as_raw_fd();
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w), Peer::Tcp(peer), fd)
        }
        Listener::Unix(u) => {
            let (s, _) = u.accept().await?;
            big_send_buffer(&s);
            let cred = s.peer_cred().ok().map(|c| crate::backend::Cred {
                pid: c.pid().unwrap_or(0),
                uid: c.uid(),
                gid: c.gid(),
            });
            let fd = s.as_raw_fd();
            let (r, w) = s.into_split();
            (Box::new(r), Box::new(w), Peer::Unix(cred), fd)
        }
    })
}

/// Ask for a send buffer that holds a few large READ replies (the kernel
/// caps it at `net.core.wmem_max`). With the default (about 200 KiB) a
/// 256 KiB reply never fits, and every reply costs a round of "socket full,
/// wait until writable" through the event loop; a blocking server like C
/// nbdkit instead sleeps in `send` and resumes at once.
fn big_send_buffer(s: &impl std::os::fd::AsFd) {
    let _ = nix::sys::socket::setsockopt(s, nix::sys::socket::sockopt::SndBuf, &SEND_BUFFER);
}

/// What [`big_send_buffer`] asks for.
const SEND_BUFFER: usize = 4 << 20;

/// Serve one client on already-connected streams (`-s`).
pub async fn serve_one(
    r: BoxRead, w: BoxWrite, client: Client, server: Arc<Server>, shutdown: Shutdown,
) {
    connection::serve(r, w, None, client, server, shutdown).await;
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::backend::{Caps, Flags, Handle, Result};
    use crate::protocol::request::{self, CmdFlags, Command, Request};

    /// A handle that records how many reads run at once.
    #[derive(Default)]
    struct Probe {
        active: AtomicUsize,
        max: AtomicUsize,
        /// Claim never to block, so requests start on the connection task.
        inline: bool,
    }

    #[async_trait]
    impl Handle for Probe {
        async fn size(&self) -> Result<u64> {
            Ok(1 << 20)
        }
        async fn caps(&self) -> Result<Caps> {
            Ok(Caps::READ_ONLY)
        }
        fn never_blocks(&self) -> bool {
            self.inline
        }
        async fn pread(&self, buf: &mut [u8], _offset: u64, _f: Flags) -> Result<()> {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.max.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            buf.fill(0);
            self.active.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }

    struct ProbePlugin(Arc<Probe>);

    #[async_trait]
    impl Plugin for ProbePlugin {
        async fn open(
            &self, _args: &crate::backend::OpenArgs<'_>,
        ) -> Result<Arc<dyn crate::Handle>> {
            Ok(self.0.clone())
        }
    }

    /// Two oldstyle clients each pipeline 8 reads; return the most reads the
    /// plugin saw at once.
    async fn max_concurrency(model: ThreadModel) -> usize {
        max_concurrency_of(model, false).await
    }

    async fn max_concurrency_of(model: ThreadModel, inline: bool) -> usize {
        let probe = Arc::new(Probe { inline, ..Probe::default() });
        let settings = Settings { oldstyle: true, ..Settings::default() };
        let plugin = Arc::new(ProbePlugin(probe.clone()));
        let mut cfg = ServerConfig::new(plugin, "probe");
        cfg.settings = settings;
        cfg.thread_model = model;
        let srv = Arc::new(Server::new(cfg));
        let (_stop, shutdown) = Shutdown::new();
        let mut clients = Vec::new();
        for _ in 0..2 {
            let (mut c, s) = tokio::io::duplex(1 << 20);
            let (r, w) = tokio::io::split(s);
            let client = Client { peer: Peer::Unknown, tls: false };
            tokio::spawn(connection::serve(r, w, None, client, srv.clone(), shutdown.clone()));
            clients.push(tokio::spawn(async move {
                let mut hello = [0u8; 152];
                c.read_exact(&mut hello).await.unwrap();
                for cookie in 0..8 {
                    let req = Request {
                        flags: CmdFlags(0),
                        cmd: Command::Read,
                        cookie,
                        offset: 0,
                        len: 512,
                    };
                    c.write_all(&request::encode(&req, false)).await.unwrap();
                }
                for _ in 0..8 {
                    let mut reply = [0u8; 16 + 512];
                    c.read_exact(&mut reply).await.unwrap();
                    assert_eq!(&reply[4..8], &[0, 0, 0, 0], "no error");
                }
            }));
        }
        for c in clients {
            c.await.unwrap();
        }
        probe.max.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn thread_models_limit_concurrency() {
        assert_eq!(max_concurrency(ThreadModel::SerializeConnections).await, 1);
        assert_eq!(max_concurrency(ThreadModel::SerializeAllRequests).await, 1);
        assert_eq!(max_concurrency(ThreadModel::SerializeRequests).await, 2);
        assert!(max_concurrency(ThreadModel::Parallel).await > 2);
    }

    #[test]
    fn accepted_sockets_get_a_big_send_buffer() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        big_send_buffer(&a);
        let got = nix::sys::socket::getsockopt(&a, nix::sys::socket::sockopt::SndBuf).unwrap();
        let max: usize =
            std::fs::read_to_string("/proc/sys/net/core/wmem_max").unwrap().trim().parse().unwrap();
        // The kernel caps the request at wmem_max, then doubles it.
        assert!(got >= 2 * SEND_BUFFER.min(max), "{got}");
    }

    /// A request started on the connection's task that then waits moves to
    /// a task of its own: requests still overlap, and the serializing
    /// models still hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inline_requests_that_wait_still_overlap() {
        assert!(max_concurrency_of(ThreadModel::Parallel, true).await > 2);
        assert_eq!(max_concurrency_of(ThreadModel::SerializeAllRequests, true).await, 1);
    }

    /// Two servers in one process, each from its config, listener and
    /// shutdown value: stopping one leaves the other serving.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn several_servers_in_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let mut stops = Vec::new();
        let mut tasks = Vec::new();
        for n in 0..2 {
            let path = dir.path().join(format!("s{n}"));
            let listener = Listener::Unix(UnixListener::bind(&path).unwrap());
            let plugin = (crate::plugins::lookup("memory").unwrap().build)(
                crate::params::Params::new("memory", vec![("size".into(), "1M".into())]),
            )
            .unwrap();
            let srv = Arc::new(Server::new(ServerConfig::new(plugin, "memory")));
            let (stop, shutdown) = Shutdown::new();
            stops.push(stop);
            tasks.push(tokio::spawn(run(vec![listener], srv, shutdown)));
        }
        let greets = |n: usize| {
            let path = dir.path().join(format!("s{n}"));
            async move {
                let Ok(mut c) = tokio::net::UnixStream::connect(path).await else {
                    return false;
                };
                let mut magic = [0u8; 8];
                c.read_exact(&mut magic).await.is_ok() && &magic == b"NBDMAGIC"
            }
        };
        assert!(greets(0).await && greets(1).await);
        let _ = stops[0].send(true);
        tasks.remove(0).await.unwrap();
        assert!(!greets(0).await, "the stopped server no longer accepts");
        assert!(greets(1).await, "the other still serves");
        let _ = stops[1].send(true);
        tasks.remove(0).await.unwrap();
    }
}
