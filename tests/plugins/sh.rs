//! The script plugins, sh and eval: the exit-code protocol, handles,
//! errors, exports and caps, compared with C nbdkit.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A RAM-disk-on-a-file script exercising most methods.
const DISK_SH: &str = r#"#!/bin/sh
f=$tmpdir/disk
case "$1" in
  config) [ "$2" = size ] && echo "$3" > $tmpdir/size || { echo "EINVAL unknown $2" >&2; exit 1; } ;;
  get_ready) truncate -s "$(cat $tmpdir/size 2>/dev/null || echo 1M)" "$f" ;;
  thread_model) echo parallel ;;
  open) echo "h-$3" ;;
  get_size) stat -c %s "$f" ;;
  can_write|can_flush|can_trim|can_zero|can_extents) exit 0 ;;
  can_fua) echo native ;;
  can_cache) echo emulate ;;
  is_rotational) exit 0 ;;
  can_multi_conn|can_fast_zero) exit 3 ;;
  export_description) echo "disk for $2" ;;
  list_exports) echo INTERLEAVED; echo a; echo first; echo b; echo second ;;
  pread) dd if="$f" skip=$4 count=$3 iflag=skip_bytes,count_bytes status=none ;;
  pwrite) [ $4 -ge 1048000 ] && { cat >/dev/null; echo "ENOSPC no room at $4" >&2; exit 1; }
          dd of="$f" seek=$4 conv=notrunc oflag=seek_bytes status=none ;;
  flush) ;;
  trim|zero) dd if=/dev/zero of="$f" seek=$4 count=$3 conv=notrunc oflag=seek_bytes iflag=count_bytes status=none ;;
  extents) echo "0 4096"; echo "4096 $(( $3 - 4096 + $4 )) hole,zero" ;;
  *) exit 2 ;;
esac
"#;

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// What clients see of a server: stdout of the --run command. (Its
/// stderr, which differs between servers, is kept apart for messages.)
fn seen_with_log(nbdkit: &Path, args: &str, cmd: &str) -> (String, String) {
    let out = sh(&format!("{} -U - {args} --run '{cmd}'", nbdkit.display()));
    (
        format!("{:?}\n{}", out.status.code(), String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn seen(nbdkit: &Path, args: &str, cmd: &str) -> String {
    seen_with_log(nbdkit, args, cmd).0
}

const CLIENT: &str = r#"nbdinfo --list "$uri" | grep -v uri:
nbdinfo --map "nbd+unix:///a?socket=$unixsocket"
nbdsh -u "nbd+unix:///a?socket=$unixsocket" -c "
h.pwrite(b\"hello\", 100, nbd.CMD_FLAG_FUA)
print(h.pread(5, 100))
h.zero(2, 100)
print(h.pread(5, 100))
h.flush()
try:
    h.pwrite(b\"x\", 1048100)
except nbd.Error as e:
    print(e.errno)
""#;

#[test]
fn sh_serves_like_c_nbdkit() {
    if !have("nbdinfo") || !have("nbdsh") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let s = script(d.path(), "disk.sh", DISK_SH);
    let args = format!("sh {} size=2M", s.display());
    let cmd = CLIENT.replace('\'', "'\\''");
    let (ours, log) = seen_with_log(&bin(), &args, &cmd);
    assert!(ours.contains("bytearray(b'hello')"), "{ours}\n{log}");
    assert!(ours.contains("bytearray(b'\\x00\\x00llo')"), "{ours}\n{log}");
    assert!(ours.contains("ENOSPC"), "{ours}\n{log}");
    assert!(ours.contains("description: second"), "{ours}\n{log}");
    if let Some(c) = c_nbdkit() {
        let (theirs, clog) = seen_with_log(&c, &args, &cmd);
        assert_eq!(ours, theirs, "ours:\n{log}\nC:\n{clog}");
    }
}

#[test]
fn eval_serves_like_c_nbdkit() {
    if !have("nbdinfo") {
        return;
    }
    // The man page's example, plus a writable variant whose can_* come
    // from the callbacks given.
    let ro = "eval get_size=\"echo 64M\" pread=\"dd if=/dev/zero count=\\$3 iflag=count_bytes status=none\"";
    let rw = "eval get_size=\"echo 1M\" \
              pread=\"dd if=\\$tmpdir/d skip=\\$4 count=\\$3 iflag=skip_bytes,count_bytes status=none\" \
              pwrite=\"dd of=\\$tmpdir/d seek=\\$4 conv=notrunc oflag=seek_bytes status=none\" \
              flush=\"true\" get_ready=\"truncate -s 1M \\$tmpdir/d\"";
    let cmd = "nbdinfo \"$uri\" | grep -v uri: && nbdcopy \"$uri\" - | sha256sum";
    for args in [ro, rw] {
        let ours = seen(&bin(), args, cmd);
        assert!(ours.starts_with("Some(0)"), "{args}: {ours}");
        if let Some(c) = c_nbdkit() {
            assert_eq!(ours, seen(&c, args, cmd), "{args}");
        }
    }
}

#[test]
fn exit_codes_errors_and_handles() {
    let d = tempfile::tempdir().unwrap();
    let s = script(
        d.path(),
        "t.sh",
        r#"#!/bin/sh
case "$1" in
  open) echo "handle-$2-$3" ;;
  get_size) [ "$2" = handle-false-x ] && echo 4096 || { echo "EIO bad handle $2" >&2; exit 1; } ;;
  pread) case $4 in
           0) printf '%*s' $3 | tr ' ' a ;;
           512) echo "EPERM not here" >&2; exit 1 ;;
           1024) echo "garbage" >&2; exit 9 ;;
           *) printf short ;;
         esac ;;
  can_write) exit 3 ;;
  *) exit 2 ;;
