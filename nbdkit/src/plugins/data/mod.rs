//! `data`: a RAM disk whose initial contents are given on the command line.
//!
//! Exactly one of:
//! - `data=EXPR` (magic key): the DATA FORMAT of nbdkit-data-plugin(1):
//!   bytes (`0x55`, `0177`, `42`; C `%i` rules), `le16:`/`be16:`/`le32:`/
//!   `be32:`/`le64:`/`be64:` words, `@OFFSET`, `@+N`, `@-N`, `@^ALIGN`,
//!   `"strings"` with C escapes and `\xNN`, `<FILE`, `<(SCRIPT)`, groups
//!   `( ... )`, `expr*N`, slices `expr[N:M]`, `expr -> \NAME` and `\NAME`,
//!   `$VAR` (another parameter of this plugin, else the environment), and
//!   `# comments`. Errors name the offset in the expression.
//! - `raw=BYTES`: the bytes of the parameter itself.
//! - `base64=TEXT`: base64-decoded bytes.
//!
//! Also `size=SIZE` (truncate or extend with zeroes; default: the size of
//! the data) and `allocator=sparse|malloc[,mlock=true]` (see the memory
//! plugin). Any
//! other `key=value` is a variable for `$key` (an error without `data=`).
//! Writes are kept in memory.
//!
//! A group, `\NAME`, repeat or slice is copied in whole over what was
//! there, holes included; `-> \NAME` binds for the rest of its group.
//! Octal and `\u` escapes in strings are an error, as in C nbdkit 1.32.
//!
//! Debug flag: `-D data.AST=1` (with `-v`) lists the expression after
//! optimization, as C nbdkit does, except that `@+N` is listed as `@+N`
//! (C 1.32 lists it as `@N`, the same as an absolute offset).
//!
//! Where C 1.32 is wrong we differ: `<(SCRIPT)[:]` is the whole output (C
//! reads nothing), a script sliced from `N > 0` is read only as far as the
//! slice needs (C never ends on an endless one), and a slice of a constant
//! that does not fit is an error (C makes `BYTE[N:1]` the byte and
//! `()[N:0]` nothing, whatever `N`).
//!
//! Example: `nbdkit -U - data '( 0x55 0xAA )*256 @^4096' --run 'nbdinfo "$uri"'`

mod ast;
mod eval;
mod parse;

use std::collections::HashMap;
use std::sync::Arc;

