//! The option table: every option of nbdkit(1), with all its spellings.

/// What an option is, once its spelling is resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opt {
    Ipv4Only,
    Ipv6Only,
    Debug,
    DumpConfig,
    DumpPlugin,
    ExitWithParent,
    ExportName,
    Filter,
    Foreground,
    Group,
    Help,
    IpAddr,
    Log,
    LongOptions,
    MaskHandshake,
    Newstyle,
    NoMetaContexts,
    NoSr,
    Oldstyle,
    PidFile,
    Port,
    PrintUri,
    ReadOnly,
    Run,
    SelinuxLabel,
    ShortOptions,
    Single,
    Swap,
    Threads,
    Tls,
    TlsCertificates,
    TlsPsk,
    TlsVerifyPeer,
    Unix,
    User,
    Verbose,
    Version,
    Vsock,
}

/// Long names (every alias C nbdkit accepts), whether they take an argument.
pub const LONG: &[(&str, Opt, bool)] = &[
    ("ipv4-only", Opt::Ipv4Only, false),
    ("ipv6-only", Opt::Ipv6Only, false),
    ("debug", Opt::Debug, true),
    ("dump-config", Opt::DumpConfig, false),
    ("dump-plugin", Opt::DumpPlugin, false),
    ("exit-with-parent", Opt::ExitWithParent, false),
    ("export", Opt::ExportName, true),
    ("export-name", Opt::ExportName, true),
    ("exportname", Opt::ExportName, true),
    ("filter", Opt::Filter, true),
    ("foreground", Opt::Foreground, false),
    ("no-fork", Opt::Foreground, false),
    ("group", Opt::Group, true),
    ("help", Opt::Help, false),
    ("ip-addr", Opt::IpAddr, true),
    ("ipaddr", Opt::IpAddr, true),
    ("log", Opt::Log, true),
    ("long-options", Opt::LongOptions, false),
    ("mask-handshake", Opt::MaskHandshake, true),
    ("new-style", Opt::Newstyle, false),
    ("newstyle", Opt::Newstyle, false),
    ("no-mc", Opt::NoMetaContexts, false),
    ("no-meta-contexts", Opt::NoMetaContexts, false),
    ("no-sr", Opt::NoSr, false),
    ("no-structured-replies", Opt::NoSr, false),
    ("old-style", Opt::Oldstyle, false),
    ("oldstyle", Opt::Oldstyle, false),
    ("pid-file", Opt::PidFile, true),
    ("pidfile", Opt::PidFile, true),
    ("port", Opt::Port, true),
    ("print-uri", Opt::PrintUri, false),
    ("read-only", Opt::ReadOnly, false),
    ("readonly", Opt::ReadOnly, false),
    ("run", Opt::Run, true),
    ("selinux-label", Opt::SelinuxLabel, true),
    ("short-options", Opt::ShortOptions, false),
    ("single", Opt::Single, false),
    ("stdin", Opt::Single, false),
    ("swap", Opt::Swap, false),
    ("threads", Opt::Threads, true),
    ("tls", Opt::Tls, true),
    ("tls-certificates", Opt::TlsCertificates, true),
    ("tls-psk", Opt::TlsPsk, true),
    ("tls-verify-peer", Opt::TlsVerifyPeer, false),
    ("unix", Opt::Unix, true),
    ("user", Opt::User, true),
    ("verbose", Opt::Verbose, false),
    ("version", Opt::Version, false),
    ("vsock", Opt::Vsock, false),
];

/// Short options: letter, option, takes an argument.
pub const SHORT: &[(char, Opt, bool)] = &[
    ('4', Opt::Ipv4Only, false),
    ('6', Opt::Ipv6Only, false),
    ('D', Opt::Debug, true),
    ('e', Opt::ExportName, true),
    ('f', Opt::Foreground, false),
    ('g', Opt::Group, true),
    ('i', Opt::IpAddr, true),
    ('n', Opt::Newstyle, false),
    ('o', Opt::Oldstyle, false),
    ('p', Opt::Port, true),
    ('P', Opt::PidFile, true),
    ('r', Opt::ReadOnly, false),
    ('s', Opt::Single, false),
    ('t', Opt::Threads, true),
    ('u', Opt::User, true),
    ('U', Opt::Unix, true),
    ('v', Opt::Verbose, false),
    ('V', Opt::Version, false),
];

/// `nbdkit --help`.
pub const USAGE: &str = "\
nbdkit [-4|--ipv4-only] [-6|--ipv6-only]
       [-D|--debug PLUGIN|FILTER|nbdkit.FLAG=N]
       [--exit-with-parent] [-e|--exportname EXPORTNAME]
       [--filter=FILTER ...] [-f|--foreground]
       [-g|--group GROUP] [-i|--ipaddr IPADDR]
       [--log=stderr|syslog|null] [--mask-handshake=MASK]
       [-n|--newstyle] [--no-mc|--no-meta-contexts]
       [--no-sr|--no-structured-replies] [-o|--oldstyle]
       [-P|--pidfile PIDFILE] [-p|--port PORT] [--print-uri]
       [-r|--readonly] [--run 'COMMAND ARGS ...']
       [-s|--single] [--swap] [-t|--threads THREADS]
       [-U|--unix SOCKET|-] [-u|--user USER]
       [-v|--verbose]
       PLUGIN [[KEY=]VALUE [KEY=VALUE [...]]]

nbdkit --dump-config

nbdkit PLUGIN --dump-plugin

nbdkit --help

nbdkit [-V|--version]

Please read the nbdkit(1) manual page for full usage.
";
