//! [`CaptiveDisk`], the guard around one running server, and its
//! [`Builder`].

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binary;
use crate::client::Client;
use crate::error::{Error, ErrorKind};
use crate::spawn::{self, Ready};
use crate::uri;

/// How long [`Builder::start`] waits for the server unless told otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a dropped guard waits after SIGTERM before it sends SIGKILL,
/// unless told otherwise.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How much of the server's stderr errors and `Debug` show.
const TAIL_LINES: usize = 20;

/// Everything a test may set before the server starts.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nbdkit_test::CaptiveDisk;
///
/// let disk = CaptiveDisk::builder("memory")
///     .arg("size=1M")
///     .export_name("scratch")
///     .readonly()
///     .start()?;
/// assert!(disk.uri().starts_with("nbd+unix:///scratch?socket="));
/// assert!(disk.connect()?.info().read_only());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a Builder does nothing until .start() is called"]
pub struct Builder {
    plugin: OsString,
    args: Vec<OsString>,
    filters: Vec<OsString>,
    server_args: Vec<OsString>,
    readonly: bool,
    export_name: String,
    tcp: bool,
    verbose: bool,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
    stop_timeout: Duration,
    binary: Option<PathBuf>,
    tls: Option<Tls>,
}

/// The credentials of a disk that requires TLS.
#[derive(Clone, Debug)]
enum Tls {
    /// `--tls-certificates=DIR` (made by the test).
    Certificates(PathBuf),
    /// `--tls-psk=FILE` (made by the test).
    PskFile(PathBuf),
    /// A PSK file the crate makes, in a directory the guard removes.
    NewPsk,
    /// Certificates the crate makes, in a directory the guard removes.
    NewCertificates,
}

/// The TLS credentials a client needs to reach a disk that requires TLS.
#[derive(Debug)]
pub struct TlsCredentials {
    psk_file: Option<PathBuf>,
    username: Option<String>,
    certificates: Option<PathBuf>,
    // The directory of a PSK file made by the crate.
    _dir: Option<tempfile::TempDir>,
}

impl TlsCredentials {
    /// The PSK file (`username:hexkey` lines), if the disk uses PSK.
    pub fn psk_file(&self) -> Option<&Path> {
        self.psk_file.as_deref()
    }

    /// The PSK username to connect as (the file's first), if the disk uses
    /// PSK.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The certificates directory, if the disk uses X.509.
    pub fn certificates(&self) -> Option<&Path> {
        self.certificates.as_deref()
    }
}

/// The username of the PSK files the crate makes.
pub const PSK_USERNAME: &str = "nbdkit-test";

impl Builder {
    /// A disk served by `plugin` (a name like `memory`, or a path).
    pub fn new(plugin: impl AsRef<OsStr>) -> Builder {
        Builder {
            plugin: plugin.as_ref().to_owned(),
            args: Vec::new(),
            filters: Vec::new(),
            server_args: Vec::new(),
            readonly: false,
            export_name: String::new(),
            tcp: false,
            verbose: false,
            env: Vec::new(),
            timeout: DEFAULT_START_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            binary: None,
            tls: None,
        }
    }

    /// Require TLS with X.509 certificates: `DIR` holds `ca-cert.pem`,
    /// `server-cert.pem` and `server-key.pem` (see nbdkit-tls(1)). The URI
    /// is then `nbds+unix://` (or `nbds://`) and names the directory, which
    /// libnbd's clients read `ca-cert.pem` (and, for a client certificate,
    /// `client-cert.pem` and `client-key.pem`) from. Add
    /// `.server_arg("--tls-verify-peer")` to require client certificates.
    pub fn tls_certificates(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.tls = Some(Tls::Certificates(dir.into()));
        self
    }

    /// Require TLS with the pre-shared keys in `file` (`username:hexkey`
    /// lines, as psktool writes them). The URI names the file and its first
    /// username.
    pub fn tls_psk(mut self, file: impl Into<PathBuf>) -> Builder {
        self.tls = Some(Tls::PskFile(file.into()));
        self
    }

