//! Running a plugin's methods as programs: the part the `sh` and `eval`
//! plugins share (nbdkit-sh-plugin(3)).
//!
//! Each method call runs `PROGRAM METHOD ARGS...` with `$tmpdir` set, and
//! its exit status says how it went: 0 ok, 2 not implemented, 3 false,
//! anything else an error whose errno is the first word the program wrote
//! to stderr (`ENOSPC Out of space`; EIO if there is none). Calls made
//! while serving run through tokio's process support, so a slow script
//! never stalls other requests.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use crate::backend::{
    BlockSize, Cache, Caps, Errno, Error, ExportEntry, ExtentFlags, Extents, Flags, Fua, Handle,
    OpenArgs, Plugin, Result, Zero,
};
use crate::size::parse_size;

/// What runs a method.
pub enum Program {
    /// One executable for every method (`sh`). A script without `#!` (nor
    /// any other format the kernel runs) goes to `/bin/sh`, as execvp's
    /// fallback does for C nbdkit.
    File { path: PathBuf, via_shell: bool },
    /// One snippet file per method; methods without one run `missing`
    /// (`eval`).
    Snippets { dir: PathBuf, have: HashSet<String>, missing: PathBuf },
}

/// How a call ended.
#[derive(Debug)]
pub enum Outcome {
    /// Exit 0, with what was printed on stdout.
    Ok(Vec<u8>),
    /// Exit 2.
    Missing,
    /// Exit 3.
    False,
    /// Anything else.
    Failed(Error),
}

/// A program and the temporary directory its calls share.
pub struct Runner {
    pub program: Program,
    pub tmpdir: tempfile::TempDir,
    /// For messages: "sh" or "eval".
    pub name: &'static str,
    /// `close` calls still running, so that `unload` comes after them.
    pub closing: Closing,
}

/// A count of running `close` calls, and a way to wait for none.
#[derive(Default)]
pub struct Closing {
    count: std::sync::Mutex<usize>,
    idle: std::sync::Condvar,
}

impl Closing {
    fn start(&self) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    }

    fn end(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.idle.notify_all();
        }
    }

    /// Wait (a bounded time) until every close has finished.
    fn wait(&self, limit: std::time::Duration) {
        let n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let _ = self.idle.wait_timeout_while(n, limit, |n| *n > 0);
    }
}

impl Runner {
    /// Is `method` written out (eval), or might it be (sh)?
    pub fn defines(&self, method: &str) -> bool {
        match &self.program {
            Program::File { .. } => true,
            Program::Snippets { have, .. } => have.contains(method),
        }
    }

    fn argv(&self, method: &str, args: &[&str]) -> (PathBuf, Vec<OsString>) {
        let mut v: Vec<OsString> = Vec::new();
        let exe = match &self.program {
            Program::File { path, via_shell } if *via_shell => {
                v.push(path.into());
                PathBuf::from("/bin/sh")
            }
            Program::File { path, .. } => path.clone(),
            Program::Snippets { dir, have, missing } => {
                if have.contains(method) {
                    dir.join(method)
                } else {
                    missing.clone()
                }
            }
        };
        v.push(method.into());
        v.extend(args.iter().map(OsString::from));
        (exe, v)
    }

    /// A call at start-up (blocking is fine there).
    pub fn call_sync(&self, method: &str, args: &[&str]) -> Outcome {
        let (exe, argv) = self.argv(method, args);
        let out = std::process::Command::new(&exe)
            .args(&argv)
            .env("tmpdir", self.tmpdir.path())
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .output();
        match out {
            Ok(o) => self.outcome(method, o.status, o.stdout, &o.stderr),
            Err(e) => Outcome::Failed(Error::new(
                Errno::Io,
                format!("{}: {method}: cannot run {}: {e}", self.name, exe.display()),
            )),
        }
    }