esac
"#,
    );
    let disk = nbdkit_test::CaptiveDisk::builder("sh")
        .arg(s.display().to_string())
        .export_name("x")
        .binary(bin())
        .start()
        .unwrap();
    let mut c = disk.connect().unwrap();
    assert_eq!(c.size(), 4096, "the handle from open reached get_size");
    assert!(c.info().read_only(), "can_write exited 3: false");
    assert!(!c.info().can_flush(), "a missing can_flush is false");
    assert_eq!(c.read(0, 4).unwrap(), b"aaaa");
    let errno = |r: std::io::Result<Vec<u8>>| r.unwrap_err().raw_os_error();
    assert_eq!(errno(c.read(512, 4)), Some(libc::EPERM));
    assert_eq!(errno(c.read(1024, 4)), Some(libc::EIO), "no errno name: EIO");
    assert_eq!(errno(c.read(2048, 4)), Some(libc::EIO), "short output");
    // Still serving after all that.
    assert_eq!(c.read(0, 1).unwrap(), b"a");
}

#[test]
fn script_from_stdin_and_config() {
    if !have("nbdinfo") {
        return;
    }
    let out = sh(&format!(
        "printf '%s' '#!/bin/sh
case \"$1\" in
  config) echo \"$3\" > $tmpdir/$2 ;;
  get_size) cat $tmpdir/size ;;
  pread) dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac' | {} -U - sh - size=12345 --run 'nbdinfo --size \"$uri\"'",
        bin().display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "12345\n");
}

#[rstest::rstest]
#[case(&["sh"], "sh: you must supply script=<FILENAME>")]
#[case(&["sh", "/nonexistent.sh"], "/nonexistent.sh: No such file or directory")]
#[case(&["sh", "/etc/passwd"], "not an executable file")]
#[case(&["eval", "get_size=echo 1", "pread=true", "k=v"], "unknown parameter 'k' (the script has no config method)")]
#[case(&["eval", "get_size=echo 1", "pread=true", "config_complete=echo EINVAL nope >&2; exit 1"], "eval: config_complete: nope")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    refused(&["-U", "-"], args, msg);
}

