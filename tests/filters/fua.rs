use super::common::*;
use crate::util::*;

fn can_fua(args: &[&str]) -> bool {
    let disk = start(&["fua"], "memory", args);
    let c = disk.connect().unwrap();
    c.info().can_fua()
}

#[test]
fn fua_is_hidden_by_default() {
    assert!(!can_fua(&["1M"]));
    assert!(!can_fua(&["1M", "fuamode=none"]));
    for m in ["emulate", "native", "force", "pass", "discard"] {
        assert!(can_fua(&["1M", &format!("fuamode={m}")]), "{m}");
    }
}

/// The log filter below shows what each mode sends down.
fn sent_down(mode: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let disk = start(
        &["fua", "log"],
        "memory",
        &["1M", &format!("fuamode={mode}"), &format!("logfile={}", log.display())],
    );
    let mut c = disk.connect().unwrap();
    c.write(0, b"a").unwrap();
    c.write_fua(0, b"b").unwrap();
    c.flush().unwrap();
    c.disconnect().unwrap();
    disk.shutdown().unwrap();
    std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" Write ") || l.contains(" Flush "))
        .map(|l| {
            let act = l.split(' ').nth(3).unwrap();
            match l.find("fua=") {
                Some(i) => format!("{act}{}", &l[i..i + 5]),
                None => act.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn what_each_mode_sends_down() {
    assert_eq!(sent_down("emulate"), "Writefua=0 Writefua=0 Flush Flush");
    assert_eq!(sent_down("native"), "Writefua=0 Writefua=1 Flush");
    assert_eq!(sent_down("pass"), "Writefua=0 Writefua=1 Flush");
    assert_eq!(sent_down("force"), "Writefua=1 Writefua=1");
    assert_eq!(sent_down("discard"), "Writefua=0 Writefua=0");
}

#[test]
fn modes_that_need_fua_refuse_a_plugin_without() {
    // The second fua filter (default mode) hides FUA from the first.
    for m in ["native", "force"] {
        let disk = start(&["fua", "fua"], "memory", &["1M", &format!("fuamode={m}")]);
        assert!(disk.connect().is_err(), "{m}");
    }
}

#[test]
fn flags_as_c() {
    if !have("nbdinfo") {
        return;
    }
    for m in ["emulate", "native", "force", "pass", "discard"] {
        same_as_c(
            &format!("--filter=fua memory 1M fuamode={m}"),
            "nbdinfo \"$uri\" | grep -E \"can_f\"",
        );
    }
}

#[test]
fn unknown_mode() {
    refuses(&["--filter=fua", "memory", "1M", "fuamode=always"], "fua: unknown fuamode 'always'");
}

#[test]
fn a_layer_above_sees_fua_emulated_and_still_gets_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let disk = start(
        &["log", "fua"],
        "memory",
        &["1M", "fuamode=emulate", &format!("logfile={}", log.display())],
    );
    let mut c = disk.connect().unwrap();
    c.write_fua(0, b"b").unwrap();
    c.disconnect().unwrap();
    disk.shutdown().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    // As in C: the log filter learns FUA is emulated below (1, not 2),
    // and sees the client's flag; the flush is done below it.
    assert!(log.contains(" fua=1 extents="), "{log}");
    assert!(log.contains("Write id=1 offset=0x0 count=0x1 fua=1"), "{log}");
    assert!(!log.contains("Flush"), "{log}");
}
