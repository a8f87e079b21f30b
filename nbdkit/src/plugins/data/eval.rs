//! Evaluating a parsed data expression into the bytes of the disk.
//!
//! An expression evaluates to an [`Image`]: pieces placed at offsets, in
//! the order they were written (later ones win), and a size, which is the
//! furthest the offset reached (so `@N` and `@^N` grow the disk even with
//! nothing written). Groups evaluate on their own, from offset 0, and are
//! then placed at the current offset.

use std::io::Read;
use std::process::{Command, Stdio};

use super::parse::{DataError, Node};

/// Most bytes an expression may materialize, so that `"x"*1000000000000`
/// is an error, not an allocation failure.
const MAX_DATA: u64 = 4 << 30;

/// Most pieces an image may hold (a sparse pattern repeated many times).
const MAX_PIECES: usize = 1 << 24;

/// What is written at one place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Data(Vec<u8>),
    /// `n` copies of a byte; zero leaves the range unallocated.
    Fill(u8, u64),
}

impl Piece {
    fn len(&self) -> u64 {
        match self {
            Piece::Data(d) => d.len() as u64,
            Piece::Fill(_, n) => *n,
        }
    }
}

/// The result of evaluating an expression.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Image {
    pub pieces: Vec<(u64, Piece)>,
    pub size: u64,
}

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, DataError> {
    Err(DataError {
        pos,
        msg: msg.into(),
    })
}

impl Image {
    /// As a flat buffer (for tests and small images).
    #[cfg(test)]
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.size as usize];
        for (off, p) in &self.pieces {
            let o = *off as usize;
            match p {
                Piece::Data(d) => out[o..o + d.len()].copy_from_slice(d),
                Piece::Fill(b, n) => out[o..o + *n as usize].fill(*b),
            }
        }
        out
    }

    fn push(&mut self, off: u64, p: Piece, pos: usize) -> Result<(), DataError> {
        if self.pieces.len() >= MAX_PIECES {
            return err(pos, "the expression is too large");
        }
        if p.len() > 0 {
            self.pieces.push((off, p));
        }
        Ok(())
    }

    /// One contiguous piece of data covering the whole image?
    fn dense(&self) -> Option<&[u8]> {
        match self.pieces.as_slice() {
            [(0, Piece::Data(d))] if d.len() as u64 == self.size => Some(d),
            _ => None,
        }
    }

    /// The part `[a, b)`, moved to offset 0.
    fn slice(&self, a: u64, b: u64) -> Image {
        let mut out = Image {
            pieces: Vec::new(),
            size: b - a,
        };
        for (off, p) in &self.pieces {
            let (start, end) = ((*off).max(a), (off + p.len()).min(b));
            if start >= end {
                continue;
            }
            let cut = match p {
                Piece::Data(d) => {
                    Piece::Data(d[(start - off) as usize..(end - off) as usize].to_vec())
                }
                Piece::Fill(byte, _) => Piece::Fill(*byte, end - start),
            };
            out.pieces.push((start - a, cut));
        }
        out
    }
}

/// Evaluate a sequence from offset 0.
pub fn eval(nodes: &[Node]) -> Result<Image, DataError> {
    let mut img = Image::default();
    let mut off: u64 = 0;
    for n in nodes {
        off = step(&mut img, off, n)?;
        img.size = img.size.max(off);
    }
    Ok(img)
}

fn add(a: u64, b: u64, pos: usize) -> Result<u64, DataError> {
    a.checked_add(b)
        .filter(|&v| v <= i64::MAX as u64)
        .map_or_else(|| err(pos, "the offset overflows"), Ok)
}

/// The first byte position of a node, for errors that have no better one.
fn pos_of(n: &Node) -> usize {
    match n {
        Node::Back(_, p) | Node::Slice(_, _, _, p) | Node::File(_, p) | Node::Script(_, p) => *p,
        Node::Repeat(e, _) => pos_of(e),
        Node::Group(v) => v.first().map_or(0, pos_of),
        _ => 0,
    }
}