/// after_fork runs once, in the serving process, before any client (in
/// the foreground too, as in C); its failure stops the server.
#[test]
fn after_fork_is_called() {
    let d = tempfile::tempdir().unwrap();
    let marks = d.path().join("marks");
    let get_size = format!("get_size=echo $1 >> {}; echo 512", marks.display());
    let after_fork = format!("after_fork=echo $1 >> {}", marks.display());
    let disk = disk(&["eval", &get_size, &after_fork]);
    assert_eq!(disk.connect().unwrap().size(), 512);
    // First after_fork, then the size query of the first client.
    assert_eq!(slurp(&marks), "after_fork\nget_size\n");
    refused(
        &["-U", "-"],
        &["eval", "get_size=echo 1", "after_fork=echo EIO no luck >&2; exit 1"],
        "after_fork: no luck",
    );
}

/// default_export runs once per connection, however often the handshake
/// needs it (listing, then opening ""), with or without filters: C caches
/// it, and scripts rely on that (C's test-eflags).
#[test]
fn default_export_is_asked_once_per_connection() {
    if !have("qemu-nbd") {
        return;
    }
    for filters in [&[][..], &["--filter=nofilter", "--filter=exportname"][..]] {
        let d = tempfile::tempdir().unwrap();
        let calls = d.path().join("calls");
        let mut args = vec!["-U", "-"];
        args.extend_from_slice(filters);
        let get_size = format!("get_size=echo 512; echo $1 >> {}", calls.display());
        let default = format!("default_export=echo $1 >> {}; echo ''", calls.display());
        let out = nbdkit()
            .args(&args)
            .args(["eval", &get_size, &default])
            .args(["--run", "qemu-nbd --list -k $unixsocket"])
            .env("PATH", path_env())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let calls = slurp(&calls);
        assert_eq!(calls.matches("default_export").count(), 1, "{filters:?}: {calls}");
    }
}

/// `sh -` reads the script from stdin, which under `-s` is the client:
/// refused, and the "script" is never run.
#[test]
fn inline_script_is_refused_with_single() {
    let out =
        nbdkit().args(["-s", "sh", "-"]).write_stdin("echo oops >&2; exit 1\n").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("inline script is incompatible with -s"), "{err}");
    assert!(!err.contains("oops"), "{err}");
}

/// close runs at every connection end, as in C: after NBD_CMD_DISC, when
/// the client just goes away, and when the server stops under an idle
/// client.
#[test]
fn close_runs_at_every_connection_end() {
    let d = tempfile::tempdir().unwrap();
    let calls = d.path().join("calls");
    let close = format!("close=echo close >> {}", calls.display());
    let disk = disk(&["eval", "get_size=echo 512", &close]);
    let c = disk.connect().unwrap();
    c.disconnect().unwrap();
    assert!(wait_until(std::time::Duration::from_secs(5), || slurp(&calls) == "close\n"));
    // A client that vanishes without a word.
    let c = disk.connect().unwrap();
    drop(c);
    assert!(wait_until(std::time::Duration::from_secs(5), || slurp(&calls) == "close\nclose\n"));
    // The server stops while a client is connected.
    let _c = disk.connect().unwrap();
    disk.shutdown().unwrap();
    assert_eq!(slurp(&calls), "close\nclose\nclose\n");
    // An export opened only to describe it (NBD_OPT_INFO) is closed too.
    if !have("qemu-nbd") {
        return;
    }
    std::fs::remove_file(&calls).unwrap();
    let out = nbdkit()
        .args(["-U", "-", "eval", "get_size=echo 512", &close])
        .args(["--run", "qemu-nbd --list -k \"$unixsocket\""])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(slurp(&calls), "close\n");
}

/// eval needs no snippet at start-up, as in C: without pread each read
/// fails with EIO; without get_size each client is refused.
#[test]
fn eval_without_pread_or_get_size() {
    let d = disk(&["eval", "get_size=echo 512"]);
    let mut c = d.connect().unwrap();
    assert_eq!(c.size(), 512);
    let err = c.read(0, 512).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    let d = disk(&["eval", "pread=exit 1"]);
    assert!(d.connect().is_err(), "no size: the client is refused");
}

