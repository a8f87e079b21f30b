//! `log`: record every client transaction in a file, or hand each one to a
//! shell script.
//!
//! - `logfile=FILE`: the file the log is written to (truncated at start-up
//!   unless `logappend=true`).
//! - `logappend=BOOL`: append to FILE instead (default false).
//! - `logscript=SCRIPT`: run SCRIPT (with `sh -c`) for each log entry, with
//!   shell variables `act`, `type` (ENTER, LEAVE or PRINT), `connection`
//!   and `id` where they apply, and each of the entry's `key=value` pairs.
//!   Its exit status is ignored.
//!
//! Either, both or neither may be given (neither: the filter does nothing).
//!
//! Each line starts with a UTC timestamp (`YYYY-MM-DD HH:MM:SS.UUUUUU`),
//! then `connection=N` for calls on a connection, then the action. Calls
//! that can fail take two lines, matched by `id=N` (numbered per
//! connection): `Read id=1 offset=0x0 count=0x200 ...` on the way down and
//! `...Read id=1 return=0` (or `return=-1 error=EIO`) on the way back.
//! Actions: Ready, Fork, Preconnect, ListExports, Connect, Read, Write, Zero, Trim,
//! Extents, Cache, Flush, Disconnect. Strings are shell-quoted.
//!
//! Example: `nbdkit --filter=log file disk.img logfile=disk.log`

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::FilterInfo;
use crate::backend::{
    BlockSize, Cache, Client, ExportEntry, Extents, Filter, FilterHandle, Flags, Fua, Guard,
    Handle, Next, Op, OpKind, OpenArgs, Result, ThreadModel, Zero,
};
use crate::error::StartError;
use crate::params::Params;

/// The `log` filter's entry in the filter table.
pub static INFO: FilterInfo = FilterInfo {
    name: "log",
    description: "log all transactions to a file or script",
    config_help: "logfile=<FILE>               The file to place the log in.\n\
                  logappend=<BOOL>             True to append to the log (default false).\n\
                  logscript=<SCRIPT>           Script to run for logging.",
    build,
};

/// Where entries go, shared by every connection.
struct Logger {
    path: Option<std::path::PathBuf>,
    append: bool,
    file: Mutex<Option<std::fs::File>>,
    script: Option<String>,
    connections: AtomicU64,
    list_ids: AtomicU64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Enter,
    Leave,
    Print,
}

struct LogFilter(Arc<Logger>);

fn build(p: &mut Params) -> Result<Arc<dyn Filter>, StartError> {
    let path = p.take("logfile").map(Into::into);
    let append = p.take_bool("logappend")?.unwrap_or(false);
    let script = p.take("logscript");
    Ok(Arc::new(LogFilter(Arc::new(Logger {
        path,
        append,
        file: Mutex::new(None),
        script,
        connections: AtomicU64::new(0),
        list_ids: AtomicU64::new(0),
    }))))
}

/// Quote for the shell, as the log format wants: plain if every byte is
/// safe, else in double quotes with `$`, `` ` ``, `\` and `"` escaped.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || ".-_=,:/".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        if matches!(c, '$' | '`' | '\\' | '"') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `YYYY-MM-DD HH:MM:SS.UUUUUU` in UTC.
pub fn timestamp(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Days since the epoch to a civil date (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_micros()
    )
}

impl Logger {
    fn entry(&self, conn: Option<u64>, id: u64, act: &str, kind: Kind, args: &str) {
        if self.path.is_some() {
            let mut line = timestamp(std::time::SystemTime::now());
            if let Some(c) = conn {
                let _ = write!(line, " connection={c}");
            }
            line.push(' ');
            if kind == Kind::Leave {
                line.push_str("...");
            }
            line.push_str(act);
            if id != 0 {
                let _ = write!(line, " id={id}");
            }
            if !args.is_empty() {
                line.push(' ');
                line.push_str(args);
            }
            if kind == Kind::Enter {
                line.push_str(" ...");
            }
            line.push('\n');
            let mut f = self.file.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(f) = f.as_mut() {
                let _ = f.write_all(line.as_bytes());
            }
        }
        if let Some(script) = &self.script {
            let mut s = format!("act={act}\n");
            if let Some(c) = conn {
                let _ = writeln!(s, "connection={c}");
            }
            let kind = match kind {
                Kind::Enter => "ENTER",
                Kind::Leave => "LEAVE",
                Kind::Print => "PRINT",
            };
            let _ = writeln!(s, "type={kind}");
            if id != 0 {
                let _ = writeln!(s, "id={id}");
            }
            s.push_str(args);
            s.push('\n');
            s.push_str(script);
            let _ = std::process::Command::new("/bin/sh").arg("-c").arg(&s).status();
        }
    }
}

