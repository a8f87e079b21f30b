//! One file per filter, plus the chain itself (order, parameters).

/// The filter chain: order, parameter routing, help.
mod chain;
/// Helpers shared by the filter tests.
mod common;
/// The delay filter.
mod delay;
/// The error filter.
mod error;
/// The fua filter.
mod fua;
/// The log filter.
mod log;
/// The nocache filter.
mod nocache;
/// The noextents filter.
mod noextents;
/// The nozero filter.
mod nozero;
/// The offset filter.
mod offset;
/// The protect filter.
mod protect;
/// The stats filter.
mod stats;
/// The truncate filter.
mod truncate;