    /// A call while serving; `input` goes to the program's stdin.
    pub async fn call(&self, method: &str, args: &[&str], input: Option<&[u8]>) -> Outcome {
        let (exe, argv) = self.argv(method, args);
        let spawned = tokio::process::Command::new(&exe)
            .args(&argv)
            .env("tmpdir", self.tmpdir.path())
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stderr(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Failed(Error::new(
                    Errno::Io,
                    format!("{}: {method}: cannot run {}: {e}", self.name, exe.display()),
                ))
            }
        };
        // Feed stdin while the output is collected, so neither side can
        // fill a pipe and wait for the other.
        let stdin = child.stdin.take();
        let feed = async move {
            if let (Some(mut w), Some(data)) = (stdin, input) {
                // A script that exits without reading gets EPIPE: fine.
                let _ = w.write_all(data).await;
            }
        };
        let (_, out) = tokio::join!(feed, child.wait_with_output());
        match out {
            Ok(o) => self.outcome(method, o.status, o.stdout, &o.stderr),
            Err(e) => {
                Outcome::Failed(Error::new(Errno::Io, format!("{}: {method}: {e}", self.name)))
            }
        }
    }

    fn outcome(
        &self, method: &str, status: std::process::ExitStatus, stdout: Vec<u8>, stderr: &[u8],
    ) -> Outcome {
        match status.code() {
            Some(0) => Outcome::Ok(stdout),
            Some(2) => Outcome::Missing,
            Some(3) => Outcome::False,
            code => {
                let text = String::from_utf8_lossy(stderr);
                let text = text.trim();
                let (errno, msg) = parse_error(text);
                let why = match code {
                    Some(c) => format!("exit status {c}"),
                    None => "killed by a signal".to_string(),
                };
                let msg = if text.is_empty() {
                    format!(
                        "{}: {method}: script exited with error ({why}), \
                         but did not print an error message on stderr",
                        self.name
                    )
                } else {
                    format!("{}: {method}: {msg}", self.name)
                };
                Outcome::Failed(Error::new(errno, msg))
            }
        }
    }
}

/// `ERRNO message` from a script's stderr, read as C nbdkit's sh plugin
/// reads it: an errno name from its short list, in any case, then
/// whitespace or the end; anything else (`EINVALID`, `ENOENT`) is EIO with
/// the whole text. Only the first line becomes the message.
fn parse_error(text: &str) -> (Errno, &str) {
    let mut errno = libc::EIO;
    let mut rest = text;
    for (name, n) in ERRNO_NAMES {
        let Some(head) = text.get(..name.len()) else {
            continue;
        };
        if !head.eq_ignore_ascii_case(name) {
            continue;
        }
        let tail = &text[name.len()..];
        if tail.is_empty() || tail.starts_with(|c: char| c.is_ascii_whitespace()) {
            errno = *n;
            rest = tail.trim_start();
        }
        break;
    }
    (Errno::from_os(errno), rest.lines().next().unwrap_or(""))
}

/// The errno names a script may start its error message with: those with
/// an NBD error of their own, and those the server treats specially. The
/// order matters where one name is a prefix of another (C tries ENOTSUP
/// before EOPNOTSUPP).
const ERRNO_NAMES: &[(&str, i32)] = &[
    ("EPERM", libc::EPERM),
    ("EIO", libc::EIO),
    ("ENOMEM", libc::ENOMEM),
    ("EINVAL", libc::EINVAL),
    ("ENOSPC", libc::ENOSPC),
    ("EOVERFLOW", libc::EOVERFLOW),
    ("ESHUTDOWN", libc::ESHUTDOWN),
    ("ENOTSUP", libc::ENOTSUP),
    ("EOPNOTSUPP", libc::EOPNOTSUPP),
    ("EROFS", libc::EROFS),
    ("EDQUOT", libc::EDQUOT),
    ("EFBIG", libc::EFBIG),
];

