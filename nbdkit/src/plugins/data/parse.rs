//! The DATA FORMAT language of nbdkit-data-plugin(1), parsed into a tree.
//!
//! Tokens need no separators where they cannot run together (`08` is the
//! byte 0 then the byte 8, as with C's `%i`); whitespace and `# comments`
//! separate them. Postfix operators (`*N`, `[N:M]`, `-> \NAME`) apply to
//! the expression just before them, left to right. Names are bound at parse
//! time in nested scopes; `$VAR` text is parsed in a scope of its own.

use std::collections::HashMap;

/// One element of a data expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Bytes written at the current offset (a byte, word, string, file or
    /// script output).
    Bytes(Vec<u8>),
    /// `BYTE*N`: `N` copies of one byte (zero leaves the range sparse).
    Fill(u8, u64),
    /// `@N`
    Offset(u64),
    /// `@+N`
    Forward(u64),
    /// `@-N`; the position is for the error if it goes below zero.
    Back(u64, usize),
    /// `@^N`, `N` a power of two.
    Align(u64),
    /// `( ... )`, a `\NAME` or a `$VAR`: offsets inside are relative.
    Group(Vec<Node>),
    /// `expr*N`
    Repeat(Box<Node>, u64),
    /// `expr[N:M]`; the position is for the error if it is out of range.
    Slice(Box<Node>, Option<u64>, Option<u64>, usize),
    /// `<FILE`, read when evaluated (only as far as a slice needs, so
    /// `</dev/urandom[:512]` works).
    File(String, usize),
    /// `<(SCRIPT)`, run when evaluated, its output read as far as needed.
    Script(String, usize),
}

/// An error in a data expression: where (a byte offset into it), and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataError {
    pub pos: usize,
    pub msg: String,
}

