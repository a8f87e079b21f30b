use super::common::*;
use crate::util::*;

/// The summary with times and rates masked.
fn masked(text: &str) -> String {
    text.lines()
        .map(|l| {
            let mut parts: Vec<String> = l.split(", ").map(String::from).collect();
            if l.contains(" ops, ") {
                parts[1] = "T s".into();
                parts.truncate(3);
            }
            parts.join(", ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn writes_the_summary_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stats");
    let disk = start(&["stats"], "memory", &["1M", &format!("statsfile={}", file.display())]);
    let mut c = disk.connect().unwrap();
    for i in 0..4 {
        c.write(i * 4096, &[1; 4096]).unwrap();
    }
    c.read(0, 512).unwrap();
    c.flush().unwrap();
    c.zero(0, 4096).unwrap();
    c.disconnect().unwrap();
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "");
    disk.shutdown().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        masked(&text),
        "total: 7 ops, T s, 20.50 KiB\n\
         read: 1 ops, T s, 512 bytes\n  Request size and alignment breakdown:\n    \
         other sizes: 100.0% (1 reqs, 512 bytes total)\n\n\
         write: 4 ops, T s, 16.00 KiB\n  Request size and alignment breakdown:\n    \
         12 bits: 100.0% (4 reqs, 16.00 KiB total)\n         \
         12 bit aligned: 100.0% (4)\n         13 bit aligned:  50.0% (2)\n\n\
         zero: 1 ops, T s, 4.00 KiB\n  Request size and alignment breakdown:\n    \
         other sizes: 100.0% (1 reqs, 4.00 KiB total)\n\n\
         flush: 1 ops, T s, 0 bytes"
    );
}

#[test]
fn threshold_zero_drops_the_breakdown_and_append_keeps_old_text() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stats");
    std::fs::write(&file, "old\n").unwrap();
    let disk = start(
        &["stats"],
        "memory",
        &["1M", &format!("statsfile={}", file.display()), "statsthreshold=0", "statsappend=true"],
    );
    disk.connect().unwrap().read(0, 512).unwrap();
    disk.shutdown().unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("old\ntotal: 1 ops"), "{text}");
    assert!(!text.contains("breakdown"), "{text}");
}

#[test]
fn same_summary_as_c() {
    if !have("nbdsh") || !have("nbdinfo") {
        return;
    }
    let Some(c) = c_nbdkit() else { return };
    let script = "nbdsh -u \"$uri\" -c \"
for i in range(20): h.pwrite(b\\\"x\\\"*4096, i*4096)
for i in range(7): h.pread(512, i*512+1024)
h.zero(4096, 4096); h.trim(8192,8192); h.flush(); h.cache(512,0)\"; nbdinfo --map \"$uri\" >/dev/null";
    let summary = |nbdkit: &std::path::Path| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stats");
        run_with(nbdkit, &format!("--filter=stats memory 1M statsfile={}", file.display()), script);
        masked(&std::fs::read_to_string(&file).unwrap())
    };
    let ours = summary(&bin());
    assert!(ours.contains("cache: 1 ops"), "{ours}");
    assert_eq!(ours, summary(&c));
}

#[rstest::rstest]
#[case(&[], "stats: the statsfile parameter is required")]
#[case(&["statsfile=/tmp/x", "statsthreshold=101"], "between 0 and 100")]
#[case(&["statsfile=/nonexistent/dir/x"], "stats: open: /nonexistent/dir/x: ")]
fn bad_parameters(#[case] args: &[&str], #[case] msg: &str) {
    let mut all = vec!["--filter=stats", "memory", "1M"];
    all.extend_from_slice(args);
    refuses(&all, msg);
}
