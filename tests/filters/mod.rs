//! One file per filter, plus the chain itself (order, parameters).

/// The blocksize filter.
mod blocksize;
/// The blocksize-policy filter.
mod blocksize_policy;
/// The filter chain: order, parameter routing, help.
mod chain;
/// The cow filter.
mod cow;
/// The delay filter.
mod delay;
/// The error filter.
mod error;
/// The partition filter.
mod partition;
