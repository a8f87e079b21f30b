//! One file per filter, plus the chain itself (order, parameters).

/// The filter chain: order, parameter routing, help.
mod chain;
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
/// The ip filter.
mod ip;
/// The limit filter.
mod limit;
/// extentlist, ddrescue, retry and pause.
mod more;
/// The noparallel filter.
mod noparallel;
/// The rate filter.
mod rate;
/// The retry-request filter.
mod retry_request;
/// nofilter, swab, checkwrite, readahead and multi-conn.
mod small;
/// The tar filter.
mod tar;
