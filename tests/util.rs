//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nbdkit"))
}

/// `assert_cmd` command for the binary under test.
/// A throwaway disk on the binary under test, through our own nbdkit-test
/// crate: `args` are the plugin and its parameters.
pub fn disk(args: &[&str]) -> nbdkit_test::CaptiveDisk {
    nbdkit_test::CaptiveDisk::builder(args[0])
        .args(&args[1..])
        .binary(bin())
        .start()
        .unwrap_or_else(|e| panic!("{e}"))
}

pub fn nbdkit() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(bin());
    c.timeout(Duration::from_secs(60));
    c
}

/// The C nbdkit, if installed.
pub fn c_nbdkit() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/nbdkit");
    p.exists().then_some(p)
}

/// A PATH with /usr/bin first, so Debian's python3 (which has the nbd
/// module that nbdsh needs) wins.
pub fn path_env() -> String {
    format!("/usr/bin:/bin:{}", std::env::var("PATH").unwrap_or_default())
}

/// Whether an external tool is there. Under CI=true a missing tool fails
/// the test instead of skipping it.
pub fn have(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .env("PATH", path_env())
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{tool} is required under CI=true but is not installed");
        }
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        }
        Err(_) => false,
    }
}

/// Wait until `f` holds, up to `limit`. Polls a condition that has no event
/// to wait on (another process's death).
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// A server started in the foreground with `--print-uri`; ready once its
/// URI line has been read. Stopped with SIGTERM on drop.
pub struct Server {
    pub child: Child,
    pub uri: String,
    pub socket: Option<PathBuf>,
    pub dir: tempfile::TempDir,
}

impl Server {
    /// `nbdkit -f -U DIR/sock --print-uri ARGS...`.
    pub fn start(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let mut c = Command::new(bin());
        c.arg("-f").arg("-U").arg(&sock).arg("--print-uri").args(args);
        let mut s = Self::spawn(c, dir);
        s.socket = Some(sock);
        s
    }

    /// [`Server::start`] with `-v`, its stderr going to the returned file.
    pub fn start_verbose(args: &[&str]) -> (Server, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("sock");
        let log = dir.path().join("stderr");
        let mut c = Command::new(bin());
        c.arg("-f").arg("-v").arg("-U").arg(&sock).arg("--print-uri").args(args);
        c.stderr(std::fs::File::create(&log).unwrap());
        let mut s = Self::spawn(c, dir);
        s.socket = Some(sock);
        (s, log)
    }

