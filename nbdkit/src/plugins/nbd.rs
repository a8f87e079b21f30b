//! `nbd`: proxy to another NBD server.
//!
//! Where to connect (exactly one):
//! - `uri=URI` (magic key): `nbd://HOST[:PORT]/EXPORT` or
//!   `nbd+unix:///EXPORT?socket=PATH`;
//! - `socket=PATH`, a Unix socket;
//! - `hostname=HOST` with `port=PORT` (default 10809).
//!
//! Also:
//! - `export=NAME`: the export to ask for (default `""`, or the URI's).
//! - `dynamic-export=true`: ask the server for the export the client asked
//!   us for, instead; then the server's export list (and its name for its
//!   default export) is what our clients see. Without it, the list is
//!   `export=` alone.
//! - `retry=N`: if connecting fails, try again once a second for up to N
//!   seconds (default 0).
//! - `shared=true`: one server connection for all clients (made when the
//!   first client connects; C makes it at start-up), instead of one per
//!   client.
//!
//! Requests are forwarded as they come, many in flight at once on one
//! server connection, with replies matched by cookie; the export's size
//! and flags are the server's. `command=`, `socket-fd=`, `vsock=` and TLS
//! are not supported and say so. (The plugin speaks the NBD wire through
//! `protocol::client`, the one place the protocol lives.)
//!
//! Example: `nbdkit -U - nbd socket=/tmp/other.sock --run 'nbdinfo "$uri"'`

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::{
    BlockSize, Caps, Errno, Error, ExportEntry, Extents, Flags, Handle, OpenArgs, Plugin, Result,
    ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;
use crate::protocol::client::{default_export_name, list_exports, negotiate, Connection};
use crate::protocol::consts::*;
use crate::protocol::flags::{caps_of, cmd_flags, extent_flags_of};
use crate::protocol::request::Command;
use crate::uri;

/// The `nbd` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "nbd",
    description: "proxy to another NBD server",
    config_help: "[uri=]<URI>            URI of an NBD socket to connect to.\n\
                  socket=<SOCKNAME>      The Unix socket to connect to.\n\
                  hostname=<HOST>        The hostname for the TCP socket to connect to.\n\
                  port=<PORT>            TCP port to use (default 10809).\n\
                  export=<NAME>          Export name to connect to (default \"\").\n\
                  dynamic-export=<BOOL>  True to pass the client's export name through.\n\
                  retry=<N>              Retry connection up to N seconds (default 0).\n\
                  shared=<BOOL>          True to share one server connection among all clients.",
    magic_config_key: Some("uri"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("libnbd_dynamic_list", "1")],
};

#[derive(Debug, Clone)]
enum Addr {
    Unix(String),
    Tcp(String, u16),
}

