//! The NBD wire protocol and nothing else (doc/proto.md of the NBD project).
//!
//! - [`consts`]: every magic number, flag and type, with the spec's names.
//! - [`handshake`]: oldstyle and fixed-newstyle negotiation.
//! - [`request`]: decoding and validating transmission requests.
//! - [`reply`]: encoding simple and structured replies.
//! - [`errno`]: the one mapping from [`crate::Errno`] to wire values.
//! - [`client`]: the client side, for the nbd plugin's connection to
//!   another server: negotiation, and replies matched to requests.
//!
//! Nothing here knows about plugins: exports are described to the handshake
//! through [`handshake::Exports`].

pub mod client;
pub mod consts;
pub mod errno;
pub mod flags;
pub mod handshake;
pub mod reply;
pub mod request;