/// Script error messages as C reads them: an errno name in any case, the
/// first line as the message; unknown names are EIO.
#[test]
fn script_errors_as_c_reads_them() {
    let d = disk(&[
        "eval",
        "get_size=echo 1M",
        "pread=case $4 in 0) echo eperm denied >&2;; 512) echo ENOENT x >&2;; *) echo EINVALID >&2;; esac; exit 1",
    ]);
    let mut c = d.connect().unwrap();
    for (off, errno) in [(0, libc::EPERM), (512, libc::EIO), (1024, libc::EIO)] {
        let err = c.read(off, 512).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(errno), "{off}: {err}");
    }
}

#[test]
fn a_slow_script_call_holds_up_no_one_else() {
    let d = tempfile::tempdir().unwrap();
    let s = script(
        d.path(),
        "slow.sh",
        r#"#!/bin/sh
case "$1" in
  thread_model) echo parallel ;;
  get_size) echo 1M ;;
  pread) [ $4 = 0 ] && sleep 3; dd if=/dev/zero count=$3 iflag=count_bytes status=none ;;
  *) exit 2 ;;
esac
"#,
    );
    let disk = disk(&["sh", s.to_str().unwrap()]);
    let slow = {
        let mut c = disk.connect().unwrap();
        std::thread::spawn(move || c.read(0, 512).unwrap())
    };
    // Another client, and a request on it, while the slow read runs.
    let t = std::time::Instant::now();
    let mut c = disk.connect().unwrap();
    assert_eq!(c.read(512, 512).unwrap(), vec![0; 512]);
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(slow.join().unwrap(), vec![0; 512]);
}

#[test]
fn tmpdir_is_removed_when_nbdkit_exits() {
    if !have("nbdinfo") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let record = d.path().join("tmpdir");
    let out = sh(&format!(
        "{} -U - eval 'get_size=echo $tmpdir > {}; echo 1M' 'pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none' --run 'nbdinfo --size \"$uri\"'",
        bin().display(),
        record.display()
    ));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tmpdir = std::fs::read_to_string(&record).unwrap();
    assert!(tmpdir.trim().contains("nbdkit-eval-"), "{tmpdir}");
    assert!(!std::path::Path::new(tmpdir.trim()).exists(), "{tmpdir} left behind");
}

#[test]
fn preconnect_can_refuse_and_unload_runs_at_exit() {
    let d = tempfile::tempdir().unwrap();
    let mark = d.path().join("unloaded");
    let gate = d.path().join("closed");
    let disk = nbdkit_test::CaptiveDisk::builder("eval")
        .args([
            "get_size=echo 1M".to_string(),
            "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none".to_string(),
            format!(
                "preconnect=test -e {} && {{ echo 'EPERM closed' >&2; exit 1; }}; exit 0",
                gate.display()
            ),
            format!("unload=touch {}", mark.display()),
        ])
        .binary(bin())
        .start()
        .unwrap();
    assert_eq!(disk.connect().unwrap().read(0, 2).unwrap(), [0, 0]);
    std::fs::write(&gate, b"").unwrap();
    assert!(disk.connect().is_err(), "preconnect refused the client");
    assert!(disk.shutdown().unwrap().success());
    assert!(mark.exists(), "unload ran");
}

#[test]
fn close_comes_before_unload() {
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("log");
    let disk = nbdkit_test::CaptiveDisk::builder("eval")
        .args([
            "get_size=echo 1M".to_string(),
            "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none".to_string(),
            format!("close=echo close >> {}", log.display()),
            format!("unload=echo unload >> {}", log.display()),
        ])
        .binary(bin())
        .start()
        .unwrap();
    disk.connect().unwrap().disconnect().unwrap();
    assert!(disk.shutdown().unwrap().success());
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "close\nunload\n");
}

