//! The integration suite of the `nbdkit` binary: one test binary, one
//! module per thing tested.

/// Shared helpers: running the binary, a raw NBD client, external tools.
mod util;

/// `--run`: variables, exit statuses, cleanup.
mod captive;
/// Command-line parsing, informational options, bad input.
mod cli;
/// FLUSH and FUA reach stable storage before their replies (strace).
mod durability;
/// `--exit-with-parent`.
mod exit_with_parent;
/// Filters: the chain, and each filter.
mod filters;
/// The fuzzing corpus, replayed on the stable toolchain.
mod fuzz;
/// Real clients: qemu-img, nbdinfo, nbdcopy, nbdsh; compared with C nbdkit.
mod interop;
/// Background mode, pidfiles, `--print-uri`, signals, `-s`.
mod lifecycle;
/// Plugins, one file each.
mod plugins;
/// The wire protocol through a raw client, hostile clients included.
mod protocol;
/// TLS: certificates and PSK with real clients, STARTTLS on the wire.
mod tls;
