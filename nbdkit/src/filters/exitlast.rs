//! `exitlast`: exit when the last client disconnects.
//!
//! No parameters. nbdkit serves until it has had at least one client and
//! the number connected falls back to zero, then exits as on SIGTERM.
//!
//! Example: `nbdkit --filter=exitlast -U /tmp/sock memory 1G`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    shutdown::ShutdownRequest, Filter, FilterHandle, Guard, Handle, Next, OpenArgs, Result,
};
use crate::error::StartError;
use crate::params::Params;

/// The `exitlast` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "exitlast",
    description: "exit when the last client disconnects",
    config_help: "(no parameters)",
    build,
};

struct ExitLast(Arc<AtomicUsize>, ShutdownRequest, crate::log::Log);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    Ok(Arc::new(ExitLast(Arc::default(), p.shutdown(), p.log())))
}

#[async_trait]
impl Filter for ExitLast {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Arc::new(Counted {
            next,
            count: self.0.clone(),
            shutdown: self.1.clone(),
            log: self.2.clone(),
        }))
    }
}

/// A connection, counted while it lasts.
pub(crate) struct Counted {
    next: Arc<Guard>,
    count: Arc<AtomicUsize>,
    shutdown: ShutdownRequest,
    log: crate::log::Log,
}

impl FilterHandle for Counted {
    fn next(&self) -> &Guard {
        &self.next
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.log.debug("exitlast: the last client has gone: shutting down");
            self.shutdown.request();
        }
    }
}
