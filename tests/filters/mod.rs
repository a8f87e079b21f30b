//! One file per filter, plus the chain itself (order, parameters).

/// The blocksize filter.
mod blocksize;
/// The blocksize-policy filter.
mod blocksize_policy;
/// The cache filter.
mod cache;
/// The filter chain: order, parameter routing, help.
mod chain;
/// Helpers shared by the filter tests.
mod common;
/// gzip and xz.
mod compressed;
/// The cow filter.
mod cow;
/// The delay filter.
mod delay;
/// The error filter.
mod error;
/// The exitlast filter.
mod exitlast;
/// The exitwhen filter.
mod exitwhen;
/// The exportname filter.
mod exportname;
/// The fua filter.
mod fua;
/// The ip filter.
mod ip;
/// The limit filter.
mod limit;
/// The log filter.
mod log;
/// extentlist, ddrescue, retry and pause.
mod more;
/// The multi-conn filter.
mod multi_conn;
/// The nocache filter.
mod nocache;
/// The noextents filter.
mod noextents;
/// The noparallel filter.
mod noparallel;
/// The nozero filter.
mod nozero;
/// The offset filter.
mod offset;
/// The partition filter.
mod partition;
/// The protect filter.
mod protect;
/// The rate filter.
mod rate;
/// The readahead filter.
mod readahead;
/// The retry filter.
mod retry;
/// The retry-request filter.
mod retry_request;
/// nofilter, swab, checkwrite, readahead and multi-conn.
mod small;
/// The stats filter.
mod stats;
/// The swab filter.
mod swab;
/// The tar filter.
mod tar;
/// The truncate filter.
mod truncate;
