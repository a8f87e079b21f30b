//! The example2 plugin and `-D NAME.FLAG=N` debug flags.

use crate::util::*;

/// stderr of `nbdkit -U SOCK ARGS --run true`, and its exit status.
fn stderr_of(args: &[&str]) -> (Option<i32>, String) {
    let tmp = scratch();
    let out = nbdkit()
        .arg("-U")
        .arg(tmp.path().join("nbd.sock"))
        .args(args)
        .args(["--run", "true"])
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn serves_a_file_read_only() {
    let dir = scratch();
    let f = dir.path().join("disk");
    std::fs::write(&f, b"example2 bytes").unwrap();
    let arg = format!("file={}", f.display());
    let disk = disk(&["example2", &arg]);
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 14);
    assert_eq!(c.read(0, 8).unwrap(), b"example2");
    assert!(c.write(0, b"x").is_err());
}

#[test]
fn the_extra_flag_logs_the_size_with_v() {
    let dir = scratch();
    let f = dir.path().join("disk");
    std::fs::write(&f, [0u8; 1024]).unwrap();
    let arg = format!("file={}", f.display());
    let tmp = scratch();
    let out = nbdkit()
        .arg("-U")
        .arg(tmp.path().join("nbd.sock"))
        .args(["-v", "-D", "example2.extra=1", "example2", &arg])
        .args(["--run", "nbdinfo --size \"$uri\""])
        .env("PATH", path_env())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("debug: extra debugging: the file is 1024 bytes"), "{err}");
    assert!(!err.contains("warning"), "{err}");
    // Without the flag, nothing extra.
    let (code, err) = stderr_of(&["-v", "example2", &arg]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("extra debugging"), "{err}");
}

#[test]
fn unknown_and_unused_flags_warn() {
    let (code, err) = stderr_of(&["-D", "example2.unknown=1", "example2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("you must supply the file="), "{err}");
    assert!(
        err.contains("warning: -D example2.unknown: example2 does not contain a global variable called example2_debug_unknown"),
        "{err}"
    );
    let (code, err) = stderr_of(&["-D", "example1.foo=1", "example2"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("warning: debug flag -D example1.foo was not used"), "{err}");
    let (_, err) = stderr_of(&["-D", "example2.extra=1", "example2"]);
    assert!(!err.contains("warning"), "{err}");
}

#[rstest::rstest]
#[case("=")]
#[case(".")]
#[case("=.")]
#[case(".=")]
#[case(".extra=1")]
#[case("example2.=1")]
#[case("example2.extra=")]
#[case("example2.extra=x")]
#[case("example2=1")]
fn badly_formed_flags_are_refused(#[case] flag: &str) {
    let (code, err) = stderr_of(&["-D", flag, "example2", "file=/dev/null"]);
    assert_eq!(code, Some(1), "{flag}: {err}");
    assert!(err.contains("-D (Debug Flag) must have the format NAME.FLAG=N"), "{flag}: {err}");
}
