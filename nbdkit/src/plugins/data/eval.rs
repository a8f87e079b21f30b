//! Evaluating a data expression into the bytes of the disk.
//!
//! An expression evaluates to an [`Image`]: runs of bytes at offsets, none
//! overlapping, and a size, which is the furthest the offset reached (so
//! `@N` and `@^N` grow the disk even with nothing written). A group, a
//! `\NAME`, a repeat or a slice is evaluated on its own, from offset 0, and
//! then copied in whole over what was there, holes included (as C does).
//!
//! Names are looked up as the list is evaluated: `expr -> \NAME` binds the
//! name for the rest of its list (and the groups inside it), and `\NAME`
//! evaluates the expression in the bindings that were in force where it
//! was bound.

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::process::{Command, Stdio};
use std::rc::Rc;

use super::ast::{Ast, Expr, Id};
use super::parse::DataError;

/// Most bytes an expression may materialize, so that `"x"*1000000000000`
/// is an error, not an allocation failure.
#[cfg(not(fuzzing))]
const MAX_DATA: u64 = 4 << 30;
/// Under the fuzzer (whose memory limit is a few GiB for all inputs), far
/// less: the limit's path is what matters there, not its size.
#[cfg(fuzzing)]
const MAX_DATA: u64 = 64 << 20;

/// Most runs an image may hold (a sparse pattern repeated many times): each
/// costs a map entry and every later copy walks them, so an expression with
/// more is refused rather than taking minutes (found by fuzzing).
const MAX_RUNS: usize = 1 << 20;

/// What a run holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// Bytes from `buf[from..]` (shared, so repeats copy nothing).
    Bytes { buf: Rc<Vec<u8>>, from: usize },
    /// One byte, repeated; never zero (zeroes are holes).
    Fill(u8),
}

impl Run {
    /// The same run without its first `skip` bytes.
    fn skip(&self, skip: u64) -> Run {
        match self {
            Run::Bytes { buf, from } => Run::Bytes { buf: buf.clone(), from: from + skip as usize },
            Run::Fill(b) => Run::Fill(*b),
        }
    }
}

/// The result of evaluating an expression.
#[derive(Debug, Default, Clone)]
pub struct Image {
    /// Start -> (length, contents); runs never overlap.
    pub runs: BTreeMap<u64, (u64, Run)>,
    pub size: u64,
}

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, DataError> {
    Err(DataError { pos, msg: msg.into() })
}

impl Image {
    /// As a flat buffer (for tests and small images).
    #[cfg(test)]
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size as usize];
        for (&off, (len, run)) in &self.runs {
            let dst = &mut out[off as usize..(off + len) as usize];
            match run {
                Run::Bytes { buf, from } => dst.copy_from_slice(&buf[*from..from + dst.len()]),
                Run::Fill(b) => dst.fill(*b),
            }
        }
        out
    }

    /// Make `[a, b)` a hole.
    fn clear(&mut self, a: u64, b: u64) {
        if a >= b {
            return;
        }
        // A run starting before `a` may reach into the range.
        if let Some((&start, (len, run))) = self.runs.range(..a).next_back() {
            let end = start + len;
            if end > a {
                let run = run.clone();
                self.runs.insert(start, (a - start, run.clone()));
                if end > b {
                    self.runs.insert(b, (end - b, run.skip(b - start)));
                }
            }
        }
        let inside: Vec<u64> = self.runs.range(a..b).map(|(&s, _)| s).collect();
        for start in inside {
            let (len, run) = self.runs.remove(&start).expect("listed");
            let end = start + len;
            if end > b {
                self.runs.insert(b, (end - b, run.skip(b - start)));
            }
        }
    }

    /// Put `len` bytes of `run` at `at`, over whatever was there.
    fn put(&mut self, at: u64, len: u64, run: Run, pos: usize) -> Result<(), DataError> {
        if len == 0 {
            return Ok(());
        }
        self.clear(at, at + len);
        match run {
            Run::Fill(0) => Ok(()),
            Run::Fill(_) if len > MAX_DATA => err(pos, "the filled range is too large"),
            run => {
                if self.runs.len() >= MAX_RUNS {
                    return err(pos, "the expression is too large");
                }
                self.runs.insert(at, (len, run));
                Ok(())
            }
        }
    }

    fn put_bytes(&mut self, at: u64, bytes: Vec<u8>, pos: usize) -> Result<(), DataError> {
        let len = bytes.len() as u64;
        let run = Run::Bytes { buf: Rc::new(bytes), from: 0 };
        self.put(at, len, run, pos)
    }

    /// Copy `[from, from+len)` of `src` to `at`, holes included.
    fn blit(
        &mut self, src: &Image, from: u64, len: u64, at: u64, pos: usize,
    ) -> Result<(), DataError> {
        self.clear(at, at + len);
        let end = from + len;
        let first = src
            .runs
            .range(..from)
            .next_back()
            .filter(|(&s, (l, _))| s + l > from)
            .map(|(&s, _)| s)
            .unwrap_or(from);
        for (&s, (l, run)) in src.runs.range(first..end) {
            let (a, b) = (s.max(from), (s + l).min(end));
            if a < b {
                self.put(at + (a - from), b - a, run.skip(a - s), pos)?;
            }
        }
        Ok(())
    }

    /// The whole image as one run, if it is one.
    fn single_run(&self) -> Option<&Run> {
        match self.runs.iter().next() {
            Some((0, (len, run))) if self.runs.len() == 1 && *len == self.size => Some(run),
            _ => None,
        }
    }
}

