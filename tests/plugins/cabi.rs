//! C plugins (.so): a plugin of ours with every callback
//! (fixtures/testplugin.c, compiled here against nbdkit-plugin-dev's
//! headers), Debian's plugins and the python plugin, each side by side
//! with C nbdkit.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::util::*;

const DEBIAN_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins";

/// fixtures/testplugin.c as a .so, built once per run. None (a skip,
/// which fails under CI=true) without a C compiler or the headers.
fn test_plugin() -> Option<PathBuf> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| build_test_plugin("nbdkit-test-plugin.so", &[])).clone()
}

/// The test plugin compiled with `defines`, as `name`.
fn build_test_plugin(name: &str, defines: &[&str]) -> Option<PathBuf> {
    if !have("cc") {
        return None;
    }
    if !Path::new("/usr/include/nbdkit-plugin.h").exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "nbdkit-plugin-dev is required under CI=true"
        );
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/testplugin.c");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let st = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror"])
        .args(defines)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "cc failed on {}", src.display());
    Some(out)
}

/// Debian's plugin NAME, if installed (a failure under CI=true).
fn debian(name: &str) -> Option<String> {
    let p = format!("{DEBIAN_PLUGINS}/nbdkit-{name}-plugin.so");
    if Path::new(&p).exists() {
        return Some(p);
    }
    assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "{p} is required under CI=true");
    None
}

/// `SERVER -U SOCK ARGS --run SCRIPT`: (exit status, stdout, stderr).
fn run(server: &Path, args: &[&str], script: &str) -> (Option<i32>, String, String) {
    run_captive_all(server, args, script)
}

/// What a client sees of the test plugin, and what the plugin saw.
const CLIENT: &str = r#"nbdinfo --list "$uri" | grep -E "export=|description|block_size|can_|is_"
nbdsh -c "h.add_meta_context('base:allocation'); h.connect_uri('$uri')" -c '
h.pwrite(b"hello", 100, nbd.CMD_FLAG_FUA)
print(h.pread(5, 100))
h.flush()
h.trim(4096, 8192)
h.zero(4096, 0)
h.zero(4096, 0, nbd.CMD_FLAG_NO_HOLE)
h.cache(4096, 0)
print(h.pread(5, 100))
def f(m, o, e, err): print(m, o, e)
h.block_status(1 << 20, 0, f)
'"#;

/// The test plugin under `server` with `args`: (stdout, the plugin's log).
fn test_plugin_run(server: &Path, so: &Path, args: &[&str], script: &str) -> (String, String) {
    let dir = scratch();
    let log = dir.path().join("log");
    let mut all = vec![so.to_str().unwrap().to_string(), format!("log={}", log.display())];
    all.extend(args.iter().map(|a| a.to_string()));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let (code, out, err) = run(server, &all, script);
    assert_eq!(code, Some(0), "{}: {out}\n{err}", server.display());
    (out, slurp(&log))
}

#[test]
fn every_callback_is_called_as_c_nbdkit_calls_it() {
    let Some(so) = test_plugin() else { return };
    let (out, log) = test_plugin_run(&bin(), &so, &["count=7", "flag=yes"], CLIENT);
    assert!(out.contains("export=\"a\":\n\tdescription: first\n\tis_rotational: true"), "{out}");
    assert!(out.contains("bytearray(b'hello')\n"), "{out}");
    assert!(out.contains("bytearray(b'\\x00\\x00\\x00\\x00\\x00')"), "{out}");
    assert!(out.contains("base:allocation 0 [524288, 0, 524288, 3]"), "{out}");
    for line in [
        "config log",
        "count=7",
        "flag=1",
        "config_complete",
        "get_ready",
        "after_fork",
        "preconnect readonly=0",
        "list_exports readonly=0 tls=0",
        "open readonly=0 export=a tls=0",
        "pwrite count=5 offset=100 fua=1",
        "flush",
        "trim count=4096 offset=8192",
        "zero count=4096 offset=0 may_trim=1 fast=0",
        "zero count=4096 offset=0 may_trim=0 fast=0",
        "cache count=4096 offset=0",
        "close",
        "unload",
    ] {
        assert!(log.lines().any(|l| l == line), "no {line:?} in:\n{log}");
    }
    assert!(log.lines().last() == Some("unload"), "{log}");
    if let Some(c) = c_nbdkit() {
        // C's captive server can exit before the last connection's .close
        // runs; ours always closes it. Otherwise the same calls.
        let (c_out, c_log) = test_plugin_run(&c, &so, &["count=7", "flag=yes"], CLIENT);
        let opened = |l: &str| l.lines().filter(|l| *l != "close").collect::<Vec<_>>().join("\n");
        assert_eq!(out, c_out, "C nbdkit");
        assert_eq!(opened(&log), opened(&c_log), "C nbdkit");
    }
}