/// What a boolean `can_*` method answers when it is missing.
#[derive(Clone, Copy)]
pub enum Absent {
    /// False (sh: a script cannot say what it implements).
    False,
    /// True if this method is written out (eval).
    IfDefined(&'static str),
}

/// A plugin whose methods are programs.
pub struct ScriptPlugin {
    pub runner: Arc<Runner>,
    /// eval: missing `can_*` follow which callbacks exist.
    pub infer_caps: bool,
}

fn failed<T>(method: &str, o: Outcome, name: &str) -> Result<T> {
    Err(match o {
        Outcome::Failed(e) => e,
        Outcome::Missing => {
            Error::new(Errno::Io, format!("{name}: the {method} method is required"))
        }
        Outcome::False => Error::new(Errno::Io, format!("{name}: {method} exited with status 3")),
        // Callers handle success first; should one not, it is still no panic.
        Outcome::Ok(_) => Error::new(Errno::Io, format!("{name}: {method}: unexpected success")),
    })
}

fn text(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    s.strip_suffix('\n').unwrap_or(&s).to_string()
}

/// Export lists: `NAMES`, `INTERLEAVED` or `NAMES+DESCRIPTIONS` on the
/// first line, else every line is a name.
fn export_list(out: &[u8]) -> Vec<ExportEntry> {
    let s = String::from_utf8_lossy(out);
    // Only whole lines count (a last line without its newline is dropped),
    // and an empty description is none, as in C nbdkit.
    let (mode, body) = ["INTERLEAVED\n", "NAMES+DESCRIPTIONS\n", "NAMES\n"]
        .iter()
        .find_map(|m| s.strip_prefix(m).map(|rest| (*m, rest)))
        .unwrap_or(("", &s));
    let mut lines: Vec<&str> = body.split('\n').collect();
    lines.pop();
    let entry = |n: &str, d: Option<&str>| ExportEntry {
        name: n.to_string(),
        description: d.filter(|d| !d.is_empty()).map(str::to_string),
    };
    match mode {
        "INTERLEAVED\n" => lines.chunks(2).map(|c| entry(c[0], c.get(1).copied())).collect(),
        // The first half (rounded up) are names, the rest descriptions.
        "NAMES+DESCRIPTIONS\n" => {
            let names = lines.len().div_ceil(2);
            (0..names).map(|i| entry(lines[i], lines.get(names + i).copied())).collect()
        }
        _ => lines.iter().map(|n| entry(n, None)).collect(),
    }
}

/// `default_export`'s answer: the first line after the list's keyword, if
/// any (with or without its newline).
fn first_export(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    let body = ["INTERLEAVED\n", "NAMES+DESCRIPTIONS\n", "NAMES\n"]
        .iter()
        .find_map(|m| s.strip_prefix(m))
        .unwrap_or(&s);
    body.split('\n').next().unwrap_or("").to_string()
}

#[async_trait]
impl Plugin for ScriptPlugin {
    fn after_fork(&self) -> std::result::Result<(), crate::error::StartError> {
        match self.runner.call_sync("after_fork", &[]) {
            Outcome::Failed(e) => Err(crate::error::StartError(e.to_string())),
            _ => Ok(()),
        }
    }

    fn unload(&self) {
        // After every close, as in C.
        self.runner.closing.wait(std::time::Duration::from_secs(10));
        // Errors from unload are ignored, as in C.
        let _ = self.runner.call_sync("unload", &[]);
        // $tmpdir goes with nbdkit, as in C; the TempDir itself may never
        // be dropped (see Plugin::unload).
        let _ = std::fs::remove_dir_all(self.runner.tmpdir.path());
    }