    /// Require TLS with a pre-shared key the crate makes: a random 256-bit
    /// key for user [`PSK_USERNAME`], in a private file that goes away with
    /// the guard. [`CaptiveDisk::tls`] tells a client where it is.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let disk = nbdkit_test::CaptiveDisk::builder("memory")
    ///     .arg("size=1M")
    ///     .tls_psk_new()
    ///     .start()?;
    /// assert!(disk.uri().starts_with("nbds+unix://nbdkit-test@/?socket="));
    /// let psk = disk.tls().unwrap().psk_file().unwrap();
    /// assert!(std::fs::read_to_string(psk)?.starts_with("nbdkit-test:"));
    /// # Ok(()) }
    /// ```
    pub fn tls_psk_new(mut self) -> Builder {
        self.tls = Some(Tls::NewPsk);
        self
    }

    /// Require TLS with X.509 certificates the crate makes: a CA, a server
    /// certificate for `localhost` and `127.0.0.1`, and a client
    /// certificate, in a private directory that goes away with the guard.
    /// The directory holds `ca-cert.pem`, `client-cert.pem` and
    /// `client-key.pem` for clients (libnbd reads them from the
    /// `tls-certificates=` the URI names), and the server's files.
    ///
    /// ```
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let disk = nbdkit_test::CaptiveDisk::builder("memory")
    ///     .arg("size=1M")
    ///     .tls_certificates_new()
    ///     .server_arg("--tls-verify-peer") // clients must show theirs
    ///     .start()?;
    /// let dir = disk.tls().unwrap().certificates().unwrap();
    /// assert!(dir.join("client-key.pem").exists());
    /// assert!(disk.uri().starts_with("nbds+unix:///?socket="));
    /// # Ok(()) }
    /// ```
    pub fn tls_certificates_new(mut self) -> Builder {
        self.tls = Some(Tls::NewCertificates);
        self
    }

    /// One plugin or filter parameter, e.g. `"size=1M"` or a magic
    /// parameter such as `"1M"`.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Builder {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Several parameters.
    pub fn args<I, S>(mut self, args: I) -> Builder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Add `--filter=NAME`. The first filter added is the one closest to
    /// the client, as on the command line.
    pub fn filter(mut self, name: impl AsRef<OsStr>) -> Builder {
        self.filters.push(name.as_ref().to_owned());
        self
    }

    /// Serve the export read-only (`-r`).
    pub fn readonly(mut self) -> Builder {
        self.readonly = true;
        self
    }

    /// The export name (`-e`); it also goes into the URI.
    pub fn export_name(mut self, name: impl Into<String>) -> Builder {
        self.export_name = name.into();
        self
    }

    /// Listen on TCP, on 127.0.0.1 and a port the kernel picks, instead of
    /// a private Unix socket.
    pub fn tcp(mut self) -> Builder {
        self.tcp = true;
        self
    }

    /// Run the server with `-v`: its debug messages go to [`CaptiveDisk::log`].
    pub fn verbose(mut self) -> Builder {
        self.verbose = true;
        self
    }

    /// An extra server option placed before the plugin name, e.g.
    /// `"--no-sr"` or `"--threads=4"`.
    pub fn server_arg(mut self, arg: impl AsRef<OsStr>) -> Builder {
        self.server_args.push(arg.as_ref().to_owned());
        self
    }

    /// Set an environment variable for the server.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Builder {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// How long to wait for the server to be ready (default 30 s). Only a
    /// server that fails to start ever takes this long.
    pub fn start_timeout(mut self, limit: Duration) -> Builder {
        self.timeout = limit;
        self
    }

    /// How long dropping the guard waits after SIGTERM before it sends
    /// SIGKILL (default 5 s). A server with no clients exits in
    /// milliseconds; only a stuck one takes this long.
    pub fn stop_timeout(mut self, limit: Duration) -> Builder {
        self.stop_timeout = limit;
        self
    }

