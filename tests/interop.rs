use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::*;

// ------------------------------------------------------------------ helpers

/// `SERVER -U - ARGS... --run CMD`, with a PATH that finds Debian's tools.
/// Returns (stdout, stderr) and asserts the whole thing succeeded.
fn run_on(server: &Path, args: &[&str], cmd: &str) -> (String, String) {
    let (ok, stdout, stderr) = try_run_on(server, args, cmd);
    assert!(
        ok,
        "{} -U - {args:?} --run {cmd:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}",
        server.display()
    );
    (stdout, stderr)
}

/// Like `run_on` but does not assert success: (success, stdout, stderr).
fn try_run_on(server: &Path, args: &[&str], cmd: &str) -> (bool, String, String) {
    let mut c = assert_cmd::Command::new(server);
    c.timeout(Duration::from_secs(120))
        .env("PATH", path_env())
        .args(["-U", "-"])
        .args(args)
        .arg("--run")
        .arg(cmd);
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Our binary.
fn ours(args: &[&str], cmd: &str) -> String {
    run_on(&bin(), args, cmd).0
}

/// The C nbdkit, or None to skip (a failure under CI=true).
fn c_server() -> Option<PathBuf> {
    let c = c_nbdkit();
    if c.is_none() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("C nbdkit (/usr/bin/nbdkit) is required under CI=true");
        }
        eprintln!("skipping comparison: C nbdkit is not installed");
    }
    c
}

