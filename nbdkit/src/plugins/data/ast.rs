//! The tree of a data expression, its optimizer, and its `-D data.AST=1`
//! listing.
//!
//! Nodes live in one table and refer to each other by index, so that the
//! optimizer can share subtrees freely. Index 0 is always `Null`.
//!
//! The optimizer makes the same rewrites as C nbdkit 1.32, so that the
//! listing (which C's tests compare) is the same: lists are flattened where
//! that cannot change a scope, adjacent bytes, strings and fills are merged,
//! `*N` of a constant is folded, and slices of constants are cut at once.

/// Where a node is in the table.
pub type Id = usize;

/// One element of a data expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// Nothing at all.
    Null,
    /// `( ... )`, a `$VAR`, or the whole expression: a scope of its own.
    List(Vec<Id>),
    Byte(u8),
    /// `@N`
    AbsOffset(u64),
    /// `@+N` or `@-N`
    RelOffset(i64),
    /// `@^N`, `N` a power of two.
    AlignOffset(u64),
    /// `<FILE`
    File(String),
    /// `<(SCRIPT)`
    Script(String),
    /// `"..."`, `le32:N` and the like.
    String(Vec<u8>),
    /// `N` copies of one byte.
    Fill(u8, u64),
    /// `\NAME`
    Name(String),
    /// `expr -> \NAME`
    Assign(String, Id),
    /// `expr*N`
    Repeat(Id, u64),
    /// `expr[N:M]`; a negative `M` means the end.
    Slice(Id, u64, i64),
}

/// A node and where it came from in the expression (for errors).
#[derive(Debug, Clone)]
struct Node {
    e: Expr,
    pos: usize,
}

/// The table of nodes.
#[derive(Debug, Clone)]
pub struct Ast {
    nodes: Vec<Node>,
}

impl Default for Ast {
    fn default() -> Self {
        Ast::new()
    }
}

impl Ast {
    pub fn new() -> Ast {
        Ast { nodes: vec![Node { e: Expr::Null, pos: 0 }] }
    }

    /// Add a node; every `Null` is node 0.
    pub fn add(&mut self, e: Expr, pos: usize) -> Id {
        if e == Expr::Null {
            return 0;
        }
        self.nodes.push(Node { e, pos });
        self.nodes.len() - 1
    }

    pub fn get(&self, id: Id) -> &Expr {
        &self.nodes[id].e
    }

    /// Where the node starts in the expression.
    pub fn pos(&self, id: Id) -> usize {
        self.nodes[id].pos
    }

    /// Whether a node can move into the list around it without changing
    /// what it means: names, assignments and offsets belong to their list.
    fn inlinable(&self, id: Id) -> bool {
        !matches!(
            self.get(id),
            Expr::Assign(..)
                | Expr::Name(_)
                | Expr::AbsOffset(_)
                | Expr::RelOffset(_)
                | Expr::AlignOffset(_)
        )
    }

    /// The byte, if the node is exactly one constant byte.
    fn single_byte(&self, id: Id) -> Option<u8> {
        match self.get(id) {
            Expr::Byte(b) | Expr::Fill(b, 1) => Some(*b),
            Expr::String(s) if s.len() == 1 => Some(s[0]),
            Expr::List(v) if v.len() == 1 => self.single_byte(v[0]),
            Expr::Repeat(x, 1) => self.single_byte(*x),
            _ => None,
        }
    }

    /// Two neighbours as one node, where they are constants that join.
    fn combine(&mut self, a: Id, b: Id) -> Option<Id> {
        let pos = self.pos(a);
        let joined = match (self.get(a), self.get(b)) {
            (Expr::Byte(x), Expr::Byte(y)) if x == y => Expr::Fill(*x, 2),
            (Expr::Byte(x), Expr::Byte(y)) => Expr::String(vec![*x, *y]),
            (Expr::Byte(x), Expr::String(s)) => {
                let mut v = vec![*x];
                v.extend_from_slice(s);
                Expr::String(v)
            }
            (Expr::String(s), Expr::Byte(y)) => {
                let mut v = s.clone();
                v.push(*y);
                Expr::String(v)
            }
            (Expr::String(s), Expr::String(t)) => Expr::String([s.as_slice(), t].concat()),
            (Expr::Byte(x), Expr::Fill(y, n)) | (Expr::Fill(y, n), Expr::Byte(x)) if x == y => {
                Expr::Fill(*x, n.checked_add(1)?)
            }
            (Expr::Fill(x, n), Expr::Fill(y, m)) if x == y => Expr::Fill(*x, n.checked_add(*m)?),
            _ => return None,
        };
        Some(self.add(joined, pos))
    }