    async fn preconnect(&self, readonly: bool, _client: &crate::backend::Client) -> Result<()> {
        let r = &self.runner;
        let ro = if readonly { "true" } else { "false" };
        match r.call("preconnect", &[ro], None).await {
            Outcome::Ok(_) | Outcome::Missing | Outcome::False => Ok(()),
            o => failed("preconnect", o, r.name),
        }
    }

    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let (readonly, export) = (args.readonly, args.export);
        let r = &self.runner;
        let ro = if readonly { "true" } else { "false" };
        let tls = if args.client.tls { "true" } else { "false" };
        let handle = match r.call("open", &[ro, export, tls], None).await {
            Outcome::Ok(out) => text(&out),
            Outcome::Missing => String::new(),
            o => return failed("open", o, r.name),
        };
        Ok(Arc::new(ScriptHandle {
            runner: r.clone(),
            handle,
            infer_caps: self.infer_caps,
            description: std::sync::OnceLock::new(),
        }))
    }

    async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        let r = &self.runner;
        let ro = if readonly { "true" } else { "false" };
        let tls = if is_tls { "true" } else { "false" };
        match r.call("list_exports", &[ro, tls], None).await {
            Outcome::Ok(out) => {
                let list = export_list(&out);
                // As C's nbdkit_add_export: names and descriptions must fit
                // in an NBD string (4096 bytes).
                let too_long = |s: &str| s.len() > 4096;
                if list
                    .iter()
                    .any(|e| too_long(&e.name) || e.description.as_deref().is_some_and(too_long))
                {
                    return Err(Error::new(
                        Errno::Inval,
                        format!("{}: list_exports: an export name or description is longer than 4096 bytes", r.name),
                    ));
                }
                Ok(list)
            }
            // Just the default export; if `default_export` fails, no
            // export at all (not an error), as in C nbdkit.
            Outcome::Missing => Ok(crate::backend::cached_default_export(
                self as *const Self as *const () as usize,
                self.default_export(readonly, is_tls),
            )
            .await
            .map(|name| ExportEntry { name, description: None })
            .into_iter()
            .collect()),
            o => failed("list_exports", o, r.name),
        }
    }

    async fn default_export(&self, readonly: bool, is_tls: bool) -> Result<String> {
        let r = &self.runner;
        let ro = if readonly { "true" } else { "false" };
        let tls = if is_tls { "true" } else { "false" };
        match r.call("default_export", &[ro, tls], None).await {
            Outcome::Ok(out) => Ok(first_export(&out)),
            Outcome::Missing => Ok(String::new()),
            o => failed("default_export", o, r.name),
        }
    }
}

/// One connection's handle: the string `open` printed.
pub struct ScriptHandle {
    runner: Arc<Runner>,
    handle: String,
    infer_caps: bool,
    /// `export_description`'s answer, fetched with the caps.
    description: std::sync::OnceLock<Option<String>>,
}

impl ScriptHandle {
    async fn boolean(&self, method: &str, absent: Absent) -> Result<bool> {
        match self.runner.call(method, &[&self.handle], None).await {
            Outcome::Ok(_) => Ok(true),
            Outcome::False => Ok(false),
            Outcome::Missing => Ok(match absent {
                Absent::IfDefined(cb) if self.infer_caps => self.runner.defines(cb),
                _ => false,
            }),
            o => failed(method, o, self.runner.name),
        }
    }

    /// `none`, `emulate` or `native` (0, 1, 2) from can_fua / can_cache;
    /// when missing, `absent` if eval has the callback `cb`, else none.
    async fn level(&self, method: &str, cb: &'static str, absent: u8) -> Result<u8> {
        Ok(match self.answer(method).await? {
            Some(n) => n,
            None if self.infer_caps && self.runner.defines(cb) => absent,
            None => 0,
        })
    }

