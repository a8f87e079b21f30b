//! Entry points for fuzzing: each takes arbitrary bytes and must neither
//! panic, hang, nor allocate without bound, whatever they are. cargo-fuzz
//! drives them (`nbdkit/fuzz/`), and the suite replays the committed corpus
//! through the same functions on the stable toolchain (`tests/fuzz.rs`), so
//! the corpus never rots. Not part of the API.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::backend::{Caps, Client, Flags, Handle, OpenArgs, Peer, Plugin};
use crate::protocol::handshake::Settings;
use crate::server::{Server, ServerConfig, Shutdown};

/// How long one input may take before it counts as a hang (the fuzzer's
/// own timeout is longer).
const LIMIT: Duration = Duration::from_secs(5);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime")
}

/// A disk whose bytes are the input, read-only (zeroes past its end are
/// refused by the guard).
struct Bytes(Arc<Vec<u8>>);

#[async_trait::async_trait]
impl Plugin for Bytes {
    async fn open(&self, _: &OpenArgs<'_>) -> crate::backend::Result<Arc<dyn Handle>> {
        Ok(Arc::new(Bytes(self.0.clone())))
    }
}

#[async_trait::async_trait]
impl Handle for Bytes {
    async fn size(&self) -> crate::backend::Result<u64> {
        Ok(self.0.len() as u64)
    }
    async fn caps(&self) -> crate::backend::Result<Caps> {
        Ok(Caps::READ_ONLY)
    }
    async fn pread(&self, buf: &mut [u8], offset: u64, _: Flags) -> crate::backend::Result<()> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
}

