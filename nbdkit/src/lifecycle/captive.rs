//! `--run CMD`: run a command against the server, then exit with its status.
//!
//! Unlike C nbdkit, which forks and leaves the server in a child, the server
//! stays in this process and the command is our child: SIGKILL on the
//! nbdkit pid leaves no server behind, and the command gets SIGTERM when we
//! die (PR_SET_PDEATHSIG, armed in the child; the main thread that spawns
//! it lives as long as the process).

use std::os::unix::process::CommandExt;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The shell variables the command sees.
pub struct Vars<'a> {
    pub uri: &'a str,
    pub export_name: &'a str,
    pub port: Option<u16>,
    pub unix: Option<&'a std::path::Path>,
    pub tls: u8,
}

/// Quote for /bin/sh: single quotes, with `'` written as `'\''`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script: variable assignments (not exported, as in C nbdkit), then
/// the command. `$tls` is set only when TLS is on (1 or 2), as in C.
pub fn script(cmd: &str, v: &Vars<'_>) -> String {
    let port = v.port.map(|p| p.to_string()).unwrap_or_default();
    let unix = v.unix.map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    format!(
        "uri={}\nnbd=\"$uri\"\nexportname={}\n{}port={}\nunixsocket={}\n{cmd}\n",
        shell_quote(v.uri),
        shell_quote(v.export_name),
        if v.tls > 0 { format!("tls={}\n", v.tls) } else { String::new() },
        shell_quote(&port),
        shell_quote(&unix),
    )
}

/// Start the command. Must be called on the main thread (see module doc).
pub fn spawn(cmd: &str, vars: &Vars<'_>) -> std::io::Result<tokio::process::Child> {
    let me = nix::unistd::getpid();
    let mut c = std::process::Command::new("/bin/sh");
    c.arg("-c").arg(script(cmd, vars));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        c.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            // We may have died before the line above: then nobody would
            // send the signal.
            if nix::unistd::getppid() != me {
                libc::raise(libc::SIGTERM);
            }
            Ok(())
        });
    }
    tokio::process::Command::from(c).spawn()
}

/// Ask the command to stop.
pub fn terminate(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
}

/// nbdkit's exit status for the command's: its code, or 128+N if signal N
/// killed it.
pub fn exit_code(st: ExitStatus, log: &crate::log::Log) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    if let Some(c) = st.code() {
        return c as u8;
    }
    let sig = st.signal().unwrap_or(0);
    log.error(&format!("external command was killed by signal {sig}"));
    (128 + sig) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a'b $c"), r"'a'\''b $c'");
        let s = script(
            "echo $uri",
            &Vars {
                uri: "nbd://localhost:10809",
                export_name: "",
                port: Some(10809),
                unix: None,
                tls: 0,
            },
        );
        assert!(s.starts_with("uri='nbd://localhost:10809'\nnbd=\"$uri\"\n"));
        assert!(s.contains("port='10809'\nunixsocket=''\n"));
        assert!(s.ends_with("echo $uri\n"));
    }
}