/// Parse a whole expression. `var` looks up `$VAR`: a `key=value` given on
/// the command line, else the environment.
pub fn parse(src: &str, var: &dyn Fn(&str) -> Option<String>) -> Result<Vec<Node>, DataError> {
    let mut scopes = vec![HashMap::new()];
    let mut p = Parser {
        s: src.as_bytes(),
        i: 0,
        var,
        scopes: &mut scopes,
    };
    let nodes = p.sequence(false)?;
    Ok(nodes)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    var: &'a dyn Fn(&str) -> Option<String>,
    /// Innermost last. A name resolves to the expression it was bound to.
    scopes: &'a mut Vec<HashMap<String, Node>>,
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

fn err<T>(pos: usize, msg: impl Into<String>) -> Result<T, DataError> {
    Err(DataError {
        pos,
        msg: msg.into(),
    })
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_space(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_ascii_whitespace() {
                self.i += 1;
            } else if c == b'#' {
                while let Some(c) = self.peek() {
                    self.i += 1;
                    if c == b'\n' {
                        break;
                    }
                }
            } else {
                break;
            }
        }
    }

    /// A sequence up to the end, or up to the `)` closing a group.
    fn sequence(&mut self, in_group: bool) -> Result<Vec<Node>, DataError> {
        let mut out: Vec<Node> = Vec::new();
        loop {
            self.skip_space();
            let start = self.i;
            let Some(c) = self.peek() else {
                if in_group {
                    return err(start, "unmatched '(' (this group is never closed)");
                }
                return Ok(out);
            };
            match c {
                b')' => {
                    if in_group {
                        self.i += 1;
                        return Ok(out);
                    }
                    return err(start, "unmatched ')'");
                }
                b'(' => {
                    self.i += 1;
                    self.scopes.push(HashMap::new());
                    let inner = self.sequence(true);
                    self.scopes.pop();
                    out.push(Node::Group(inner?));
                }
                b'*' => {
                    self.i += 1;
                    // `* 4` as well as `*4`, as C's lexer allows.
                    self.skip_space();
                    let n = self.number("a repeat count after *")?;
                    let Some(last) = out.pop() else {
                        return err(start, "*N must follow an expression");
                    };
                    out.push(match last {
                        Node::Bytes(b) if b.len() == 1 => Node::Fill(b[0], n),
                        Node::Fill(b, m) => match m.checked_mul(n) {
                            Some(t) => Node::Fill(b, t),
                            None => return err(start, "repeat count overflows"),
                        },
                        Node::Offset(_) | Node::Forward(_) | Node::Back(..) | Node::Align(_) => {
                            return err(start, "*N cannot follow an @offset")
                        }
                        e => Node::Repeat(Box::new(e), n),
                    });
                }
                b'[' => {
                    self.i += 1;
                    self.skip_space();
                    let a = self.opt_number()?;
                    self.skip_space();
                    if self.peek() != Some(b':') {
                        return err(self.i, "expected ':' in [N:M]");
                    }
                    self.i += 1;
                    self.skip_space();
                    let b = self.opt_number()?;
                    self.skip_space();
                    if self.peek() != Some(b']') {
                        return err(self.i, "expected ']' to close [N:M]");
                    }
                    self.i += 1;
                    let Some(last) = out.pop() else {
                        return err(start, "[N:M] must follow an expression");
                    };
                    if matches!(
                        last,
                        Node::Offset(_) | Node::Forward(_) | Node::Back(..) | Node::Align(_)
                    ) {
                        return err(start, "[N:M] cannot follow an @offset");
                    }
                    out.push(Node::Slice(Box::new(last), a, b, start));
                }
                b'-' if self.s.get(self.i + 1) == Some(&b'>') => {
                    self.i += 2;
                    self.skip_space();
                    if self.peek() != Some(b'\\') {
                        return err(self.i, "expected \\NAME after ->");
                    }
                    self.i += 1;
                    let name = self.name(b"\\")?;
                    let Some(last) = out.pop() else {
                        return err(start, "-> \\NAME must follow an expression");
                    };
                    self.scopes.last_mut().expect("a scope").insert(name, last);
                }
                b'\\' => {
                    self.i += 1;
                    let name = self.name(b"\\")?;
                    let found = self.scopes.iter().rev().find_map(|s| s.get(&name));
                    match found {
                        Some(n) => out.push(Node::Group(vec![n.clone()])),
                        None => return err(start, format!("\\{name} is not defined")),
                    }
                }
                b'$' => {
                    self.i += 1;
                    let name = self.name(b"$")?;
                    let Some(text) = (self.var)(&name) else {
                        return err(
                            start,
                            format!("${name}: no such parameter or environment variable"),
                        );
                    };
                    // Parsed on its own, in a scope nested in this one.
                    self.scopes.push(HashMap::new());
                    let mut sub = Parser {
                        s: text.as_bytes(),
                        i: 0,
                        var: self.var,
                        scopes: self.scopes,
                    };
                    let inner = sub.sequence(false);
                    self.scopes.pop();
                    match inner {
                        Ok(nodes) => out.push(Node::Group(nodes)),
                        Err(e) => {
                            return err(
                                start,
                                format!("in ${name}, at offset {}: {}", e.pos, e.msg),
                            )
                        }
                    }
                }
                b'@' => {
                    self.i += 1;
                    let node = match self.peek() {
                        Some(b'+') => {
                            self.i += 1;
                            Node::Forward(self.number("a number after @+")?)
                        }
                        Some(b'-') => {
                            self.i += 1;
                            Node::Back(self.number("a number after @-")?, start)
                        }
                        Some(b'^') => {
                            self.i += 1;
                            let n = self.number("an alignment after @^")?;
                            if !n.is_power_of_two() {
                                return err(
                                    start,
                                    format!("@^{n}: the alignment must be a power of 2"),
                                );
                            }
                            Node::Align(n)
                        }
                        _ => Node::Offset(self.number("an offset after @")?),
                    };
                    out.push(node);
                }
                b'"' => {
                    self.i += 1;
                    out.push(Node::Bytes(self.string(start)?));
                }
                b'<' => {
                    self.i += 1;
                    if self.peek() == Some(b'(') {
                        self.i += 1;
                        let script = self.script(start)?;
                        out.push(Node::Script(script, start));
                    } else {
                        let from = self.i;
                        while let Some(c) = self.peek() {
                            if c.is_ascii_whitespace() || matches!(c, b'[' | b'*' | b')') {
                                break;
                            }
                            self.i += 1;
                        }
                        if from == self.i {
                            return err(start, "<FILE needs a file name");
                        }
                        let path = String::from_utf8_lossy(&self.s[from..self.i]).into_owned();
                        out.push(Node::File(path, start));
                    }
                }
                b'l' | b'b' if self.word_prefix().is_some() => {
                    let (bits, little) = self.word_prefix().expect("checked");
                    self.i += 5;
                    let from = self.i;
                    while self.peek().is_some_and(|c| !c.is_ascii_whitespace()) {
                        self.i += 1;
                    }
                    let tok = String::from_utf8_lossy(&self.s[from..self.i]).into_owned();
                    let v = word_value(&tok, bits).map_err(|m| DataError { pos: from, msg: m })?;
                    let bytes = match (bits, little) {
                        (16, true) => (v as u16).to_le_bytes().to_vec(),
                        (16, false) => (v as u16).to_be_bytes().to_vec(),
                        (32, true) => (v as u32).to_le_bytes().to_vec(),
                        (32, false) => (v as u32).to_be_bytes().to_vec(),
                        (_, true) => v.to_le_bytes().to_vec(),
                        (_, false) => v.to_be_bytes().to_vec(),
                    };
                    out.push(Node::Bytes(bytes));
                }
                c if c.is_ascii_digit() => {
                    let v = self.number("a byte")?;
                    if v > 255 {
                        return err(start, format!("byte {v} is out of the range 0..255"));
                    }
                    out.push(Node::Bytes(vec![v as u8]));
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
    }

    /// `le16:` ... `be64:` at the cursor: (bits, little-endian).
    fn word_prefix(&self) -> Option<(u32, bool)> {
        let p = self.s.get(self.i..self.i + 5)?;
        Some(match p {
            b"le16:" => (16, true),
            b"be16:" => (16, false),
            b"le32:" => (32, true),
            b"be32:" => (32, false),
            b"le64:" => (64, true),
            b"be64:" => (64, false),
            _ => return None,
        })
    }

    /// A name after `\` or `$`: letters, digits, `-` and `_`.
    fn name(&mut self, sigil: &[u8]) -> Result<String, DataError> {
        let from = self.i;
        while self.peek().is_some_and(|c| {
            if sigil == b"$" {
                c.is_ascii_alphanumeric() || c == b'_'
            } else {
                is_name_char(c)
            }
        }) {
            self.i += 1;
        }
        if from == self.i {
            return err(from, format!("expected a name after {}", sigil[0] as char));
        }
        Ok(String::from_utf8_lossy(&self.s[from..self.i]).into_owned())
    }

    /// An unsigned number as C's `%i` reads it: `0x` hex, leading-0 octal,
    /// else decimal; it ends at the first character that cannot continue it.
    fn number(&mut self, what: &str) -> Result<u64, DataError> {
        match self.opt_number()? {
            Some(n) => Ok(n),
            None => err(self.i, format!("expected {what}")),
        }
    }

    fn opt_number(&mut self) -> Result<Option<u64>, DataError> {
        let start = self.i;
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Ok(None);
        }
        let (radix, digits_from) =
            if self.s[self.i..].starts_with(b"0x") || self.s[self.i..].starts_with(b"0X") {
                (16, self.i + 2)
            } else if self.peek() == Some(b'0') {
                (8, self.i + 1)
            } else {
                (10, self.i)
            };
        self.i = digits_from;
        let mut v: u64 = 0;
        while let Some(d) = self.peek().and_then(|c| (c as char).to_digit(radix)) {
            v = match v
                .checked_mul(u64::from(radix))
                .and_then(|v| v.checked_add(u64::from(d)))
            {
                Some(v) => v,
                None => return err(start, "number too large"),
            };
            self.i += 1;
        }
        Ok(Some(v))
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
                            let hex = self.s.get(self.i..self.i + 2);
                            let v = hex
                                .and_then(|h| std::str::from_utf8(h).ok())
                                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                                .and_then(|h| u8::from_str_radix(h, 16).ok());
                            match v {
                                Some(v) => {
                                    self.i += 2;
                                    v
                                }
                                None => {
                                    return err(
                                        self.i - 2,
                                        "\\x must be followed by exactly two hex digits",
                                    )
                                }
                            }
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
        let mut depth = 1;
        while let Some(c) = self.peek() {
            self.i += 1;
            match c {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        let text = &self.s[from..self.i - 1];
                        if text.iter().all(|c| c.is_ascii_whitespace()) {
                            return err(start, "<( ) needs a script");
                        }
                        return Ok(String::from_utf8_lossy(text).into_owned());
                    }
                }
                _ => {}
            }
        }
        err(start, "unmatched '(' in <(script)")
    }
}

/// A `le16:`..`be64:` value: the whole token must be a number that fits.
fn word_value(tok: &str, bits: u32) -> Result<u64, String> {
    if tok.starts_with('-') {
        return Err(format!("{tok:?}: negative numbers are not allowed"));
    }
    let (digits, radix) = if let Some(h) = tok.strip_prefix("0x").or_else(|| tok.strip_prefix("0X"))
    {
        (h, 16)
    } else if tok.len() > 1 && tok.starts_with('0') {
        (&tok[1..], 8)
    } else {
        (tok, 10)
    };
    let v = u64::from_str_radix(digits, radix).map_err(|_| format!("{tok:?} is not a number"))?;
    if bits < 64 && v >> bits != 0 {
        return Err(format!("{tok:?} does not fit in {bits} bits"));
    }
    Ok(v)
}