    /// Start any command line that prints the URI on stdout when ready
    /// (stderr is ours unless the command says otherwise).
    pub fn spawn(mut c: Command, dir: tempfile::TempDir) -> Server {
        c.stdout(Stdio::piped());
        let mut child = c.spawn().expect("spawn nbdkit");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "server did not print its URI");
        Server { child, uri: line.trim().to_string(), socket: None, dir }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Connect to the Unix socket.
    pub fn connect(&self) -> UnixStream {
        UnixStream::connect(self.socket.as_ref().unwrap()).unwrap()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(self.pid(), libc::SIGTERM);
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Send a signal.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

/// Run a shell command line with a PATH that finds Debian's tools.
pub fn sh(cmd: &str) -> std::process::Output {
    let tmp = scratch();
    // `-U -` becomes a socket in the scratch directory (see `scratch`).
    let cmd = cmd.replace(" -U - ", &format!(" -U {}/nbd.sock ", tmp.path().display()));
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("PATH", path_env())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap()
}

/// A directory for one command, removed with everything in it afterwards.
/// C nbdkit 1.32 leaves its `-U -` directory in /tmp behind when it fails
/// at start-up (and ignores `$TMPDIR` for it), so commands that may run it
/// get `-U DIR/nbd.sock` instead of `-U -`.
pub fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `NBDKIT -U - ARGS --run SCRIPT` with /usr/bin first on PATH: the exit
/// status and stdout, to compare what two servers serve.
pub fn run_captive(nbdkit: &Path, args: &[&str], script: &str) -> String {
    let (code, stdout, _) = run_captive_all(nbdkit, args, script);
    format!("status {code:?}\n{stdout}")
}

/// As [`run_captive`]: the exit status, stdout and stderr.
pub fn run_captive_all(
    nbdkit: &Path, args: &[&str], script: &str,
) -> (Option<i32>, String, String) {
    let tmp = scratch();
    let out = Command::new(nbdkit)
        .arg("-U")
        .arg(tmp.path().join("nbd.sock"))
        .args(args)
        .args(["--run", script])
        .env("PATH", path_env())
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Make a FIFO (a pidfile that is also a readiness signal).
pub fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// Read a whole file as a string (or "" if absent).
pub fn slurp(p: &Path) -> String {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(p) {
        let _ = f.read_to_string(&mut s);
    }
    s
}

// ---------------------------------------------------------------- raw client

// The wire constants: the server crate's own, named as in the NBD
// specification without the `NBD_` prefix.
pub use nbdkit::protocol::consts::*;

/// A deliberately low-level client: every byte is explicit, so tests can
/// also send what a real client never would.
pub struct Raw {
    pub s: UnixStream,
    pub structured: bool,
    /// Extended headers were negotiated: requests go with 32-byte headers.
    pub extended: bool,
}

/// A reply: error value and payload (read data, or block status pairs).
#[derive(Debug)]
pub struct Reply {
    pub cookie: u64,
    pub error: u32,
    pub data: Vec<u8>,
}

impl Raw {
    pub fn new(s: UnixStream) -> Raw {
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        Raw { s, structured: false, extended: false }
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0; 2];
        self.s.read_exact(&mut b).unwrap();
        u16::from_be_bytes(b)
    }
    pub fn u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.s.read_exact(&mut b).unwrap();
        u32::from_be_bytes(b)
    }
    pub fn u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.s.read_exact(&mut b).unwrap();
        u64::from_be_bytes(b)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.s.read_exact(&mut b).unwrap();
        b
    }
    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    /// Read the greeting and send client flags (FIXED_NEWSTYLE|NO_ZEROES).
    pub fn hello(&mut self) {
        assert_eq!(self.u64(), NBDMAGIC);
        assert_eq!(self.u64(), IHAVEOPT);
        assert_eq!(self.u16(), 3);
        self.send(&3u32.to_be_bytes());
    }

    pub fn option(&mut self, opt: u32, data: &[u8]) {
        let mut b = IHAVEOPT.to_be_bytes().to_vec();
        b.extend_from_slice(&opt.to_be_bytes());
        b.extend_from_slice(&(data.len() as u32).to_be_bytes());
        b.extend_from_slice(data);
        self.send(&b);
    }

    /// One option reply: (type, data).
    pub fn opt_reply(&mut self, opt: u32) -> (u32, Vec<u8>) {
        assert_eq!(self.u64(), REP_MAGIC);
        assert_eq!(self.u32(), opt);
        let t = self.u32();
        let n = self.u32() as usize;
        (t, self.bytes(n))
    }