    /// Run this binary instead of searching for one (see the crate docs for
    /// the search order). From a crate that builds `nbdkit` itself:
    /// `.binary(env!("CARGO_BIN_EXE_nbdkit"))`.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Builder {
        self.binary = Some(path.into());
        self
    }

    /// Start the server and return once it accepts connections.
    pub fn start(self) -> Result<CaptiveDisk, Error> {
        let deadline = Instant::now() + self.timeout;
        let server = binary::find(self.binary.as_deref())?;
        let print_uri = binary::has_print_uri(&server, &self.env, deadline)?;
        Launch::new(self, server, print_uri)?.run(deadline)
    }
}

/// How the server tells us it is ready, and where it listens.
enum Mode {
    /// `-U -` or `-i 127.0.0.1 -p 0` with `--print-uri`: the URI on stdout
    /// is both the readiness signal and the address.
    PrintUri,
    /// Older nbdkit (C 1.32): a socket in a directory of ours, and the
    /// pidfile written to a pipe as the readiness signal.
    PidfileUnix { dir: tempfile::TempDir, socket: PathBuf },
    /// Older nbdkit on TCP: a listening socket we bound ourselves, passed
    /// by socket activation, so the port is known without a race.
    PidfileTcp { port: u16 },
}

struct Launch {
    cmd: Command,
    display: String,
    mode: Mode,
    /// Descriptors the child inherits under their own numbers.
    keep: Vec<std::os::fd::RawFd>,
    /// The pidfile pipe, older nbdkit only: (read end, write end). Our
    /// write end is closed as soon as the child has its copy.
    pidfile: Option<(OwnedFd, OwnedFd)>,
    stderr: File,
    export_name: String,
    stop_timeout: Duration,
    tls: Option<TlsCredentials>,
}

impl Launch {
    fn new(b: Builder, server: binary::Server, print_uri: bool) -> Result<Launch, Error> {
        let mut opts: Vec<OsString> = vec!["-f".into(), "--exit-with-parent".into()];
        let mut keep = Vec::new();
        let mut pidfile = None;
        let mut listener: Option<TcpListener> = None;
        let mode = if print_uri {
            if b.tcp {
                opts.extend(["-i", "127.0.0.1", "-p", "0"].map(OsString::from));
            } else {
                opts.extend(["-U", "-"].map(OsString::from));
            }
            opts.push("--print-uri".into());
            Mode::PrintUri
        } else {
            let (r, w) = spawn::pipe().map_err(|e| Error::io("cannot create a pipe", e))?;
            let w = spawn::dup_high(&w).map_err(|e| Error::io("cannot create a pipe", e))?;
            keep.push(w.as_raw_fd());
            opts.push("-P".into());
            opts.push(format!("/dev/fd/{}", w.as_raw_fd()).into());
            pidfile = Some((r, w));
            if b.tcp {
                let l = TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| Error::io("cannot bind 127.0.0.1:0", e))?;
                let port =
                    l.local_addr().map_err(|e| Error::io("cannot read the bound port", e))?.port();
                listener = Some(l);
                Mode::PidfileTcp { port }
            } else {
                let dir = private_dir("nbdkit-test-", "cannot create a socket directory")?;
                let socket = dir.path().join("socket");
                opts.push("-U".into());
                opts.push(socket.clone().into());
                Mode::PidfileUnix { dir, socket }
            }
        };
        if b.readonly {
            opts.push("-r".into());
        }
        if !b.export_name.is_empty() {
            opts.push("-e".into());
            opts.push(b.export_name.clone().into());
        }
        if b.verbose {
            opts.push("-v".into());
        }
        let tls = match &b.tls {
            None => None,
            Some(t) => Some(tls_options(t, &mut opts)?),
        };
        opts.extend(b.server_args);
        for f in &b.filters {
            let mut o = OsString::from("--filter=");
            o.push(f);
            opts.push(o);
        }
        opts.push(b.plugin);
        opts.extend(b.args);