    /// The optimized form of a node (a new node where anything changed).
    pub fn optimize(&mut self, id: Id) -> Id {
        let pos = self.pos(id);
        match self.get(id).clone() {
            Expr::List(items) => {
                let mut out: Vec<Id> = Vec::with_capacity(items.len());
                for item in items {
                    let o = self.optimize(item);
                    match self.get(o) {
                        Expr::Null => {}
                        Expr::List(inner) if inner.iter().all(|&i| self.inlinable(i)) => {
                            out.extend(inner.clone())
                        }
                        _ => out.push(o),
                    }
                }
                let mut i = 1;
                while i < out.len() {
                    match self.combine(out[i - 1], out[i]) {
                        Some(c) => {
                            out[i - 1] = c;
                            out.remove(i);
                        }
                        None => i += 1,
                    }
                }
                match out.as_slice() {
                    [] => 0,
                    [one] if self.inlinable(*one) => *one,
                    _ => self.add(Expr::List(out), pos),
                }
            }
            Expr::Assign(name, x) => {
                let x = self.optimize(x);
                self.add(Expr::Assign(name, x), pos)
            }
            Expr::Repeat(_, 0) => 0,
            Expr::Repeat(x, n) => {
                let x = self.optimize(x);
                if n == 1 || x == 0 {
                    return x;
                }
                let folded = match self.get(x) {
                    Expr::Repeat(y, k) => n.checked_mul(*k).map(|nk| Expr::Repeat(*y, nk)),
                    Expr::Fill(b, k) => n.checked_mul(*k).map(|nk| Expr::Fill(*b, nk)),
                    Expr::String(s) if n <= 4 && s.len() <= 512 => {
                        Some(Expr::String(s.repeat(n as usize)))
                    }
                    _ => self.single_byte(x).map(|b| Expr::Fill(b, n)),
                };
                self.add(folded.unwrap_or(Expr::Repeat(x, n)), pos)
            }
            // An empty slice is nothing, whatever it slices.
            Expr::Slice(_, n, m) if n == m as u64 => 0,
            Expr::Slice(x, n, m) => {
                let x = self.optimize(x);
                // Cut constants now; an impossible slice is left for the
                // evaluator to refuse (unless it is optimized away).
                let whole = |len: u64| -> Option<(u64, u64)> {
                    let end = if m < 0 { len } else { m as u64 };
                    (m >= -1 && n <= end && end <= len).then_some((n, end))
                };
                let bytes = match self.get(x) {
                    Expr::Null => Some(Vec::new()),
                    Expr::Byte(b) => Some(vec![*b]),
                    Expr::String(s) => Some(s.clone()),
                    _ => None,
                };
                let cut = match self.get(x) {
                    Expr::Fill(byte, len) => whole(*len).map(|(a, b)| match b - a {
                        0 => Expr::Null,
                        1 => Expr::Byte(*byte),
                        k => Expr::Fill(*byte, k),
                    }),
                    _ => bytes.and_then(|s| {
                        whole(s.len() as u64).map(|(a, b)| {
                            let sub = &s[a as usize..b as usize];
                            match sub {
                                [] => Expr::Null,
                                [one] => Expr::Byte(*one),
                                _ => Expr::String(sub.to_vec()),
                            }
                        })
                    }),
                };
                self.add(cut.unwrap_or(Expr::Slice(x, n, m)), pos)
            }
            Expr::String(s) if s.is_empty() => 0,
            Expr::String(s) if s.len() > 1 && s.iter().all(|&c| c == s[0]) => {
                self.add(Expr::Fill(s[0], s.len() as u64), pos)
            }
            Expr::Fill(_, 0) => 0,
            _ => id,
        }
    }

    /// The tree, one element a line, nested elements indented by four
    /// spaces a level (as C nbdkit lists it).
    pub fn listing(&self, id: Id) -> Vec<String> {
        let mut out = Vec::new();
        self.list_into(id, 0, &mut out);
        out
    }

    fn list_into(&self, id: Id, level: usize, out: &mut Vec<String>) {
        let ind = " ".repeat(4 * level.min(10));
        let wrap = |inner: Id, close: String, out: &mut Vec<String>| {
            out.push(format!("{ind}("));
            self.list_into(inner, level + 1, out);
            out.push(format!("{ind}){close}"));
        };
        match self.get(id) {
            Expr::Null => out.push(format!("{ind}null")),
            Expr::List(v) => {
                out.push(format!("{ind}("));
                for &i in v {
                    self.list_into(i, level + 1, out);
                }
                out.push(format!("{ind})"));
            }
            Expr::Byte(b) => out.push(format!("{ind}{b}")),
            Expr::AbsOffset(n) => out.push(format!("{ind}@{n}")),
            Expr::RelOffset(n) => out.push(format!("{ind}@{n:+}")),
            Expr::AlignOffset(n) => out.push(format!("{ind}@^{n}")),
            Expr::File(f) => out.push(format!("{ind}<{f}")),
            Expr::Script(s) => out.push(format!("{ind}<({s})")),
            Expr::String(s) => {
                let mut text = String::new();
                for &c in s {
                    if (0x20..0x7f).contains(&c) {
                        text.push(c as char);
                    } else {
                        text.push_str(&format!("\\x{c:02x}"));
                    }
                }
                out.push(format!("{ind}\"{text}\""));
            }
            Expr::Fill(b, n) => out.push(format!("{ind}fill({b}*{n})")),
            Expr::Name(n) => out.push(format!("{ind}\\{n}")),
            Expr::Assign(name, x) => wrap(*x, format!(" -> \\{name}"), out),
            Expr::Repeat(x, n) => wrap(*x, format!(" *{n}"), out),
            Expr::Slice(x, n, m) => wrap(*x, format!("[{n}:{m}]"), out),
        }
    }
}
