//! `error`: inject errors, at random or on demand, to test how a client
//! copes.
//!
//! - `error=ERRNO` (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, ESHUTDOWN; default
//!   EIO): the error injected.
//! - `error-rate=R`: the chance of an error per request, `0`..`1` or
//!   `0%`..`100%` (default 0: the filter does nothing until this is set).
//! - `error-file=PATH`: inject only while PATH exists.
//! - `error-pread`, `error-pwrite`, `error-trim`, `error-zero`,
//!   `error-extents`, `error-cache` (each with `-rate` and `-file`): the
//!   same, for one kind of request only; they override the general
//!   settings for it. Extents errors need a layer below with extents.
//! - `error-flush`, `error-flush-rate`, `error-flush-file`: our extension;
//!   as in C, the general settings never inject into flush.
//!
//! Example: `nbdkit -U - --filter=error memory 1M error-pread-rate=100%`

use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Errno, Error, Filter, FilterHandle, Guard, Handle, Next, Op, OpKind, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;
use crate::prng::Xoshiro;

/// The `error` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "error",
    description: "inject errors for testing clients",
    config_help:
        "error=EPERM|EIO|ENOMEM|EINVAL|ENOSPC|ESHUTDOWN  The error to inject (default EIO).\n\
                  error-rate=0%..100%|0..1     Rate of errors (default 0).\n\
                  error-file=TRIGGER           Inject only while this file exists.\n\
                  error-<METHOD>[-rate|-file]  The same for one method: pread, pwrite,\n\
                  \x20                            trim, zero, extents, cache, flush.",
    build,
};

/// The request kinds errors can be aimed at, by their names (`OpKind`'s).
const METHODS: [&str; 7] = ["pread", "pwrite", "trim", "zero", "extents", "cache", "flush"];

#[derive(Clone, Debug, Default)]
struct Setting {
    errno: Option<Errno>,
    rate: Option<f64>,
    file: Option<std::path::PathBuf>,
}

struct ErrorFilter(Arc<Injector>);

/// What decides on errors, shared by every connection's handle.
struct Injector {
    /// Indexed as [`METHODS`].
    settings: [Setting; 7],
    rng: Mutex<Xoshiro>,
}

fn parse_rate(key: &str, v: &str) -> Result<f64, StartError> {
    let bad =
        || StartError(format!("error: {key}={v}: expected a rate from 0 to 1, or 0% to 100%"));
    let r = match v.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map_err(|_| bad())? / 100.0,
        None => v.trim().parse::<f64>().map_err(|_| bad())?,
    };
    if !(0.0..=1.0).contains(&r) {
        return Err(bad());
    }
    Ok(r)
}

fn take_setting(p: &mut Params, prefix: &str) -> Result<Setting, StartError> {
    let errno = match p.take(prefix) {
        None => None,
        Some(v) => Some(match Errno::from_name(&v) {
            Some(e)
                if matches!(
                    e,
                    Errno::Perm
                        | Errno::Io
                        | Errno::NoMem
                        | Errno::Inval
                        | Errno::NoSpc
                        | Errno::Shutdown
                ) =>
            {
                e
            }
            _ => {
                return Err(StartError(format!(
                    "error: {prefix}={v}: expected EPERM, EIO, ENOMEM, EINVAL, ENOSPC or ESHUTDOWN"
                )))
            }
        }),
    };
    let key = format!("{prefix}-rate");
    let rate = p.take(&key).map(|v| parse_rate(&key, &v)).transpose()?;
    let file = p.take(&format!("{prefix}-file")).map(Into::into);
    Ok(Setting { errno, rate, file })
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let general = take_setting(p, "error")?;
    let mut settings: [Setting; 7] = Default::default();
    for (i, m) in METHODS.iter().enumerate() {
        let own = take_setting(p, &format!("error-{m}"))?;
        if *m == "flush" {
            // C's filter has no flush errors: error= and error-rate= never
            // reach flush; only our error-flush* settings do.
            settings[i] = own;
            continue;
        }
        settings[i] = Setting {
            errno: own.errno.or(general.errno),
            rate: own.rate.or(general.rate),
            file: own.file.or_else(|| general.file.clone()),
        };
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ u64::from(std::process::id());
    Ok(Arc::new(ErrorFilter(Arc::new(Injector { settings, rng: Mutex::new(Xoshiro::new(seed)) }))))
}

impl Injector {
    /// Should this request fail, and how?
    fn inject(&self, kind: OpKind) -> Result<()> {
        let Some(method) = METHODS.iter().position(|m| *m == kind.name()) else {
            return Ok(());
        };
        let s = &self.settings[method];
        let rate = s.rate.unwrap_or(0.0);
        if rate <= 0.0 {
            return Ok(());
        }
        if let Some(f) = &s.file {
            if !f.exists() {
                return Ok(());
            }
        }
        if rate < 1.0 {
            let x = self.rng.lock().unwrap_or_else(|e| e.into_inner()).next();
            if (x >> 11) as f64 / (1u64 << 53) as f64 >= rate {
                return Ok(());
            }
        }
        let errno = s.errno.unwrap_or(Errno::Io);
        Err(Error::new(
            errno,
            format!("error: injecting {} error into {}", errno.name(), METHODS[method]),
        ))
    }
}

#[async_trait]
impl Filter for ErrorFilter {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        Ok(Arc::new(ErrorHandle { next, filter: self.0.clone() }))
    }
}

struct ErrorHandle {
    next: Arc<Guard>,
    filter: Arc<Injector>,
}

impl FilterHandle for ErrorHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    async fn op(&self, op: Op<'_>) -> Result<()> {
        self.filter.inject(op.kind())?;
        self.next.op(op).await
    }
}
