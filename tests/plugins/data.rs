//! The data plugin: its DATA FORMAT compared byte for byte (and extent for
//! extent) with C nbdkit, and its parameters.

use crate::util::*;

/// Size, bytes and extents as a client sees them, for one command line.
fn served(nbdkit: &std::path::Path, args: &[&str], dir: &std::path::Path) -> String {
    let tmp = scratch();
    let mut cmd = std::process::Command::new(nbdkit);
    cmd.arg("-U")
        .arg(tmp.path().join("nbd.sock"))
        .arg("data")
        .args(args)
        .args([
            "--run",
            "nbdinfo --size \"$uri\" && nbdcopy \"$uri\" - | od -An -tx1 -v && nbdinfo --map \"$uri\"",
        ])
        .current_dir(dir)
        .env("TMPDIR", tmp.path())
        .env("PATH", path_env())
        .env("FROM_ENV", "0x46 0x45");
    let out = cmd.output().unwrap();
    format!(
        "status {:?}\n{}{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        if out.status.success() { String::new() } else { "(failed)".into() }
    )
}

/// Expressions whose bytes, size and extents must match C nbdkit's.
const SAME_AS_C: &[&[&str]] = &[
    &["0 1 2 3 @0x1fe 0x55 0xaa"],
    &["0 1 2 3 @^0x200 @-2 le16:0xaa55"],
    &["1 @10"],
    &["@4"],
    &["1 2 3 @-2 9"],
    &["1 @+4 2 @^8 3"],
    &["010 0x10 10 0XfF 08"],
    &["le16:0x1234 be16:0x1234 le32:1 be32:1 le64:0x0102030405060708 be64:1"],
    &["le16:1 *2 be32:07"],
    &[r#""ab\n\t\\\"c\q" 0"#],
    &[r#""\x41\x7e""#],
    &["( 1 2 @8 ) 3"],
    &["( 1 2 @8 )*2 3"],
    &["( 0x55 0xAA )*256"],
    &["( \"Hello\" )*2000", "size=8192"],
    &["0x55*16 0*16 1"],
    &["0*65536 1"],
    &["@65536 1"],
    &["@100000 0"],
    &["( 1 2 3 )[1:] ( 1 2 3 )[:2] ( 1 2 3 )[:] 9"],
    &["( 1 2 )[:1]*3 ( 1 2 )*3[1:3]"],
    &["1*3*2 ( 1 2 )*2*2"],
    &["\"ab\"*2 \"xyz\"[1:2]"],
    &["( )*3 1*0 ( 1 )*0 7"],
    &["1 * 4 ( 2 3 ) *  2"],
    &["\"Hello\"[99:99] \"Hello\"[2:2] 6[1:1] 7"],
    &["( @4 )*2 1"],
    &[r"( 1 2 ) -> \a \a \a # comment
        3"],
    &[r"( 0x55 0xAA ) -> \boot-signature ( @0x1fe \boot-signature ) -> \sector \sector \sector"],
    &[r"( 1 )->\a \a 1 -> \b"],
    &["$x*2 $y", "x=1 2", "y=3"],
    &["$FROM_ENV"],
    &["<file.bin 1 <file.bin[2:4]"],
    &["<(printf hi) 1 <(while :; do printf ab; done)[:5]"],
    &["</dev/zero[:3] 1"],
    &["1 2 3 4 @0 ( @3 )"],
    &["1 2 3 4 @1 ( 9 @2 )*1 ( 1 )*3"],
    &[r"( @2 ) -> \h 1 2 3 @0 \h"],
    &["7*6 @1 ( 0 0 5 )[1:] \"aaaa\"[1:3] ( 1 1 1 )[2:3]"],
    &[r"1 -> \a ( \a 2 ) -> \b 3 -> \a \b \a ( 4 -> \a \a ) \a"],
    &["@+ 3 1 @- 2 2 @^ 0x10 3 * 2 ( 1 2 3 )[ 1: 2]"],
    &["1*40000 @32766 0*5 \"ab\"*40000"],
    &["( 1 2 @8 )*4000 @100 ( 1 )*0"],
    &["$x[1:]", "x=( 1 2 3 )*2"],
    &["1", "size=4"],
    &["1 @0x10 2", "size=8"],
    &["# only a comment"],
    &[""],
    &["1 @65536", "allocator=malloc"],
    &["@1048576 1 @2097152", "allocator=sparse"],
    &["@0x1be 0 0 2 0 0x83 0x20 0x20 0 le32:1 le32:0x7ff @0x1fe 0x55 0xaa", "size=1M"],
];

#[test]
fn bytes_size_and_extents_match_c_nbdkit() {
    if !have("nbdinfo") || !have("nbdcopy") {
        return;
    }
    let Some(c) = c_nbdkit() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("file.bin"), b"FILEDATA").unwrap();
    for args in SAME_AS_C {
        let ours = served(&bin(), args, dir.path());
        assert!(ours.starts_with("status Some(0)"), "{args:?}: {ours}");
        assert_eq!(ours, served(&c, args, dir.path()), "{args:?}");
    }
}

/// Expressions both servers must refuse at start-up.
const BOTH_REFUSE: &[&str] = &[
    "256",
    "0x100",
    "1e2",
    "( 1 2",
    "1 2 )",
    "xyz",
    "6[1:3]",
    "( 1 2 3 )[0:10]",
    "( 1 2 3 )[2:1]",
    r"\a",
    r"( 1 -> \a ) \a",
    "$nov",
    "</nonexistent",
    "1 @-2",
    "@^3",
    "@^0",
    "le16:65536",
    "le32:-1",
    "be16:0x",
    "\"abc",
    "*2",
    "@4 *2",
    "<(exit 1)",
    "@1M",
    "@",
    "le16:1*2",
    "lx",
    "1[1 : 2]",
    "1*",
    "1 -> a",
    "@1 -> \\a",
    "<()",
    "\"x\"[0:2]",
    "$a",
];

#[test]
fn bad_expressions_are_refused_like_c_nbdkit() {
    let c = c_nbdkit();
    let dir = tempfile::tempdir().unwrap();
    for expr in BOTH_REFUSE {
        let ours = served(&bin(), &[expr], dir.path());
        assert!(ours.starts_with("status Some(1)"), "{expr}: {ours}");
        if let Some(c) = &c {
            let theirs = served(c, &[expr], dir.path());
            assert!(theirs.starts_with("status Some(1)"), "{expr}: C: {theirs}");
        }
    }
}

#[test]
fn extra_parameters_need_data() {
    refused(
        &[],
        &["data", "raw=x", "a=1"],
        "data: unknown parameter 'a' (only data= takes $VAR parameters)",
    );
}

/// `-v -D data.AST=1`: the optimized expression between BEGIN AST and END
/// AST, one element a line.
fn ast_of(expr: &str) -> String {
    let out = nbdkit()
        .args(["-U", "-", "-v", "-D", "data.AST=1", "data", expr])
        .args(["--run", "true"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
    let lines: Vec<&str> = err
        .lines()
        .skip_while(|l| !l.ends_with("debug: BEGIN AST (-D data.AST=1)"))
        .skip(1)
        .take_while(|l| !l.ends_with("debug: END AST"))
        .map(|l| l.strip_prefix("nbdkit: debug: ").unwrap_or(l))
        .collect();
    lines.join("\n")
}

#[test]
fn the_ast_debug_flag_lists_the_optimized_expression() {
    assert_eq!(ast_of("1 1 ( 1 )"), "fill(1*3)");
    assert_eq!(
        ast_of(r"( 0x41 0x42 )*5 -> \s \s @^8"),
        "(\n    (\n        (\n            \"AB\"\n        ) *5\n    ) -> \\s\n    \\s\n    @^8\n)"
    );
    // Without -v, nothing is listed.
    let out = nbdkit()
        .args(["-U", "-", "-D", "data.AST=1", "data", "1"])
        .args(["--run", "true"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn the_ast_matches_c_nbdkit() {
    let Some(c) = c_nbdkit() else { return };
    let listing = |nbdkit: &std::path::Path, expr: &str| {
        let out = std::process::Command::new(nbdkit)
            .args(["-U", "-", "-v", "-D", "data.AST=1", "data", expr, "size=64"])
            .args(["--run", "true"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .skip_while(|l| !l.contains("debug: BEGIN AST"))
            .take_while(|l| !l.contains("debug: END AST"))
            .map(|l| l.split_once("debug: ").map_or(l, |x| x.1).to_string())
            .collect::<Vec<_>>()
    };
    for expr in [
        "( 2 2 ) 2 ( 3 3 ( 3 4 ) )",
        "\"pq\"*3 ( 5 6 7 )*0 ( 8 )*1*7",
        "( \"hello\" )[1:4] ( 9*20 )[2:] \"xyz\"[:1] ()[:]",
        r"( 1 @3 ) -> \n \n*2 ( \n )",
        "<(echo a)[:2] \"\\x7f\\x80 ~\"",
        "@7 @^4 1",
    ] {
        assert_eq!(listing(&bin(), expr), listing(&c, expr), "{expr}");
    }
}

#[test]
fn sliced_scripts_are_read_only_as_far_as_needed() {
    // C 1.32 reads nothing for <(SCRIPT)[:] and never ends on an endless
    // script sliced from N > 0; we read what the slice needs.
    let disk = disk(&["data", "<(printf hello)[:] <(yes | tr -d '\\n')[2:5]"]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 8);
    assert_eq!(c.read(0, 8).unwrap(), b"helloyyy");
}

#[test]
fn raw_and_base64() {
    let disk = disk(&["data", "raw=abc", "size=5"]);
    assert_eq!(disk.connect().unwrap().read(0, 5).unwrap(), b"abc\0\0");
    let disk = disk_b64();
    assert_eq!(disk.connect().unwrap().read(0, 3).unwrap(), b"123");
}

fn disk_b64() -> nbdkit_test::CaptiveDisk {
    disk(&["data", "base64=MTIz"])
}

#[test]
fn writes_are_kept_in_memory() {
    let disk = disk(&["data", "1 2 3 @4096"]);
    let mut c = disk.connect().unwrap();
    c.write(1, b"x").unwrap();
    assert_eq!(c.read(0, 3).unwrap(), [1, b'x', 3]);
}

#[rstest::rstest]
#[case(&["data"], "exactly one of data=, raw= or base64= must be given")]
#[case(&["data", "1", "raw=x"], "exactly one of data=, raw= or base64= must be given")]
#[case(&["data", "1 2 xyz"], "data: at offset 4 (near 'xyz'): expected a byte")]
#[case(&["data", "256"], "byte 256 is out of the range 0..255")]
#[case(&["data", "( 1 2"], "unmatched '('")]
#[case(&["data", "$nope"], "$nope: no such parameter or environment variable")]
#[case(&["data", "base64=!!"], "base64: invalid character at offset 0")]
#[case(&["data", "1", "allocator=zstd"], "allocator=zstd is not supported")]
#[case(&["data", "1", "allocator=bogus"], "unknown allocator \"bogus\"")]
#[case(&["data", "1", "size=junk"], "size")]
#[case(&["data", "<(exit 3)"], "<(script) failed")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-"], args, msg);
}