/// `--dump-plugin` runs the script's `dump_plugin` (after `load` and
/// `config`) and prints what it prints, as C does.
#[test]
fn dump_plugin_runs_the_script() {
    let out =
        nbdkit().args(["--dump-plugin", "eval", "dump_plugin=echo extra=stuff"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.ends_with("max_known_status=3\nextra=stuff\n"), "{text}");
    let d = tempfile::tempdir().unwrap();
    let s = script(
        d.path(),
        "s.sh",
        "#!/bin/sh\ncase $1 in\n  config) echo \"$2=$3\" > $tmpdir/c ;;\n  dump_plugin) echo from_script=yes; cat $tmpdir/c ;;\n  *) exit 2 ;;\nesac\n",
    );
    let ours = nbdkit().args(["--dump-plugin", "sh"]).arg(&s).arg("k=v").output().unwrap();
    let text = String::from_utf8_lossy(&ours.stdout);
    assert!(ours.status.success(), "{ours:?}");
    assert!(text.ends_with("max_known_status=3\nfrom_script=yes\nk=v\n"), "{text}");
    // A missing dump_plugin adds nothing; no script, nothing either.
    for args in [&["eval"][..], &["sh"][..]] {
        let out = nbdkit().arg("--dump-plugin").args(args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.ends_with("max_known_status=3\n"), "{args:?}: {text}");
    }
    if let Some(c) = c_nbdkit() {
        let theirs = std::process::Command::new(c)
            .args(["--dump-plugin", "sh"])
            .arg(&s)
            .arg("k=v")
            .output()
            .unwrap();
        let tail = |o: &std::process::Output| {
            let t = String::from_utf8_lossy(&o.stdout).into_owned();
            t[t.find("max_known_status").unwrap()..].to_string()
        };
        assert_eq!(tail(&ours), tail(&theirs));
    }
}

/// Emulated CACHE reads in 64 MiB pieces, as C does: a script may count
/// on it.
#[test]
fn emulated_cache_reads_64m_at_a_time() {
    if !have("nbdsh") {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let log = d.path().join("reads");
    let pread = format!("echo \"$3 $4\" >> {}; head -c $3 /dev/zero", log.display());
    let out = nbdkit()
        .args(["-U", "-", "eval", "get_size=echo 160M", "can_cache=echo emulate"])
        .arg(format!("pread={pread}"))
        .args(["--run", "nbdsh -u \"$uri\" -c \"h.cache(h.get_size(), 0)\""])
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(slurp(&log), "67108864 0\n67108864 67108864\n33554432 134217728\n");
}

/// Export lists in each of the script's formats; a failing default_export
/// with no list_exports lists nothing (and is no error), as in C.
#[test]
fn export_lists_as_c_reads_them() {
    if !have("nbdinfo") || !have("jq") {
        return;
    }
    for (list, want) in [
        ("printf 'NAMES+DESCRIPTIONS\\n\\n'", "export=\"\":\n"),
        (
            "printf 'NAMES+DESCRIPTIONS\\na\\nb\\nda\\n'",
            "export=\"a\":\n\tdescription: da\nexport=\"b\":\n",
        ),
        ("printf 'INTERLEAVED\\na\\n\\nb\\n'", "export=\"a\":\nexport=\"b\":\n"),
        ("printf 'x\\ny'", "export=\"x\":\n"),
    ] {
        let out = run_captive(
            &bin(),
            &["eval", &format!("list_exports={list}"), "get_size=echo 0"],
            "nbdinfo --list --json \"$uri\" | jq -r '.exports[] | \"export=\\\"\\(.[\"export-name\"])\\\":\" + (if .description then \"\\n\\tdescription: \\(.description)\" else \"\" end)'",
        );
        assert_eq!(out, format!("status Some(0)\n{want}"), "{list}");
    }
    // A description too long for the wire refuses the list (as C).
    let out = run_captive(
        &bin(),
        &["eval", "list_exports=printf 'INTERLEAVED\\na\\n%04097d\\n' 1", "get_size=echo 0"],
        "nbdinfo --list \"$uri\" >/dev/null 2>&1 || echo refused",
    );
    assert_eq!(out, "status Some(0)\nrefused\n");
    let out = run_captive(
        &bin(),
        &["eval", "default_export=echo ENOENT >&2; exit 1", "get_size=echo 0"],
        "nbdinfo --list --json \"$uri\" | jq -c .exports",
    );
    assert_eq!(out, "status Some(0)\n[]\n");
}