#[test]
fn the_plugins_errno_reaches_the_client() {
    let Some(so) = test_plugin() else { return };
    let py = format!(
        r#"{NBDSH_TRY}
t("pread", lambda: h.pread(512, 8192))
t("pwrite", lambda: h.pwrite(b"x" * 512, 8192))
t("trim", lambda: h.trim(512, 8192))
t("pread elsewhere", lambda: h.pread(512, 0))
"#
    );
    let script = format!("nbdsh -u \"$uri\" -c '{}'", py.replace('\'', "'\\''"));
    let args = ["errat=8192"];
    // qemu sees the same errors.
    let qemu = r#"qemu-io -f raw -c "read 8192 512" -c "write 8192 512" -c "read 0 512" "$uri" 2>&1 | grep -v ops"#;
    let dir = scratch();
    let log = format!("log={}", dir.path().join("log").display());
    if have("qemu-io") {
        let (_, q, _) = run(&bin(), &[so.to_str().unwrap(), &log, args[0]], qemu);
        assert!(q.contains("read failed: Operation not permitted"), "{q}");
        assert!(q.contains("write failed: No space left on device"), "{q}");
        assert!(q.contains("read 512/512 bytes at offset 0"), "{q}");
        if let Some(c) = c_nbdkit() {
            assert_eq!(q, run(&c, &[so.to_str().unwrap(), &log, args[0]], qemu).1);
        }
    }
    let (code, out, err) = run(&bin(), &[so.to_str().unwrap(), &log, args[0]], &script);
    assert_eq!(code, Some(0), "{err}");
    // errno_is_preserved: errno; nbdkit_set_error; a failure that sets
    // neither: EIO. (C reports whatever errno an earlier call on the same
    // thread left behind, here EPERM; we clear errno before each call.)
    assert_eq!(out, "pread EPERM\npwrite ENOSPC\ntrim EIO\npread elsewhere ok\n");
    assert!(err.contains("pread: injected error at 8192"), "{err}");
    assert!(err.contains("pwrite: no space at 8192"), "{err}");
    assert!(err.contains("test: trim: the plugin failed without giving a message"), "{err}");
    if let Some(c) = c_nbdkit() {
        let (_, theirs, _) = run(&c, &[so.to_str().unwrap(), &log, args[0]], &script);
        let but_trim =
            |s: &str| -> String { s.lines().filter(|l| !l.starts_with("trim")).collect() };
        assert_eq!(but_trim(&out), but_trim(&theirs));
    }
}

#[test]
fn the_plugins_thread_model_is_enforced() {
    let Some(so) = test_plugin() else { return };
    // Slow reads (0.2 ms each), many at once from nbdcopy's connections.
    let copy = r#"nbdcopy "$uri" null:"#;
    let max = |log: &str| -> u32 {
        let l = log.lines().find(|l| l.starts_with("cleanup max_active=")).expect("cleanup");
        l["cleanup max_active=".len()..].parse().unwrap()
    };
    let (_, log) = test_plugin_run(&bin(), &so, &["size=16M"], copy);
    assert!(max(&log) > 1, "parallel plugin served one read at a time:\n{log}");
    let (_, log) = test_plugin_run(&bin(), &so, &["size=16M", "serialize=1"], copy);
    assert_eq!(max(&log), 1, "{log}");
    let out = nbdkit().arg(&so).arg("serialize=1").arg("--dump-plugin").output().unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("max_thread_model=parallel\nthread_model=serialize_all_requests\n"));
}

