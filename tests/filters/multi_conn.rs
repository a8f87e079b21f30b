//! The multi-conn filter: which connections an emulated flush reaches,
//! dirty tracking, groups by export name, FUA through a group flush.

use crate::util::*;

/// An eval plugin whose `flush` appends its handle (export name and a
/// serial) to `log`; with `fua`, it also advertises native FUA and logs
/// each FUA write as `fua-HANDLE`.
fn plugin(log: &std::path::Path, fua: bool) -> Vec<String> {
    let dir = log.parent().unwrap().display();
    let log = log.display();
    let mut p = vec![
        "eval".to_owned(),
        "get_size=echo 1M".to_owned(),
        "pread=dd if=/dev/zero count=$3 iflag=count_bytes status=none".to_owned(),
        "zero=exit 0".to_owned(),
        format!(
            "open=n=$(($(cat {dir}/n 2>/dev/null || echo 0) + 1)); echo $n > {dir}/n; echo \"$3$n\""
        ),
        format!("flush=echo $2 >> {log}"),
    ];
    if fua {
        p.push("can_fua=echo native".to_owned());
        p.push(format!("pwrite=cat >/dev/null; case $5 in *fua*) echo fua-$2 >> {log};; esac"));
    } else {
        p.push("pwrite=cat >/dev/null".to_owned());
    }
    p
}

fn start(plugin: &[String], args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder(&plugin[0])
        .args(&plugin[1..])
        .filter("multi-conn")
        .args(args)
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The handles that flushed (or saw FUA), sorted, and the log emptied.
fn flushed(log: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_owned).collect();
    let _ = std::fs::remove_file(log);
    v.sort();
    v
}

#[test]
fn clean_connections_are_not_flushed() {
    let dir = scratch();
    let log = dir.path().join("flush.log");
    let d = start(&plugin(&log, false), &[]);
    let mut a = d.connect().unwrap();
    let mut b = d.connect().unwrap();
    let mut c = d.connect().unwrap();
    // Nothing happened yet: nothing to flush.
    a.flush().unwrap();
    assert_eq!(flushed(&log), Vec::<String>::new());
    // A write on b, a read on c: b holds data, c may cache stale data;
    // a did nothing.
    b.write(0, b"x").unwrap();
    c.read(0, 1).unwrap();
    a.flush().unwrap();
    assert_eq!(flushed(&log), ["2", "3"]);
    // Clean again.
    c.flush().unwrap();
    assert_eq!(flushed(&log), Vec::<String>::new());
}

#[rstest::rstest]
#[case("off", 3, 3)]
#[case("fast", 0, 3)]
#[case("connection", 0, 2)]
fn track_dirty_levels(#[case] level: &str, #[case] idle: usize, #[case] after_write: usize) {
    let dir = scratch();
    let log = dir.path().join("flush.log");
    let arg = format!("multi-conn-track-dirty={level}");
    let d = start(&plugin(&log, false), &[&arg]);
    let mut a = d.connect().unwrap();
    let _b = d.connect().unwrap();
    let mut c = d.connect().unwrap();
    a.flush().unwrap();
    assert_eq!(flushed(&log).len(), idle, "{level}, idle");
    a.write(0, b"x").unwrap();
    c.read(0, 1).unwrap();
    c.flush().unwrap();
    assert_eq!(flushed(&log).len(), after_write, "{level}, after a write");
}

#[test]
fn plugin_mode_skips_flushes_of_a_clean_image() {
    let dir = scratch();
    let log = dir.path().join("flush.log");
    let d = start(&plugin(&log, false), &["multi-conn-mode=plugin"]);
    let mut a = d.connect().unwrap();
    let mut b = d.connect().unwrap();
    a.flush().unwrap();
    assert_eq!(flushed(&log), Vec::<String>::new());
    b.write(0, b"x").unwrap();
    a.flush().unwrap();
    // Only the connection asked, never the others.
    assert_eq!(flushed(&log), ["1"]);
}

#[test]
fn fua_flushes_the_whole_group() {
    let dir = scratch();
    let log = dir.path().join("flush.log");
    let d = start(&plugin(&log, true), &[]);
    let mut a = d.connect().unwrap();
    let mut b = d.connect().unwrap();
    // FUA stays advertised, but is done by flushing every connection
    // that needs it, never by FUA below.
    assert!(a.info().can_fua());
    b.read(0, 1).unwrap();
    a.write_fua(0, b"x").unwrap();
    assert_eq!(flushed(&log), ["1", "2"]);
    // Without emulation, FUA goes down as it came.
    let d = start(&plugin(&log, true), &["multi-conn-mode=plugin"]);
    let mut a = d.connect().unwrap();
    a.write_fua(0, b"x").unwrap();
    let got = flushed(&log);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("fua-"), "{got:?}");
}

#[test]
fn groups_by_export_name() {
    let dir = scratch();
    let log = dir.path().join("flush.log");
    for (by_name, want) in [("false", vec!["a1", "b3"]), ("true", vec!["a1"])] {
        let _ = std::fs::remove_file(dir.path().join("n"));
        let arg = format!("multi-conn-exportname={by_name}");
        let d = start(&plugin(&log, false), &[&arg]);
        let sock = d.socket().unwrap();
        let mut a1 = nbdkit_test::Client::connect_unix(sock, "a").unwrap();
        let mut a2 = nbdkit_test::Client::connect_unix(sock, "a").unwrap();
        let mut b = nbdkit_test::Client::connect_unix(sock, "b").unwrap();
        a1.write(0, b"x").unwrap();
        b.write(0, b"x").unwrap();
        a2.flush().unwrap();
        assert_eq!(flushed(&log), want, "multi-conn-exportname={by_name}");
    }
}

#[test]
fn emulation_needs_flush() {
    let d = nbdkit_test::CaptiveDisk::builder("eval")
        .args(["get_size=echo 1M", "pread=exit 1", "pwrite=exit 1"])
        .filter("multi-conn")
        .args(["multi-conn-mode=emulate"])
        .binary(bin())
        .start()
        .unwrap();
    assert!(d.connect().is_err());
    assert!(d.log().contains("emulating multi-conn requires working flush"), "{}", d.log());
}

#[test]
fn bad_track_dirty_level() {
    assert_refused(
        &["--filter=multi-conn", "memory", "1M", "multi-conn-track-dirty=sometimes"],
        "unknown multi-conn track-dirty setting 'sometimes'",
    );
}
