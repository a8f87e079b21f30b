//! The retry filter: retry-readonly, failed reopens, the size recheck.
//! (Its basic reopen-and-retry is in `more.rs`.)

use std::path::Path;

use crate::util::*;

/// An eval plugin whose `open` hands out `h1`, `h2`, ... (counting in
/// `dir/n`) and logs each `pread` (handle and offset) to `dir/log`;
/// `extra` adds or replaces methods.
fn flaky(dir: &Path, extra: &[&str]) -> Vec<String> {
    let dir = dir.display();
    let mut p = vec![
        "eval".to_owned(),
        "get_size=echo 1024".to_owned(),
        format!(
            "open=n=$(($(cat {dir}/n 2>/dev/null || echo 0) + 1)); echo $n > {dir}/n; echo h$n"
        ),
        format!(
            "pread=echo $2 $4 >> {dir}/log; dd if=/dev/zero count=$3 iflag=count_bytes status=none"
        ),
    ];
    p.extend(extra.iter().map(|s| s.to_string()));
    p
}

fn start(plugin: &[String], args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder(&plugin[0])
        .args(&plugin[1..])
        .filter("retry")
        .args(["retry-delay=10ms"])
        .args(args)
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn opens(dir: &Path) -> String {
    slurp(&dir.join("n")).trim().to_owned()
}

fn preads(dir: &Path) -> Vec<String> {
    slurp(&dir.join("log")).lines().map(str::to_owned).collect()
}

#[test]
fn readonly_reopen_refuses_writes_without_retrying() {
    let dir = scratch();
    let plugin = flaky(dir.path(), &["pwrite=echo EIO nope >&2; exit 1"]);
    let d = start(&plugin, &["retry-readonly=yes", "retries=3"]);
    let mut c = d.connect().unwrap();
    // The write fails; the plugin is reopened read-only, once, and the
    // retried write fails at once as read-only.
    assert_eq!(c.write(0, b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(opens(dir.path()), "2");
    // So does every later write, with no further reopen.
    assert_eq!(c.write(0, b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(c.zero(0, 1).unwrap_err().raw_os_error(), Some(libc::EPERM));
    assert_eq!(opens(dir.path()), "2");
    assert_eq!(c.read(0, 1).unwrap(), [0]);
}

/// Reads fail on h1; the second open fails.
fn reopen_fails_once(dir: &Path) -> Vec<String> {
    let d = dir.display();
    flaky(
        dir,
        &[
            &format!("open=n=$(($(cat {d}/n 2>/dev/null || echo 0) + 1)); echo $n > {d}/n; [ $n = 2 ] && {{ echo EIO no >&2; exit 1; }}; echo h$n"),
            &format!("pread=echo $2 $4 >> {d}/log; [ $2 = h1 ] && {{ echo EIO bad >&2; exit 1; }}; dd if=/dev/zero count=$3 iflag=count_bytes status=none"),
        ],
    )
}

#[test]
fn failed_reopen_leaves_no_handle() {
    let dir = scratch();
    let disk = start(&reopen_fails_once(dir.path()), &["retries=1"]);
    let mut c = disk.connect().unwrap();
    // The one retry is spent on the failed reopen: ESHUTDOWN.
    assert_eq!(c.read(0, 1).unwrap_err().raw_os_error(), Some(libc::ESHUTDOWN));
    // The next request reopens first, never using h1 again.
    assert_eq!(c.read(8, 1).unwrap(), [0]);
    assert_eq!(preads(dir.path()), ["h1 0", "h3 8"]);
    assert_eq!(opens(dir.path()), "3");
    // With more tries, one request survives the failed reopen.
    let dir = scratch();
    let disk = start(&reopen_fails_once(dir.path()), &["retries=2"]);
    assert_eq!(disk.connect().unwrap().read(0, 1).unwrap(), [0]);
    assert_eq!(preads(dir.path()), ["h1 0", "h3 0"]);
}

#[test]
fn a_smaller_reopened_plugin_is_not_read_past_its_end() {
    let dir = scratch();
    let d = dir.path().display();
    // h1 fails every read; h2 is only 512 bytes long.
    let plugin = flaky(
        dir.path(),
        &[
            "get_size=[ $2 = h2 ] && echo 512 || echo 1024",
            &format!("pread=echo $2 $4 >> {d}/log; [ $2 = h1 ] && {{ echo EIO bad >&2; exit 1; }}; dd if=/dev/zero count=$3 iflag=count_bytes status=none"),
        ],
    );
    let disk = start(&plugin, &[]);
    let mut c = disk.connect().unwrap();
    // h2 is too small for the read, which is retried (not sent) on h3.
    assert_eq!(c.read(512, 4).unwrap(), [0; 4]);
    assert_eq!(preads(dir.path()), ["h1 512", "h3 512"]);
}

#[test]
fn zero_retry_delay_is_refused() {
    refused(
        &["-U", "-"],
        &["--filter=retry", "memory", "1M", "retry-delay=0"],
        "retry-delay cannot be 0",
    );
}