        let stderr = tempfile::tempfile()
            .map_err(|e| Error::io("cannot create a file for the server's stderr", e))?;
        let clone =
            |f: &File| f.try_clone().map_err(|e| Error::io("cannot duplicate the stderr file", e));
        let mut display = quote_words(
            std::iter::once(server.display()).chain(opts.iter().map(|o| o.as_os_str())),
        );
        let mut cmd = match listener {
            Some(l) => {
                // LISTEN_PID must be the server's own pid, known only after
                // fork: a shell learns it, moves the socket from its stdin
                // to fd 3 and execs the server in place.
                display = format!("LISTEN_FDS=1 LISTEN_PID=<pid> {display} 3<listener");
                let mut c = Command::new("/bin/sh");
                c.arg("-c")
                    .arg("LISTEN_PID=$$; export LISTEN_PID; exec \"$0\" \"$@\" 3<&0 </dev/null")
                    // (Only older nbdkit binaries come here: the embedded
                    // server has --print-uri.)
                    .arg(server.display())
                    .args(&opts)
                    .env("LISTEN_FDS", "1")
                    .stdin(Stdio::from(OwnedFd::from(l)));
                c
            }
            None => {
                let mut c = server.command();
                c.args(&opts)
                    .env_remove("LISTEN_FDS")
                    .env_remove("LISTEN_PID")
                    .stdin(Stdio::null());
                c
            }
        };
        cmd.envs(b.env.iter().map(|(k, v)| (k, v))).stderr(clone(&stderr)?);
        if matches!(mode, Mode::PrintUri) {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(clone(&stderr)?);
        }
        if !b.env.is_empty() {
            let vars: Vec<OsString> = b
                .env
                .iter()
                .map(|(k, v)| {
                    let mut kv = k.clone();
                    kv.push("=");
                    kv.push(v);
                    kv
                })
                .collect();
            display = format!("{} {display}", quote_words(vars.iter().map(|s| s.as_os_str())));
        }
        Ok(Launch {
            cmd,
            display,
            mode,
            keep,
            pidfile,
            stderr,
            export_name: b.export_name,
            stop_timeout: b.stop_timeout,
            tls,
        })
    }

    fn run(self, deadline: Instant) -> Result<CaptiveDisk, Error> {
        let Launch { cmd, display, mode, keep, pidfile, stderr, export_name, stop_timeout, tls } =
            self;
        let spawned = spawn::spawn(cmd, keep);
        // The child has its copies now (the Command, and with it a
        // socket-activation listener, was dropped by the spawner); our
        // pidfile write end would hide the child's exit from the pipe.
        let ready_read = pidfile.map(|(r, _w)| r);
        let mut child = spawned.map_err(|e| {
            Error::new(ErrorKind::Spawn, "cannot run nbdkit")
                .with_source(e)
                .with_command(display.clone())
        })?;
        let pidfd = spawn::pidfd(child.id());
        let stdout: Option<OwnedFd> = child.stdout.take().map(OwnedFd::from);
        let mut disk = CaptiveDisk {
            child,
            pidfd,
            uri: String::new(),
            socket: None,
            port: None,
            export_name,
            command: display,
            stderr,
            dir: None,
            private_dir: None,
            stop_timeout,
            drained: None,
            stopped: None,
            tls,
        };
        let ready_fd = match (&stdout, &ready_read) {
            (Some(s), _) => s,
            (None, Some(r)) => r,
            (None, None) => unreachable!("every mode has a readiness pipe"),
        };
        let (line, rest) = match spawn::first_line(ready_fd, disk.pidfd.as_ref(), deadline) {
            Ready::Line(line, rest) => (line, rest),
            Ready::Closed => {
                // Did it exit, or only close its output? Give it a moment
                // to be reaped before deciding which to report.
                let exited =
                    spawn::wait_exit(&mut disk.child, disk.pidfd.as_ref(), Duration::from_secs(1));
                let status = if exited { disk.stop() } else { None };
                let err = match status {
                    Some(s) => disk.error(
                        ErrorKind::Exited(s),
                        format!("nbdkit exited before it was ready ({s})"),
                    ),
                    None => {
                        disk.stop();
                        disk.error(
                            ErrorKind::Io,
                            "nbdkit closed its output before it was ready".into(),
                        )
                    }
                };
                return Err(err);
            }
            Ready::Timeout => {
                disk.stop();
                let msg = "nbdkit was not ready before the start timeout".to_string();
                return Err(disk.error(ErrorKind::Timeout, msg));
            }
        };
        match mode {
            Mode::PrintUri => {
                // A TLS URI (nbds, perhaps with a PSK user) locates the
                // server like a plain one.
                let plain = match line.strip_prefix("nbds+unix://") {
                    Some(rest) => {
                        let rest = rest.split_once("@/").map_or(rest, |(_, r)| r);
                        format!("nbd+unix:///{}", rest.trim_start_matches('/'))
                    }
                    None => line.replacen("nbds://", "nbd://", 1),
                };
                match uri::parse(&plain) {
                    Ok(uri::Target::Unix { socket, .. }) => {
                        disk.private_dir = socket.parent().map(Path::to_path_buf);
                        disk.socket = Some(socket);
                    }
                    Ok(uri::Target::Tcp { port, .. }) => disk.port = Some(port),
                    Err(_) => {
                        disk.stop();
                        let msg = format!("nbdkit printed {line:?}, which is not an NBD URI");
                        return Err(disk.error(ErrorKind::Io, msg));
                    }
                }
                // nbdkit says `localhost` whatever address it listens on;
                // the disk listens on 127.0.0.1 only, so say that.
                // (Not with TLS: the URI names the credentials, and the
                // server's certificate names localhost.)
                disk.uri = match disk.port {
                    Some(port) if disk.tls.is_none() => uri::tcp(port, &disk.export_name),
                    _ => line,
                };
                // Anything the server writes to stdout from now on goes to
                // the log, so that it can never fill the pipe and block.
                if let (Some(out), Ok(log)) = (stdout, disk.stderr.try_clone()) {
                    disk.drained = Some(std::sync::Mutex::new(spawn::drain(out, rest, log)));
                }
            }
            Mode::PidfileUnix { dir, socket } => {
                disk.uri = uri::unix(&socket, &disk.export_name);
                disk.socket = Some(socket);
                disk.dir = Some(dir);
            }
            Mode::PidfileTcp { port } => {
                disk.uri = uri::tcp(port, &disk.export_name);
                disk.port = Some(port);
            }
        }
        Ok(disk)
    }
}

