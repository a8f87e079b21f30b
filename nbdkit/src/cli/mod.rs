//! The command line: raw `argv` in, a typed [`Config`] out.
//!
//! Parsing follows getopt_long as C nbdkit uses it: short options may be
//! bundled (`-fv`, `-p10809`), long options take `--opt=value` or
//! `--opt value` and may be abbreviated, options may come after the plugin
//! name, and `--` ends the options. The first other word is the plugin; the
//! rest are its `key=value` parameters (a bare `VALUE` stands for the
//! plugin's magic key).

mod options;

use std::path::PathBuf;

use crate::error::StartError;
use crate::plugins::{self, PluginInfo};
pub use options::USAGE;
use options::{Opt, LONG, SHORT};

/// What the command line asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Run the server.
    Serve,
    /// `--help` (with a plugin: also the plugin's parameters).
    Help,
    /// `--version`.
    Version,
    /// `--dump-config`.
    DumpConfig,
    /// `--dump-plugin`.
    DumpPlugin,
    /// `--long-options`.
    LongOptions,
    /// `--short-options`.
    ShortOptions,
}

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// TCP on `ipaddr` (all addresses if None) and `port`.
    Tcp {
        /// `-i`: the address to listen on.
        ipaddr: Option<String>,
        /// `-p`: the port.
        port: u16,
        /// `-4` / `-6`: which addresses to use.
        family: Family,
    },
    /// A Unix socket at this path.
    Unix(PathBuf),
    /// `-U -`: a Unix socket in a fresh private directory.
    UnixPrivate,
    /// `-s`: one client on stdin/stdout.
    Stdin,
    /// Sockets passed by systemd (`LISTEN_FDS`).
    Activation(i32),
}

/// `-4` / `-6`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Both IPv4 and IPv6 (neither option).
    Any,
    /// `-4`: IPv4 only.
    V4,
    /// `-6`: IPv6 only.
    V6,
}

pub use crate::log::LogTo;

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to do.
    pub action: Action,
    /// The plugin named on the command line, if any.
    pub plugin: Option<&'static PluginInfo>,
    /// `--filter`s, the first given (closest to the client) first.
    pub filters: Vec<&'static crate::filters::FilterInfo>,
    /// Plugin parameters, magic key resolved, in command-line order.
    pub params: Vec<(String, String)>,
    /// Where the server listens (`-i`, `-p`, `-4`, `-6`, `-U`, `-s`, or
    /// socket activation).
    pub listen: Listen,
    /// `--exit-with-parent`: exit when the parent process does.
    pub exit_with_parent: bool,
    /// `-e`: the export name for the printed URI and `--run`, and the
    /// export served to oldstyle clients.
    pub export_name: String,
    /// `-f`: do not fork into the background.
    pub foreground: bool,
    /// `-g`: the group to switch to after binding.
    pub group: Option<String>,
    /// `-u`: the user to switch to after binding.
    pub user: Option<String>,
    /// `--log`: where messages go.
    pub log: LogTo,
    /// `--mask-handshake`: the global handshake flags to advertise.
    pub mask_handshake: u16,
    /// `-o`: use the oldstyle protocol (`-n` turns it off again).
    pub oldstyle: bool,
    /// `--no-sr`: refuse structured replies.
    pub no_sr: bool,
    /// `--no-meta-contexts`: refuse meta contexts, so no block status.
    pub no_meta_contexts: bool,
    /// `-P`: write the server's process ID to this file.
    pub pidfile: Option<PathBuf>,
    /// `--print-uri`: print the URI clients can connect to.
    pub print_uri: bool,
    /// `-r`: serve read-only.
    pub readonly: bool,
    /// `--run`: the command to run against the server, which then exits
    /// with its status.
    pub run: Option<String>,
    /// `--swap`: lock the server's memory so it is never swapped out.
    pub swap: bool,
    /// `-t`: requests in flight per connection.
    pub threads: usize,
    /// `-v`: print debug messages.
    pub verbose: bool,
    /// `-D NAME.FLAG=N`, in command-line order.
    pub debug_flags: Vec<crate::params::DebugFlag>,
    /// `--tls`, `--tls-*` and the `-D nbdkit.tls.*` flags.
    pub tls: crate::server::tls::TlsOptions,
}

