use super::common::*;
use crate::util::*;

/// The log with timestamps cut off.
fn lines(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(|l| {
            let (date, rest) = l.split_at(26);
            assert!(date.as_bytes()[4] == b'-' && date.as_bytes()[19] == b'.', "{l}");
            rest.trim_start().to_string()
        })
        .collect()
}

#[test]
fn logs_each_request_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let disk = start(
        &["log", "error"],
        "memory",
        &["1M", &format!("logfile={}", log.display()), "error-trim-rate=1"],
    );
    let mut c = disk.connect().unwrap();
    c.write_fua(0, &[1; 512]).unwrap();
    c.read(0, 512).unwrap();
    c.trim(0, 4096).unwrap_err();
    c.disconnect().unwrap();
    disk.shutdown().unwrap();
    let l = lines(&log);
    assert_eq!(l[0], "Ready thread_model=3");
    // After the (possible) fork, in every mode, as in C.
    assert_eq!(l[1], "Fork");
    assert_eq!(l[2], "Preconnect id=1 readonly=0 ...");
    assert_eq!(l[3], "...Preconnect id=1 return=0");
    let l = &l[3..];
    assert!(l[1].starts_with("connection=1 Connect export=\"\" tls=0 size=0x100000 "), "{l:?}");
    assert_eq!(
        &l[2..],
        [
            "connection=1 Write id=1 offset=0x0 count=0x200 fua=1 ...",
            "connection=1 ...Write id=1 return=0",
            "connection=1 Read id=2 offset=0x0 count=0x200 ...",
            "connection=1 ...Read id=2 return=0",
            "connection=1 Trim id=3 offset=0x0 count=0x1000 fua=0 ...",
            "connection=1 ...Trim id=3 return=-1 error=EIO",
            "connection=1 Disconnect transactions=3",
        ]
    );
}

#[test]
fn appends_or_truncates() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::write(&log, "old\n").unwrap();
    let run = |append: &str| {
        nbdkit()
            .args(["-U", "-", "--filter=log", "memory", "1M"])
            .arg(format!("logfile={}", log.display()))
            .arg(format!("logappend={append}"))
            .args(["--run", "true"])
            .assert()
            .success();
    };
    run("true");
    assert_eq!(lines_raw(&log)[0], "old");
    run("false");
    assert_ne!(lines_raw(&log)[0], "old");
    assert_eq!(lines_raw(&log).len(), 2, "Ready and Fork");
}

fn lines_raw(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(String::from).collect()
}

#[test]
fn logscript_gets_shell_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let disk = start(
        &["log"],
        "memory",
        &[
            "1M",
            &format!(
                "logscript=echo \"$type $act $connection $id $offset $count\" >> {}",
                out.display()
            ),
        ],
    );
    let mut c = disk.connect().unwrap();
    c.read(512, 1024).unwrap();
    c.disconnect().unwrap();
    disk.shutdown().unwrap();
    let got = std::fs::read_to_string(&out).unwrap();
    assert!(got.starts_with("PRINT Ready    \n"), "{got}");
    assert!(got.contains("ENTER Read 1 1 0x200 0x400\nLEAVE Read 1 1  \n"), "{got}");
}

#[test]
fn same_log_as_c() {
    if !have("nbdsh") || !have("nbdinfo") {
        return;
    }
    let Some(c) = c_nbdkit() else { return };
    let script = "nbdinfo --list \"$uri\" >/dev/null; nbdinfo --map \"$uri\" >/dev/null; \
        nbdsh -u \"$uri\" -c \"h.pwrite(b\\\"x\\\"*512, 0, nbd.CMD_FLAG_FUA); h.pread(512,0); \
        h.zero(4096, 4096, nbd.CMD_FLAG_NO_HOLE); h.trim(4096,8192); h.flush(); h.cache(512,0)\"";
    let log_of = |nbdkit: &std::path::Path| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        run_with(
            nbdkit,
            &format!(
                "--filter=log --filter=error memory 1M logfile={} error-cache-rate=1",
                log.display()
            ),
            script,
        );
        // C forks for --run; we do not.
        lines(&log).into_iter().filter(|l| l != "Fork").collect::<Vec<_>>()
    };
    let ours = log_of(&bin());
    assert!(ours.iter().any(|l| l.starts_with("Preconnect")), "{ours:?}");
    assert!(
        ours.iter().any(|l| l.contains("...Extents id=1 extents=(0x0 0x100000 \"hole,zero\")")),
        "{ours:?}"
    );
    assert_eq!(ours, log_of(&c));
}

#[test]
fn an_unwritable_logfile_stops_start_up() {
    refuses(
        &["--filter=log", "memory", "1M", "logfile=/nonexistent/dir/log"],
        "log: open: /nonexistent/dir/log: ",
    );
    refuses(&["--filter=log", "memory", "1M", "logappend=maybe"], "logappend");
}