/// A new directory only we can enter (0700), removed with the guard.
fn private_dir(prefix: &str, what: &str) -> Result<tempfile::TempDir, Error> {
    tempfile::Builder::new()
        .prefix(prefix)
        .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .tempdir()
        .map_err(|e| Error::io(what, e))
}

/// The server options for `t`, and what a client will need.
fn tls_options(t: &Tls, opts: &mut Vec<OsString>) -> Result<TlsCredentials, Error> {
    opts.push("--tls=require".into());
    let first_user = |file: &Path| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.split_once(':')).map(|(u, _)| u.into()))
    };
    let mut arg = |k: &str, v: &Path| {
        let mut o = OsString::from(k);
        o.push(v);
        opts.push(o);
    };
    Ok(match t {
        Tls::Certificates(dir) => {
            arg("--tls-certificates=", dir);
            TlsCredentials {
                psk_file: None,
                username: None,
                certificates: Some(dir.clone()),
                _dir: None,
            }
        }
        Tls::PskFile(file) => {
            arg("--tls-psk=", file);
            TlsCredentials {
                psk_file: Some(file.clone()),
                username: first_user(file),
                certificates: None,
                _dir: None,
            }
        }
        Tls::NewCertificates => {
            let dir =
                private_dir("nbdkit-test-pki-", "cannot create a directory for the certificates")?;
            crate::certs::write(dir.path())
                .map_err(|e| Error::io("cannot make the certificates", e))?;
            arg("--tls-certificates=", dir.path());
            TlsCredentials {
                psk_file: None,
                username: None,
                certificates: Some(dir.path().to_path_buf()),
                _dir: Some(dir),
            }
        }
        Tls::NewPsk => {
            let dir =
                private_dir("nbdkit-test-psk-", "cannot create a directory for the PSK file")?;
            let file = dir.path().join("keys.psk");
            let mut key = [0u8; 32];
            File::open("/dev/urandom")
                .and_then(|mut f| io::Read::read_exact(&mut f, &mut key))
                .map_err(|e| Error::io("cannot read /dev/urandom", e))?;
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&file, format!("{PSK_USERNAME}:{hex}\n"))
                .map_err(|e| Error::io("cannot write the PSK file", e))?;
            arg("--tls-psk=", &file);
            TlsCredentials {
                psk_file: Some(file),
                username: Some(PSK_USERNAME.into()),
                certificates: None,
                _dir: Some(dir),
            }
        }
    })
}