/// Bindings made by `-> \NAME`, innermost first.
type Dict = Option<Rc<Binding>>;

struct Binding {
    name: String,
    id: Id,
    /// The bindings in force where this one was made.
    next: Dict,
}

/// Evaluate the root of an expression.
pub fn eval(ast: &Ast, root: Id) -> Result<Image, DataError> {
    let mut img = Image::default();
    evaluate(ast, &None, root, &mut img, &mut 0)?;
    Ok(img)
}

/// An offset that stays within 63 bits.
fn offset(v: Option<u64>, pos: usize) -> Result<u64, DataError> {
    v.filter(|&v| v <= i64::MAX as u64).map_or_else(|| err(pos, "the offset overflows"), Ok)
}

/// A node (or each element of a list) into `img`, from `*off`.
fn evaluate(
    ast: &Ast, dict: &Dict, root: Id, img: &mut Image, off: &mut u64,
) -> Result<(), DataError> {
    let items = match ast.get(root) {
        Expr::List(v) => v.clone(),
        _ => vec![root],
    };
    let mut d = dict.clone();
    for id in items {
        let pos = ast.pos(id);
        match ast.get(id) {
            Expr::Null => {}
            Expr::Byte(b) => {
                img.put_bytes(*off, vec![*b], pos)?;
                *off = offset(off.checked_add(1), pos)?;
            }
            Expr::String(s) => {
                img.put_bytes(*off, s.clone(), pos)?;
                *off = offset(off.checked_add(s.len() as u64), pos)?;
            }
            Expr::Fill(b, n) => {
                let end = offset(off.checked_add(*n), pos)?;
                img.put(*off, *n, Run::Fill(*b), pos)?;
                *off = end;
            }
            Expr::AbsOffset(n) => *off = offset(Some(*n), pos)?,
            Expr::RelOffset(n) if *n < 0 && n.unsigned_abs() > *off => {
                return err(pos, format!("@{n} goes before the start (the offset is {})", *off))
            }
            Expr::RelOffset(n) => *off = offset(off.checked_add_signed(*n), pos)?,
            Expr::AlignOffset(a) => *off = offset(off.checked_next_multiple_of(*a), pos)?,
            Expr::File(path) => {
                let data = read_file(path, 0, None, pos)?;
                let end = offset(off.checked_add(data.len() as u64), pos)?;
                img.put_bytes(*off, data, pos)?;
                *off = end;
            }
            Expr::Script(script) => {
                let data = run_script(script, None, pos)?;
                let end = offset(off.checked_add(data.len() as u64), pos)?;
                img.put_bytes(*off, data, pos)?;
                *off = end;
            }
            Expr::Assign(name, x) => {
                d = Some(Rc::new(Binding { name: name.clone(), id: *x, next: d }));
            }
            Expr::Name(name) => {
                let mut t = d.as_deref();
                while let Some(b) = t.filter(|b| b.name != *name) {
                    t = b.next.as_deref();
                }
                let Some(b) = t else {
                    return err(pos, format!("\\{name} is not defined"));
                };
                let mut sub = Image::default();
                evaluate(ast, &b.next, b.id, &mut sub, &mut 0)?;
                place(img, &sub, 0, sub.size, off, pos)?;
            }
            Expr::List(_) => {
                let mut sub = Image::default();
                evaluate(ast, &d, id, &mut sub, &mut 0)?;
                place(img, &sub, 0, sub.size, off, pos)?;
            }
            Expr::Repeat(x, n) => {
                let mut sub = Image::default();
                evaluate(ast, &d, *x, &mut sub, &mut 0)?;
                repeat(img, &sub, *n, off, pos)?;
            }
            Expr::Slice(x, n, m) => slice(ast, &d, *x, *n, *m, img, off, pos)?,
        }
        img.size = img.size.max(*off);
    }
    Ok(())
}

/// `[from, from+len)` of `sub` at `*off`, which moves past it.
fn place(
    img: &mut Image, sub: &Image, from: u64, len: u64, off: &mut u64, pos: usize,
) -> Result<(), DataError> {
    let end = offset(off.checked_add(len), pos)?;
    img.blit(sub, from, len, *off, pos)?;
    *off = end;
    Ok(())
}

