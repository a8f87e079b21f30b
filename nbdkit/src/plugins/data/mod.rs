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
//! the data) and `allocator=sparse|malloc` (see the memory plugin). Any
//! other `key=value` is a variable for `$key`. Writes are kept in memory.
//!
//! Octal and `\u` escapes in strings are an error, as in C nbdkit 1.32.
//!
//! Example: `nbdkit -U - data '( 0x55 0xAA )*256 @^4096' --run 'nbdinfo "$uri"'`

mod eval;
mod parse;

use std::collections::HashMap;
use std::sync::Arc;

use super::memory::{allocator, Disk};
use super::{PluginInfo, Shared};
use crate::backend::{Plugin, Result, ThreadModel};
use crate::error::StartError;
use crate::params::Params;
use crate::sparse::Sparse;
use eval::Piece;

pub static INFO: PluginInfo = PluginInfo {
    name: "data",
    description: "a disk whose contents are given on the command line",
    config_help: "data|raw|base64=...     Specify disk data on the command line\n\
                  size=<SIZE>             Size of the backing disk\n\
                  allocator=sparse|malloc Backend allocation strategy",
    magic_config_key: Some("data"),
    thread_model: ThreadModel::Parallel,
    build,
    dump: &[("data_base64", "yes"), ("mlock", "no"), ("zstd", "no")],
};

fn build(mut p: Params) -> Result<Arc<dyn Plugin>, StartError> {
    let fail = |m: String| StartError(format!("data: {m}"));
    let mut given = Vec::new();
    for key in ["data", "raw", "base64"] {
        for v in p.take_all(key) {
            given.push((key, v));
        }
    }
    let size = p.take_size("size")?;
    let extents = allocator(&mut p)?;
    let vars: HashMap<String, String> = p.take_rest().into_iter().collect();
    let image = match given.as_slice() {
        [("data", expr)] => {
            let lookup = |name: &str| vars.get(name).cloned().or_else(|| std::env::var(name).ok());
            let nodes = parse::parse(expr, &lookup).map_err(|e| fail(located(expr, &e)))?;
            eval::eval(&nodes).map_err(|e| fail(located(expr, &e)))?
        }
        [("raw", bytes)] => flat(bytes.as_bytes().to_vec()),
        [("base64", text)] => flat(base64(text).map_err(fail)?),
        _ => {
            return Err(fail(
                "exactly one of data=, raw= or base64= must be given".into(),
            ))
        }
    };
    let size = size.unwrap_or(image.size);
    let data = Sparse::new();
    for (off, piece) in &image.pieces {
        if *off >= size {
            continue;
        }
        let room = (size - off) as usize;
        match piece {
            Piece::Data(d) => data.write(&d[..d.len().min(room)], *off),
            Piece::Fill(0, n) => data.zero((*n).min(room as u64), *off),
            Piece::Fill(b, n) => {
                let n = (*n).min(room as u64);
                let chunk = vec![*b; n.min(1 << 20) as usize];
                let mut done = 0;
                while done < n {
                    let k = (n - done).min(chunk.len() as u64);
                    data.write(&chunk[..k as usize], off + done);
                    done += k;
                }
            }
        }
    }
    Ok(Arc::new(Shared(Arc::new(Disk::new(size, data, extents)))))
}

fn flat(bytes: Vec<u8>) -> eval::Image {
    eval::Image {
        size: bytes.len() as u64,
        pieces: vec![(0, Piece::Data(bytes))],
    }
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
        format!(
            "at offset {} (near '{}'): {}",
            e.pos,
            rest.trim_end(),
            e.msg
        )
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
        let nodes = parse::parse(expr, &lookup).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        eval::eval(&nodes)
            .unwrap_or_else(|e| panic!("{expr}: {e:?}"))
            .bytes()
    }

    fn error(expr: &str) -> String {
        let lookup = |_: &str| None;
        match parse::parse(expr, &lookup).and_then(|n| eval::eval(&n)) {
            Ok(i) => panic!("{expr}: expected an error, got {} bytes", i.size),
            Err(e) => located(expr, &e),
        }
    }

    #[test]
    fn bytes_words_offsets() {
        assert_eq!(
            bytes("0 1 2 3 @0x6 0x55 0xaa"),
            [0, 1, 2, 3, 0, 0, 0x55, 0xaa]
        );
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
        assert_eq!(
            bytes("be64:1 le16:1 *2"),
            [0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0]
        );
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
        assert_eq!(
            bytes_with("$x*2 $y", &[("x", "1 2"), ("y", "3")]),
            [1, 2, 1, 2, 3]
        );
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
            (
                "256",
                "at offset 0 (near '256'): byte 256 is out of the range 0..255",
            ),
            ("1e2", "at offset 1 (near 'e2')"),
            ("( 1 2", "unmatched '('"),
            ("1 2 )", "at offset 4 (near ')'): unmatched ')'"),
            ("6[1:3]", "is not a slice of an expression 1 bytes long"),
            ("( 1 2 3 )[2:1]", "[2:1] is not a slice"),
            (r"( 1 -> \a ) \a", r"\a is not defined"),
            ("$nov", "$nov: no such parameter"),
            ("1 @-2", "@-2 goes before the start (the offset is 1)"),
            ("@^3", "@^3: the alignment must be a power of 2"),
            ("@^0", "must be a power of 2"),
            ("le16:65536", "does not fit in 16 bits"),
            ("le32:-1", "negative numbers are not allowed"),
            ("be16:0x", "is not a number"),
            ("\"abc", "unterminated string"),
            (r#""\101""#, "octal and unicode escapes are not supported"),
            ("*2", "*N must follow an expression"),
            ("@4 *2", "*N cannot follow an @offset"),
            (
                "</nonexistent/x",
                "/nonexistent/x: No such file or directory",
            ),
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