/// A running nbdkit serving one throwaway disk, shut down when dropped.
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use nbdkit_test::CaptiveDisk;
///
/// let disk = CaptiveDisk::new(["memory", "size=1M"])?;
/// let mut nbd = disk.connect()?;
/// nbd.write(4096, b"hello")?;
/// assert_eq!(nbd.read(4096, 5)?, b"hello");
///
/// let socket = disk.socket().unwrap().to_path_buf();
/// drop(nbd);
/// drop(disk); // SIGTERM, wait, reap: the socket and its directory are gone
/// assert!(!socket.exists());
/// # Ok(()) }
/// ```
#[must_use = "the server stops as soon as the CaptiveDisk is dropped"]
pub struct CaptiveDisk {
    child: Child,
    pidfd: Option<OwnedFd>,
    uri: String,
    socket: Option<PathBuf>,
    port: Option<u16>,
    export_name: String,
    command: String,
    stderr: File,
    // The socket directory, when we made it (older nbdkit).
    dir: Option<tempfile::TempDir>,
    // The server's own `-U -` directory, which it removes when it exits;
    // removed by us only if the server had to be killed.
    private_dir: Option<PathBuf>,
    stop_timeout: Duration,
    // Hears when the server's stdout has been copied to the log.
    // (A Mutex only to keep the guard Sync, for statics and `#[once]`.)
    drained: Option<std::sync::Mutex<std::sync::mpsc::Receiver<()>>>,
    stopped: Option<ExitStatus>,
    tls: Option<TlsCredentials>,
}