impl Config {
    /// True when nbdkit stays attached to the terminal instead of forking.
    pub fn stays_in_foreground(&self) -> bool {
        self.foreground
            || self.run.is_some()
            || self.exit_with_parent
            || matches!(self.listen, Listen::Stdin | Listen::Activation(_))
    }
}

/// Default NBD port.
pub const DEFAULT_PORT: u16 = 10809;
/// Default per-connection requests in flight (`-t`), as in C nbdkit.
pub const DEFAULT_THREADS: usize = 16;

/// Everything gathered before it is checked and typed.
#[derive(Default)]
struct Raw {
    words: Vec<String>,
    opts: Vec<(Opt, Option<String>)>,
}

fn resolve_long(name: &str) -> Result<(Opt, bool), StartError> {
    if let Some(&(_, o, a)) = LONG.iter().find(|(n, _, _)| *n == name) {
        return Ok((o, a));
    }
    let cands: Vec<_> = LONG.iter().filter(|(n, _, _)| n.starts_with(name)).collect();
    match cands.as_slice() {
        [] => Err(StartError(format!("unrecognized option '--{name}'"))),
        [first, rest @ ..] if rest.iter().all(|c| c.1 == first.1) => Ok((first.1, first.2)),
        _ => Err(StartError(format!("option '--{name}' is ambiguous"))),
    }
}

fn split_argv(args: &[String]) -> Result<Raw, StartError> {
    let mut raw = Raw::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            raw.words.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let (opt, takes) = resolve_long(name)?;
            let val = match (takes, inline) {
                (false, Some(_)) => {
                    return Err(StartError(format!("option '--{name}' doesn't allow an argument")))
                }
                (false, None) => None,
                (true, Some(v)) => Some(v),
                (true, None) => {
                    let v = args.get(i).cloned().ok_or_else(|| {
                        StartError(format!("option '--{name}' requires an argument"))
                    })?;
                    i += 1;
                    Some(v)
                }
            };
            raw.opts.push((opt, val));
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let &(_, opt, takes) = SHORT
                    .iter()
                    .find(|(s, _, _)| *s == c)
                    .ok_or_else(|| StartError(format!("invalid option -- '{c}'")))?;
                if !takes {
                    raw.opts.push((opt, None));
                    continue;
                }
                let val = if j < chars.len() {
                    chars[j..].iter().collect()
                } else {
                    let v = args.get(i).cloned().ok_or_else(|| {
                        StartError(format!("option requires an argument -- '{c}'"))
                    })?;
                    i += 1;
                    v
                };
                raw.opts.push((opt, Some(val)));
                break;
            }
        } else {
            raw.words.push(a.clone());
        }
    }
    Ok(raw)
}

/// A parameter is `key=value` only when the key looks like a key; otherwise
/// the whole word is a value for the magic key (C nbdkit's rule).
fn split_param(word: &str) -> Option<(&str, &str)> {
    let (k, v) = word.split_once('=')?;
    let mut chars = k.chars();
    let first = chars.next()?;
    if first.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some((k, v))
    } else {
        None
    }
}

/// A built-in plugin; else a C plugin: a path (with a `/`, or ending in
/// `.so`), or `NAME` as `nbdkit-NAME-plugin.so` in the plugin directory.
fn find_plugin(name: &str) -> Result<&'static PluginInfo, StartError> {
    if name.contains('/') || name.ends_with(".so") {
        return plugins::cabi::load(name);
    }
    if let Some(p) = plugins::lookup(name) {
        return Ok(p);
    }
    let so = format!("{}/nbdkit-{name}-plugin.so", plugins::cabi::plugin_dir());
    if std::path::Path::new(&so).exists() {
        return plugins::cabi::load(&so);
    }
    let have: Vec<_> = plugins::PLUGINS.iter().map(|p| p.name).collect();
    Err(StartError(format!(
        "unknown plugin '{name}' (not built in, and no {so}); built-in plugins are: {}",
        have.join(", ")
    )))
}

/// `--tls=` as C parses it: require (or required, force), or a boolean.
fn parse_tls(s: &str) -> Result<crate::server::tls::TlsMode, StartError> {
    use crate::server::tls::TlsMode;
    match s.to_ascii_lowercase().as_str() {
        "require" | "required" | "force" => Ok(TlsMode::Require),
        "on" | "1" | "true" | "yes" | "t" | "y" => Ok(TlsMode::On),
        "off" | "0" | "false" | "no" | "f" | "n" => Ok(TlsMode::Off),
        _ => Err(StartError(format!(
            "--tls: could not decipher '{s}' (expected off, on or require)"
        ))),
    }
}

