//! One file per plugin (memory, null and pattern are exercised throughout
//! the protocol and interop tests).

/// C plugins (.so): ours with every callback, Debian's, python.
mod cabi;
/// The data plugin, compared with C nbdkit.
mod data;
/// The example1 disk.
mod example1;
/// The example2 plugin and -D debug flags.
mod example2;
/// The file plugin.
mod file;
/// The full plugin, compared with C nbdkit.
mod full;
/// The info plugin, every mode compared with C nbdkit.
mod info;
/// The memory plugin's extents.
mod memory;
/// The nbd proxy plugin.
mod nbd;
/// The partitioning plugin, byte for byte against C nbdkit.
mod partitioning;
/// The random plugin, compared with C nbdkit.
mod random;
/// The sh and eval script plugins.
mod sh;
/// The sparse-random plugin, bytes and extents compared with C nbdkit.
mod sparse_random;
/// The split plugin.
mod split;
/// The tar plugin, against tar(1) and C's tar filter.
pub(crate) mod tar;
/// The tmpdisk and ondemand plugins.
mod tmpdisk;
/// The zero plugin, compared with C nbdkit.
mod zero;
