//! The DATA FORMAT of nbdkit-data-plugin(1), parsed into an [`Ast`].
//!
//! The grammar is C nbdkit's, token for token: numbers are read as C's
//! `%i` reads them (blanks and a sign first, `0x` hex, `0` octal, so `08`
//! is the byte 0 then the byte 8); `*N`, `[N:M]` and `-> \NAME` apply to
//! the element just before them; `le16:`..`be64:` words run to the next
//! blank; `$VAR` text is parsed on its own, as a list. Names are looked up
//! when the expression is evaluated, not here.

use super::ast::{Ast, Expr, Id};

/// An error in a data expression: where (a byte offset into it), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub pos: usize,
    pub msg: String,
}

/// Parse a whole expression into `ast`, returning its root (always a
/// list). `var` looks up `$VAR`: a `key=value` given on the command line,
/// else the environment.
pub fn parse(
    src: &str, var: &dyn Fn(&str) -> Option<String>, ast: &mut Ast,
) -> Result<Id, DataError> {
    let mut p = Parser { s: src.as_bytes(), i: 0, var, ast, at: None };
    p.list(0)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    var: &'a dyn Fn(&str) -> Option<String>,
    ast: &'a mut Ast,
    /// Inside a `$VAR`: where it was named in the outer expression, which
    /// is where its nodes are said to be.
    at: Option<usize>,
}

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, DataError> {
    Err(DataError { pos, msg: msg.into() })
}

