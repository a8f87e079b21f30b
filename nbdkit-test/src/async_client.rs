//! An async NBD client for tokio tests: a thin layer over the server
//! crate's own client side (`nbdkit::protocol::client`, which the nbd
//! plugin uses), so the workspace has one implementation of the protocol.
//!
//! Unlike the blocking [`Client`](crate::Client), many requests may be in
//! flight at once: every method takes `&self`, and replies are matched to
//! requests by cookie.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use nbdkit_test::{AsyncClient, MemoryDisk, RustDisk};
//!
//! let disk = RustDisk::new(MemoryDisk::new(1 << 20))?;
//! let nbd = AsyncClient::connect_unix(disk.socket(), "").await?;
//! // Two writes in flight at once.
//! let (a, b) = tokio::join!(nbd.write(0, b"first"), nbd.write(4096, b"second"));
//! a?;
//! b?;
//! assert_eq!(nbd.read(4096, 6).await?, b"second");
//! nbd.disconnect().await;
//! # Ok(()) }
//! ```

use std::io;
use std::path::Path;

use nbdkit::protocol::client::{negotiate, Connection, Export};
use nbdkit::protocol::consts::*;
use nbdkit::protocol::request::Command;

/// A connection to an export, in the transmission phase.
pub struct AsyncClient {
    conn: Connection,
}

impl std::fmt::Debug for AsyncClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient").field("size", &self.conn.export.size).finish()
    }
}

/// A server's error reply as an `io::Error` with its errno, as the
/// blocking client reports it.
fn os_error(e: nbdkit::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno.to_os())
}

impl AsyncClient {
    /// Connect to a Unix socket and negotiate `export` (extended headers,
    /// else structured replies, and `base:allocation`, when the server has
    /// them).
    pub async fn connect_unix(path: impl AsRef<Path>, export: &str) -> io::Result<AsyncClient> {
        let mut s = tokio::net::UnixStream::connect(path).await?;
        let e = negotiate(&mut s, export, true).await?;
        let (r, w) = s.into_split();
        Ok(AsyncClient { conn: Connection::new(Box::new(r), Box::new(w), e) })
    }

    /// Connect over TCP and negotiate `export`.
    pub async fn connect_tcp(
        addr: impl tokio::net::ToSocketAddrs, export: &str,
    ) -> io::Result<AsyncClient> {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let e = negotiate(&mut s, export, true).await?;
        let (r, w) = s.into_split();
        Ok(AsyncClient { conn: Connection::new(Box::new(r), Box::new(w), e) })
    }

    /// What was negotiated: size, transmission flags, block size.
    pub fn export(&self) -> &Export {
        &self.conn.export
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.conn.export.size
    }

    /// Whether the server said the export is read-only.
    pub fn read_only(&self) -> bool {
        self.conn.export.eflags & FLAG_READ_ONLY != 0
    }

    /// Read `len` bytes at `offset` (one request: at most 64 MiB).
    pub async fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let a = self.conn.request(Command::Read, 0, offset, len as u64, &[]).await;
        Ok(a.map_err(os_error)?.data)
    }

    /// Write `data` at `offset` (one request: at most 64 MiB).
    pub async fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.send(Command::Write, 0, offset, data.len() as u64, data).await
    }

    /// Write with FUA: on stable storage when this returns.
    pub async fn write_fua(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.send(Command::Write, CMD_FLAG_FUA, offset, data.len() as u64, data).await
    }

    /// Flush earlier writes to stable storage.
    pub async fn flush(&self) -> io::Result<()> {
        self.send(Command::Flush, 0, 0, 0, &[]).await
    }

    /// Discard `len` bytes at `offset`, in one request: more than 4 GiB
    /// needs extended headers.
    pub async fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.send(Command::Trim, 0, offset, len, &[]).await
    }

    /// Make `len` bytes at `offset` read as zeroes, in one request: more
    /// than 4 GiB needs extended headers.
    pub async fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        self.send(Command::WriteZeroes, 0, offset, len, &[]).await
    }

    /// `base:allocation` from `offset`: (length, `STATE_*` flags) pairs, as
    /// the server sent them. Unsupported unless the server agreed to the
    /// context.
    pub async fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u32)>> {
        if self.conn.export.base_allocation.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "the server did not agree to the base:allocation meta context",
            ));
        }
        let a = self.conn.request(Command::BlockStatus, 0, offset, len, &[]).await;
        Ok(a.map_err(os_error)?.extents)
    }

    /// Say goodbye (`NBD_CMD_DISC`) and close the connection.
    pub async fn disconnect(self) {
        self.conn.disconnect().await;
    }

    async fn send(
        &self, cmd: Command, flags: u16, offset: u64, len: u64, data: &[u8],
    ) -> io::Result<()> {
        self.conn.request(cmd, flags, offset, len, data).await.map_err(os_error)?;
        Ok(())
    }
}
