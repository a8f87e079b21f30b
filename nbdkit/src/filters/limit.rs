//! `limit`: limit how many clients may be connected at once.
//!
//! - `limit=N` (default 1; 0 means no limit): a client beyond the limit is
//!   refused when it asks for an export.
//!
//! Example: `nbdkit --filter=limit -U - memory 1G limit=2`

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Errno, Error, Filter, FilterHandle, Guard, Handle, Next, OpenArgs, Result};
use crate::error::StartError;
use crate::params::Params;

/// The `limit` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "limit",
    description: "limit the number of clients connected at once",
    config_help: "limit=<N>                     Limit on clients (default 1, 0 = none).",
    build,
};

struct Limit {
    max: usize,
    count: Arc<AtomicUsize>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let max = match p.take("limit") {
        None => 1,
        Some(v) => v
            .parse()
            .map_err(|_| StartError(format!("limit: limit={v}: not a number of clients")))?,
    };
    Ok(Arc::new(Limit { max, count: Arc::default() }))
}

#[async_trait]
impl Filter for Limit {
    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let now = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        let slot = Slot(self.count.clone());
        if self.max > 0 && now > self.max {
            return Err(Error::new(
                Errno::Inval,
                format!("limit: too many clients, limit is {}", self.max),
            ));
        }
        let next = next.open(args).await?;
        Ok(Arc::new(Limited { next, _slot: slot }))
    }
}

/// One place under the limit, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Limited {
    next: Arc<Guard>,
    _slot: Slot,
}

impl FilterHandle for Limited {
    fn next(&self) -> &Guard {
        &self.next
    }
}