use super::memory::{allocator, Disk};
use super::{PluginInfo, Shared};
use crate::backend::{Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;
use eval::Run;

/// The `data` plugin's entry in the plugin table.
pub static INFO: PluginInfo = PluginInfo {
    name: "data",
    description: "a disk whose contents are given on the command line",
    config_help: "data|raw|base64=...     Specify disk data on the command line\n\
                  size=<SIZE>             Size of the backing disk\n\
                  allocator=sparse|malloc Backend allocation strategy",
    magic_config_key: Some("data"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("data_base64", "yes"), ("mlock", "yes"), ("zstd", "no")],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let fail = |m: String| StartError(format!("data: {m}"));
    let show_ast = p.debug_flag("AST") != 0;
    let log = p.log();
    let mut given = Vec::new();
    for key in ["data", "raw", "base64"] {
        for v in p.take_all(key) {
            given.push((key, v));
        }
    }
    let size = p.take_size("size")?;
    let alloc = allocator(&mut p)?;
    let vars: HashMap<String, String> = p.take_rest().into_iter().collect();
    let image = match given.as_slice() {
        [("data", expr)] => {
            let lookup = |name: &str| vars.get(name).cloned().or_else(|| std::env::var(name).ok());
            let mut tree = ast::Ast::new();
            let root =
                parse::parse(expr, &lookup, &mut tree).map_err(|e| fail(located(expr, &e)))?;
            let root = tree.optimize(root);
            if show_ast && log.verbose() {
                log.debug("BEGIN AST (-D data.AST=1)");
                for line in tree.listing(root) {
                    log.debug(&line);
                }
                log.debug("END AST");
            }
            eval::eval(&tree, root).map_err(|e| fail(located(expr, &e)))?
        }
        _ if !vars.is_empty() => {
            let (k, _) = vars.iter().next().expect("not empty");
            return Err(fail(format!(
                "unknown parameter '{k}' (only data= takes $VAR parameters)"
            )));
        }
        [("raw", bytes)] => flat(bytes.as_bytes().to_vec()),
        [("base64", text)] => flat(base64(text).map_err(fail)?),
        _ => return Err(fail("exactly one of data=, raw= or base64= must be given".into())),
    };
    let size = size.unwrap_or(image.size);
    let data = alloc.storage("data", size)?;
    for (&off, (len, run)) in image.runs.range(..size) {
        let len = (*len).min(size - off) as usize;
        match run {
            Run::Bytes { buf, from } => data.write(&buf[*from..from + len], off),
            Run::Fill(b) => {
                let chunk = vec![*b; len.min(1 << 20)];
                let mut done = 0;
                while done < len {
                    let k = (len - done).min(chunk.len());
                    data.write(&chunk[..k], off + done as u64);
                    done += k;
                }
            }
        }
    }
    Ok(Arc::new(Shared(Arc::new(Disk::new(size, data, alloc.extents)))))
}

/// Fuzzing: parse and evaluate an expression (no `$VAR` is defined).
#[doc(hidden)]
pub fn fuzz_expression(src: &str) {
    let mut ast = ast::Ast::new();
    if let Ok(root) = parse::parse(src, &|_| None, &mut ast) {
        let _ = eval::eval(&ast, root);
    }
}

fn flat(bytes: Vec<u8>) -> eval::Image {
    let mut img = eval::Image { size: bytes.len() as u64, ..Default::default() };
    if !bytes.is_empty() {
        let run = Run::Bytes { buf: std::rc::Rc::new(bytes), from: 0 };
        img.runs.insert(0, (img.size, run));
    }
    img
}

/// "at offset N (near `...`): message", on one line.
fn located(expr: &str, e: &parse::DataError) -> String {
    let rest: String = expr
        .get(e.pos..)
        .unwrap_or("")
        .chars()
        .take(24)
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    if rest.trim().is_empty() {
        format!("at offset {} (end of data): {}", e.pos, e.msg)
    } else {
        format!("at offset {} (near '{}'): {}", e.pos, rest.trim_end(), e.msg)
    }
}

/// Standard base64, with or without `=` padding.
fn base64(text: &str) -> std::result::Result<Vec<u8>, String> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let body = text.trim_end_matches('=');
    if text.len() - body.len() > 2 || (!text.len().is_multiple_of(4) && text.len() != body.len()) {
        return Err("base64: bad padding".into());
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for (i, c) in body.bytes().enumerate() {
        let v = val(c).ok_or_else(|| format!("base64: invalid character at offset {i}"))?;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    if body.len() % 4 == 1 {
        return Err("base64: truncated input".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(expr: &str) -> Vec<u8> {
        bytes_with(expr, &[])
    }

    fn bytes_with(expr: &str, vars: &[(&str, &str)]) -> Vec<u8> {
        let lookup = |n: &str| vars.iter().find(|v| v.0 == n).map(|v| v.1.to_string());
        let mut tree = ast::Ast::new();
        let root =
            parse::parse(expr, &lookup, &mut tree).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        let plain = eval::eval(&tree, root).unwrap_or_else(|e| panic!("{expr}: {e:?}")).bytes();
        // The optimizer must not change the meaning.
        let root = tree.optimize(root);
        let optimized =
            eval::eval(&tree, root).unwrap_or_else(|e| panic!("{expr}: optimized: {e:?}")).bytes();
        assert_eq!(plain, optimized, "{expr}: optimized");
        plain
    }

    fn error(expr: &str) -> String {
        let lookup = |_: &str| None;
        let mut tree = ast::Ast::new();
        let r = parse::parse(expr, &lookup, &mut tree).and_then(|root| {
            let root = tree.optimize(root);
            eval::eval(&tree, root)
        });
        match r {
            Ok(i) => panic!("{expr}: expected an error, got {} bytes", i.size),
            Err(e) => located(expr, &e),
        }
    }

    /// The optimized tree as `-D data.AST=1` lists it, on one line.
    fn listing(expr: &str) -> String {
        let lookup = |_: &str| None;
        let mut tree = ast::Ast::new();
        let root = parse::parse(expr, &lookup, &mut tree).unwrap();
        let root = tree.optimize(root);
        let lines = tree.listing(root);
        let words: Vec<&str> = lines.iter().map(|l| l.trim()).collect();
        words.join(" ")
    }

    #[test]
    fn bytes_words_offsets() {
        assert_eq!(bytes("0 1 2 3 @0x6 0x55 0xaa"), [0, 1, 2, 3, 0, 0, 0x55, 0xaa]);
        assert_eq!(bytes("010 0x10 10 08 0x"), [8, 16, 10, 0, 8, 0]);
        assert_eq!(bytes("1 @10").len(), 10);
        assert_eq!(bytes("1 @^16").len(), 16);
        assert_eq!(bytes("1 2 3 @-2 9"), [1, 9, 3]);
        assert_eq!(bytes("1 @+4 2"), [1, 0, 0, 0, 0, 2]);
        assert_eq!(bytes("1 2 3 4 @^4 5"), [1, 2, 3, 4, 5]);
        assert_eq!(
            bytes("le16:0x1234 be16:0x1234 le32:1 be32:1"),
            [0x34, 0x12, 0x12, 0x34, 1, 0, 0, 0, 0, 0, 0, 1]
        );
        assert_eq!(bytes("be64:1 le16:1 *2"), [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0]);
    }

    #[test]
    fn strings_groups_repeats_slices() {
        assert_eq!(bytes(r#""ab\n\x41\t\\\"\q""#), b"ab\nA\t\\\"q");
        assert_eq!(bytes("( 1 2 @8 )*2 3").len(), 17);
        assert_eq!(bytes("( 1 2 3 )[1:] ( 1 2 3 )[:2] 9"), [2, 3, 1, 2, 9]);
        assert_eq!(bytes("( 1 2 )[:1]*3"), [1, 1, 1]);
        assert_eq!(bytes("( 1 2 )*3[1:3]"), [2, 1]);
        assert_eq!(bytes("1*3*2"), [1; 6]);
        assert_eq!(bytes("\"ab\"*2 \"xyz\"[1:2]"), b"ababy");
        assert_eq!(bytes("( )*3 1*0 ( 1 )*0 7"), [7]);
        assert_eq!(bytes("( @4 )*2 1"), [0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn names_vars_comments() {
        assert_eq!(
            bytes(
                r"( 1 2 ) -> \a \a \a # comment
            3"
            ),
            [1, 2, 1, 2, 3]
        );
        assert_eq!(bytes(r"( 1 )->\a \a"), [1]);
        assert_eq!(bytes(r"1 -> \a"), Vec::<u8>::new());
        assert_eq!(
            bytes(r" ( 0x55 0xAA ) -> \sig ( @6 \sig ) -> \sector \sector \sector"),
            [0, 0, 0, 0, 0, 0, 0x55, 0xaa, 0, 0, 0, 0, 0, 0, 0x55, 0xaa]
        );
        assert_eq!(bytes_with("$x*2 $y", &[("x", "1 2"), ("y", "3")]), [1, 2, 1, 2, 3]);
        assert_eq!(bytes("\"a # b\""), b"a # b");
    }

    #[test]
    fn files_and_scripts() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f.bin");
        std::fs::write(&f, b"FILEDATA").unwrap();
        let p = f.display();
        assert_eq!(bytes(&format!("<{p} 1")), b"FILEDATA\x01");
        assert_eq!(bytes(&format!("<{p}[2:4]")), b"LE");
        assert_eq!(bytes("<(echo hi) 1"), b"hi\n\x01");
        assert_eq!(bytes("<(while :; do printf ab; done)[:5]"), b"ababa");
        assert_eq!(bytes("</dev/zero[:3] 1"), [0, 0, 0, 1]);
    }

    #[test]
    fn errors_point_at_the_offset() {
        for (expr, want) in [
            ("1 2 xyz", "at offset 4 (near 'xyz'): expected a byte"),
            ("256", "at offset 0 (near '256'): byte 256 is out of the range 0..255"),
            ("1e2", "at offset 1 (near 'e2')"),
            ("( 1 2", "unmatched '('"),
            ("1 2 )", "at offset 4 (near ')'): unmatched ')'"),
            ("6[1:3]", "is not a slice of an expression 1 bytes long"),
            ("( 1 2 3 )[2:1]", "[2:1] is not a slice"),
            (r"( 1 -> \a ) \a", r"\a is not defined"),
            ("$nov", "$nov: no such parameter"),
            ("1 @-2", "@-2 goes before the start (the offset is 1)"),
            ("( 1 @-2 )", "at offset 4 (near '@-2 )'): @-2 goes before"),
            ("()[1:]", "[1:-1] is not a slice of an expression 0 bytes long"),
            ("( 1 )[0:2]", "[0:2] is not a slice of an expression 1 bytes long"),
            ("@^3", "@^3: the alignment must be a power of 2"),
            ("@^0", "must be a power of 2"),
            ("le16:65536", "le16: could not parse number: \"65536\""),
            ("le32:-1", "negative numbers are not allowed"),
            ("be16:0x", "trailing garbage"),
            ("le16:1*2", "trailing garbage"),
            ("lx", "expected a byte"),
            ("@+-1", "@+N: the number must not be negative"),
            ("@x", "expected @N, @+N, @-N or @^N"),
            ("1 -", "expected -> \\NAME"),
            ("1 -> a", "expected \\NAME"),
            (r"1 -> \", "expected a name after \\"),
            ("@1 -> \\a", "-> \\NAME cannot follow an @offset"),
            ("1[1 : 2]", "expected [N:M], [N:], [:M] or [:]"),
            ("1[0:-2]", "[0:-2] is not a slice"),
            ("1*", "*N: expected a number"),
            ("$1", "expected a name after $"),
            ("<()", "<( ) needs a script"),
            ("<(echo", "unmatched '(' in <(script)"),
            ("(1 2 ()", "at offset 0 (near '(1 2 ()'): unmatched '('"),
            ("\"abc", "unterminated string"),
            (r#""\101""#, "octal and unicode escapes are not supported"),
            ("*2", "*N must follow an expression"),
            ("@4 *2", "*N cannot follow an @offset"),
            ("</nonexistent/x", "/nonexistent/x: No such file or directory"),
            ("<(exit 3)", "<(script) failed"),
            ("<", "<FILE needs a file name"),
            ("\"x\"*1000000000000", "too large"),
            ("\"xy\"*1000000000000", "too large"),
        ] {
            let got = error(expr);
            assert!(got.contains(want), "{expr}: {got}");
        }
    }

    #[test]
    fn groups_overwrite_what_was_there_holes_included() {
        assert_eq!(bytes("1 2 3 4 @0 ( @3 )"), [0, 0, 0, 4]);
        assert_eq!(bytes("1 2 3 4 @1 ( 9 @2 )*1"), [1, 9, 0, 4]);
        assert_eq!(bytes(r"( @2 ) -> \h 1 2 3 @0 \h"), [0, 0, 3]);
        assert_eq!(bytes("7*6 @1 ( 0 0 5 )[1:]"), [7, 0, 5, 7, 7, 7]);
        assert_eq!(bytes("1*10 @2 0*3"), [1, 1, 0, 0, 0, 1, 1, 1, 1, 1]);
    }

    #[test]
    fn names_are_bound_where_they_are_evaluated() {
        // A name is seen by what follows it in its list, and in groups.
        assert_eq!(bytes(r"5 -> \x ( \x \x ) \x"), [5, 5, 5]);
        // A group's bindings end with it.
        assert_eq!(bytes(r"1 -> \x ( 2 -> \x \x ) \x"), [2, 1]);
        // A name keeps the bindings of where it was bound.
        assert_eq!(bytes(r"1 -> \a ( \a 2 ) -> \b 3 -> \a \b \a"), [1, 2, 3]);
        assert_eq!(error(r"\x 1 -> \x"), "at offset 0 (near '\\x 1 -> \\x'): \\x is not defined");
    }

    #[test]
    fn the_optimizer_lists_what_c_nbdkit_lists() {
        for (expr, want) in [
            ("", "null"),
            ("9", "9"),
            ("7 7 7 7", "fill(7*4)"),
            ("0x41 0x42", "\"AB\""),
            ("\"zz\" 0x7a \"zz\"", "fill(122*5)"),
            ("( ( 1 2 ) ) ( 3 )", "\"\\x01\\x02\\x03\""),
            ("( 4 4 ) ( 5 5 6 )", "( fill(4*2) fill(5*2) 6 )"),
            ("( 1 2 )*0 \"x\"*1", "\"x\""),
            ("\"ab\"*3", "\"ababab\""),
            ("\"ab\"*5", "( \"ab\" ) *5"),
            ("( 3*2 )*5", "fill(3*10)"),
            ("( 1 2 3 4 5 6 7 8 )*5*5", "( \"\\x01\\x02\\x03\\x04\\x05\\x06\\x07\\x08\" ) *25"),
            ("\"abcdef\"[2:5]", "\"cde\""),
            ("\"abcdef\"[4:]", "\"ef\""),
            ("\"abcdef\"[3:4]", "100"),
            ("9*9[3:]", "fill(9*6)"),
            ("9*9[8:]", "9"),
            ("\"abc\"[5:5]", "null"),
            ("\"abc\"[1:9]", "( \"abc\" )[1:9]"),
            ("1 @4 @+2 @-1 @^8", "( 1 @4 @+2 @-1 @^8 )"),
            (r"1 -> \a \a", r"( ( 1 ) -> \a \a )"),
            ("<f[1:2] <(echo)", "( ( <f )[1:2] <(echo) )"),
            ("\"a\\x00\\\\\\\"\"", "\"a\\x00\\\"\""),
        ] {
            assert_eq!(listing(expr), want, "{expr}");
        }
    }

    #[test]
    fn base64_decodes() {
        assert_eq!(base64("MTIz").unwrap(), b"123");
        assert_eq!(base64("YQ==").unwrap(), b"a");
        assert_eq!(base64("YWI=").unwrap(), b"ab");
        assert_eq!(base64("YWI").unwrap(), b"ab");
        assert!(base64("!!").is_err());
        assert!(base64("Y").is_err());
        assert!(base64("Y===").is_err());
    }
}