    /// A none/emulate/native method's answer (0, 1, 2), or None when the
    /// script does not say.
    async fn answer(&self, method: &str) -> Result<Option<u8>> {
        match self.runner.call(method, &[&self.handle], None).await {
            Outcome::Ok(out) => match parse_level(&out) {
                Some(n) => Ok(Some(n)),
                None => Err(Error::new(
                    Errno::Io,
                    format!(
                        "{}: {method}: expected none, emulate or native, got {:?}",
                        self.runner.name,
                        text(&out).trim()
                    ),
                )),
            },
            Outcome::False | Outcome::Missing => Ok(None),
            o => failed(method, o, self.runner.name),
        }
    }

    async fn simple(&self, method: &str, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>> {
        let mut all = vec![self.handle.as_str()];
        all.extend_from_slice(args);
        match self.runner.call(method, &all, input).await {
            Outcome::Ok(out) => Ok(out),
            o => failed(method, o, self.runner.name),
        }
    }
}

fn flag_list(pairs: &[(bool, &str)]) -> String {
    pairs.iter().filter(|p| p.0).map(|p| p.1).collect::<Vec<_>>().join(",")
}

fn size_of(out: &[u8], what: &str, name: &str) -> Result<u64> {
    let t = text(out);
    parse_size(t.trim()).map_err(|e| Error::new(Errno::Io, format!("{name}: {what}: {e}")))
}

#[async_trait]
impl Handle for ScriptHandle {
    async fn size(&self) -> Result<u64> {
        let out = self.simple("get_size", &[], None).await?;
        size_of(&out, "get_size", self.runner.name)
    }

    async fn caps(&self) -> Result<Caps> {
        let write = self.boolean("can_write", Absent::IfDefined("pwrite")).await?;
        let flush = self.boolean("can_flush", Absent::IfDefined("flush")).await?;
        let trim = self.boolean("can_trim", Absent::IfDefined("trim")).await?;
        let zero = self.boolean("can_zero", Absent::IfDefined("zero")).await?;
        let extents = self.boolean("can_extents", Absent::IfDefined("extents")).await?;
        // Missing: a fast zero can be offered exactly when zeroing is
        // emulated, since then it fails at once (as C nbdkit decides).
        let fast_zero = match self.runner.call("can_fast_zero", &[&self.handle], None).await {
            Outcome::Ok(_) => true,
            Outcome::False => false,
            Outcome::Missing => !zero,
            o => return failed("can_fast_zero", o, self.runner.name),
        };
        let multi_conn = self.boolean("can_multi_conn", Absent::False).await?;
        let rotational = self.boolean("is_rotational", Absent::False).await?;
        // Fetched here, where waiting is fine, for `description()`.
        let description = match self.simple("export_description", &[], None).await {
            Ok(out) => Some(text(&out)),
            Err(_) => None,
        };
        let _ = self.description.set(description);
        // Without can_fua: emulated (a flush after the write) exactly when
        // the script can flush, for sh and eval alike (C asks can_flush).
        // eval without can_cache: native when it has cache.
        let fua = match self.answer("can_fua").await? {
            Some(0) => Fua::None,
            Some(1) => Fua::Emulate,
            Some(_) => Fua::Native,
            None if flush => Fua::Emulate,
            None => Fua::None,
        };
        let cache = match self.level("can_cache", "cache", 2).await? {
            0 => Cache::None,
            1 => Cache::Emulate,
            _ => Cache::Native,
        };
        Ok(Caps {
            write,
            flush,
            fua,
            trim,
            zero: if zero { Zero::Native } else { Zero::Emulate },
            fast_zero,
            cache,
            extents,
            multi_conn,
            rotational,
            ..Caps::READ_ONLY
        })
    }

    async fn block_size(&self) -> Result<Option<BlockSize>> {
        match self.runner.call("block_size", &[&self.handle], None).await {
            Outcome::Ok(out) => {
                let t = text(&out);
                let v: Vec<&str> = t.split_whitespace().collect();
                let bad = || {
                    Error::new(
                        Errno::Io,
                        format!(
                            "{}: block_size: expected three sizes, got {t:?}",
                            self.runner.name
                        ),
                    )
                };
                if v.len() != 3 {
                    return Err(bad());
                }
                let n = |s: &str| {
                    parse_size(s).ok().and_then(|n| u32::try_from(n).ok()).ok_or_else(bad)
                };
                Ok(Some(BlockSize::new(n(v[0])?, n(v[1])?, n(v[2])?)))
            }
            Outcome::Missing => Ok(None),
            o => failed("block_size", o, self.runner.name),
        }
    }

