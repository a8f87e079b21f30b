//! Durability: a FLUSH, or a write with FUA, reaches stable storage
//! (fdatasync or fsync on the file) before its reply is sent. Proved by
//! tracing the server's system calls with strace, then reading the files
//! from outside the server once it has exited.

use std::path::Path;
use std::process::Command;

use crate::util::*;

/// One traced system call: its name, first argument (the fd), and the
/// lines where it starts and completes in the trace.
#[derive(Debug)]
struct Call {
    name: String,
    fd: i64,
    text: String,
    start: usize,
    end: usize,
}

/// Read an `strace -f` log into calls, pairing `<unfinished ...>` with
/// `<... resumed>`.
fn calls(log: &str) -> Vec<Call> {
    let mut out: Vec<Call> = Vec::new();
    let mut open: Vec<(String, String, usize)> = Vec::new(); // (pid, name, index)
    for (i, line) in log.lines().enumerate() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("<... ") {
            let name = r.split(' ').next().unwrap_or("");
            if let Some(k) = open.iter().position(|(p, n, _)| p == pid && n == name) {
                let (_, _, idx) = open.remove(k);
                out[idx].end = i;
                out[idx].text.push_str(r);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let fd = args.split([',', ')', ' ']).next().and_then(|a| a.parse().ok()).unwrap_or(-1);
        out.push(Call { name: name.into(), fd, text: rest.into(), start: i, end: i });
        if rest.ends_with("<unfinished ...>") {
            open.push((pid.into(), name.into(), out.len() - 1));
        }
    }
    out
}

/// The fd a file was opened as (the last open of it, by relative or
/// absolute path).
fn fd_of(calls: &[Call], file: &Path) -> i64 {
    let (bare, under) = (format!("\"{}\"", file.display()), format!("/{}\"", file.display()));
    calls
        .iter()
        .filter(|c| c.name == "openat" && (c.text.contains(&bare) || c.text.contains(&under)))
        .filter_map(|c| c.text.rsplit("= ").next()?.trim().parse().ok())
        .next_back()
        .unwrap_or_else(|| panic!("{} was never opened", file.display()))
}

/// The replies the server sent, in order (simple replies: `gDf\230`).
fn replies(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| {
            matches!(c.name.as_str(), "sendto" | "sendmsg" | "write" | "writev")
                && c.text.contains("gDf\\230")
        })
        .collect()
}

/// A sync of `fd` that starts after line `after` and completes before
/// line `before`.
fn synced(calls: &[Call], fd: i64, after: usize, before: usize) -> bool {
    calls.iter().any(|c| {
        matches!(c.name.as_str(), "fdatasync" | "fsync")
            && c.fd == fd
            && c.start > after
            && c.end < before
            && c.text.contains("= 0")
    })
}

/// Run `nbdkit -U - ARGS` under strace with nbdsh sending, one at a time,
/// a FUA write of "x" at 0, a plain write of "y" at `second`, and a flush.
/// Returns the calls.
fn traced(dir: &Path, args: &[&str], second: u64) -> Vec<Call> {
    let log = dir.join("trace");
    let script = format!(
        r#"nbdsh -u "$uri" -c 'h.pwrite(b"x" * 4096, 0, nbd.CMD_FLAG_FUA)' -c 'h.pwrite(b"y" * 4096, {second})' -c 'h.flush()'"#
    );
    let out = Command::new("strace")
        .args(["-f", "-qq", "-o"])
        .arg(&log)
        .arg("-e")
        .arg("trace=openat,pwrite64,pwritev,pwritev2,write,writev,sendto,sendmsg,fsync,fdatasync")
        .arg(bin())
        .args(["-U", "-"])
        .args(args)
        .args(["--run", &script])
        .current_dir(dir)
        .env("PATH", path_env())
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    calls(&std::fs::read_to_string(&log).unwrap())
}

/// The FUA write was synced before its reply, and the flush after the
/// second write and before its reply; and the bytes are in the files.
fn assert_durable(calls: &[Call], fds: &[i64]) {
    let r = replies(calls);
    assert_eq!(r.len(), 3, "three replies: {r:?}");
    let first_write = calls
        .iter()
        .find(|c| c.name.starts_with("pwrite") && fds.contains(&c.fd) && c.text.contains("xxxx"))
        .expect("the FUA write reached a file");
    assert!(
        synced(calls, first_write.fd, first_write.end, r[0].start),
        "no sync between the FUA write and its reply: {calls:#?}"
    );
    for &fd in fds {
        assert!(
            synced(calls, fd, r[1].start, r[2].start),
            "fd {fd}: no sync between the flush request and its reply: {calls:#?}"
        );
    }
}

fn ready() -> bool {
    have("strace") && have("nbdsh")
}

fn disk(dir: &Path, name: &str, size: u64) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).unwrap().set_len(size).unwrap();
    p
}

#[test]
fn file_plugin_fua_and_flush_reach_the_disk_before_the_reply() {
    if !ready() {
        return;
    }
    for extra in
        [&[][..], &["cache=none"][..], &["fadvise=random"][..], &["fadvise=sequential"][..]]
    {
        let t = scratch();
        let d = disk(t.path(), "disk.img", 1 << 20);
        let mut args = vec!["file", "disk.img"];
        args.extend_from_slice(extra);
        let calls = traced(t.path(), &args, 8192);
        assert_durable(&calls, &[fd_of(&calls, Path::new("disk.img"))]);
        // From outside the server, after it has gone.
        let bytes = std::fs::read(&d).unwrap();
        assert_eq!(&bytes[..4096], &[b'x'; 4096][..], "{extra:?}");
        assert_eq!(&bytes[8192..12288], &[b'y'; 4096][..], "{extra:?}");
    }
}

#[test]
fn filters_pass_flush_and_fua_down_to_the_file() {
    if !ready() {
        return;
    }
    for filter in ["--filter=blocksize", "--filter=cache", "--filter=cow"] {
        let t = scratch();
        let d = disk(t.path(), "disk.img", 1 << 20);
        let calls = traced(t.path(), &[filter, "file", "disk.img"], 8192);
        let fd = fd_of(&calls, Path::new("disk.img"));
        let r = replies(&calls);
        assert_eq!(r.len(), 3, "{filter}: {r:?}");
        if filter == "--filter=cow" {
            // As C's cow: writes stay in the overlay (a temporary file that
            // does not outlive the server), nothing is written below, and
            // a flush has nothing to make durable there.
            assert!(!calls.iter().any(|c| c.fd == fd && c.name.starts_with("pwrite")));
            assert_eq!(&std::fs::read(&d).unwrap()[..4096], &[0; 4096][..]);
        } else {
            // Writes and flushes go through to the file.
            assert_durable(&calls, &[fd]);
            assert_eq!(&std::fs::read(&d).unwrap()[..4096], &[b'x'; 4096][..], "{filter}");
        }
    }
}

#[test]
fn split_plugin_flushes_every_file_it_wrote_to() {
    if !ready() {
        return;
    }
    let t = scratch();
    let a = disk(t.path(), "a.img", 1 << 16);
    let b = disk(t.path(), "b.img", 1 << 16);
    // The second write lands in b.img.
    let calls = traced(t.path(), &["split", "a.img", "b.img"], 1 << 16);
    let fds = [fd_of(&calls, Path::new("a.img")), fd_of(&calls, Path::new("b.img"))];
    assert_durable(&calls, &fds);
    assert_eq!(&std::fs::read(&a).unwrap()[..4096], &[b'x'; 4096][..]);
    assert_eq!(&std::fs::read(&b).unwrap()[..4096], &[b'y'; 4096][..]);
}