#[test]
fn dump_plugin_help_and_version_are_cs() {
    let Some(so) = test_plugin() else { return };
    let so = so.to_str().unwrap();
    let ours = |args: &[&str]| {
        let o = nbdkit().args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let dump = ours(&[so, "--dump-plugin"]);
    assert!(dump.contains("name=test\nversion=0.1\napi_version=2\nstruct_size=384\n"), "{dump}");
    assert!(dump.contains("has_pread=1\n") && dump.ends_with("has_cache=1\ntest_extra=yes\n"));
    let help = ours(&[so, "--help"]);
    assert!(help.contains("plugin: test (nbdkit test plugin)\n("), "{help}");
    assert!(help
        .ends_with("A plugin with every callback.\nlog=PATH  where each callback writes a line\n"));
    assert!(ours(&[so, "--version"]).ends_with("\ntest 0.1\n"));
    if let Some(c) = c_nbdkit() {
        for args in [&[so, "--dump-plugin"][..], &[so, "--help"]] {
            let theirs = Command::new(&c).args(args).output().unwrap();
            let theirs = String::from_utf8_lossy(&theirs.stdout).into_owned();
            if args[1] == "--help" {
                // The usage text above the plugin's differs.
                let tail = |s: &str| s[s.find("plugin: ").unwrap()..].to_string();
                assert_eq!(tail(&help), tail(&theirs));
            } else {
                assert_eq!(dump, theirs);
            }
        }
    }
}

#[test]
fn debug_flags_set_the_plugins_variables() {
    let Some(so) = test_plugin() else { return };
    let dir = scratch();
    let log = format!("log={}", dir.path().join("log").display());
    let so = so.to_str().unwrap();
    let (_, _, err) =
        run(&bin(), &["-v", "-D", "test.verbose=1", so, &log], "nbdinfo \"$uri\" >/dev/null");
    assert!(err.contains("test: verbose open of a"), "{err}");
    let (_, _, err) = run(&bin(), &["-v", so, &log], "nbdinfo \"$uri\" >/dev/null");
    assert!(!err.contains("verbose open"), "{err}");
    let (_, _, err) = run(&bin(), &["-D", "test.nosuch=1", so, &log], "true");
    assert!(err.contains("does not contain a global variable called test_debug_nosuch"), "{err}");
}

#[test]
fn misbehaving_plugins_get_clear_errors() {
    let Some(so) = test_plugin() else { return };
    let so = so.to_str().unwrap();
    let dir = scratch();
    let log = format!("log={}", dir.path().join("log").display());
    // Extents out of order.
    let (_, out, err) = run(&bin(), &[so, &log, "bad=1"], "nbdinfo --map \"$uri\" || echo refused");
    assert!(out.contains("refused"), "{out}");
    assert!(err.contains("extents must be added in ascending order"), "{err}");
    // A NULL handle from .open, with its message.
    let (_, out, err) = run(
        &bin(),
        &[so, &log],
        "nbdinfo 'nbd+unix:///missing?socket='\"$unixsocket\" || echo refused",
    );
    assert!(out.contains("refused"), "{out}");
    assert!(err.contains("no export called missing"), "{err}");
    // .preconnect refusing.
    let (_, out, err) = run(&bin(), &[so, &log, "refuse=1"], "nbdinfo \"$uri\" || echo refused");
    assert!(out.contains("refused"), "{out}");
    assert!(err.contains("preconnect: refused"), "{err}");
}

#[rstest::rstest]
#[case(&["count=12x"], "count: could not parse number: \"12x\": trailing garbage")]
#[case(&["count=abc"], "count: empty string where we expected a number")]
#[case(&["count=-1"], "count: negative numbers are not allowed")]
#[case(&["count=99999999999"], "count: could not parse number: \"99999999999\": Numerical result out of range")]
#[case(&["flag=maybe"], "could not decipher boolean (maybe)")]
#[case(&["size=1Q"], "could not parse size")]
#[case(&["nosuch=1"], "unknown parameter 'nosuch'")]
fn configuration_errors_are_one_line(#[case] args: &[&str], #[case] msg: &str) {
    let Some(so) = test_plugin() else { return };
    let mut all = vec![so.to_str().unwrap(), "log=/dev/null"];
    all.extend_from_slice(args);
    refused(&["-U", "-"], &all, msg);
}

#[test]
fn loading_errors() {
    refused(&["-U", "-"], &["/nonexistent/nbdkit-x-plugin.so"], "cannot open plugin");
    refused(&["-U", "-"], &["/lib/x86_64-linux-gnu/libm.so.6"], "not an nbdkit plugin");
    refused(
        &["-U", "-"],
        &["--filter=/tmp/f.so", "null"],
        "C filters (.so files) are not supported",
    );
    refused(&["-U", "-"], &["nosuch"], "unknown plugin 'nosuch'");
    let Some(so) = test_plugin() else { return };
    refused(&["-U", "-"], &[so.to_str().unwrap()], "log parameter is required");
}

#[test]
fn names_are_looked_up_in_the_plugin_directory() {
    let Some(so) = test_plugin() else { return };
    let dir = scratch();
    std::fs::copy(&so, dir.path().join("nbdkit-test-plugin.so")).unwrap();
    let out = nbdkit()
        .env("NBDKIT_PLUGINDIR", dir.path())
        .args(["test", "--dump-plugin"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    let want = format!("path={}/nbdkit-test-plugin.so\nname=test\n", dir.path().display());
    assert!(out.starts_with(&want), "{out}");
    let cfg = nbdkit().env("NBDKIT_PLUGINDIR", dir.path()).arg("--dump-config").output().unwrap();
    let cfg = String::from_utf8_lossy(&cfg.stdout);
    assert!(cfg.contains(&format!("plugindir={}\n", dir.path().display())), "{cfg}");
    let cfg = nbdkit().arg("--dump-config").output().unwrap();
    assert!(String::from_utf8_lossy(&cfg.stdout).contains(&format!("plugindir={DEBIAN_PLUGINS}\n")));
}

/// Debian's plugins that we do not build in, side by side with C nbdkit:
/// the same size, bytes and flags.
#[rstest::rstest]
#[case("example1", &[])]
#[case("example2", &["file=$FILE"])]
#[case("example3", &["size=3M"])]
#[case("floppy", &["$DIR"])]
#[case("curl", &["file://$FILE"])]
fn debian_plugins_serve_what_c_serves(#[case] name: &str, #[case] args: &[&str]) {
    let Some(so) = debian(name) else { return };
    let dir = scratch();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, (0..3u32 << 20).map(|i| (i % 253) as u8).collect::<Vec<u8>>()).unwrap();
    let sub = |a: &str| {
        a.replace("$FILE", file.to_str().unwrap()).replace("$DIR", dir.path().to_str().unwrap())
    };
    let mut all = vec![so.clone()];
    all.extend(args.iter().map(|a| sub(a)));
    let mut all: Vec<&str> = all.iter().map(String::as_str).collect();
    let script = r#"nbdinfo --size "$uri" && nbdcopy "$uri" - | sha256sum && nbdinfo "$uri" | grep -E 'can_|is_' &&
        qemu-img info -f raw "$uri" | grep 'virtual size' && qemu-img map -f raw --output=json "$uri""#;
    assert_same_as_c(&all, script, &["nbdinfo", "nbdcopy", "qemu-img"]);
    // And by name, from the plugin directory, unless we have one built in.
    if nbdkit::plugins::lookup(name).is_none() {
        all[0] = name;
        assert_same_as_c(&all, script, &["nbdinfo", "nbdcopy", "qemu-img"]);
    }
}

#[test]
fn the_python_plugin_runs_a_script() {
    let Some(_) = debian("python") else { return };
    let dir = scratch();
    let script = dir.path().join("disk.py");
    std::fs::write(
        &script,
        "import nbdkit\n\
         disk = bytearray(1024 * 1024)\n\
         API_VERSION = 2\n\
         def open(readonly):\n    return 1\n\
         def get_size(h):\n    return len(disk)\n\
         def pread(h, buf, offset, flags):\n    buf[:] = disk[offset:offset + len(buf)]\n\
         def pwrite(h, buf, offset, flags):\n    \
             if offset >= 1000000:\n        nbdkit.set_error(28)\n        raise Exception('no room')\n    \
             disk[offset:offset + len(buf)] = buf\n",
    )
    .unwrap();
    let py = format!(
        r#"{NBDSH_TRY}
h.pwrite(b"hello", 100)
print(h.pread(5, 100))
t("full", lambda: h.pwrite(b"x", 1000001))
"#
    );
    let client = format!("nbdsh -u \"$uri\" -c '{}'", py.replace('\'', "'\\''"));
    let out = assert_same_as_c(&["python", script.to_str().unwrap()], &client, &["nbdsh"]);
    if let Some(out) = out {
        assert!(out.contains("bytearray(b'hello')\nfull ENOSPC\n"), "{out}");
    }
}

/// A struct longer than ours (a newer header) works with the fields we
/// know; a shorter one (an older header) has none of the later callbacks.
#[test]
fn structs_of_other_sizes_are_read_as_far_as_both_know() {
    let Some(newer) = build_test_plugin("nbdkit-newer-plugin.so", &["-DSTRUCT_EXTRA=64"]) else {
        return;
    };
    let older = build_test_plugin("nbdkit-older-plugin.so", &["-DSTRUCT_SHORT"]).unwrap();
    let dump = |so: &Path| dump_plugin(&bin(), so);
    let d = dump(&newer);
    assert!(d.contains("struct_size=448\n") && d.contains("has_block_size=1\n"), "{d}");
    let d = dump(&older);
    assert!(d.contains("has_thread_model=1\n") && !d.contains("has_preconnect"), "{d}");
    assert!(!d.contains("has_list_exports") && !d.contains("has_block_size"), "{d}");
    for so in [&newer, &older] {
        let (out, _) = test_plugin_run(&bin(), so, &[], CLIENT);
        assert!(out.contains("bytearray(b'hello')\n"), "{out}");
        if let Some(c) = c_nbdkit() {
            assert_eq!(dump_plugin(&c, so), dump(so));
            assert_eq!(out, test_plugin_run(&c, so, &[], CLIENT).0, "{}", so.display());
        }
    }
}

/// `SERVER SO --dump-plugin`'s output.
fn dump_plugin(server: &Path, so: &Path) -> String {
    let o = Command::new(server).arg(so).arg("--dump-plugin").output().unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Debian's split and partitioning plugins are API version 1 (and built in
/// here too: by path, theirs is loaded).
#[rstest::rstest]
#[case("split", "$FILE")]
#[case("partitioning", "$FILE")]
fn version_1_plugins_serve_what_c_serves(#[case] name: &str, #[case] arg: &str) {
    let Some(so) = debian(name) else { return };
    let dir = scratch();
    let file = dir.path().join("disk.img");
    std::fs::write(&file, (0..1u32 << 20).map(|i| (i % 251) as u8).collect::<Vec<u8>>()).unwrap();
    let arg = arg.replace("$FILE", file.to_str().unwrap());
    let out = nbdkit().arg(&so).arg("--dump-plugin").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("api_version=1\n"));
    // (--no-extents: Debian's split 1.32 crashes, under C nbdkit too, on a
    // block status shorter than the data extent it finds.)
    let script = r#"nbdinfo --size "$uri" && nbdcopy --no-extents "$uri" - | sha256sum && nbdinfo "$uri" | grep -E 'can_|is_'"#;
    assert_same_as_c(&[&so, &arg], script, &["nbdinfo", "nbdcopy"]);
}

/// Once the plugin is ready, its stdin and stdout are /dev/null: a
/// plugin that prints cannot corrupt `-s`'s NBD stream, and `--run`'s
/// command reads the stdin the plugin did not read.
#[test]
fn stdin_and_stdout_leave_the_plugin_once_it_is_ready() {
    let Some(so) = test_plugin() else { return };
    let dir = scratch();
    let log = dir.path().join("log");
    let (code, out, err) = run_captive_all(
        &bin(),
        &[so.to_str().unwrap(), &format!("log={}", log.display())],
        &format!(
            "nbdsh -c \"h.connect_command(['{}', '-s', '{}', 'log={}']); print(h.get_size())\"",
            bin().display(),
            so.display(),
            log.display()
        ),
    );
    assert_eq!((code, out.as_str()), (Some(0), "1048576\n"), "{err}");
    let input = dir.path().join("input");
    std::fs::write(&input, "first\nsecond\n").unwrap();
    let out = Command::new(bin())
        .args(["-U", "-"])
        .arg(&so)
        .arg(format!("log={}", log.display()))
        .args(["readline=1", "--run", "cat"])
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "second\n");
    assert!(slurp(&log).contains("stdin: first\n"), "{}", slurp(&log));
}

/// `nbdkit_disconnect` (newer than 1.32, which cannot load this plugin):
/// the client's connection is closed; the next client is served.
#[test]
fn nbdkit_disconnect_closes_the_clients_connection() {
    let Some(so) = build_test_plugin("nbdkit-newer-api-plugin.so", &["-DNEWER"]) else {
        return;
    };
    let py = r#"
h.pwrite(b"x" * 512, 0)
try:
    h.pwrite(b"y" * 512, 4096)
    h.pread(512, 0)
    print("still connected")
except nbd.Error as e:
    print("disconnected")
"#;
    let script = format!("nbdsh -u \"$uri\" -c '{py}' && nbdinfo --size \"$uri\"");
    let dir = scratch();
    let log = format!("log={}", dir.path().join("log").display());
    let (code, out, err) = run(&bin(), &[so.to_str().unwrap(), &log, "disconnect=4096"], &script);
    assert_eq!((code, out.as_str()), (Some(0), "disconnected\n1048576\n"), "{err}");
}