    fn description(&self) -> Option<String> {
        self.description.get().cloned().flatten()
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let (count, off) = (buf.len().to_string(), offset.to_string());
        let out = self.simple("pread", &[&count, &off], None).await?;
        if out.len() != buf.len() {
            return Err(Error::new(
                Errno::Io,
                format!(
                    "{}: pread: the script printed {} bytes, not {}",
                    self.runner.name,
                    out.len(),
                    buf.len()
                ),
            ));
        }
        buf.copy_from_slice(&out);
        Ok(())
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, f: Flags) -> Result<()> {
        let (count, off) = (buf.len().to_string(), offset.to_string());
        let flags = flag_list(&[(f.fua, "fua")]);
        self.simple("pwrite", &[&count, &off, &flags], Some(buf)).await?;
        Ok(())
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        self.simple("flush", &[], None).await?;
        Ok(())
    }

    async fn trim(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        let (c, o) = (count.to_string(), offset.to_string());
        let flags = flag_list(&[(f.fua, "fua")]);
        self.simple("trim", &[&c, &o, &flags], None).await?;
        Ok(())
    }

    async fn zero(&self, count: u64, offset: u64, f: Flags) -> Result<()> {
        let (c, o) = (count.to_string(), offset.to_string());
        let flags = flag_list(&[(f.fua, "fua"), (f.may_trim, "may_trim"), (f.fast_zero, "fast")]);
        self.simple("zero", &[&c, &o, &flags], None).await?;
        Ok(())
    }

    async fn extents(&self, count: u64, offset: u64, f: Flags, ext: &mut Extents) -> Result<()> {
        let (c, o) = (count.to_string(), offset.to_string());
        let flags = flag_list(&[(f.req_one, "req_one")]);
        let out = self.simple("extents", &[&c, &o, &flags], None).await?;
        parse_extents(&out, self.runner.name, ext)
    }