fn parse_port(s: &str) -> Result<u16, StartError> {
    s.parse::<u16>().map_err(|_| StartError(format!("-p: could not parse port number '{s}'")))
}

fn parse_unsigned(what: &str, s: &str) -> Result<u64, StartError> {
    let r = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8)
    } else {
        s.parse()
    };
    r.map_err(|_| StartError(format!("{what}: could not parse number '{s}'")))
}

/// Parse `argv` (without the program name).
pub fn parse(args: &[String]) -> Result<Config, StartError> {
    let raw = split_argv(args)?;
    let activation = socket_activation()?;
    let mut cfg = Config {
        action: Action::Serve,
        plugin: None,
        filters: Vec::new(),
        params: Vec::new(),
        listen: Listen::Tcp { ipaddr: None, port: DEFAULT_PORT, family: Family::Any },
        exit_with_parent: false,
        export_name: String::new(),
        foreground: false,
        group: None,
        user: None,
        log: LogTo::Stderr,
        mask_handshake: u16::MAX,
        oldstyle: false,
        no_sr: false,
        no_meta_contexts: false,
        pidfile: None,
        print_uri: false,
        readonly: false,
        run: None,
        swap: false,
        threads: DEFAULT_THREADS,
        verbose: false,
        debug_flags: Vec::new(),
        // As C: TLS is on if credentials are found where it looks.
        tls: crate::server::tls::TlsOptions {
            mode: crate::server::tls::TlsMode::On,
            ..Default::default()
        },
    };
    let mut family = Family::Any;
    let mut ipaddr = None;
    let mut port = None;
    let mut unix = None;
    let mut single = false;
    let mut log = None;
    let mut filters = Vec::new();
    for (opt, val) in raw.opts {
        let v = val.unwrap_or_default();
        match opt {
            Opt::Ipv4Only => family = Family::V4,
            Opt::Ipv6Only => family = Family::V6,
            Opt::Debug => {
                let f = crate::params::DebugFlag::parse(&v)?;
                // The server's own TLS flags; the rest are the layers'.
                match (f.name.as_str(), f.flag.as_str()) {
                    ("nbdkit", "tls.log") => cfg.tls.debug_log = f.value,
                    ("nbdkit", "tls.session") => cfg.tls.debug_session = f.value != 0,
                    _ => cfg.debug_flags.push(f),
                }
            }
            Opt::DumpConfig => cfg.action = Action::DumpConfig,
            Opt::DumpPlugin => cfg.action = Action::DumpPlugin,
            Opt::Help => cfg.action = Action::Help,
            Opt::Version => cfg.action = Action::Version,
            Opt::LongOptions => cfg.action = Action::LongOptions,
            Opt::ShortOptions => cfg.action = Action::ShortOptions,
            Opt::ExitWithParent => cfg.exit_with_parent = true,
            Opt::ExportName => cfg.export_name = v,
            Opt::Filter => filters.push(v),
            Opt::Foreground => cfg.foreground = true,
            Opt::Group => cfg.group = Some(v),
            Opt::User => cfg.user = Some(v),
            Opt::IpAddr => ipaddr = Some(v),
            Opt::Log => {
                log = Some(match v.as_str() {
                    "stderr" => LogTo::Stderr,
                    "syslog" => LogTo::Syslog,
                    "null" => LogTo::Null,
                    _ => {
                        return Err(StartError(format!(
                            "--log must be \"stderr\", \"syslog\" or \"null\", not \"{v}\""
                        )))
                    }
                })
            }
            Opt::MaskHandshake => {
                let m = parse_unsigned("--mask-handshake", &v)?;
                cfg.mask_handshake = (m & 0xffff) as u16;
            }
            Opt::Newstyle => cfg.oldstyle = false,
            Opt::Oldstyle => cfg.oldstyle = true,
            Opt::NoSr => cfg.no_sr = true,
            Opt::NoMetaContexts => cfg.no_meta_contexts = true,
            Opt::PidFile => cfg.pidfile = Some(PathBuf::from(v)),
            Opt::Port => port = Some(parse_port(&v)?),
            Opt::PrintUri => cfg.print_uri = true,
            Opt::ReadOnly => cfg.readonly = true,
            Opt::Run => cfg.run = Some(v),
            Opt::Single => single = true,
            Opt::Swap => cfg.swap = true,
            Opt::Threads => {
                let t = parse_unsigned("-t", &v)?;
                cfg.threads = if t == 0 { DEFAULT_THREADS } else { t.min(1024) as usize };
            }
            Opt::Unix => unix = Some(v),
            Opt::Verbose => cfg.verbose = true,
            Opt::Tls => {
                cfg.tls.mode = parse_tls(&v)?;
                cfg.tls.mode_given = true;
            }
            Opt::TlsCertificates => cfg.tls.certificates = Some(PathBuf::from(v)),
            Opt::TlsPsk => cfg.tls.psk = Some(PathBuf::from(v)),
            Opt::TlsVerifyPeer => cfg.tls.verify_peer = true,
            Opt::Vsock => return Err(StartError("--vsock is not supported by this nbdkit".into())),
            Opt::SelinuxLabel => {
                return Err(StartError("--selinux-label is not supported by this nbdkit".into()))
            }
        }
    }

    let mut words = raw.words.into_iter();
    if let Some(name) = words.next() {
        let p = find_plugin(&name)?;
        cfg.plugin = Some(p);
        let c_plugin = plugins::cabi::is_c_plugin(p);
        for (i, w) in words.enumerate() {
            match split_param(&w) {
                Some((k, v)) => cfg.params.push((k.to_string(), v.to_string())),
                None => match p.magic_config_key {
                    Some(k) => cfg.params.push((k.to_string(), w)),
                    // As C does for language plugins (python, perl...): a
                    // bare first parameter is the script.
                    None if c_plugin && i == 0 => cfg.params.push(("script".into(), w)),
                    None => {
                        return Err(StartError(format!(
                            "{}: expecting key=value on the command line but got: {w}",
                            p.name
                        )))
                    }
                },
            }
        }
    }
    for f in &filters {
        match crate::filters::lookup(f) {
            Some(info) => cfg.filters.push(info),
            None if f.contains('/') || f.ends_with(".so") => {
                return Err(StartError(format!(
                    "cannot load filter '{f}': C filters (.so files) are not supported (nbdkit's filter ABI requires the server's exact version); built-in filters are listed by nbdkit --help"
                )))
            }
            None => {
                return Err(StartError(format!(
                    "unknown filter '{f}' (nbdkit --help lists the filters)"
                )))
            }
        }
    }

    // Checked, as in C, whatever the action once a plugin is named.
    if cfg.plugin.is_some()
        && ((port.is_some() && unix.is_some())
            || (port.is_some() && single)
            || (unix.is_some() && single)
            || (single && cfg.run.is_some())
            || (single && cfg.action == Action::DumpPlugin))
    {
        return Err(StartError(
            "--dump-plugin, -p, --run, -s, -U or --vsock options cannot be used in this combination"
                .into(),
        ));
    }
    match cfg.action {
        Action::Serve => {}
        Action::DumpPlugin if cfg.plugin.is_none() => {
            return Err(StartError("--dump-plugin requires a plugin name".into()))
        }
        _ => return Ok(cfg),
    }
    if cfg.plugin.is_none() {
        return Err(StartError("no plugins given on the command line.".into()));
    }
    if cfg.oldstyle && cfg.tls.mode == crate::server::tls::TlsMode::Require {
        return Err(StartError("cannot use oldstyle protocol (-o) and require TLS".into()));
    }

    // Socket activation: the sockets are given, so nothing may say where to
    // listen; and the server never forks (see `stays_in_foreground`).
    if activation.is_some() {
        let given = [
            ("-s", single),
            ("-U", unix.is_some()),
            ("-p", port.is_some()),
            ("-i", ipaddr.is_some()),
            ("--run", cfg.run.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, g)| *g) {
            return Err(StartError(format!("cannot use socket activation with {flag} flag")));
        }
    }
    // Listening: -s, -U, or TCP. The pairs C nbdkit refuses (it takes -i
    // with -U or -s, and ignores it).
    if single {
        cfg.listen = Listen::Stdin;
    } else if let Some(u) = unix {
        cfg.listen = if u == "-" { Listen::UnixPrivate } else { Listen::Unix(PathBuf::from(u)) };
    } else if let Some(n) = activation {
        cfg.listen = Listen::Activation(n);
    } else {
        cfg.listen = Listen::Tcp { ipaddr, port: port.unwrap_or(DEFAULT_PORT), family };
    }
    cfg.log = log.unwrap_or(if cfg.stays_in_foreground() { LogTo::Stderr } else { LogTo::Syslog });
    Ok(cfg)
}