/// Replace whatever follows `socket=` (up to whitespace or a quote) with a
/// fixed string, so outputs from servers with different private socket
/// directories can be compared.
fn normalise(s: &str) -> String {
    const KEY: &str = "socket=";
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(KEY) {
        out.push_str(&rest[..i + KEY.len()]);
        out.push_str("SOCKET");
        rest = &rest[i + KEY.len()..];
        let end =
            rest.find(|c: char| c.is_whitespace() || c == '"' || c == '\'').unwrap_or(rest.len());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Run the same command line on our binary and on C nbdkit, and check
/// the normalised stdout is identical. Returns our (normalised) stdout,
/// or None if C nbdkit is missing (the caller has already checked ours
/// where it matters).
fn same_as_c(args: &[&str], cmd: &str) -> Option<String> {
    let c = c_server()?;
    let mine = normalise(&ours(args, cmd));
    let theirs = normalise(&run_on(&c, args, cmd).0);
    assert_eq!(mine, theirs, "output differs from C nbdkit for {args:?} --run {cmd:?}");
    Some(mine)
}

/// Deterministic "random-ish" bytes (xorshift64*), so failures reproduce.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// An `nbdsh` command line running a Python script kept in a file (avoids
/// shell quoting of multi-line Python). `extra` goes before `-u`.
fn nbdsh_script(dir: &Path, name: &str, script: &str, extra: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, script).unwrap();
    format!(r#"nbdsh {extra} -u "$uri" -c 'exec(open("{}").read())'"#, p.display())
}

// ------------------------------------------------------------- 1. qemu-img info

#[test]
fn qemu_img_info_memory_1g() {
    if !have("qemu-img") {
        return;
    }
    let args = ["memory", "1G"];
    let cmd = r#"qemu-img info "$uri""#;
    let out = ours(&args, cmd);
    assert!(out.contains("virtual size: 1 GiB (1073741824 bytes)"), "{out}");
    assert!(out.contains("file format: raw"), "{out}");
    same_as_c(&args, cmd);
}

#[test]
fn qemu_img_info_with_export_name_and_odd_size() {
    if !have("qemu-img") {
        return;
    }
    // qemu rounds the size up to a sector; both servers must agree anyway.
    let args = ["-e", "disk", "pattern", "10000003"];
    let cmd = r#"qemu-img info "$uri""#;
    let out = ours(&args, cmd);
    assert!(out.contains("(10000384 bytes)"), "{out}");
    same_as_c(&args, cmd);
}

// --------------------------------------------------------- 2. nbdcopy | sha256

fn pattern_sha(size: &str) {
    if !have("nbdcopy") || !have("sha256sum") {
        return;
    }
    let args = ["pattern", size];
    let cmd = r#"nbdcopy "$uri" - | sha256sum"#;
    let out = ours(&args, cmd);
    assert_eq!(out.len(), 64 + 4, "{out:?}");
    // sha256 of the empty stream: the copy must not have been empty.
    assert!(!out.starts_with("e3b0c44298fc1c149afbf4c8996fb924"), "{out}");
    same_as_c(&args, cmd);
}

#[test]
fn nbdcopy_pattern_10m_sha_matches_c() {
    pattern_sha("10M");
}

/// 1G takes ~9 s in a debug build on a loaded 2-core machine (plus ~4 s for
/// C nbdkit), so the large case uses 256M.
#[test]
fn nbdcopy_pattern_256m_sha_matches_c() {
    pattern_sha("256M");
}

#[test]
fn nbdcopy_pattern_odd_size_sha_matches_c() {
    pattern_sha("10000003");
}

/// Independent of C nbdkit: the bytes nbdcopy reads are the pattern.
#[test]
fn nbdcopy_pattern_bytes_are_offsets() {
    if !have("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.img");
    let size = 3 * 1024 * 1024 + 5;
    ours(&["pattern", &size.to_string()], &format!(r#"nbdcopy "$uri" '{}'"#, out.display()));
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), size);
    assert!(got == pattern(0, size), "pattern bytes differ");
}

// ----------------------------------------------- 3. qemu-img convert / compare

#[test]
fn qemu_img_convert_then_compare() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.img");
    std::fs::write(&file, noise(4 << 20, 0x5eed)).unwrap();
    let f = file.display();
    let cmd = format!(
        r#"qemu-img convert -n -f raw -O raw '{f}' "$uri" && qemu-img compare -f raw -F raw '{f}' "$uri"; echo "compare=$?""#
    );
    let out = ours(&["memory", "4M"], &cmd);
    assert!(out.contains("Images are identical."), "{out}");
    assert!(out.contains("compare=0"), "{out}");

    // And compare does notice a difference (an empty export vs the file).
    let cmd = format!(r#"qemu-img compare -f raw -F raw '{f}' "$uri"; echo "compare=$?""#);
    let out = ours(&["memory", "4M"], &cmd);
    assert!(out.contains("compare=1"), "{out}");
}

#[test]
fn nbdcopy_file_to_export_and_back() {
    if !have("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.img");
    let dst = dir.path().join("out.img");
    let data = noise(4 << 20, 42);
    std::fs::write(&src, &data).unwrap();
    ours(
        &["memory", "4M"],
        &format!(r#"nbdcopy '{}' "$uri" && nbdcopy "$uri" '{}'"#, src.display(), dst.display()),
    );
    let back = std::fs::read(&dst).unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "data changed on the round trip");
}

#[test]
fn nbdcopy_with_many_connections_and_requests() {
    if !have("nbdcopy") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.img");
    let dst = dir.path().join("out.img");
    let data = noise(8 << 20, 7);
    std::fs::write(&src, &data).unwrap();
    ours(
        &["memory", "8M"],
        &format!(
            r#"nbdcopy --connections=4 --requests=16 --request-size=65536 '{}' "$uri" && nbdcopy --connections=4 "$uri" '{}'"#,
            src.display(),
            dst.display()
        ),
    );
    assert!(std::fs::read(&dst).unwrap() == data);
}

// --------------------------------------------------------- 4. nbdinfo --json

#[test]
fn nbdinfo_json_memory() {
    if !have("nbdinfo") {
        return;
    }
    let out = ours(&["memory", "1M"], r#"nbdinfo --json "$uri""#);
    for want in [
        r#""export-size": 1048576"#,
        r#""can_trim": true"#,
        r#""can_zero": true"#,
        r#""can_flush": true"#,
        r#""can_fua": true"#,
        r#""can_multi_conn": true"#,
        r#""is_read_only": false"#,
        r#""base:allocation""#,
        r#""export-name": """#,
        r#""structured": true"#,
    ] {
        assert!(out.contains(want), "missing {want} in\n{out}");
    }
}

#[test]
fn nbdinfo_json_read_only() {
    if !have("nbdinfo") {
        return;
    }
    let out = ours(&["-r", "memory", "1M"], r#"nbdinfo --json "$uri""#);
    assert!(out.contains(r#""is_read_only": true"#), "{out}");
    assert!(out.contains(r#""can_trim": false"#), "{out}");
    assert!(out.contains(r#""can_zero": false"#), "{out}");

    let out = ours(&["pattern", "1M"], r#"nbdinfo --json "$uri""#);
    assert!(out.contains(r#""is_read_only": true"#), "{out}");
    assert!(out.contains(r#""export-size": 1048576"#), "{out}");
}

#[test]
fn nbdinfo_json_matches_c() {
    if !have("nbdinfo") {
        return;
    }
    for args in [
        &["memory", "1M"][..],
        &["memory", "size=1G"],
        &["-r", "memory", "1M"],
        &["null", "1M"],
        &["null", "size=0"],
        &["pattern", "1M"],
        &["pattern", "10000003"],
    ] {
        if same_as_c(args, r#"nbdinfo --json "$uri""#).is_none() {
            return;
        }
    }
}

#[test]
fn nbdinfo_human_output_matches_c() {
    if !have("nbdinfo") {
        return;
    }
    for args in [&["memory", "1M"][..], &["null", "1M"], &["pattern", "1M"]] {
        let out = same_as_c(args, r#"nbdinfo "$uri""#);
        if let Some(out) = out {
            assert!(out.contains("export-size: 1048576 (1M)"), "{out}");
        }
    }
}

// ---------------------------------------------------------- 5. nbdinfo --map

const WRITE_1M: &str =
    r#"nbdsh -u "$uri" -c 'h.pwrite(b"x"*65536, 1048576)' && nbdinfo --map "$uri""#;

#[test]
fn nbdinfo_map_after_write() {
    if !have("nbdinfo") || !have("nbdsh") {
        return;
    }
    let out = ours(&["memory", "4M"], WRITE_1M);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(
        rows,
        vec![
            vec!["0", "1048576", "3", "hole,zero"],
            vec!["1048576", "65536", "0", "data"],
            vec!["1114112", "3080192", "3", "hole,zero"],
        ],
        "{out}"
    );
}

#[test]
fn nbdinfo_map_matches_c() {
    if !have("nbdinfo") || !have("nbdsh") {
        return;
    }
    same_as_c(&["memory", "4M"], WRITE_1M);
    // Unaligned write straddling a 32K page boundary, then a zero and a
    // trim, with totals.
    let cmd = r#"nbdsh -u "$uri" -c 'h.pwrite(b"y"*1000, 32768*3-500)' -c 'h.pwrite(b"z"*65536, 262144)' -c 'h.zero(32768, 262144)' -c 'h.pwrite(b"w"*4096, 524288)' -c 'h.trim(4096, 524288)' && nbdinfo --map "$uri" && nbdinfo --map --totals "$uri""#;
    same_as_c(&["memory", "1M"], cmd);
    // Fully allocated / fully sparse plugins.
    same_as_c(&["pattern", "1M"], r#"nbdinfo --map "$uri""#);
    same_as_c(&["null", "1M"], r#"nbdinfo --map "$uri""#);
}

// --------------------------------------------------------------- 6. nbdsh

const NBDSH_OPS: &str = r#"
sz = h.get_size()
print("size", sz)
print("multi_conn", h.can_multi_conn())
print("can_fua", h.can_fua(), "can_trim", h.can_trim(), "can_zero", h.can_zero())
buf = bytes(range(256)) * 256
h.pwrite(buf, 8192, nbd.CMD_FLAG_FUA)
assert h.pread(len(buf), 8192) == buf
print("roundtrip ok")
h.flush()
print("flush ok")
h.trim(65536, 0)
assert h.pread(65536, 0) == bytes(65536)
print("trim ok")
h.pwrite(b"\xff" * 4096, 131072)
h.zero(4096, 131072)
assert h.pread(4096, 131072) == bytes(4096)
print("zero ok")
h.pwrite(b"y" * 32768, 262144)
ext = []
def cb(meta, off, entries, err):
    if meta == nbd.CONTEXT_BASE_ALLOCATION:
        ext.extend(entries)
    return 0
h.block_status(sz, 0, cb)
print("extents", ext)
try:
    h.pread(512, sz - 256)
    print("past end: no error")
except nbd.Error as e:
    print("past end errno", e.errno)
"#;

#[test]
fn nbdsh_operations() {
    if !have("nbdsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = nbdsh_script(dir.path(), "ops.py", NBDSH_OPS, "--base-allocation");
    let out = ours(&["memory", "1M"], &cmd);
    for want in [
        "size 1048576\n",
        "multi_conn True\n",
        "can_fua True can_trim True can_zero True\n",
        "roundtrip ok\n",
        "flush ok\n",
        "trim ok\n",
        "zero ok\n",
        // 32K pages: [64K,96K) holds the tail of the first write; the
        // trimmed and zeroed pages are holes; [256K,288K) is data.
        "extents [65536, 3, 32768, 0, 163840, 3, 32768, 0, 753664, 3]\n",
        "past end errno EINVAL\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    same_as_c(&["memory", "1M"], &cmd);
}

/// With libnbd's client-side checks off, out-of-range and read-only
/// requests reach the server: check the errors it sends back, and that
/// the connection stays usable.
const NBDSH_BAD: &str = r#"
h.set_strict_mode(0)
sz = h.get_size()
for name, f in [("read", lambda: h.pread(512, sz - 256)),
                ("write", lambda: h.pwrite(b"a" * 512, sz - 256)),
                ("zero", lambda: h.zero(512, sz - 256)),
                ("trim", lambda: h.trim(512, sz - 256)),
                ("cache", lambda: h.cache(512, sz - 256))]:
    try:
        f()
        print(name, "no error")
    except nbd.Error as e:
        print(name, "errno", e.errno)
print("still usable", h.pread(8, 8).hex())
"#;

#[test]
fn nbdsh_errors_reach_the_client() {
    if !have("nbdsh") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cmd = nbdsh_script(dir.path(), "bad.py", NBDSH_BAD, "");
    let out = ours(&["memory", "1M"], &cmd);
    assert_eq!(
        out,
        "read errno EINVAL\nwrite errno ENOSPC\nzero errno ENOSPC\n\
         trim errno EINVAL\ncache errno EINVAL\nstill usable 0000000000000000\n"
    );
    let out = ours(&["pattern", "1M"], &cmd);
    assert_eq!(
        out,
        "read errno EINVAL\nwrite errno EPERM\nzero errno EPERM\n\
         trim errno EPERM\ncache errno EINVAL\nstill usable 0000000000000008\n"
    );
    same_as_c(&["memory", "1M"], &cmd);
    same_as_c(&["pattern", "1M"], &cmd);
}

/// Reads of the pattern plugin through libnbd at unaligned offsets.
#[test]
fn nbdsh_pattern_reads() {
    if !have("nbdsh") {
        return;
    }
    let hex = |b: Vec<u8>| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let out = ours(
        &["pattern", "1M"],
        r#"nbdsh -u "$uri" -c 'print(h.pread(6, 1048570).hex())' -c 'print(h.pread(13, 3).hex())'"#,
    );
    let want = format!("{}\n{}\n", hex(pattern(1048570, 6)), hex(pattern(3, 13)));
    assert_eq!(out, want);
}

// --------------------------------------------------------- 7. nbdinfo --list

#[test]
fn nbdinfo_list_shows_default_export() {
    if !have("nbdinfo") {
        return;
    }
    let out = ours(&["memory", "1M"], r#"nbdinfo --list "$uri""#);
    assert!(out.contains("export=\"\":"), "{out}");
    assert!(out.contains("export-size: 1048576 (1M)"), "{out}");
    same_as_c(&["memory", "1M"], r#"nbdinfo --list "$uri""#);
    same_as_c(&["-e", "foo", "memory", "1M"], r#"nbdinfo --list "$uri""#);
    same_as_c(&["-e", "foo", "memory", "1M"], r#"nbdinfo --list --json "$uri""#);
}

// -------------------------------------------------------------- 8. -e NAME

#[test]
fn export_name_option() {
    if !have("nbdinfo") {
        return;
    }
    let cmd = r#"echo "$uri"; nbdinfo --json "$uri""#;
    let out = ours(&["-e", "foo", "memory", "1M"], cmd);
    let uri = out.lines().next().unwrap();
    assert!(uri.starts_with("nbd+unix:///foo?socket="), "{uri}");
    assert!(out.contains(r#""export-name": "foo""#), "{out}");
    assert!(out.contains(r#""export-size": 1048576"#), "{out}");
    same_as_c(&["-e", "foo", "memory", "1M"], cmd);
}

#[test]
fn export_name_with_qemu_img() {
    if !have("qemu-img") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.img");
    std::fs::write(&file, noise(1 << 20, 99)).unwrap();
    let f = file.display();
    let out = ours(
        &["-e", "foo", "memory", "1M"],
        &format!(
            r#"qemu-img convert -n -f raw -O raw '{f}' "$uri" && qemu-img compare -f raw -F raw '{f}' "$uri""#
        ),
    );
    assert!(out.contains("Images are identical."), "{out}");
}

// ------------------------------------------------------------ extra clients

/// qemu-io's write (plain, zero, FUA), discard, pattern-checked reads and
/// flush, then qemu-img map; identical to C nbdkit.
#[test]
fn qemu_io_and_qemu_img_map() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let cmd = r#"qemu-io -f raw -c "write -P 0x55 1000 70000" -c "write -z 200000 40000" -c "discard 0 32768" -c "read -P 0x55 40000 1000" -c "write -f -P 1 500000 4096" -c "read -P 1 500000 4096" -c "read -P 0 0 32768" -c "read -P 0 200000 40000" -c flush "$uri" | grep -v "ops;"; qemu-img map --output=json -f raw "$uri""#;
    let out = ours(&["memory", "1M"], cmd);
    assert!(!out.contains("failed"), "{out}");
    for want in [
        "wrote 70000/70000 bytes at offset 1000\n",
        "wrote 40000/40000 bytes at offset 200000\n",
        "discard 32768/32768 bytes at offset 0\n",
        "read 1000/1000 bytes at offset 40000\n",
        "wrote 4096/4096 bytes at offset 500000\n",
        "read 4096/4096 bytes at offset 500000\n",
        "read 32768/32768 bytes at offset 0\n",
        "read 40000/40000 bytes at offset 200000\n",
        r#"{ "start": 32768, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true"#,
        r#"{ "start": 491520, "length": 32768, "depth": 0, "present": true, "zero": false, "data": true"#,
    ] {
        assert!(out.contains(want), "missing {want:?} in\n{out}");
    }
    same_as_c(&["memory", "1M"], cmd);
}

/// nbdinfo's single-answer queries (exit status 0 = true, 2 = false).
#[test]
fn nbdinfo_queries() {
    if !have("nbdinfo") {
        return;
    }
    let cmd = r#"nbdinfo --size "$uri"; for c in trim zero fua flush multi-conn cache fast-zero; do nbdinfo --can $c "$uri"; echo "$c=$?"; done; nbdinfo --is read-only "$uri"; echo "ro=$?""#;
    let out = ours(&["memory", "1M"], cmd);
    assert_eq!(
        out,
        "1048576\ntrim=0\nzero=0\nfua=0\nflush=0\nmulti-conn=0\ncache=0\nfast-zero=0\nro=2\n"
    );
    let out = ours(&["pattern", "2M"], cmd);
    assert!(out.starts_with("2097152\ntrim=2\nzero=2\n"), "{out}");
    assert!(out.ends_with("ro=0\n"), "{out}");
    for args in [&["memory", "1M"][..], &["pattern", "2M"], &["null", "3M"], &["-r", "null", "3M"]]
    {
        same_as_c(args, cmd);
    }
}

// -------------------------------------------------------- extended headers

/// The lines of the log filter's file for one kind of request, on the way
/// down.
fn logged(log: &Path, what: &str) -> Vec<String> {
    slurp(log).lines().filter(|l| l.contains(&format!(" {what} id="))).map(String::from).collect()
}

/// qemu 10 negotiates extended headers with us: a 5 GiB write-zeroes and
/// an 8 GiB block status each reach the plugin as one request.
#[test]
fn qemu_negotiates_extended_headers() {
    if !have("qemu-io") || !have("qemu-img") {
        return;
    }
    let dir = scratch();
    let log = dir.path().join("log");
    let logfile = format!("logfile={}", log.display());
    let (out, err) = run_on(
        &bin(),
        &["-v", "--filter=log", "memory", "8G", &logfile],
        r#"qemu-io -f raw -c "write -P 7 0 1M" -c "write -z -n 1M 5G" -c "read -P 7 0 1M" "$uri" | grep -v ops; qemu-img map --output=json -f raw "$uri""#,
    );
    assert!(err.contains("size 8589934592 flags 0xded, extended headers"), "{err}");
    assert!(!out.contains("failed"), "{out}");
    assert!(out.contains("read 1048576/1048576 bytes at offset 0"), "{out}");
    assert!(out.contains(r#""start": 1048576, "length": 8588886016, "depth": 0, "present": true, "zero": true, "data": false"#), "{out}");
    let zero = logged(&log, "Zero");
    assert_eq!(zero.len(), 1, "{zero:?}");
    assert!(zero[0].contains("offset=0x100000 count=0x140000000"), "{zero:?}");
    let status = logged(&log, "Extents");
    assert!(status.iter().any(|l| l.contains("offset=0x0 count=0x200000000")), "{status:?}");
}

/// The nbd plugin negotiates extended headers with the server behind it
/// and passes a 5 GiB zero on as one request.
#[test]
fn the_nbd_plugin_passes_64_bit_requests_on() {
    if !have("qemu-io") {
        return;
    }
    let dir = scratch();
    let log = dir.path().join("log");
    let back =
        Server::start(&["--filter=log", "memory", "8G", &format!("logfile={}", log.display())]);
    let socket = format!("socket={}", back.socket.as_ref().unwrap().display());
    let out = ours(&["nbd", &socket], r#"qemu-io -f raw -c "write -z -n 0 5G" "$uri""#);
    assert!(out.contains("wrote 5368709120/5368709120 bytes at offset 0"), "{out}");
    back.stop();
    let zero = logged(&log, "Zero");
    assert_eq!(zero.len(), 1, "{zero:?}");
    assert!(zero[0].contains("offset=0x0 count=0x140000000"), "{zero:?}");
}

/// Reads of a sparse disk, which we answer with hole chunks and C with
/// data, give libnbd and qemu the same bytes.
#[test]
fn sparse_reads_are_the_same_bytes_as_c() {
    let script = r#"qemu-io -f raw -c "write -P 3 40000 5000" -c "write -P 4 9000000 70000" "$uri" >/dev/null &&
        nbdcopy "$uri" - | sha256sum &&
        qemu-img convert -f raw -O raw "$uri" "$tmp/out" && sha256sum < "$tmp/out" &&
        nbdsh -u "$uri" -c 'import hashlib; print(hashlib.sha256(h.pread(16 << 20, 0)).hexdigest())'"#;
    let dir = scratch();
    let script = script.replace("$tmp", &dir.path().display().to_string());
    let out =
        assert_same_as_c(&["memory", "16M"], &script, &["qemu-io", "qemu-img", "nbdcopy", "nbdsh"]);
    if let Some(out) = out {
        let sums: Vec<&str> = out.lines().filter(|l| l.len() >= 64).collect();
        assert_eq!(sums.len(), 3, "{out}");
        assert!(sums.iter().all(|s| s[..64] == sums[0][..64]), "{out}");
    }
}