    async fn cache(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        let (c, o) = (count.to_string(), offset.to_string());
        self.simple("cache", &[&c, &o], None).await?;
        Ok(())
    }
}

/// An `extents` answer: `OFFSET LENGTH [TYPE]` lines, TYPE a number or
/// `hole`, `zero`, `hole,zero`.
fn parse_extents(out: &[u8], name: &str, ext: &mut Extents) -> Result<()> {
    {
        for line in String::from_utf8_lossy(out).lines() {
            let v: Vec<&str> = line.split_whitespace().collect();
            if v.is_empty() {
                continue;
            }
            let bad = || Error::new(Errno::Io, format!("{name}: extents: cannot parse {line:?}"));
            if v.len() < 2 {
                return Err(bad());
            }
            let off = parse_size(v[0]).map_err(|_| bad())?;
            let len = parse_size(v[1]).map_err(|_| bad())?;
            let mut flags = ExtentFlags::DATA;
            if let Some(t) = v.get(2) {
                if let Ok(n) = t.parse::<u32>() {
                    flags = ExtentFlags::from_bits_truncate(n);
                } else {
                    for w in t.split(',') {
                        flags |= match w {
                            "hole" => ExtentFlags::HOLE,
                            "zero" => ExtentFlags::ZERO,
                            "" => ExtentFlags::DATA,
                            _ => return Err(bad()),
                        };
                    }
                }
            }
            if !ext.add(off, len, flags) {
                break;
            }
        }
        Ok(())
    }
}

/// How a level method's answer reads: none, emulate, native (0, 1, 2).
fn parse_level(out: &[u8]) -> Option<u8> {
    match text(out).trim() {
        "none" => Some(0),
        "emulate" => Some(1),
        "native" => Some(2),
        _ => None,
    }
}

/// Fuzzing: every parser of a script's output, on `out`.
#[doc(hidden)]
pub fn fuzz_outputs(out: &[u8]) {
    let _ = export_list(out);
    let _ = first_export(out);
    let _ = parse_error(&String::from_utf8_lossy(out));
    let _ = size_of(out, "get_size", "sh");
    let _ = parse_level(out);
    let mut ext = Extents::new(512, 1 << 30);
    let _ = parse_extents(out, "sh", &mut ext);
}

impl Drop for ScriptHandle {
    fn drop(&mut self) {
        // `close`, off the async runtime; its result does not matter.
        let runner = self.runner.clone();
        let handle = std::mem::take(&mut self.handle);
        runner.closing.start();
        let spawned = std::thread::Builder::new().spawn({
            let runner = runner.clone();
            move || {
                let _ = runner.call_sync("close", &[&handle]);
                runner.closing.end();
            }
        });
        if spawned.is_err() {
            runner.closing.end();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_from_stderr() {
        assert_eq!(parse_error("ENOSPC Out of space"), (Errno::NoSpc, "Out of space"));
        assert_eq!(parse_error("EROFS"), (Errno::Perm, ""));
        // Names C's sh plugin does not know, and names run into words,
        // are EIO with the whole text; case does not matter.
        assert_eq!(parse_error("ENOENT gone"), (Errno::Io, "ENOENT gone"));
        assert_eq!(parse_error("EINVALID x"), (Errno::Io, "EINVALID x"));
        assert_eq!(parse_error("eperm no\nmore"), (Errno::Perm, "no"));
        assert_eq!(parse_error("EOPNOTSUPP\tx"), (Errno::NotSup, "x"));
        assert_eq!(parse_error("something broke"), (Errno::Io, "something broke"));
        assert_eq!(parse_error(""), (Errno::Io, ""));
    }

    #[test]
    fn export_lists() {
        let names = |v: Vec<ExportEntry>| -> Vec<(String, Option<String>)> {
            v.into_iter().map(|e| (e.name, e.description)).collect()
        };
        assert_eq!(names(export_list(b"a\nb\n")), [("a".into(), None), ("b".into(), None)]);
        assert_eq!(names(export_list(b"NAMES\na\n")), [("a".into(), None)]);
        assert_eq!(
            names(export_list(b"INTERLEAVED\na\nda\nb\ndb\n")),
            [("a".into(), Some("da".into())), ("b".into(), Some("db".into()))]
        );
        assert_eq!(
            names(export_list(b"NAMES+DESCRIPTIONS\na\nb\nda\ndb\n")),
            [("a".into(), Some("da".into())), ("b".into(), Some("db".into()))]
        );
        // An odd number of lines: the names are the larger half.
        assert_eq!(
            names(export_list(b"NAMES+DESCRIPTIONS\na\nb\nda\n")),
            [("a".into(), Some("da".into())), ("b".into(), None)]
        );
        assert_eq!(names(export_list(b"NAMES+DESCRIPTIONS\n\n")), [("".into(), None)]);
        assert_eq!(names(export_list(b"INTERLEAVED\n\n\n")), [("".into(), None)]);
        assert_eq!(
            names(export_list(b"INTERLEAVED\na\n\nb\n")),
            [("a".into(), None), ("b".into(), None)]
        );
        // Only whole lines.
        assert_eq!(names(export_list(b"a\nb")), [("a".into(), None)]);
        assert!(export_list(b"NAMES\n").is_empty());
        assert_eq!(first_export(b"NAMES\nx\ny\n"), "x");
        assert_eq!(first_export(b"hello"), "hello");
        assert_eq!(first_export(b""), "");
    }
}