/// Apply one node at `off`; return the new offset.
fn step(img: &mut Image, off: u64, n: &Node) -> Result<u64, DataError> {
    let pos = pos_of(n);
    Ok(match n {
        Node::Bytes(b) => {
            let end = add(off, b.len() as u64, pos)?;
            img.push(off, Piece::Data(b.clone()), pos)?;
            end
        }
        Node::Fill(b, count) => {
            // Zeroes stay sparse; any other byte is stored.
            if *b != 0 && *count > MAX_DATA {
                return err(pos, "the repeated byte is too large");
            }
            let end = add(off, *count, pos)?;
            img.push(off, Piece::Fill(*b, *count), pos)?;
            end
        }
        Node::Offset(n) => add(0, *n, pos)?,
        Node::Forward(n) => add(off, *n, pos)?,
        Node::Back(n, p) => match off.checked_sub(*n) {
            Some(v) => v,
            None => {
                return err(
                    *p,
                    format!("@-{n} goes before the start (the offset is {off})"),
                )
            }
        },
        Node::Align(a) => add(off, (a - off % a) % a, pos)?,
        Node::File(..) | Node::Script(..) => {
            let data = read_source(n, None)?;
            let end = add(off, data.len() as u64, pos)?;
            img.push(off, Piece::Data(data), pos)?;
            end
        }
        Node::Group(v) => place(img, off, &eval(v)?, pos)?,
        Node::Repeat(e, count) => {
            let sub = eval_one(e)?;
            let total = sub
                .size
                .checked_mul(*count)
                .filter(|&t| t <= i64::MAX as u64)
                .map_or_else(|| err(pos, "the repeated expression is too large"), Ok)?;
            if let Some(d) = sub.dense() {
                if total > MAX_DATA {
                    return err(pos, "the repeated expression is too large");
                }
                img.push(off, Piece::Data(d.repeat(*count as usize)), pos)?;
            } else {
                for k in 0..*count {
                    place(img, off + k * sub.size, &sub, pos)?;
                }
            }
            add(off, total, pos)?
        }
        // `[N:N]` is empty whatever it slices, as in C (which drops it
        // before looking at the expression).
        Node::Slice(_, a, Some(b), _) if a.unwrap_or(0) == *b => off,
        Node::Slice(e, a, b, p) => {
            let sub = match e.as_ref() {
                // Read only what the slice needs: the source may be endless.
                src @ (Node::File(..) | Node::Script(..)) => {
                    let data = read_source(src, *b)?;
                    Image {
                        size: data.len() as u64,
                        pieces: vec![(0, Piece::Data(data))],
                    }
                }
                other => eval_one(other)?,
            };
            let (a, b) = (a.unwrap_or(0), b.unwrap_or(sub.size));
            if a > b || b > sub.size {
                return err(
                    *p,
                    format!(
                        "[{a}:{b}] is not a slice of an expression {} bytes long",
                        sub.size
                    ),
                );
            }
            place(img, off, &sub.slice(a, b), pos)?
        }
    })
}

/// One node as an image of its own.
fn eval_one(n: &Node) -> Result<Image, DataError> {
    eval(std::slice::from_ref(n))
}

/// Put `sub` at `off`; return the offset after it.
fn place(img: &mut Image, off: u64, sub: &Image, pos: usize) -> Result<u64, DataError> {
    let end = add(off, sub.size, pos)?;
    for (o, p) in &sub.pieces {
        img.push(off + o, p.clone(), pos)?;
    }
    Ok(end)
}

/// The bytes of `<FILE` or `<(SCRIPT)`, at most `limit` of them.
fn read_source(n: &Node, limit: Option<u64>) -> Result<Vec<u8>, DataError> {
    let cap = limit.unwrap_or(MAX_DATA + 1);
    match n {
        Node::File(path, pos) => {
            let f = std::fs::File::open(path).map_err(|e| DataError {
                pos: *pos,
                msg: format!("{path}: {}", crate::error::io_message(&e)),
            })?;
            let mut out = Vec::new();
            f.take(cap).read_to_end(&mut out).map_err(|e| DataError {
                pos: *pos,
                msg: format!("{path}: {}", crate::error::io_message(&e)),
            })?;
            too_big(out, limit, *pos)
        }
        Node::Script(script, pos) => {
            let fail = |m: String| DataError { pos: *pos, msg: m };
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
                .take(cap)
                .read_to_end(&mut out);
            // Enough read: an endless script is stopped here.
            let done = child.try_wait().ok().flatten();
            let status = match done {
                Some(s) => s,
                None if limit.is_some_and(|l| out.len() as u64 >= l) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return too_big(out, limit, *pos);
                }
                None => child.wait().map_err(|e| fail(format!("<(script): {e}")))?,
            };
            read.map_err(|e| fail(format!("<(script): {e}")))?;
            if !status.success() {
                return Err(fail(format!("<(script) failed ({status})")));
            }
            too_big(out, limit, *pos)
        }
        _ => unreachable!("only files and scripts are read"),
    }
}

fn too_big(out: Vec<u8>, limit: Option<u64>, pos: usize) -> Result<Vec<u8>, DataError> {
    if limit.is_none() && out.len() as u64 > MAX_DATA {
        return err(
            pos,
            "the file or script output is too large (slice it with [:N])",
        );
    }
    Ok(out)
}
