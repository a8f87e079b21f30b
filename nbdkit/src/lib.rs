//! nbdkit in Rust: a Network Block Device server, command-line compatible
//! with C nbdkit.
//!
//! A request's path is a straight line through these modules:
//! [`server`] reads bytes -> [`protocol::request`] decodes and validates ->
//! [`backend::Guard`] -> each filter's [`backend::FilterHandle`] (with a
//! guard below each) -> the plugin's [`backend::Handle`] ->
//! [`protocol::reply`] -> socket.
//!
//! - [`cli`]: argv -> [`cli::Config`].
//! - [`lifecycle`]: start-up, background mode, `--run`, `--exit-with-parent`,
//!   signals.
//! - [`server`]: listeners and one task per connection.
//! - [`protocol`]: the NBD wire and nothing else.
//! - [`backend`]: the [`Plugin`], [`Handle`] and [`Filter`] contract and
//!   the guard.
//! - [`plugins`]: one module per plugin.
//! - [`params`], [`size`], [`uri`], [`error`], [`log`]: small shared pieces.

#![warn(missing_docs)]

pub mod backend;
pub mod cli;
pub mod error;
pub mod filters;
#[doc(hidden)]
pub mod fuzz;
pub mod lifecycle;
pub mod log;
pub mod params;
pub mod plugins;
pub mod prng;
pub mod protocol;
pub mod server;
pub mod size;
pub mod sparse;
pub mod uri;

/// The attribute `Plugin`, `Handle` and `Filter` implementations need.
pub use async_trait::async_trait;
pub use backend::{Caps, Filter, FilterHandle, Flags, Handle, Op, OpenArgs, Plugin};
pub use error::{Errno, Error, StartError};

/// The whole `nbdkit` command: parse `args` (without the program name),
/// run, and return the exit status; errors are printed on stderr as one
/// line. What the binary's `main` does, and what a program that embeds the
/// server (nbdkit-test re-executing a test binary) calls.
pub fn main_with_args(args: &[String]) -> u8 {
    match cli::parse(args).and_then(lifecycle::run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("nbdkit: error: {e}");
            1
        }
    }
}
