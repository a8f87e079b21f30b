//! `multi-conn`: control NBD_FLAG_CAN_MULTI_CONN, emulating it where the
//! plugin lacks it.
//!
//! - `multi-conn-mode=auto` (default): `disable` when the server
//!   serializes connections, else `plugin` if the layer below advertises
//!   multi-conn, else `emulate`.
//! - `emulate`: advertise it, and make a flush on any connection (also the
//!   flush that emulates FUA: native FUA below is advertised as emulated,
//!   so a FUA write becomes a write then such a flush) flush every
//!   connection of its group. A connection fails to open when the layer
//!   below cannot flush.
//! - `plugin`: whatever the layer below says. `unsafe`: advertise it
//!   without emulation. `disable`: never advertise it.
//! - `multi-conn-track-dirty=conn` (default, also `connection`): skip
//!   flushing a connection that is clean (no write, trim or zero of its
//!   own since its last flush, and no read of its own since a write on
//!   any connection). `fast`: track one flag for the whole group, so a
//!   flush anywhere cleans every connection. `off`: always flush.
//! - `multi-conn-exportname=false` (default; also spelled
//!   `multi-conn-export-name`): one group for the whole server; `true`:
//!   one group per export name.
//!
//! Example: `nbdkit --filter=multi-conn sh ./disk.sh multi-conn-mode=emulate`

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    Caps, Errno, Error, Filter, FilterHandle, Flags, Fua, Guard, Handle, Next, OpenArgs, Result,
    ThreadModel,
};
use crate::error::StartError;
use crate::params::Params;

/// The `multi-conn` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "multi-conn",
    description: "enable, emulate or disable multi-conn",
    config_help: "multi-conn-mode=<MODE>          'auto' (default), 'emulate', 'plugin',\n\
                  \x20                               'disable', or 'unsafe'.\n\
                  multi-conn-track-dirty=<LEVEL>  'conn' (default), 'fast', or 'off'.\n\
                  multi-conn-exportname=<BOOL>    true to limit emulation by export name.",
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

#[derive(Clone, Copy, PartialEq)]
enum Track {
    Conn,
    Fast,
    Off,
}

/// A connection's dirty bits.
const WRITE: u8 = 1;
const READ: u8 = 2;

struct MultiConn {
    mode: Mode,
    track: Track,
    by_name: bool,
    /// Set by `get_ready` when the server serializes connections.
    serialized: AtomicBool,
    /// The live groups, by export name ("" for all when not `by_name`).
    groups: Mutex<HashMap<String, Weak<Group>>>,
}

/// Connections whose flushes are shared.
#[derive(Default)]
struct Group {
    members: Mutex<Vec<Arc<Member>>>,
    /// A write happened somewhere in the group since the last flush.
    dirty: AtomicBool,
    /// Emulated flushes run one at a time.
    flushing: tokio::sync::Mutex<()>,
}

struct Member {
    next: Arc<Guard>,
    dirty: AtomicU8,
}

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let mode = match p.take("multi-conn-mode").as_deref() {
        None | Some("auto") => Mode::Auto,
        Some("emulate") => Mode::Emulate,
        Some("plugin") => Mode::Plugin,
        Some("unsafe") => Mode::Unsafe,
        Some("disable") => Mode::Disable,
        Some(v) => return Err(StartError(format!("multi-conn: unknown multi-conn mode '{v}'"))),
    };
    let track = match p.take("multi-conn-track-dirty").as_deref() {
        None | Some("conn") | Some("connection") => Track::Conn,
        Some("fast") => Track::Fast,
        Some("off") => Track::Off,
        Some(v) => {
            return Err(StartError(format!(
                "multi-conn: unknown multi-conn track-dirty setting '{v}'"
            )))
        }
    };
    let mut by_name = false;
    for key in ["multi-conn-exportname", "multi-conn-export-name"] {
        if let Some(b) = p.take_bool(key)? {
            by_name = b;
        }
    }
    Ok(Arc::new(MultiConn {
        mode,
        track,
        by_name,
        serialized: AtomicBool::new(false),
        groups: Mutex::default(),
    }))
}

#[async_trait]
impl Filter for MultiConn {
    fn get_ready(&self, thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        self.serialized.store(thread_model == ThreadModel::SerializeConnections, Ordering::Relaxed);
        Ok(())
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { export, .. } = *args;
        let next = next.open(args).await?;
        let caps = next.caps().await?;
        let mode = match self.mode {
            Mode::Auto if self.serialized.load(Ordering::Relaxed) => Mode::Disable,
            Mode::Auto if caps.multi_conn => Mode::Plugin,
            Mode::Auto => Mode::Emulate,
            m => m,
        };
        if mode == Mode::Emulate && !caps.flush {
            return Err(Error::new(Errno::Inval, "emulating multi-conn requires working flush"));
        }
        let member = Arc::new(Member { next, dirty: AtomicU8::new(0) });
        let group = {
            let key = if self.by_name { export } else { "" };
            let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
            groups.retain(|_, g| g.strong_count() > 0);
            match groups.get(key).and_then(Weak::upgrade) {
                Some(g) => g,
                None => {
                    let g = Arc::new(Group::default());
                    groups.insert(key.to_owned(), Arc::downgrade(&g));
                    g
                }
            }
        };
        group.members.lock().unwrap_or_else(|e| e.into_inner()).push(member.clone());
        Ok(Arc::new(Conn {
            member,
            group,
            mode,
            track: self.track,
            below_multi_conn: caps.multi_conn,
        }))
    }
}

