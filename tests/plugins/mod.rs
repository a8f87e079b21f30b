//! One file per plugin (memory, null and pattern are exercised throughout
//! the protocol and interop tests).

/// The data plugin, compared with C nbdkit.
mod data;
/// The file plugin.
mod file;
/// The full plugin, compared with C nbdkit.
mod full;
/// The info plugin, every mode compared with C nbdkit.
mod info;
/// The memory plugin's extents.
mod memory;
/// The random plugin, compared with C nbdkit.
mod random;
/// The sparse-random plugin, bytes and extents compared with C nbdkit.
mod sparse_random;
/// The zero plugin, compared with C nbdkit.
mod zero;