struct NbdPlugin {
    addr: Addr,
    export: String,
    dynamic: bool,
    retry: u64,
    /// `shared=true`: the one connection, made when the first client comes.
    shared: Option<tokio::sync::OnceCell<Arc<Remote>>>,
    log: crate::log::Log,
}

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let fail = |m: String| StartError(format!("nbd: {m}"));
    let log = p.log();
    for unsupported in [
        "command",
        "arg",
        "socket-fd",
        "vsock",
        "tls-certificates",
        "tls-verify",
        "tls-username",
        "tls-psk",
    ] {
        if p.take(unsupported).is_some() {
            return Err(fail(format!(
                "{unsupported}= is not supported: this nbd plugin does not connect with TLS"
            )));
        }
    }
    match p.take("tls").as_deref() {
        None | Some("off") => {}
        Some(_) => {
            return Err(fail(
                "tls= is not supported: this nbd plugin does not connect with TLS (the server's own --tls works)"
                    .into(),
            ))
        }
    }
    let uri = p.take("uri");
    let socket = p.take("socket");
    let hostname = p.take("hostname");
    let port = p.take("port");
    let mut export = p.take("export");
    let dynamic = p.take_bool("dynamic-export")?.unwrap_or(false);
    let shared = p.take_bool("shared")?.unwrap_or(false);
    let retry: u64 = match p.take("retry") {
        None => 0,
        Some(v) => v.parse().map_err(|_| fail(format!("retry={v}: not a number of seconds")))?,
    };
    p.finish()?;
    let given =
        [uri.is_some(), socket.is_some(), hostname.is_some()].iter().filter(|&&b| b).count();
    if given != 1 {
        return Err(fail("exactly one of uri=, socket= or hostname= must be given".into()));
    }
    let addr = if let Some(u) = uri {
        match uri::parse(&u).map_err(|m| fail(format!("uri={u}: {m}")))? {
            uri::Target::Unix { socket, export: e } => {
                export.get_or_insert(e);
                Addr::Unix(socket)
            }
            uri::Target::Tcp { host, port, export: e } => {
                export.get_or_insert(e);
                Addr::Tcp(host, port)
            }
        }
    } else if let Some(s) = socket {
        if port.is_some() {
            return Err(fail("port= goes with hostname=, not socket=".into()));
        }
        Addr::Unix(s)
    } else {
        let port = match port {
            None => 10809,
            Some(v) => v.parse().map_err(|_| fail(format!("port={v}: not a port number")))?,
        };
        Addr::Tcp(hostname.expect("checked"), port)
    };
    if dynamic && shared {
        return Err(fail("dynamic-export and shared cannot be used together".into()));
    }
    let plugin = NbdPlugin {
        log,
        addr,
        export: export.unwrap_or_default(),
        dynamic,
        retry,
        shared: shared.then(tokio::sync::OnceCell::new),
    };
    Ok(Arc::new(plugin))
}

/// One connection to the server.
struct Remote {
    conn: Connection,
}

impl NbdPlugin {
    async fn connect(&self, export: &str) -> Result<Remote> {
        let mut tries = 0;
        loop {
            match self.try_connect(export).await {
                Ok(r) => return Ok(r),
                Err(e) if tries < self.retry => {
                    self.log.debug(&format!("nbd: {e}; retrying"));
                    tries += 1;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A fresh connection to the server, before any handshake.
    async fn dial(&self) -> std::io::Result<Box<dyn Stream>> {
        Ok(match &self.addr {
            Addr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
            Addr::Tcp(host, port) => {
                Box::new(tokio::net::TcpStream::connect((host.as_str(), *port)).await?)
            }
        })
    }

    async fn try_connect(&self, export: &str) -> Result<Remote> {
        let io = |what: &str, e: std::io::Error| {
            Error::new(Errno::Io, format!("nbd: {what}: {}", crate::error::io_message(&e)))
        };
        let (r, w, neg): (
            Box<dyn tokio::io::AsyncRead + Send + Unpin>,
            Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
            _,
        ) = match &self.addr {
            Addr::Unix(path) => {
                let mut s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| io(&format!("connect to {path}"), e))?;
                let neg = negotiate(&mut s, export, true).await.map_err(|e| io("handshake", e))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w), neg)
            }
            Addr::Tcp(host, port) => {
                let mut s = tokio::net::TcpStream::connect((host.as_str(), *port))
                    .await
                    .map_err(|e| io(&format!("connect to {host}:{port}"), e))?;
                let _ = s.set_nodelay(true);
                let neg = negotiate(&mut s, export, true).await.map_err(|e| io("handshake", e))?;
                let (r, w) = s.into_split();
                (Box::new(r), Box::new(w), neg)
            }
        };
        Ok(Remote { conn: Connection::new(r, w, neg) })
    }
}

/// A connection to the server, Unix or TCP.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

#[async_trait]
impl Plugin for NbdPlugin {
    /// With `dynamic-export=true`, the server's own list; otherwise just
    /// our export.
    async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        if !self.dynamic {
            return Ok(vec![ExportEntry {
                name: self.default_export(readonly, is_tls).await?,
                description: None,
            }]);
        }
        let list = async {
            let mut s = self.dial().await?;
            list_exports(&mut s).await
        };
        let list = list.await.map_err(|e| {
            Error::new(
                Errno::Io,
                format!("nbd: listing the server's exports: {}", crate::error::io_message(&e)),
            )
        })?;
        Ok(list
            .into_iter()
            .map(|(name, desc)| ExportEntry {
                name,
                description: (!desc.is_empty()).then_some(desc),
            })
            .collect())
    }