/// `return=0`, or `return=-1 error=EIO`.
fn outcome<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "return=0".into(),
        Err(e) => format!("return=-1 error={}", e.errno.name()),
    }
}

#[async_trait]
impl Filter for LogFilter {
    fn get_ready(&self, thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        let l = &self.0;
        if let Some(p) = &l.path {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .append(l.append)
                .truncate(!l.append)
                .open(p)
                .map_err(|e| StartError(format!("log: open: {}: {e}", p.display())))?;
            *l.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        }
        let n = match thread_model {
            ThreadModel::SerializeConnections => 0,
            ThreadModel::SerializeAllRequests => 1,
            ThreadModel::SerializeRequests => 2,
            ThreadModel::Parallel => 3,
        };
        l.entry(None, 0, "Ready", Kind::Print, &format!("thread_model={n}"));
        Ok(())
    }

    fn after_fork(&self) {
        self.0.entry(None, 0, "Fork", Kind::Print, "");
    }

    async fn preconnect(&self, next: &Next, readonly: bool, client: &Client) -> Result<()> {
        let l = &self.0;
        let id = l.list_ids.fetch_add(1, Ordering::Relaxed) + 1;
        l.entry(None, id, "Preconnect", Kind::Enter, &format!("readonly={}", u8::from(readonly)));
        let r = next.preconnect(readonly, client).await;
        l.entry(None, id, "Preconnect", Kind::Leave, &outcome(&r));
        r
    }

    async fn list_exports(
        &self, next: &Next, readonly: bool, is_tls: bool,
    ) -> Result<Vec<ExportEntry>> {
        let l = &self.0;
        // As C: the number the client's Preconnect took.
        let id = l.list_ids.load(Ordering::Relaxed).max(1);
        let act = "ListExports";
        l.entry(None, id, act, Kind::Enter, &format!("readonly={} tls=0", u8::from(readonly)));
        let r = next.list_exports(readonly, is_tls).await;
        let args = match &r {
            Ok(list) => {
                let names: Vec<String> = list.iter().map(|e| shell_quote(&e.name)).collect();
                format!("exports=({}) return=0", names.join(" "))
            }
            Err(_) => outcome(&r),
        };
        l.entry(None, id, act, Kind::Leave, &args);
        r
    }

    async fn open(&self, next: &Next, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let OpenArgs { export, .. } = *args;
        let next = next.open(args).await?;
        let size = next.size().await?;
        let c = next.caps().await?;
        let b = next.block_size().await?.unwrap_or(BlockSize::new(0, 0, 0));
        let (min, pref, max) = (b.minimum, b.preferred, b.maximum);
        let l = self.0.clone();
        let conn = l.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let b = |x: bool| u8::from(x);
        let zero = match c.zero {
            Zero::None => 0,
            Zero::Emulate => 1,
            Zero::Native => 2,
        };
        let fua = match c.fua {
            Fua::None => 0,
            Fua::Emulate => 1,
            Fua::Native => 2,
        };
        let cache = match c.cache {
            Cache::None => 0,
            Cache::Emulate => 1,
            Cache::Native => 2,
        };
        l.entry(
            Some(conn),
            0,
            "Connect",
            Kind::Print,
            &format!(
                "export={} tls=0 size={size:#x} minsize={min:#x} prefsize={pref:#x} \
                 maxsize={max:#x} write={} flush={} rotational={} trim={} zero={zero} \
                 fua={fua} extents={} cache={cache} fast_zero={}",
                shell_quote(export),
                b(c.write),
                b(c.flush),
                b(c.rotational),
                b(c.trim),
                b(c.extents),
                b(c.fast_zero),
            ),
        );
        Ok(Arc::new(LogHandle { next, log: l, conn, ids: AtomicU64::new(0) }))
    }
}

