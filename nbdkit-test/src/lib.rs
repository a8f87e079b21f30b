//! `nbdkit-test`: throwaway NBD disks for `#[test]`s, served by nbdkit.
//!
//! Add the crate as a dev-dependency and start a disk in one line:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use nbdkit_test::CaptiveDisk;
//!
//! let disk = CaptiveDisk::new(["memory", "size=1M"])?;
//! // Hand disk.uri(), disk.socket() or disk.port() to the code under test…
//! assert!(disk.uri().starts_with("nbd+unix://?socket="));
//! // …and check what it did with the crate's small blocking client.
//! let mut nbd = disk.connect()?;
//! assert_eq!(nbd.size(), 1 << 20);
//! assert_eq!(nbd.read(0, 512)?, vec![0; 512]);
//! # Ok(()) }
//! ```
//!
//! Everything else is set on a [`Builder`]: parameters, filters
//! (`.filter("delay").arg("delay-read=1")`), read-only, export name, TCP instead of a Unix socket, environment, start and stop timeouts
//! and the binary to run.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let disk = nbdkit_test::CaptiveDisk::builder("pattern")
//!     .arg("size=64K")
//!     .tcp()
//!     .start()?;
//! let port = disk.port().unwrap();
//! assert_eq!(disk.uri(), format!("nbd://127.0.0.1:{port}"));
//! // The pattern plugin stores each 8-byte offset, big-endian.
//! assert_eq!(disk.connect()?.read(8, 8)?, 8u64.to_be_bytes());
//! # Ok(()) }
//! ```
//!
//! # What the guard promises
//!
//! * **Ready means ready.** [`Builder::start`] returns once the server
//!   accepts connections. It waits on a real event, never a sleep: the URI
//!   that `--print-uri` writes to a pipe (or, for nbdkit older than 1.34, the
//!   pidfile written to a pipe), together with the child's exit and a
//!   deadline. If the server fails, the [`Error`] says why and carries the
//!   command line and the server's stderr.
//! * **Nothing leaks on drop.** Dropping a [`CaptiveDisk`] sends SIGTERM,
//!   waits a few seconds at most, then sends SIGKILL; the child is reaped and
//!   the socket and its directory are gone when `drop` returns.
//! * **Nothing leaks on a crash.** Each server runs with
//!   `--exit-with-parent` and a private socket (`-U -`, which the server
//!   itself removes), and is forked with `PR_SET_PDEATHSIG(SIGTERM)` armed
//!   before exec. If the test process dies without running its drops (an
//!   abort, `std::process::exit`, SIGKILL), every server it started exits and
//!   cleans up after itself.
//! * **Shared disks work.** Servers are forked from one thread that lives as
//!   long as the process, so a disk made by a `static` or an rstest `#[once]`
//!   fixture survives the test thread that created it. Such values are never
//!   dropped; their cleanup is the crash path above, at process exit.
//! * **Output never blocks the server.** After the URI line, anything the
//!   server writes to stdout is copied into its log by a small thread.
//! * **The test's output stays clean.** The server's stderr goes to an
//!   unlinked temporary file, never to the test's own stderr (which would
//!   hang libtest and trip nextest's leak check). Read it with
//!   [`CaptiveDisk::log`]; its tail appears in errors, in `Debug`, and on
//!   stderr when a guard is dropped during a panic.
//!
//! # Which nbdkit runs
//!
//! Nothing needs to be installed. First match wins: [`Builder::binary`];
//! the `NBDKIT_TEST_BIN` environment variable; else the server compiled
//! into the test executable itself, through this crate's dependency on the
//! `nbdkit` crate. The test executable is re-executed with the nbdkit
//! command line, and a hook that runs when it loads (before libtest's
//! `main`) serves instead of running tests. So the embedded server is a
//! process of its own, exactly as an installed nbdkit would be, and every
//! promise above holds for it. To test against C nbdkit instead,
//! `NBDKIT_TEST_BIN=/usr/bin/nbdkit cargo test`, or `.binary(path)`.
//!
//! C nbdkit works too, since the command line is the same. With C nbdkit
//! older than 1.34 (no `--print-uri`) the socket lives in a directory this
//! crate creates; the server still removes the socket when the test process
//! dies, but the empty directory stays behind.
//!
//! # Disks written in Rust
//!
//! [`RustDisk`] serves a [`Plugin`](nbdkit::Plugin) of the test's own
//! inside the test process, on a thread with its own runtime and a private
//! socket, so the plugin can share state with the test; nbdkit's filters
//! stack on it. [`MemoryDisk`] covers the common cases: a RAM disk, or one
//! made from a `Vec<u8>`, with hooks that see each read and write and may
//! fail it with an errno.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::{Arc, Mutex};
//! use nbdkit_test::{MemoryDisk, RustDisk};
//!
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! let disk = RustDisk::builder(MemoryDisk::new(1 << 20).on_write(move |offset, len| {
//!     log.lock().unwrap().push((offset, len));
//!     Ok(())
//! }))
//! .filter("blocksize").arg("minblock=4096")
//! .start()?;
//! disk.connect()?.write(100, b"x")?;
//! // The blocksize filter turned the 1-byte write into a read-modify-write
//! // of a whole block.
//! assert_eq!(*seen.lock().unwrap(), [(0, 4096)]);
//! # Ok(()) }
//! ```
//!
//! # With rstest
//!
//! A fixture per test, a disk shared by every test of the binary, and one
//! test run over several plugins:
//!
//! ```no_run
//! use nbdkit_test::CaptiveDisk;
//! use rstest::{fixture, rstest};
//!
//! #[fixture]
//! fn disk() -> CaptiveDisk {
//!     CaptiveDisk::new(["memory", "size=1M"]).expect("nbdkit starts")
//! }
//!
//! // Started once, by whichever test needs it first; never dropped, so it
//! // is stopped by the parent-death path when the test binary exits.
//! #[fixture]
//! #[once]
//! fn shared() -> CaptiveDisk {
//!     CaptiveDisk::new(["pattern", "size=1M"]).expect("nbdkit starts")
//! }
//!
//! #[rstest]
//! fn writes_stick(disk: CaptiveDisk) {
//!     let mut nbd = disk.connect().unwrap();
//!     nbd.write(0, b"abc").unwrap();
//!     assert_eq!(nbd.read(0, 3).unwrap(), b"abc");
//! }
//!
//! #[rstest]
//! fn pattern_is_shared(shared: &CaptiveDisk) {
//!     assert_eq!(shared.connect().unwrap().read(8, 8).unwrap(), 8u64.to_be_bytes());
//! }
//!
//! #[rstest]
//! fn every_plugin_has_a_size(#[values("memory", "null", "pattern")] plugin: &str) {
//!     let disk = CaptiveDisk::new([plugin, "size=4K"]).unwrap();
//!     assert_eq!(disk.connect().unwrap().size(), 4096);
//! }
//! # fn main() {}
//! ```
//!
//! These exact tests run in this crate's own test suite
//! (`tests/rstest_fixtures.rs`).

#![warn(missing_docs)]

mod async_client;
mod binary;
mod certs;
pub mod client;
mod disk;
mod embedded;
mod error;
mod rust_disk;
mod spawn;
mod uri;

pub use async_client::AsyncClient;
pub use binary::ENV_BIN;
pub use client::{Client, Options as ClientOptions};
pub use disk::{
    Builder, CaptiveDisk, TlsCredentials, DEFAULT_START_TIMEOUT, DEFAULT_STOP_TIMEOUT, PSK_USERNAME,
};
pub use error::{Error, ErrorKind};
/// The server crate: its [`Plugin`](nbdkit::Plugin) and
/// [`Handle`](nbdkit::Handle) traits are what a [`RustDisk`] serves.
pub use nbdkit;
pub use rust_disk::{Hook, MemoryDisk, RustDisk, RustDiskBuilder};
