use predicates::prelude::*;

use crate::util::*;

#[test]
fn help_lists_options_and_plugins() {
    nbdkit()
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("[-U|--unix SOCKET|-]"))
        .stdout(predicate::str::contains("--print-uri"))
        .stdout(predicate::str::contains("memory"))
        .stdout(predicate::str::contains("pattern"));
}

#[test]
fn plugin_help_shows_its_parameters() {
    nbdkit()
        .args(["memory", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("plugin: memory"))
        .stdout(predicate::str::contains("size=<SIZE>"));
}

#[test]
fn version() {
    nbdkit()
        .arg("-V")
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"^nbdkit 1\.\d+\.\d+ \(rust-[0-9.]+\)\n$").unwrap());
    nbdkit()
        .args(["--version", "null"])
        .assert()
        .success()
        .stdout(predicate::str::is_match(r"\nnull 1\.\d+\.\d+\n$").unwrap());
    // Each filter in the order given, then the plugin, as C prints them.
    let out =
        nbdkit().args(["--filter=cow", "--filter=delay", "memory", "--version"]).output().unwrap();
    assert!(out.status.success());
    let names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split(' ').next().unwrap().to_string())
        .collect();
    assert_eq!(names, ["nbdkit", "cow", "delay", "memory"]);
}

#[test]
fn dump_config() {
    nbdkit()
        .arg("--dump-config")
        .assert()
        .success()
        .stdout(predicate::str::contains("exit_with_parent=yes\n"))
        .stdout(predicate::str::contains("version_major=1\n"))
        .stdout(predicate::str::contains("name=nbdkit\n"));
}

#[test]
fn dump_plugin() {
    for args in [&["memory", "--dump-plugin"][..], &["--dump-plugin", "memory"][..]] {
        nbdkit()
            .args(args)
            .assert()
            .success()
            .stdout(predicate::str::contains("name=memory\n"))
            .stdout(predicate::str::contains("magic_config_key=size\n"))
            .stdout(predicate::str::contains("thread_model=parallel\n"))
            .stdout(predicate::str::contains("has_pwrite=1\nhas_flush=1\n"))
            .stdout(predicate::str::contains("has_can_fast_zero=1\n"));
    }
    // The callbacks a plugin has, as C's plugin of that name has them.
    let has = |plugin: &str| -> Vec<String> {
        let out = nbdkit().args(["--dump-plugin", plugin]).output().unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("has_"))
            .map(String::from)
            .collect()
    };
    assert_eq!(has("example1"), ["has_load=1", "has_open=1", "has_get_size=1", "has_pread=1"]);
    assert!(!has("pattern").contains(&"has_pwrite=1".to_string()));
    for p in ["sh", "eval"] {
        nbdkit()
            .args(["--dump-plugin", p])
            .assert()
            .success()
            .stdout(predicate::str::contains("\nmax_known_status=3\n"));
    }
    if let Some(c) = c_nbdkit() {
        for p in ["memory", "null", "file", "nbd", "sh", "data"] {
            let theirs =
                std::process::Command::new(&c).args(["--dump-plugin", p]).output().unwrap();
            let theirs: Vec<String> = String::from_utf8(theirs.stdout)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("has_"))
                .map(String::from)
                .collect();
            assert_eq!(has(p), theirs, "{p}");
        }
    }
    // The thread model a script chooses, and the filters' say in it.
    let tm = |args: &[&str], script: &str| -> String {
        let out = nbdkit().arg("--dump-plugin").args(args).write_stdin(script).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("thread_model=").map(String::from))
            .unwrap()
    };
    let plain = "case $1 in get_size) echo 1M ;; *) exit 2 ;; esac\n";
    let parallel = "case $1 in thread_model) echo parallel ;; *) exit 2 ;; esac\n";
    assert_eq!(tm(&["sh", "-"], plain), "serialize_all_requests");
    assert_eq!(tm(&["sh", "-"], parallel), "parallel");
    assert_eq!(
        tm(&["--filter=noparallel", "sh", "-", "serialize=connections"], parallel),
        "serialize_connections"
    );
    assert_eq!(
        tm(&["--filter=noparallel", "memory", "serialize=connections"], ""),
        "serialize_connections"
    );
    // -s with --dump-plugin is refused, as in C.
    nbdkit()
        .args(["-s", "--dump-plugin", "memory"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("cannot be used in this combination"));
}