struct LogHandle {
    next: Arc<Guard>,
    log: Arc<Logger>,
    conn: u64,
    ids: AtomicU64,
}

impl LogHandle {
    fn enter(&self, act: &str, args: &str) -> u64 {
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        self.log.entry(Some(self.conn), id, act, Kind::Enter, args);
        id
    }

    fn leave<T>(&self, id: u64, act: &str, r: Result<T>) -> Result<T> {
        self.log.entry(Some(self.conn), id, act, Kind::Leave, &outcome(&r));
        r
    }
}

impl Drop for LogHandle {
    fn drop(&mut self) {
        let n = self.ids.load(Ordering::Relaxed);
        self.log.entry(Some(self.conn), 0, "Disconnect", Kind::Print, &format!("transactions={n}"));
    }
}

impl FilterHandle for LogHandle {
    fn next(&self) -> &Guard {
        &self.next
    }
    fn never_blocks(&self) -> bool {
        // Writing the log (or running the script) blocks.
        false
    }
    async fn op(&self, op: Op<'_>) -> Result<()> {
        let (offset, count, f) = (op.offset(), op.count(), op.flags());
        let (act, args) = match op.kind() {
            OpKind::Read => ("Read", format!("offset={offset:#x} count={count:#x}")),
            OpKind::Write => {
                ("Write", format!("offset={offset:#x} count={count:#x} fua={}", u8::from(f.fua)))
            }
            OpKind::Trim => {
                ("Trim", format!("offset={offset:#x} count={count:#x} fua={}", u8::from(f.fua)))
            }
            OpKind::Zero => (
                "Zero",
                format!(
                    "offset={offset:#x} count={count:#x} trim={} fua={} fast={}",
                    u8::from(f.may_trim),
                    u8::from(f.fua),
                    u8::from(f.fast_zero)
                ),
            ),
            OpKind::Cache => ("Cache", format!("offset={offset:#x} count={count:#x}")),
            OpKind::Extents => (
                "Extents",
                format!("offset={offset:#x} count={count:#x} req_one={}", u8::from(f.req_one)),
            ),
            _ => ("Flush", String::new()),
        };
        let id = self.enter(act, &args);
        match op {
            Op::Extents { count, offset, flags, ext } => {
                self.extents_logged(id, count, offset, flags, ext).await
            }
            op => {
                let r = self.next.op(op).await;
                self.leave(id, act, r)
            }
        }
    }
}

impl LogHandle {
    /// Extents, logged with the list the layer below gave.
    async fn extents_logged(
        &self, id: u64, count: u64, offset: u64, flags: Flags, ext: &mut Extents,
    ) -> Result<()> {
        let mut got = Extents::with_limit(offset, ext.end().saturating_sub(offset), ext.limit());
        let r = self.next.extents(count, offset, flags, &mut got).await;
        if r.is_err() {
            return self.leave(id, "Extents", r);
        }
        let mut list = String::new();
        for e in got.list() {
            if !list.is_empty() {
                list.push(' ');
            }
            let mut kind = Vec::new();
            if e.flags.is_hole() {
                kind.push("hole");
            }
            if e.flags.is_zero() {
                kind.push("zero");
            }
            let _ = write!(list, "{:#x} {:#x} \"{}\"", e.offset, e.length, kind.join(","));
            ext.add(e.offset, e.length, e.flags);
        }
        self.log.entry(
            Some(self.conn),
            id,
            "Extents",
            Kind::Leave,
            &format!("extents=({list}) return=0"),
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote(""), "\"\"");
        assert_eq!(shell_quote("disk-1.img"), "disk-1.img");
        assert_eq!(shell_quote("a b$\"`\\"), "\"a b\\$\\\"\\`\\\\\"");
    }

    #[test]
    fn timestamps_are_utc() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(951_782_400_000_042);
        assert_eq!(timestamp(t), "2000-02-29 00:00:00.000042");
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(timestamp(t), "2023-11-14 22:13:20.000000");
    }
}
