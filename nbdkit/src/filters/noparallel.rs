//! `noparallel`: serve with less parallelism than the plugin allows.
//!
//! - `serialize=requests` (default): one request at a time per client;
//!   `all-requests`: one at a time in the whole server; `connections`: one
//!   client at a time (and no multi-conn).
//!
//! Example: `nbdkit --filter=noparallel file disk.img serialize=connections`

use std::sync::Arc;

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Filter, FilterHandle, Guard, Handle, Next, OpenArgs, Result, ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;

/// The `noparallel` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "noparallel",
    description: "serialize requests or connections",
    config_help:
        "serialize=requests|all-requests|connections  What to serialize (default requests).",
    build,
};

struct NoParallel(ThreadModel);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let model = match p.take("serialize").as_deref() {
        None | Some("requests") | Some("request") => ThreadModel::SerializeRequests,
        Some("all-requests") | Some("all_requests") => ThreadModel::SerializeAllRequests,
        Some("connections") | Some("connection") => ThreadModel::SerializeConnections,
        Some(v) => {
            return Err(StartError(format!(
                "noparallel: serialize={v}: expected requests, all-requests or connections"
            )))
        }
    };
    Ok(Arc::new(NoParallel(model)))
}

#[async_trait]
impl Filter for NoParallel {
    fn thread_model(&self) -> ThreadModel {
        self.0
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let next = next.open(args).await?;
        if self.0 == ThreadModel::SerializeConnections {
            return Ok(Arc::new(NoMultiConn(next)));
        }
        Ok(next)
    }
}

/// One client at a time: multi-conn would be a lie.
struct NoMultiConn(Arc<Guard>);

impl FilterHandle for NoMultiConn {
    fn next(&self) -> &Guard {
        &self.0
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.0.caps().await?;
        c.multi_conn = false;
        Ok(c)
    }
}
