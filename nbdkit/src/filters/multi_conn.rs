//! `multi-conn`: control NBD_FLAG_CAN_MULTI_CONN, emulating it where the
//! plugin lacks it.
//!
//! - `multi-conn-mode=auto` (default): `plugin` if the layer below
//!   advertises multi-conn, else `emulate`. (Our thread models never
//!   serialize connections under a filter, so `auto` never means
//!   `disable` here unless the server runs `serialize_connections`.)
//! - `emulate`: advertise it, and make a flush on any connection flush
//!   every connection to that export, which is what the flag promises.
//! - `plugin`: whatever the layer below says. `unsafe`: advertise it
//!   without emulation. `disable`: never advertise it.
//!
//! Example: `nbdkit --filter=multi-conn sh ./disk.sh multi-conn-mode=emulate`

use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{Caps, Client, Filter, FilterHandle, Flags, Handle, Plugin, Result};
use crate::error::StartError;
use crate::params::Params;

pub static INFO: FilterInfo = FilterInfo {
    name: "multi-conn",
    description: "enable, emulate or disable multi-conn",
    config_help: "multi-conn-mode=<MODE>       auto, emulate, plugin, unsafe or disable.",
    build,
};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Auto,
    Emulate,
    Plugin,
    Unsafe,
    Disable,
}

struct MultiConn {
    mode: Mode,
    /// Every open connection, for emulated flushes.
    open: Arc<Mutex<Vec<Weak<dyn Handle>>>>,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mode = match p.take("multi-conn-mode").as_deref() {
        None | Some("auto") => Mode::Auto,
        Some("emulate") => Mode::Emulate,
        Some("plugin") => Mode::Plugin,
        Some("unsafe") => Mode::Unsafe,
        Some("disable") => Mode::Disable,
        Some(v) => {
            return Err(StartError(format!(
                "multi-conn: multi-conn-mode={v}: expected auto, emulate, plugin, unsafe or disable"
            )))
        }
    };
    Ok(Arc::new(MultiConn {
        mode,
        open: Arc::default(),
    }))
}

#[async_trait]
impl Filter for MultiConn {
    async fn open(
        &self,
        next: &dyn Plugin,
        readonly: bool,
        export: &str,
        client: &Client,
    ) -> Result<Arc<dyn Handle>> {
        let next = next.open_for(readonly, export, client).await?;
        let mode = match self.mode {
            Mode::Auto if next.caps().await?.multi_conn => Mode::Plugin,
            Mode::Auto => Mode::Emulate,
            m => m,
        };
        if mode == Mode::Emulate {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            open.retain(|w| w.strong_count() > 0);
            open.push(Arc::downgrade(&next));
        }
        Ok(Arc::new(Conn {
            next,
            mode,
            all: self.open.clone(),
        }))
    }
}

struct Conn {
    next: Arc<dyn Handle>,
    mode: Mode,
    all: Arc<Mutex<Vec<Weak<dyn Handle>>>>,
}

#[async_trait]
impl FilterHandle for Conn {
    fn next(&self) -> &Arc<dyn Handle> {
        &self.next
    }
    async fn caps(&self) -> Result<Caps> {
        let mut c = self.next.caps().await?;
        match self.mode {
            Mode::Emulate | Mode::Unsafe => c.multi_conn = true,
            Mode::Disable => c.multi_conn = false,
            _ => {}
        }
        if self.mode == Mode::Emulate && c.write {
            // A flush must reach every connection.
            c.flush = true;
        }
        Ok(c)
    }
    async fn flush(&self, flags: Flags) -> Result<()> {
        if self.mode != Mode::Emulate {
            return self.next.flush(flags).await;
        }
        let all: Vec<Arc<dyn Handle>> = self
            .all
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for h in all {
            if h.caps().await?.flush {
                h.flush(flags).await?;
            }
        }
        Ok(())
    }
}