    /// With `dynamic-export=true`, the server's name for its default
    /// export if it says (else `""`); otherwise `export=`.
    async fn default_export(&self, _readonly: bool, _is_tls: bool) -> Result<String> {
        if !self.dynamic {
            return Ok(self.export.clone());
        }
        let name = async {
            let mut s = self.dial().await?;
            default_export_name(&mut s).await
        };
        Ok(name.await.ok().flatten().unwrap_or_default())
    }

    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (_readonly, export) = (args.readonly, args.export);
        if let Some(cell) = &self.shared {
            let r = cell
                .get_or_try_init(|| async { self.connect(&self.export).await.map(Arc::new) })
                .await?;
            return Ok(Arc::new(RemoteHandle { remote: r.clone(), owned: false }));
        }
        let name = if self.dynamic { export } else { &self.export };
        Ok(Arc::new(RemoteHandle { remote: Arc::new(self.connect(name).await?), owned: true }))
    }
}

/// A client's view of a server connection: its own (closed with the
/// client's), or the shared one.
struct RemoteHandle {
    remote: Arc<Remote>,
    owned: bool,
}

impl Drop for RemoteHandle {
    fn drop(&mut self) {
        if !self.owned {
            return;
        }
        let r = self.remote.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move { r.conn.disconnect().await });
        }
    }
}

impl RemoteHandle {
    fn remote(&self) -> &Remote {
        &self.remote
    }

    /// A trim, zero or cache of any 64-bit length, as requests the remote
    /// server's length field can carry (32 bits unless extended headers
    /// were negotiated).
    async fn in_pieces(&self, cmd: Command, flags: u16, count: u64, offset: u64) -> Result<()> {
        let conn = &self.remote().conn;
        let mut done = 0;
        while done < count || (count == 0 && done == 0) {
            let n = (count - done).min(conn.max_len());
            conn.request(cmd, flags, offset + done, n, &[]).await?;
            done += n;
            if n == 0 {
                break;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Handle for RemoteHandle {
    fn never_blocks(&self) -> bool {
        true
    }

    async fn size(&self) -> Result<u64> {
        Ok(self.remote().conn.export.size)
    }

    async fn caps(&self) -> Result<Caps> {
        let export = &self.remote().conn.export;
        Ok(caps_of(export.eflags, export.base_allocation.is_some()))
    }

    async fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(self.remote().conn.export.block_size.map(|(a, b, c)| BlockSize::new(a, b, c)))
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let a = self.remote().conn.request(Command::Read, 0, offset, buf.len() as u64, &[]).await?;
        buf.copy_from_slice(&a.data);
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, f: Flags) -> Result<()> {
        let fl = cmd_flags(&f, true) & CMD_FLAG_FUA;
        self.remote().conn.request(Command::Write, fl, offset, buf.len() as u64, buf).await?;
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        self.remote().conn.request(Command::Flush, 0, 0, 0, &[]).await?;
        Ok(())
    }

    async fn trim(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        let fl = cmd_flags(&f, true) & CMD_FLAG_FUA;
        self.in_pieces(Command::Trim, fl, count, offset).await
    }

    async fn zero(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        let fl = cmd_flags(&f, true) & (CMD_FLAG_FUA | CMD_FLAG_NO_HOLE | CMD_FLAG_FAST_ZERO);
        self.in_pieces(Command::WriteZeroes, fl, count, offset).await
    }

    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        let fl = cmd_flags(&f, false) & CMD_FLAG_REQ_ONE;
        // Block status may answer less than asked anyway.
        let conn = &self.remote().conn;
        let a =
            conn.request(Command::BlockStatus, fl, offset, count.min(conn.max_len()), &[]).await?;
        let mut pos = offset;
        for (len, flags) in a.extents {
            if len == 0 || !ext.add(pos, len, extent_flags_of(flags)) {
                break;
            }
            pos += len;
        }
        Ok(())
    }

    async fn cache(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        self.in_pieces(Command::Cache, 0, count, offset).await
    }
}