/// `LISTEN_PID`/`LISTEN_FDS` from systemd (or a client library starting us
/// the same way), when they are meant for us: the number of sockets passed,
/// from fd 3 on. As in C nbdkit, 1 to 16 are accepted, and the variables are
/// removed so that no child (`--run`, sh plugin scripts) inherits them.
fn socket_activation() -> Result<Option<i32>, StartError> {
    let Some(pid) = std::env::var("LISTEN_PID").ok() else {
        return Ok(None);
    };
    let Ok(pid) = pid.trim().parse::<u32>() else {
        return Ok(None);
    };
    if pid != std::process::id() {
        eprintln!("nbdkit: LISTEN_PID was not for us (ignored)");
        return Ok(None);
    }
    let Some(fds) = std::env::var("LISTEN_FDS").ok() else {
        return Ok(None);
    };
    let n = match fds.trim().parse::<i32>() {
        Ok(n) if (1..=16).contains(&n) => n,
        Ok(_) => {
            return Err(StartError(format!("socket activation: LISTEN_FDS={fds} out of range")))
        }
        Err(_) => return Ok(None),
    };
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    Ok(Some(n))
}

/// Lines for `--long-options`: every long spelling we accept except the
/// two listing options themselves, as C nbdkit prints it.
pub fn long_options() -> String {
    LONG.iter()
        .filter(|(_, o, _)| !matches!(o, Opt::LongOptions | Opt::ShortOptions))
        .map(|(n, _, _)| format!("--{n}\n"))
        .collect()
}