/// A client's whole byte stream (handshake, options, requests) against a
/// server on a 1 MiB memory disk; the first byte picks the settings
/// (oldstyle, no structured replies, no meta contexts).
pub fn handshake(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let stream = stream.to_vec();
    runtime().block_on(async move {
        let memory = crate::plugins::lookup("memory").expect("the memory plugin");
        let params = crate::params::Params::new("memory", vec![("size".into(), "1M".into())]);
        let plugin = (memory.build)(params).expect("a memory disk");
        let mut cfg = ServerConfig::new(plugin, "memory");
        cfg.settings = Settings {
            oldstyle: mode & 1 != 0,
            no_sr: mode & 2 != 0,
            no_meta_contexts: mode & 4 != 0,
            ..Settings::default()
        };
        cfg.log.send_to(crate::log::LogTo::Null);
        let srv = Arc::new(Server::new(cfg));
        let (client, server_end) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(server_end);
        let (_stop, shutdown) = Shutdown::new();
        let peer = Client { peer: Peer::Unknown, tls: false };
        let served =
            tokio::spawn(crate::server::serve_one(Box::new(r), Box::new(w), peer, srv, shutdown));
        let (mut cr, mut cw) = tokio::io::split(client);
        // Replies are read and dropped, so the server never blocks on them.
        tokio::spawn(async move {
            let mut sink = vec![0u8; 1 << 16];
            while matches!(cr.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        let _ = cw.write_all(&stream).await;
        let _ = cw.shutdown().await;
        let finished = tokio::time::timeout(LIMIT, served).await;
        assert!(finished.is_ok(), "the server did not finish with the client gone");
    });
}

/// A request header (padded to 28 bytes, or to 32 for the extended style),
/// decoded and validated against several negotiated states.
pub fn request(data: &[u8]) {
    use crate::protocol::request::{decode, header_size, validate, Negotiated};
    let size = data.get(28..36).map_or(1 << 20, |s| u64::from_be_bytes(s.try_into().unwrap()));
    for extended in [false, true] {
        let mut b = [0u8; crate::protocol::consts::EXTENDED_REQUEST_SIZE];
        let b = &mut b[..header_size(extended)];
        let n = data.len().min(b.len());
        b[..n].copy_from_slice(&data[..n]);
        let Ok(req) = decode(b, extended) else {
            continue;
        };
        let _ = req.payload(extended);
        for (eflags, structured, base_allocation) in
            [(0xffff, true, Some(1)), (0, false, None), (0x0003, true, None)]
        {
            let structured = structured || extended;
            let neg = Negotiated { size, eflags, structured, base_allocation, extended };
            let _ = validate(&req, &neg);
        }
    }
}

/// The data plugin's language: parse, then evaluate. Expressions that read
/// files or run scripts (`<`) are skipped.
pub fn data_plugin(data: &[u8]) {
    if data.contains(&b'<') {
        return;
    }
    if let Ok(src) = std::str::from_utf8(data) {
        crate::plugins::data::fuzz_expression(src);
    }
}

/// A size string (`1M`, `512`, `1.5G` …).
pub fn size(data: &[u8]) {
    let _ = crate::size::parse_size(&String::from_utf8_lossy(data));
}

/// The tar plugin and filter's header parser, looking for a member in a
/// tar file made of the input.
pub fn tar(data: &[u8]) {
    let mut read = |off: u64, buf: &mut [u8]| -> Result<(), String> {
        let o = usize::try_from(off).map_err(|_| "past the end".to_string())?;
        let src = data.get(o..o + buf.len()).ok_or("past the end")?;
        buf.copy_from_slice(src);
        Ok(())
    };
    let _ = crate::plugins::tar::find_member_in(&mut read, "disk.img", None);
}

/// The partition filter's MBR and GPT parsing, on a disk made of the
/// input; the first byte picks the partition number (1 to 8).
pub fn partition(data: &[u8]) {
    let Some((&n, disk)) = data.split_first() else {
        return;
    };
    let disk = Arc::new(disk.to_vec());
    runtime().block_on(async move {
        let info = crate::filters::lookup("partition").expect("the partition filter");
        let mut params = crate::params::Params::new(
            "bytes",
            vec![("partition".into(), (u32::from(n % 8) + 1).to_string())],
        );
        let filter = (info.build)(&mut params).expect("a partition filter");
        let log = crate::log::Log::new(false);
        log.send_to(crate::log::LogTo::Null);
        let layer = crate::backend::Layer::named(filter, Arc::new(Bytes(disk)), "bytes", &log);
        let client = Client { peer: Peer::Unknown, tls: false };
        let args = OpenArgs::new(true, "", &client);
        let opened = tokio::time::timeout(LIMIT, async {
            if let Ok(h) = layer.open(&args).await {
                let _ = h.size().await;
            }
        });
        assert!(opened.await.is_ok(), "the partition filter hung");
    });
}

/// Everything the sh plugin parses in a script's output: export lists,
/// sizes, error messages, none/emulate/native answers, extents.
pub fn sh_output(data: &[u8]) {
    crate::plugins::sh::fuzz_outputs(data);
}

/// The NBD URI parser (the nbd plugin's `uri=`).
pub fn uri(data: &[u8]) {
    let _ = crate::uri::parse(&String::from_utf8_lossy(data));
}

/// The nbd plugin's client side facing a hostile server: the input is
/// everything the server sends (greeting, option replies, replies). The
/// client negotiates, then sends a read, a block status and a write.
pub fn nbd_replies(data: &[u8]) {
    use crate::protocol::client::{negotiate, Connection};
    use crate::protocol::request::Command;
    let data = data.to_vec();
    runtime().block_on(async move {
        let (server, client) = tokio::io::duplex(1 << 16);
        // The hostile server: says its piece, reading what the client
        // sends meanwhile, then hangs up.
        tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(server);
            let drain = async move {
                let mut sink = vec![0u8; 1 << 16];
                while matches!(r.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let say = async move {
                let _ = w.write_all(&data).await;
                let _ = w.shutdown().await;
            };
            tokio::select! { _ = drain => {}, _ = say => {} }
        });
        let run = async move {
            let mut s = client;
            let Ok(export) = negotiate(&mut s, "", true).await else {
                return;
            };
            let (r, w) = tokio::io::split(s);
            let conn = Connection::new(Box::new(r), Box::new(w), export);
            let _ = conn.request(Command::Read, 0, 0, 4096, &[]).await;
            let _ = conn.request(Command::BlockStatus, 0, 0, 1 << 20, &[]).await;
            let _ = conn.request(Command::Write, 0, 0, 3, b"abc").await;
            conn.disconnect().await;
        };
        // The server hangs up after its input, so every wait ends.
        assert!(tokio::time::timeout(LIMIT, run).await.is_ok(), "the client hung");
    });
}