/// `n` copies of `sub` at `*off`.
fn repeat(
    img: &mut Image, sub: &Image, n: u64, off: &mut u64, pos: usize,
) -> Result<(), DataError> {
    let total = sub
        .size
        .checked_mul(n)
        .filter(|&t| t <= i64::MAX as u64)
        .map_or_else(|| err(pos, "the repeated expression is too large"), Ok)?;
    let end = offset(off.checked_add(total), pos)?;
    match sub.single_run() {
        _ if total == 0 => {}
        // One run: one longer run.
        Some(Run::Fill(b)) => img.put(*off, total, Run::Fill(*b), pos)?,
        Some(Run::Bytes { buf, from }) => {
            if total > MAX_DATA {
                return err(pos, "the repeated expression is too large");
            }
            let one = &buf[*from..*from + sub.size as usize];
            img.put_bytes(*off, one.repeat(n as usize), pos)?;
        }
        // All holes: one hole.
        None if sub.runs.is_empty() => img.clear(*off, end),
        None => {
            if (sub.runs.len() as u64).saturating_mul(n) > MAX_RUNS as u64 {
                return err(pos, "the repeated expression is too large");
            }
            for k in 0..n {
                img.blit(sub, 0, sub.size, *off + k * sub.size, pos)?;
            }
        }
    }
    *off = end;
    Ok(())
}

/// `x[n:m]` at `*off`. Files and scripts are read only as far as the slice
/// needs, so that `</dev/urandom[:512]` and endless scripts work.
#[allow(clippy::too_many_arguments)]
fn slice(
    ast: &Ast, d: &Dict, x: Id, n: u64, m: i64, img: &mut Image, off: &mut u64, pos: usize,
) -> Result<(), DataError> {
    let bad = |size: u64| {
        err(pos, format!("[{n}:{m}] is not a slice of an expression {size} bytes long"))
    };
    let end = (m >= 0).then_some(m as u64);
    if end.is_some_and(|e| n > e) || m < -1 {
        return err(pos, format!("[{n}:{m}] is not a slice"));
    }
    let sub = match ast.get(x) {
        // Past the end of a file is not an error (as in C).
        Expr::File(path) => {
            let data = read_file(path, n, end.map(|e| e - n), pos)?;
            let len = data.len() as u64;
            let e = offset(off.checked_add(len), pos)?;
            img.put_bytes(*off, data, pos)?;
            *off = e;
            return Ok(());
        }
        Expr::Script(script) => {
            let data = run_script(script, end, pos)?;
            let size = data.len() as u64;
            let mut sub = Image::default();
            sub.put_bytes(0, data, pos)?;
            sub.size = size;
            // A script that stops short of [:M] is not an error (as in C).
            if n == 0 {
                return place(img, &sub, 0, size, off, pos);
            }
            sub
        }
        _ => {
            let mut sub = Image::default();
            evaluate(ast, d, x, &mut sub, &mut 0)?;
            sub
        }
    };
    let e = end.unwrap_or(sub.size);
    if n > e || e > sub.size {
        return bad(sub.size);
    }
    place(img, &sub, n, e - n, off, pos)
}

/// The bytes of a file from `skip`, at most `limit` of them.
fn read_file(path: &str, skip: u64, limit: Option<u64>, pos: usize) -> Result<Vec<u8>, DataError> {
    let fail = |e: std::io::Error| DataError {
        pos,
        msg: format!("{path}: {}", crate::error::io_message(&e)),
    };
    let mut f = std::fs::File::open(path).map_err(fail)?;
    if skip > 0 {
        f.seek(SeekFrom::Start(skip)).map_err(fail)?;
    }
    let mut out = Vec::new();
    f.take(limit.unwrap_or(MAX_DATA + 1)).read_to_end(&mut out).map_err(fail)?;
    too_big(out, limit, pos)
}

/// The output of `/bin/sh -c SCRIPT`, at most `limit` bytes of it. With no
/// limit the script must succeed; with one it is stopped once enough is
/// read, and how it ends does not matter (as in C, where such scripts
/// usually die of a broken pipe).
fn run_script(script: &str, limit: Option<u64>, pos: usize) -> Result<Vec<u8>, DataError> {
    let fail = |m: String| DataError { pos, msg: m };
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("<(script): /bin/sh: {e}")))?;
    let mut out = Vec::new();
    let read = child
        .stdout
        .take()
        .expect("piped")
        .take(limit.unwrap_or(MAX_DATA + 1))
        .read_to_end(&mut out);
    if limit.is_some() {
        let _ = child.kill();
        let _ = child.wait();
        read.map_err(|e| fail(format!("<(script): {e}")))?;
        return Ok(out);
    }
    let status = child.wait().map_err(|e| fail(format!("<(script): {e}")))?;
    read.map_err(|e| fail(format!("<(script): {e}")))?;
    if !status.success() {
        return Err(fail(format!("<(script) failed ({status})")));
    }
    too_big(out, None, pos)
}

fn too_big(out: Vec<u8>, limit: Option<u64>, pos: usize) -> Result<Vec<u8>, DataError> {
    if limit.is_none() && out.len() as u64 > MAX_DATA {
        return err(pos, "the file or script output is too large (slice it with [:N])");
    }
    Ok(out)
}