#[test]
fn long_and_short_options() {
    nbdkit()
        .arg("--long-options")
        .assert()
        .success()
        .stdout(predicate::str::contains("--exit-with-parent\n"))
        .stdout(predicate::str::contains("--run\n"))
        .stdout(predicate::str::contains("--long-options\n").not())
        .stdout(predicate::str::contains("--short-options\n").not());
    nbdkit().arg("--short-options").assert().success().stdout(predicate::str::contains("-U\n"));
}

/// Bad command lines: exit 1, one line on stderr naming the problem, and
/// nothing listening.
#[rstest::rstest]
#[case(&["nosuch"], "unknown plugin 'nosuch'")]
#[case(&["./nbdkit-foo-plugin.so"], "cannot open plugin")]
#[case(&["size=1G", "memory"], "unknown plugin 'size=1G'")]
#[case(&[], "no plugins given")]
#[case(&["memory"], "you must specify size=<SIZE>")]
#[case(&["memory", "1X"], "unknown suffix 'X'")]
#[case(&["memory", "size=-1"], "size cannot be negative")]
#[case(&["memory", "8E"], "exceeds maximum")]
#[case(&["memory", "size=abc"], "could not parse size")]
#[case(&["memory", "1M", "foo=bar"], "unknown parameter 'foo'")]
#[case(&["null", "size=1", "oops"], "could not parse size")]
#[case(&["--bogus", "memory", "1M"], "unrecognized option '--bogus'")]
#[case(&["-Z", "memory", "1M"], "invalid option -- 'Z'")]
#[case(&["memory", "1M", "-p"], "requires an argument")]
#[case(&["-p", "notaport", "memory", "1M"], "could not parse port")]
#[case(&["-p", "70000", "memory", "1M"], "could not parse port")]
#[case(&["--tls=require", "--tls-certificates=/nonexistent", "memory", "1M"], "/nonexistent/ca-cert.pem")]
#[case(&["--tls=on", "--tls-psk=/nonexistent", "memory", "1M"], "--tls-psk: /nonexistent: No such file")]
#[case(&["--tls=maybe", "memory", "1M"], "--tls: could not decipher 'maybe'")]
#[case(&["-o", "--tls=require", "memory", "1M"], "cannot use oldstyle protocol (-o) and require TLS")]
#[case(&["--filter=nosuch", "memory", "1M"], "unknown filter 'nosuch'")]
#[case(&["-s", "--run", "true", "memory", "1M"], "cannot be used in this combination")]
#[case(&["-U", "-", "-p", "1", "memory", "1M"], "cannot be used in this combination")]
#[case(&["--log=nowhere", "memory", "1M"], "--log")]
#[case(&["--vsock", "memory", "1M"], "--vsock is not supported")]
#[case(&["-U", "/nonexistent/dir/sock", "memory", "1M"], "bind: /nonexistent/dir/sock")]
#[case(&["-f", "-t", "x", "memory", "1M"], "-t: could not parse")]
fn bad_command_lines(#[case] args: &[&str], #[case] msg: &str) {
    let out = nbdkit().args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("nbdkit: error: "), "{args:?}: {err}");
    assert!(err.contains(msg), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn options_may_follow_the_plugin() {
    // getopt-style permutation, `--opt value`, bundled short options.
    nbdkit()
        .args(["-U", "-", "memory", "1M", "-fr", "--run", "echo ok", "--exportname", "e"])
        .assert()
        .success()
        .stdout("ok\n");
}

#[test]
fn sizes_parse_as_nbdkit_does() {
    for (arg, size) in [
        ("512", 512u64),
        ("1s", 512),
        ("1k", 1024),
        ("2K", 2048),
        ("1M", 1 << 20),
        ("1G", 1 << 30),
        ("1T", 1 << 40),
        ("1P", 1 << 50),
        ("7E", 7 << 60),
        ("size=3b", 3),
        ("size= +9", 9),
    ] {
        let srv = Server::start(&["memory", arg]);
        let (_c, got, _) = Raw::open(srv.connect(), false);
        assert_eq!(got, size, "{arg}");
    }
}