    /// Negotiate structured replies and base:allocation, then GO on `name`.
    /// Returns (size, transmission flags).
    pub fn go(&mut self, name: &str, structured: bool) -> (u64, u16) {
        if structured {
            self.option(OPT_STRUCTURED_REPLY, b"");
            let want = if self.extended { REP_ERR_EXT_HEADER_REQD } else { REP_ACK };
            assert_eq!(self.opt_reply(OPT_STRUCTURED_REPLY).0, want);
            let mut q = 0u32.to_be_bytes().to_vec();
            q.extend_from_slice(&1u32.to_be_bytes());
            q.extend_from_slice(&15u32.to_be_bytes());
            q.extend_from_slice(b"base:allocation");
            self.option(OPT_SET_META_CONTEXT, &q);
            assert_eq!(self.opt_reply(OPT_SET_META_CONTEXT).0, REP_META_CONTEXT);
            assert_eq!(self.opt_reply(OPT_SET_META_CONTEXT).0, REP_ACK);
            self.structured = true;
        }
        let mut p = (name.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(name.as_bytes());
        p.extend_from_slice(&0u16.to_be_bytes());
        self.option(OPT_GO, &p);
        let (t, d) = self.opt_reply(OPT_GO);
        assert_eq!(t, REP_INFO, "GO failed: {t:#x} {:?}", String::from_utf8_lossy(&d));
        let size = u64::from_be_bytes(d[2..10].try_into().unwrap());
        let flags = u16::from_be_bytes(d[10..12].try_into().unwrap());
        assert_eq!(self.opt_reply(OPT_GO).0, REP_ACK);
        (size, flags)
    }

    /// Negotiate extended headers (which imply structured replies) and
    /// base:allocation, then GO on the default export.
    pub fn open_extended(s: UnixStream) -> (Raw, u64, u16) {
        let mut r = Raw::new(s);
        r.hello();
        r.option(OPT_EXTENDED_HEADERS, b"");
        assert_eq!(r.opt_reply(OPT_EXTENDED_HEADERS).0, REP_ACK);
        r.extended = true;
        // Already structured: meta contexts may be set, and asking for
        // structured replies now is refused.
        let (size, flags) = r.go("", true);
        (r, size, flags)
    }

    /// Connect, handshake, GO on the default export.
    pub fn open(s: UnixStream, structured: bool) -> (Raw, u64, u16) {
        let mut r = Raw::new(s);
        r.hello();
        let (size, flags) = r.go("", structured);
        (r, size, flags)
    }

    pub fn request(
        &mut self, cmd: u16, flags: u16, cookie: u64, offset: u64, len: u32, data: &[u8],
    ) {
        self.request64(cmd, flags, cookie, offset, u64::from(len), data)
    }

    /// A request in the style negotiated: compact (the length cut to 32
    /// bits) or extended. Flags go as given (PAYLOAD_LEN too).
    pub fn request64(
        &mut self, cmd: u16, flags: u16, cookie: u64, offset: u64, len: u64, data: &[u8],
    ) {
        let magic = if self.extended { EXTENDED_REQUEST_MAGIC } else { REQUEST_MAGIC };
        let mut b = magic.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        b.extend_from_slice(&cmd.to_be_bytes());
        b.extend_from_slice(&cookie.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        if self.extended {
            b.extend_from_slice(&len.to_be_bytes());
        } else {
            b.extend_from_slice(&(len as u32).to_be_bytes());
        }
        b.extend_from_slice(data);
        self.send(&b);
    }

    /// Read one reply. For simple replies to reads, pass the read length.
    /// A chunked reply is read to its DONE chunk: data and holes (as
    /// zeroes) in the order sent; block status descriptors as sent.
    pub fn reply(&mut self, read_len: usize) -> Reply {
        let mut data = Vec::new();
        loop {
            let (done, rep) = self.chunk(read_len);
            data.extend_from_slice(&rep.data);
            if done || rep.error != 0 {
                assert!(done, "an error chunk without DONE");
                return Reply { data, ..rep };
            }
        }
    }

    /// One reply chunk (or a whole simple reply): (done, reply).
    pub fn chunk(&mut self, read_len: usize) -> (bool, Reply) {
        let magic = self.u32();
        if magic == SIMPLE_REPLY_MAGIC {
            assert!(!self.extended, "a simple reply after extended headers");
            let error = self.u32();
            let cookie = self.u64();
            let data = if error == 0 { self.bytes(read_len) } else { vec![] };
            return (true, Reply { cookie, error, data });
        }
        let extended = magic == EXTENDED_REPLY_MAGIC;
        assert!(magic == STRUCTURED_REPLY_MAGIC || extended, "bad reply magic {magic:#x}");
        assert_eq!(extended, self.extended, "a reply header of the wrong style");
        let flags = self.u16();
        let typ = self.u16();
        let cookie = self.u64();
        let len = if extended {
            let _offset = self.u64();
            self.u64() as usize
        } else {
            self.u32() as usize
        };
        let body = self.bytes(len);
        let u32_at = |i: usize| u32::from_be_bytes(body[i..i + 4].try_into().unwrap());
        let rep = match typ {
            REPLY_TYPE_NONE => Reply { cookie, error: 0, data: vec![] },
            REPLY_TYPE_OFFSET_DATA => Reply { cookie, error: 0, data: body[8..].to_vec() },
            REPLY_TYPE_OFFSET_HOLE => Reply { cookie, error: 0, data: vec![0; u32_at(8) as usize] },
            REPLY_TYPE_BLOCK_STATUS => Reply { cookie, error: 0, data: body[4..].to_vec() },
            REPLY_TYPE_BLOCK_STATUS_EXT => Reply { cookie, error: 0, data: body[8..].to_vec() },
            REPLY_TYPE_ERROR | REPLY_TYPE_ERROR_OFFSET => {
                Reply { cookie, error: u32_at(0), data: vec![] }
            }
            t => panic!("unexpected chunk type {t}"),
        };
        (flags & REPLY_FLAG_DONE != 0, rep)
    }

    /// Request and wait for its reply.
    pub fn call(&mut self, cmd: u16, flags: u16, offset: u64, len: u32, data: &[u8]) -> Reply {
        self.request(cmd, flags, 1, offset, len, data);
        let read_len = if cmd == CMD_READ { len as usize } else { 0 };
        self.reply(read_len)
    }
}

/// The pattern plugin's bytes for `[offset, offset+len)`.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64).map(|p| (p & !7).to_be_bytes()[(p % 8) as usize]).collect()
}

// ------------------------------------------------------- comparing with C

/// A `--run` script describing an export: size, a hash of all its bytes,
/// its extents and its flags.
pub const DESCRIBE: &str = r#"nbdinfo --size "$uri" && nbdcopy "$uri" - | sha256sum && nbdinfo --map "$uri" && nbdinfo "$uri" | grep -E 'can_|is_'"#;

/// Python for `nbdsh -u "$uri" -c ...`: `t(NAME, LAMBDA)` prints NAME and
/// `ok` or the errno the call failed with.
pub const NBDSH_TRY: &str = "
def t(name, f):
    try:
        f()
        print(name, 'ok')
    except nbd.Error as e:
        print(name, e.errno)
";

/// Assert `ARGS` with `SCRIPT` gives the same as under C nbdkit, and
/// succeeds. Returns our output, or None when C nbdkit or a tool the
/// script needs (`tools`) is missing.
pub fn assert_same_as_c(args: &[&str], script: &str, tools: &[&str]) -> Option<String> {
    if !tools.iter().all(|t| have(t)) {
        return None;
    }
    let c = c_nbdkit()?;
    let ours = run_captive(&bin(), args, script);
    assert!(ours.starts_with("status Some(0)"), "{args:?}: {ours}");
    assert_eq!(ours, run_captive(&c, args, script), "{args:?}");
    Some(ours)
}

/// Assert our server refuses `ARGS` at start-up with exit status 1 and
/// one line on stderr containing `msg`; and, if installed, that C nbdkit
/// refuses them too.
pub fn assert_refused(args: &[&str], msg: &str) {
    refused(&["-U", "-"], args, msg);
    if let Some(c) = c_nbdkit() {
        let theirs = run_captive(&c, args, "true");
        assert!(theirs.starts_with("status Some(1)"), "{args:?}: C: {theirs}");
    }
}

/// `nbdkit -U - PREFIX... ARGS... --run true` must fail at start-up with
/// exit status 1 and exactly one line on stderr, containing `msg`.
pub fn refused(prefix: &[&str], args: &[&str], msg: &str) {
    let out = nbdkit().args(prefix).args(args).args(["--run", "true"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{prefix:?} {args:?}: {err}");
    assert!(err.contains(msg), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