struct Conn {
    member: Arc<Member>,
    group: Arc<Group>,
    /// `auto` resolved for this connection.
    mode: Mode,
    track: Track,
    below_multi_conn: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        let mut members = self.group.members.lock().unwrap_or_else(|e| e.into_inner());
        members.retain(|m| !Arc::ptr_eq(m, &self.member));
    }
}

impl Conn {
    /// Note what a request may leave in a cache below. No lock: a client
    /// must wait for a flush's reply before relying on it, so a race here
    /// is the client's own.
    fn mark_dirty(&self, write: bool) {
        match self.track {
            Track::Conn => {
                self.member.dirty.fetch_or(if write { WRITE } else { READ }, Ordering::Relaxed);
                if write {
                    self.group.dirty.store(true, Ordering::Relaxed);
                }
            }
            Track::Fast if write => self.group.dirty.store(true, Ordering::Relaxed),
            Track::Fast | Track::Off => {}
        }
    }

    /// Before a write: whether FUA is to be done here by a group flush
    /// (returning the flags to pass down).
    fn before_write(&self, flags: Flags) -> (Flags, bool) {
        if !flags.fua {
            self.mark_dirty(true);
            (flags, false)
        } else if self.mode == Mode::Emulate {
            self.mark_dirty(true);
            (Flags { fua: false, ..flags }, true)
        } else {
            (flags, false)
        }
    }

    async fn after_write(&self, flush: bool) -> Result<()> {
        if flush {
            self.flush_group().await
        } else {
            Ok(())
        }
    }

    /// Flush every connection in the group that may hold something.
    async fn flush_group(&self) -> Result<()> {
        let _one = self.group.flushing.lock().await;
        let members: Vec<Arc<Member>> =
            self.group.members.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let group_dirty = self.group.dirty.load(Ordering::Relaxed);
        for m in members {
            let dirty = m.dirty.load(Ordering::Relaxed);
            let needed = self.track == Track::Off
                || (group_dirty && (self.track == Track::Fast || dirty & READ != 0))
                || dirty & WRITE != 0;
            if needed {
                m.next.flush(Flags::default()).await?;
                m.dirty.store(0, Ordering::Relaxed);
            }
        }
        self.group.dirty.store(false, Ordering::Relaxed);
        Ok(())
    }
}

impl FilterHandle for Conn {
    fn next(&self) -> &Guard {
        &self.member.next
    }

    async fn caps(&self) -> Result<Caps> {
        let mut c = self.member.next.caps().await?;
        match self.mode {
            Mode::Emulate | Mode::Unsafe => c.multi_conn = true,
            Mode::Disable => c.multi_conn = false,
            _ => {}
        }
        // FUA through one connection must reach every connection's
        // cache: have the layer above turn it into a flush, which is ours.
        if self.mode == Mode::Emulate && c.fua == Fua::Native {
            c.fua = Fua::Emulate;
        }
        Ok(c)
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, flags: Flags) -> Result<()> {
        self.mark_dirty(false);
        self.member.next.pread(buf, offset, flags).await
    }

    async fn cache(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        self.mark_dirty(false);
        self.member.next.cache(count, offset, flags).await
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.before_write(flags);
        self.member.next.pwrite(buf, offset, flags).await?;
        self.after_write(flush).await
    }

    async fn trim(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.before_write(flags);
        self.member.next.trim(count, offset, flags).await?;
        self.after_write(flush).await
    }

    async fn zero(&self, count: u64, offset: u64, flags: Flags) -> Result<()> {
        let (flags, flush) = self.before_write(flags);
        self.member.next.zero(count, offset, flags).await?;
        self.after_write(flush).await
    }

    async fn flush(&self, flags: Flags) -> Result<()> {
        if self.mode == Mode::Emulate {
            return self.flush_group().await;
        }
        // Nothing written anywhere since the last flush: skip it.
        if self.track != Track::Off && !self.group.dirty.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.member.next.flush(flags).await?;
        match self.track {
            Track::Conn if self.below_multi_conn => {
                let _one = self.group.flushing.lock().await;
                for m in self.group.members.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    m.dirty.store(0, Ordering::Relaxed);
                }
                self.group.dirty.store(false, Ordering::Relaxed);
            }
            Track::Conn => self.member.dirty.store(0, Ordering::Relaxed),
            Track::Fast => self.group.dirty.store(false, Ordering::Relaxed),
            Track::Off => {}
        }
        Ok(())
    }
}