/// C's `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// A number as `sscanf("%i")` reads it from `s[i..]`: the value and where
/// it ends, or None if there is no number. Blanks and a sign may come
/// first; `0x` alone reads as 0, as in glibc.
pub fn scan_int(s: &[u8], mut i: usize) -> Option<(i128, usize)> {
    while s.get(i).copied().is_some_and(is_space) {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let hex = s.get(i) == Some(&b'0') && matches!(s.get(i + 1), Some(b'x' | b'X'));
    let (radix, from) = match (hex, s.get(i)) {
        (true, _) => (16, i + 2),
        (false, Some(b'0')) => (8, i),
        _ => (10, i),
    };
    let mut j = from;
    let mut v: i128 = 0;
    while let Some(d) = s.get(j).and_then(|&c| char::from(c).to_digit(radix)) {
        v = v.saturating_mul(i128::from(radix)).saturating_add(i128::from(d));
        j += 1;
    }
    if j == from {
        return hex.then_some((0, from));
    }
    Some((if neg { -v } else { v }, j))
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn node(&mut self, e: Expr, pos: usize) -> Id {
        let pos = self.at.unwrap_or(pos);
        self.ast.add(e, pos)
    }

    fn pos(&self, pos: usize) -> usize {
        self.at.unwrap_or(pos)
    }

    /// A non-negative `%i` number after an operator, as an i64.
    fn count(&mut self, start: usize, what: &str) -> Result<u64, DataError> {
        let Some((v, end)) = scan_int(self.s, self.i) else {
            return err(start, format!("{what}: expected a number"));
        };
        if v < 0 {
            return err(start, format!("{what}: the number must not be negative"));
        }
        if v > i128::from(i64::MAX) {
            return err(start, format!("{what}: the number is too large"));
        }
        self.i = end;
        Ok(v as u64)
    }

    /// Elements up to the end, or (at `level` > 0) to the `)` that closes
    /// the group.
    fn list(&mut self, level: usize) -> Result<Id, DataError> {
        let mut out: Vec<Id> = Vec::new();
        let open = self.i.saturating_sub(1);
        while let Some(c) = self.peek() {
            let start = self.i;
            match c {
                _ if is_space(c) => self.i += 1,
                b'#' => {
                    while self.peek().is_some_and(|c| c != b'\n') {
                        self.i += 1;
                    }
                }
                b'@' => {
                    self.i += 1;
                    let e = match self.peek() {
                        Some(b'+') => {
                            self.i += 1;
                            Expr::RelOffset(self.count(start, "@+N")? as i64)
                        }
                        Some(b'-') => {
                            self.i += 1;
                            Expr::RelOffset(-(self.count(start, "@-N")? as i64))
                        }
                        Some(b'^') => {
                            self.i += 1;
                            let n = self.count(start, "@^N")?;
                            if !n.is_power_of_two() {
                                return err(
                                    start,
                                    format!("@^{n}: the alignment must be a power of 2"),
                                );
                            }
                            Expr::AlignOffset(n)
                        }
                        Some(b'0'..=b'9') => Expr::AbsOffset(self.count(start, "@N")?),
                        _ => return err(start, "expected @N, @+N, @-N or @^N"),
                    };
                    out.push(self.node(e, start));
                }
                b'(' => {
                    self.i += 1;
                    let id = self.list(level + 1)?;
                    out.push(id);
                }
                b')' => {
                    if level == 0 {
                        return err(start, "unmatched ')'");
                    }
                    self.i += 1;
                    return Ok(self.node(Expr::List(out), open));
                }
                b'*' => {
                    self.i += 1;
                    let last = self.operand(&mut out, start, "*N")?;
                    let n = self.count(start, "*N")?;
                    out.push(self.node(Expr::Repeat(last, n), self.ast.pos(last)));
                }
                b'[' => {
                    self.i += 1;
                    let last = self.operand(&mut out, start, "[N:M]")?;
                    let (n, m) = self.slice(start)?;
                    out.push(self.node(Expr::Slice(last, n, m), self.ast.pos(last)));
                }
                b'<' if self.s.get(self.i + 1) == Some(&b'(') => {
                    self.i += 2;
                    let script = self.script(start)?;
                    out.push(self.node(Expr::Script(script), start));
                }
                b'<' => {
                    self.i += 1;
                    let from = self.i;
                    while self
                        .peek()
                        .is_some_and(|c| !matches!(c, b'*' | b'[' | b')' | b' ' | b'\t' | b'\n'))
                    {
                        self.i += 1;
                    }
                    if from == self.i {
                        return err(start, "<FILE needs a file name");
                    }
                    let path = String::from_utf8_lossy(&self.s[from..self.i]).into_owned();
                    out.push(self.node(Expr::File(path), start));
                }
                b'"' => {
                    self.i += 1;
                    let s = self.string(start)?;
                    out.push(self.node(Expr::String(s), start));
                }
                b'\\' => {
                    let name = self.name(start)?;
                    out.push(self.node(Expr::Name(name), start));
                }
                b'-' => {
                    self.i += 1;
                    if self.peek() != Some(b'>') {
                        return err(start, "expected -> \\NAME");
                    }
                    self.i += 1;
                    let last = self.operand(&mut out, start, "-> \\NAME")?;
                    while self.peek().is_some_and(is_space) {
                        self.i += 1;
                    }
                    let name = self.name(start)?;
                    out.push(self.node(Expr::Assign(name, last), self.ast.pos(last)));
                }
                b'$' => {
                    let id = self.variable(start)?;
                    out.push(id);
                }
                b'0'..=b'9' => {
                    let (v, end) = scan_int(self.s, self.i).unwrap_or((0, self.i + 1));
                    if !(0..=255).contains(&v) {
                        return err(start, format!("byte {v} is out of the range 0..255"));
                    }
                    self.i = end;
                    out.push(self.node(Expr::Byte(v as u8), start));
                }
                b'l' | b'b' => {
                    let w = self.word(start)?;
                    out.push(self.node(Expr::String(w), start));
                }
                _ => {
                    return err(
                        start,
                        "expected a byte, le16:/be16:/le32:/be32:/le64:/be64: word, @offset, \
                         \"string\", <file, <(script), ( group ), \\name or $var",
                    )
                }
            }
        }
        if level > 0 {
            return err(open, "unmatched '(' (this group is never closed)");
        }
        Ok(self.node(Expr::List(out), 0))
    }

    /// Take the element an operator applies to: there must be one, and it
    /// must be data, not an offset.
    fn operand(&mut self, out: &mut Vec<Id>, start: usize, op: &str) -> Result<Id, DataError> {
        let Some(&last) = out.last() else {
            return err(start, format!("{op} must follow an expression"));
        };
        if matches!(
            self.ast.get(last),
            Expr::AbsOffset(_) | Expr::RelOffset(_) | Expr::AlignOffset(_)
        ) {
            return err(start, format!("{op} cannot follow an @offset"));
        }
        out.pop();
        Ok(last)
    }

    /// After `[`: `N:M]`, `:M]`, `N:]` or `:]` (`M` negative: the end).
    fn slice(&mut self, start: usize) -> Result<(u64, i64), DataError> {
        let s = self.s;
        let i = self.i;
        let at = |j: usize, lit: &[u8]| s.get(j..j + lit.len()) == Some(lit);
        let found = if let Some((n, m, end)) = scan_int(s, i)
            .filter(|&(_, j)| at(j, b":"))
            .and_then(|(n, j)| scan_int(s, j + 1).map(|(m, k)| (n, m, k)))
            .filter(|&(_, _, k)| at(k, b"]"))
        {
            Some((n, m, end + 1))
        } else if let Some((m, k)) =
            at(i, b":").then(|| scan_int(s, i + 1)).flatten().filter(|&(_, k)| at(k, b"]"))
        {
            Some((0, m, k + 1))
        } else if let Some((n, j)) = scan_int(s, i).filter(|&(_, j)| at(j, b":]")) {
            Some((n, -1, j + 2))
        } else if at(i, b":]") {
            Some((0, -1, i + 2))
        } else {
            None
        };
        let Some((n, m, end)) = found else {
            return err(start, "expected [N:M], [N:], [:M] or [:]");
        };
        let fits = |v: i128| i64::try_from(v).is_ok();
        if !fits(n) || !fits(m) {
            return err(start, "[N:M]: the number is too large");
        }
        self.i = end;
        // As in C, a negative N wraps to a huge one (and fails later).
        Ok((n as i64 as u64, m as i64))
    }

    /// `\NAME` at the cursor: letters, digits, `_` and `-`.
    fn name(&mut self, start: usize) -> Result<String, DataError> {
        if self.peek() != Some(b'\\') {
            return err(start, "expected \\NAME");
        }
        let from = self.i + 1;
        let mut j = from;
        while self.s.get(j).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-') {
            j += 1;
        }
        if j == from {
            return err(start, "expected a name after \\");
        }
        self.i = j;
        Ok(String::from_utf8_lossy(&self.s[from..j]).into_owned())
    }

    /// `$VAR` at the cursor: its text, parsed as a list of its own.
    fn variable(&mut self, start: usize) -> Result<Id, DataError> {
        let from = self.i + 1;
        let mut j = from;
        if self.s.get(j).is_some_and(|&c| c.is_ascii_alphabetic() || c == b'_') {
            while self.s.get(j).is_some_and(|&c| c.is_ascii_alphanumeric() || c == b'_') {
                j += 1;
            }
        }
        if j == from {
            return err(start, "expected a name after $");
        }
        self.i = j;
        let name = String::from_utf8_lossy(&self.s[from..j]).into_owned();
        let Some(text) = (self.var)(&name) else {
            return err(start, format!("${name}: no such parameter or environment variable"));
        };
        let at = Some(self.pos(start));
        let mut sub = Parser { s: text.as_bytes(), i: 0, var: self.var, ast: self.ast, at };
        sub.list(0).map_err(|e| DataError {
            pos: start,
            msg: format!("in ${name}, at offset {}: {}", e.pos, e.msg),
        })
    }

    /// The rest of a `"string"` (the opening quote is consumed).
    fn string(&mut self, start: usize) -> Result<Vec<u8>, DataError> {
        let mut out = Vec::new();
        loop {
            let Some(c) = self.peek() else {
                return err(start, "unterminated string");
            };
            self.i += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    let Some(e) = self.peek() else {
                        return err(start, "unterminated string");
                    };
                    self.i += 1;
                    out.push(match e {
                        b'a' => 0x07,
                        b'b' => 0x08,
                        b'f' => 0x0c,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'v' => 0x0b,
                        b'x' => {
                            let Some(hex) = self.s.get(self.i..self.i + 2) else {
                                return err(start, "unterminated string");
                            };
                            let v = std::str::from_utf8(hex)
                                .ok()
                                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                                .and_then(|h| u8::from_str_radix(h, 16).ok());
                            let Some(v) = v else {
                                return err(
                                    self.i - 2,
                                    "\\x must be followed by exactly two hex digits",
                                );
                            };
                            self.i += 2;
                            v
                        }
                        b'0'..=b'9' | b'u' => return err(
                            self.i - 2,
                            "octal and unicode escapes are not supported in strings (use \\xNN)",
                        ),
                        other => other,
                    });
                }
                c => out.push(c),
            }
        }
    }

    /// The script of `<(SCRIPT)` up to its matching `)` (the `<(` is
    /// consumed); parentheses inside must pair up.
    fn script(&mut self, start: usize) -> Result<String, DataError> {
        let from = self.i;
        let mut depth = 0;
        while let Some(c) = self.peek() {
            match c {
                b'(' => depth += 1,
                b')' if depth == 0 => {
                    if self.i == from {
                        return err(start, "<( ) needs a script");
                    }
                    let text = String::from_utf8_lossy(&self.s[from..self.i]).into_owned();
                    self.i += 1;
                    return Ok(text);
                }
                b')' => depth -= 1,
                _ => {}
            }
            self.i += 1;
        }
        err(start, "unmatched '(' in <(script)")
    }

    /// `le16:N` .. `be64:N`, up to the next blank, as its bytes.
    fn word(&mut self, start: usize) -> Result<Vec<u8>, DataError> {
        let mut end = self.i;
        while self.s.get(end).is_some_and(|&c| !is_space(c)) {
            end += 1;
        }
        let tok = String::from_utf8_lossy(&self.s[self.i..end]).into_owned();
        let (bits, little) = match tok.get(..5) {
            Some("le16:") => (16, true),
            Some("be16:") => (16, false),
            Some("le32:") => (32, true),
            Some("be32:") => (32, false),
            Some("le64:") => (64, true),
            Some("be64:") => (64, false),
            _ => {
                return err(
                    start,
                    "expected a byte, le16:/be16:/le32:/be32:/le64:/be64: word, @offset, \
                     \"string\", <file, <(script), ( group ), \\name or $var",
                )
            }
        };
        let max = if bits == 64 { u64::MAX } else { (1 << bits) - 1 };
        let v = crate::params::parse_uint(&tok[..4], &tok[5..], max)
            .map_err(|m| DataError { pos: start, msg: m })?;
        self.i = end;
        let bytes = v.to_le_bytes();
        let mut w = bytes[..bits / 8].to_vec();
        if !little {
            w.reverse();
        }
        Ok(w)
    }
}