impl CaptiveDisk {
    /// Start a disk from a plugin and its parameters, e.g.
    /// `["memory", "size=1M"]`. The first item is the plugin.
    pub fn new<I, S>(args: I) -> Result<CaptiveDisk, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut it = args.into_iter();
        let plugin = it.next().ok_or_else(|| {
            Error::new(ErrorKind::Usage, "CaptiveDisk::new needs at least a plugin name")
        })?;
        Builder::new(plugin).args(it).start()
    }

    /// A [`Builder`] for a disk served by `plugin`.
    pub fn builder(plugin: impl AsRef<OsStr>) -> Builder {
        Builder::new(plugin)
    }

    /// The NBD URI: `nbd+unix:///EXPORT?socket=PATH`, or
    /// `nbd://127.0.0.1:PORT[/EXPORT]` on TCP.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The Unix socket path (None on TCP).
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    /// The TCP port (None on a Unix socket).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The export name asked for (empty for the default export).
    pub fn export_name(&self) -> &str {
        &self.export_name
    }

    /// The server command line, shell-quoted.
    pub fn command_line(&self) -> &str {
        &self.command
    }

    /// Everything the server wrote to stderr (and, for servers without
    /// `--print-uri`, stdout) so far.
    pub fn log(&self) -> String {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut off = 0u64;
        while let Ok(n) = self.stderr.read_at(&mut buf, off) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
            off += n as u64;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// What a client needs to reach a disk that requires TLS (None for a
    /// plain disk).
    pub fn tls(&self) -> Option<&TlsCredentials> {
        self.tls.as_ref()
    }

    /// Open a connection with the crate's small blocking client (plain
    /// disks only: it does not speak TLS).
    pub fn connect(&self) -> io::Result<Client> {
        if self.tls.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this disk requires TLS, which the crate's client does not speak: \
                 give disk.uri() to a TLS client (libnbd, qemu)",
            ));
        }
        match (&self.socket, self.port) {
            (Some(s), _) => Client::connect_unix(s, &self.export_name),
            (None, Some(p)) => Client::connect_tcp(("127.0.0.1", p), &self.export_name),
            (None, None) => Client::connect_uri(&self.uri),
        }
    }

    /// Stop the server now (SIGTERM, then SIGKILL after a few seconds) and
    /// return how it exited. Dropping the guard does the same.
    pub fn shutdown(mut self) -> io::Result<ExitStatus> {
        self.stop().ok_or_else(|| io::Error::other("the server could not be reaped"))
    }

    /// Stop, reap and clean up; idempotent.
    fn stop(&mut self) -> Option<ExitStatus> {
        if self.stopped.is_none() {
            let mut killed = false;
            match self.child.try_wait() {
                Ok(Some(status)) => self.stopped = Some(status),
                Ok(None) => {
                    spawn::signal(&self.child, self.pidfd.as_ref(), libc::SIGTERM);
                    if !spawn::wait_exit(&mut self.child, self.pidfd.as_ref(), self.stop_timeout) {
                        spawn::signal(&self.child, self.pidfd.as_ref(), libc::SIGKILL);
                        killed = true;
                    }
                    self.stopped = self.child.wait().ok();
                }
                // Someone else reaped it (SIGCHLD ignored, or a waitpid(-1)
                // elsewhere): it is gone, and its pid is no longer ours.
                Err(_) => {}
            }
            if killed {
                // A server that exits on its own removes its socket and its
                // `-U -` directory; one that had to be killed cannot.
                if let Some(s) = &self.socket {
                    let _ = std::fs::remove_file(s);
                }
                if let Some(d) = self.private_dir.take() {
                    let _ = std::fs::remove_dir(d);
                }
            }
            self.private_dir = None;
            self.dir.take();
            self.pidfd.take();
            // The server is gone, so its stdout is at end of file; wait
            // (briefly: a grandchild might still hold it) for the copy.
            if let Some(d) = self.drained.take() {
                let d = d.into_inner().unwrap_or_else(|e| e.into_inner());
                let _ = d.recv_timeout(Duration::from_secs(1));
            }
        }
        self.stopped
    }

    fn tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let start = lines.len().saturating_sub(TAIL_LINES);
        let mut t = lines[start..].join("\n");
        if t.len() > 8192 {
            let cut = t.len() - 8192;
            let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(t.len());
            t = t.split_off(cut);
        }
        t
    }

    fn error(&self, kind: ErrorKind, msg: String) -> Error {
        Error::new(kind, msg).with_command(self.command.clone()).with_stderr(self.tail())
    }
}

impl fmt::Debug for CaptiveDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptiveDisk")
            .field("pid", &self.child.id())
            .field("uri", &self.uri)
            .field("command", &self.command)
            .field("stderr", &self.tail())
            .finish()
    }
}

impl Drop for CaptiveDisk {
    fn drop(&mut self) {
        let status = self.stop();
        if std::thread::panicking() {
            eprintln!(
                "nbdkit-test: server {} ({}) stopped ({}); its stderr ends:\n{}",
                self.child.id(),
                self.uri,
                status.map_or_else(|| "not reaped".to_string(), |s| s.to_string()),
                self.tail()
            );
        }
    }
}

/// Shell-quote words for display.
fn quote_words<'a>(words: impl Iterator<Item = &'a OsStr>) -> String {
    words
        .map(|w| {
            let s = w.to_string_lossy();
            if !s.is_empty()
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_=./:,+@%".contains(&b))
            {
                s.into_owned()
            } else {
                format!("'{}'", s.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