/// Lines for `--short-options`.
pub fn short_options() -> String {
    SHORT.iter().map(|(c, _, _)| format!("-{c}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Config, StartError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn captive_command_line() {
        let c = p(&["-U", "-", "memory", "1G", "--run", "qemu-img info $uri"]).unwrap();
        assert_eq!(c.listen, Listen::UnixPrivate);
        assert_eq!(c.plugin.unwrap().name, "memory");
        assert_eq!(c.params, vec![("size".into(), "1G".into())]);
        assert_eq!(c.run.as_deref(), Some("qemu-img info $uri"));
        assert!(c.stays_in_foreground());
    }

    #[test]
    fn option_forms() {
        let c = p(&["-fv", "-p10810", "--exportname=x", "--read", "null", "size=1"]).unwrap();
        assert!(c.foreground && c.verbose && c.readonly);
        assert_eq!(c.export_name, "x");
        assert!(matches!(c.listen, Listen::Tcp { port: 10810, .. }));
        let c = p(&["null", "-e", "y", "--", "0=3"]).unwrap();
        assert_eq!(c.export_name, "y");
        assert_eq!(c.params, vec![("size".into(), "0=3".into())]);
        let c = p(&["--mask-handshake", "0x1", "null"]).unwrap();
        assert_eq!(c.mask_handshake, 1);
    }

    #[test]
    fn errors() {
        for (args, msg) in [
            (&["--bogus", "null"][..], "unrecognized option '--bogus'"),
            (&["-X", "null"][..], "invalid option -- 'X'"),
            (&["-p"][..], "requires an argument"),
            (&["--no"][..], "ambiguous"),
            (&["nosuch"][..], "unknown plugin 'nosuch'"),
            (&["./plugin.so"][..], "cannot open plugin \"./plugin.so\""),
            (&["--filter=./f.so", "null"][..], "C filters (.so files) are not supported"),
            (&["size=1", "memory"][..], "unknown plugin 'size=1'"),
            (&[][..], "no plugins given"),
            (&["-s", "-U", "-", "null"][..], "combination"),
            (&["-p", "x", "null"][..], "port"),
            (&["--tls=maybe", "null"][..], "--tls: could not decipher"),
            (&["-o", "--tls=require", "null"][..], "oldstyle"),
            (&["--filter=nosuch", "null"][..], "unknown filter 'nosuch'"),
            (&["--log=foo", "null"][..], "--log"),
            (&["--help=x"][..], "doesn't allow an argument"),
        ] {
            let e = p(args).unwrap_err();
            assert!(e.0.contains(msg), "{args:?}: {e}");
        }
    }
}
