//! Start-up and every reason to stop, in one room.
//!
//! [`run`] goes: print-and-exit actions; build the plugin (bad parameters
//! fail here, before anything listens); bind; drop privileges; fork into
//! the background unless told not to; print the URI (`--print-uri`) and
//! start `--run`, as soon as the sockets listen; then, inside the runtime,
//! install signal handlers, announce readiness (pidfile, the forking
//! parent), and wait for the first reason to stop: a signal,
//! the parent's death, the command's end, or (`-s`) the client's. All of
//! them become one shutdown value passed down to the server.

mod captive;
mod daemon;
mod early_signals;
mod info;
mod listen;
mod parent;
mod reaper;
mod stdio;

use std::os::fd::OwnedFd;
use std::sync::Arc;

use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::backend::shutdown::ShutdownRequest;
use crate::backend::{Plugin, ThreadModel};
use crate::cli::{Action, Config, Listen};
use crate::error::StartError;
use crate::log::Log;
use crate::params::Params;
use crate::protocol::handshake::Settings;
use crate::server::{self, stdio::StdioStream, Listener, Server, ServerConfig, Shutdown};
pub use info::{COMPAT_VERSION, VERSION_EXTRA};

/// Run nbdkit as configured; the returned code is the process's exit status.
pub fn run(cfg: Config) -> Result<u8, StartError> {
    // Record the parent before anything else, to narrow the window in
    // which it could die unseen.
    let parent = if cfg.exit_with_parent && cfg.action == Action::Serve {
        match parent::Parent::watch() {
            Some(p) => Some(p),
            None => return Ok(0), // already orphaned
        }
    } else {
        None
    };
    if cfg.action != Action::Serve {
        print!("{}", info::text(&cfg)?);
        return Ok(0);
    }
    let info = cfg.plugin.expect("checked by cli");
    // The log: on stderr while the plugin starts (which may print debug
    // messages with -v), then where --log says.
    let log = Log::new(cfg.verbose);
    // TLS credentials first, as C: a bad file stops us before any plugin
    // starts. Oldstyle has no STARTTLS.
    let tls = if cfg.oldstyle { None } else { server::tls::Tls::load(&cfg.tls, &log)? };
    // How plugins and filters ask the server to stop.
    let stop = ShutdownRequest::new();
    let (plugin, thread_model) = build_chain(&cfg, info, &stop, &log)?;
    log.send_to(cfg.log);
    plugin.get_ready(thread_model)?;
    stdio::switch(cfg.listen == crate::cli::Listen::Stdin || cfg.run.is_some() || cfg.print_uri)?;
    if cfg.swap {
        // SAFETY: mlockall has no memory-safety preconditions.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 {
            return Err(StartError(format!(
                "--swap: mlockall: {}",
                std::io::Error::last_os_error()
            )));
        }
    }

    let mut listening = listen::bind(&cfg, &log)?;
    drop_privileges(&cfg, &listening)?;

    let ready = if cfg.stays_in_foreground() {
        daemon::Ready::none()
    } else {
        match daemon::fork_into_background(cfg.verbose)? {
            daemon::Side::Parent(code) => {
                if code == 0 && cfg.print_uri {
                    if let Some(u) = &listening.uri {
                        stdio::println_original(u);
                    }
                }
                listening.disown();
                // The child serves with the plugin and filters now: the
                // parent must not clean up after them (the sh plugin's
                // script directory, the cow overlay, ...).
                std::mem::forget(plugin);
                return Ok(code);
            }
            daemon::Side::Child(r) => {
                stdio::close_saved();
                r
            }
        }
    };

    plugin.serving();

    // TLS as it ends up: off without credentials. When it is required, the
    // URI says so (nbds://) and names the credentials a client needs.
    let tls_mode = match &tls {
        Some(_) => cfg.tls.mode,
        None => crate::protocol::handshake::TlsMode::Off,
    };
    if let (crate::protocol::handshake::TlsMode::Require, Some(t)) = (tls_mode, &tls) {
        let creds = t.client.clone();
        listening.uri = listening.uri.take().map(|u| crate::uri::with_tls(&u, &creds));
    }
    // Announced from here on: a signal is noted until it can be handled.
    early_signals::defer();
    if cfg.print_uri && cfg.stays_in_foreground() {
        if let Some(u) = &listening.uri {
            stdio::println_original(u);
        }
    }
    // The command starts now, as in C nbdkit (before the pidfile and the
    // after_fork hooks): the sockets listen, so its connections wait in
    // the backlog until the server accepts them, and its shell starts
    // while the runtime is being built.
    let command = match &cfg.run {
        None => None,
        Some(cmd) => {
            let vars = captive::Vars {
                uri: listening.uri.as_deref().unwrap_or(""),
                export_name: &cfg.export_name,
                port: listening.port,
                unix: listening.unix.as_deref(),
                tls: match tls_mode {
                    crate::protocol::handshake::TlsMode::Off => 0,
                    crate::protocol::handshake::TlsMode::On => 1,
                    crate::protocol::handshake::TlsMode::Require => 2,
                },
            };
            Some(
                captive::spawn(cmd, &vars)
                    .map_err(|e| StartError(format!("--run: /bin/sh: {e}")))?,
            )
        }
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(cpus())
        .thread_name("nbdkit")
        .build()
        .map_err(|e| StartError(format!("cannot start the runtime: {e}")))?;
    let plugin_at_exit = plugin.clone();
    let settings = Settings {
        oldstyle: cfg.oldstyle,
        no_sr: cfg.no_sr,
        handshake_mask: cfg.mask_handshake,
        no_meta_contexts: cfg.no_meta_contexts,
        tls: cfg.tls.mode,
    };
    let name = cfg.plugin.expect("checked").name;
    let mut sc = ServerConfig::new(plugin, name);
    sc.top_name = cfg.filters.first().map_or(name, |f| f.name);
    sc.settings = settings;
    sc.readonly = cfg.readonly;
    sc.export_name = cfg.export_name.clone();
    sc.threads = cfg.threads;
    sc.max_connections = connection_limit();
    sc.thread_model = thread_model;
    sc.log = log.clone();
    sc.tls = tls;
    let code = rt.block_on(serve(&cfg, sc, &mut listening, parent, ready, &stop, command));
    // Don't wait for idle blocking threads; everything that mattered is done.
    rt.shutdown_background();
    // Tasks the runtime left behind may still hold the plugin, so it may
    // never be dropped: it cleans up here instead.
    plugin_at_exit.unload();
    drop(listening);
    let (code, fatal) = code?;
    if let Some(sig) = fatal {
        // Cleaned up: now die of the signal, as it would have had us.
        // SAFETY: restoring a default disposition and raising a signal
        // have no memory-safety preconditions.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
    Ok(code)
}

/// The filters (each taking its own parameters, in `--filter` order), then
/// the plugin (taking the rest, and refusing what nobody took), stacked
/// with the first filter given on top.
fn build_chain(
    cfg: &Config, info: &'static crate::plugins::PluginInfo, stop: &ShutdownRequest, log: &Log,
) -> Result<(Arc<dyn Plugin>, ThreadModel), StartError> {
    let debug = crate::params::DebugFlags::new(&cfg.debug_flags);
    let mut params = Params::new(info.name, cfg.params.clone())
        .with_debug(debug.clone())
        .with_shutdown(stop.clone())
        .with_log(log.clone())
        .with_stdio_safe(cfg.listen != crate::cli::Listen::Stdin);
    let mut loaded: Vec<&str> = cfg.filters.iter().map(|f| f.name).collect();
    loaded.push(info.name);
    let mut filters = Vec::new();
    for f in &cfg.filters {
        match (f.build)(&mut params) {
            Ok(f) => filters.push(f),
            Err(e) => {
                debug.warn_unused(&loaded);
                return Err(e);
            }
        }
    }
    // The chain's thread model: the strictest of the plugin's table entry,
    // what the plugin chose at start-up (a script's), and the filters'.
    let choice = params.thread_model_choice();
    let top = (info.build)(params);
    debug.warn_unused(&loaded);
    let mut top = top?;
    let thread_model = filters
        .iter()
        .map(|f| f.thread_model())
        .chain(choice.get())
        .fold(info.thread_model, ThreadModel::min);
    let mut below = info.name;
    for (f, i) in filters.into_iter().zip(&cfg.filters).rev() {
        top = Arc::new(crate::backend::Layer::named(f, top, below, log));
        below = i.name;
    }
    Ok((top, thread_model))
}

/// How many clients may be connected at once: raise the soft limit on file
/// descriptors to the hard one, and keep 64 for everything else (listeners,
/// plugin files, log). Each connection holds one descriptor (a plugin that
/// opens a file per connection holds another).
fn connection_limit() -> usize {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return usize::MAX;
        }
        if l.rlim_cur < l.rlim_max {
            let raised = libc::rlimit { rlim_cur: l.rlim_max, rlim_max: l.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                l = raised;
            }
        }
    }
    if l.rlim_cur == libc::RLIM_INFINITY {
        return usize::MAX;
    }
    // Half of what is left: a plugin may open a file per connection.
    (usize::try_from(l.rlim_cur).unwrap_or(usize::MAX).saturating_sub(64) / 2).max(8)
}

/// `-g` and `-u`, after binding. The sockets we created (and the private
/// directory of `-U -`) are handed to the new owner first, so that the
/// server can still remove them at exit.
fn drop_privileges(cfg: &Config, listening: &listen::Listening) -> Result<(), StartError> {
    use nix::unistd::{chown, setgid, setgroups, setuid, Gid, Group, Uid, User};
    if cfg.group.is_none() && cfg.user.is_none() {
        return Ok(());
    }
    let gid = match &cfg.group {
        None => None,
        Some(g) => Some(match g.parse::<u32>() {
            Ok(n) => Gid::from_raw(n),
            Err(_) => {
                Group::from_name(g)
                    .ok()
                    .flatten()
                    .ok_or_else(|| StartError(format!("-g: unknown group '{g}'")))?
                    .gid
            }
        }),
    };
    let uid = match &cfg.user {
        None => None,
        Some(u) => Some(match u.parse::<u32>() {
            Ok(n) => Uid::from_raw(n),
            Err(_) => {
                User::from_name(u)
                    .ok()
                    .flatten()
                    .ok_or_else(|| StartError(format!("-u: unknown user '{u}'")))?
                    .uid
            }
        }),
    };
    for p in listening.owned_paths() {
        chown(p, uid, gid).map_err(|e| StartError(format!("chown {}: {e}", p.display())))?;
    }
    if let Some(gid) = gid {
        let _ = setgroups(&[gid]);
        setgid(gid).map_err(|e| StartError(format!("setgid: {e}")))?;
    }
    if let Some(uid) = uid {
        setuid(uid).map_err(|e| StartError(format!("setuid: {e}")))?;
    }
    Ok(())
}

/// Why the server stops (a fatal signal is reported beside it).
enum Stop {
    /// A signal or the parent's death: exit 0.
    Quit,
    /// The `--run` command ended with this status.
    Command(u8),
}

async fn serve(
    cfg: &Config, sc: ServerConfig, listening: &mut listen::Listening,
    parent: Option<parent::Parent>, mut ready: daemon::Ready, stop: &ShutdownRequest,
    command: Option<captive::Spawned>,
) -> Result<(u8, Option<i32>), StartError> {
    let log = &sc.log.clone();
    let sig = |k: SignalKind| signal(k).map_err(|e| StartError(format!("signal handler: {e}")));
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigquit = sig(SignalKind::quit())?;
    let mut sighup = sig(SignalKind::hangup())?;
    // Signals whose default is to kill the process: caught so that we can
    // clean up (the `-U -` directory, the `--run` command) before dying of
    // them after all, as C nbdkit's captive parent reports a server killed
    // by one (exit status 128+N).
    // One inherited as ignored stays ignored, as in C.
    let fatal_sig = |k: SignalKind, n: i32| -> Result<Option<Signal>, StartError> {
        if ignored(n) {
            Ok(None)
        } else {
            sig(k).map(Some)
        }
    };
    let mut sigusr1 = fatal_sig(SignalKind::user_defined1(), libc::SIGUSR1)?;
    let mut sigusr2 = fatal_sig(SignalKind::user_defined2(), libc::SIGUSR2)?;
    let mut sigalrm = fatal_sig(SignalKind::alarm(), libc::SIGALRM)?;
    let mut fatal: Option<i32> = None;
    early_signals::replay();

    // As in C: the pidfile, then the after-fork hooks, then clients (the
    // sockets already listen; a client that connects now waits in the
    // backlog).
    if let Some(p) = &cfg.pidfile {
        daemon::write_pidfile(p)?;
    }
    sc.plugin.after_fork()?;

    let (stop_tx, shutdown) = Shutdown::new();
    let srv = Arc::new(Server::new(sc));

    let mut server_task = if cfg.listen == Listen::Stdin {
        let (r, w) = stdin_stdout()?;
        let stdin = stdio::saved().map_or(0, |(r, _)| r);
        // SAFETY: the saved stdin stays open for the process.
        let stdin = unsafe { std::os::fd::BorrowedFd::borrow_raw(stdin) };
        let client = crate::backend::Client { peer: server::stdio::peer(stdin), tls: false };
        tokio::spawn(server::serve_one(Box::new(r), Box::new(w), client, srv.clone(), shutdown))
    } else {
        // The listeners move into the server, which closes them as soon as
        // shutdown starts: late clients are refused, not left queued.
        let mut ls = Vec::new();
        for b in listening.sockets.drain(..) {
            ls.push(to_tokio(b)?);
        }
        tokio::spawn(server::run(ls, srv.clone(), shutdown))
    };

    // Ready: announce it, in every way asked for.
    if log.verbose() {
        let plugin = cfg.plugin.map_or("nbdkit", |p| p.name);
        match &listening.uri {
            Some(u) => log.debug(&format!("{plugin}: serving {u}")),
            None => log.debug(&format!("{plugin}: serving on stdin/stdout")),
        }
    }
    ready.signal();
    let mut child = match command {
        Some(c) => {
            Some(captive::Child::watch(c).map_err(|e| StartError(format!("--run: wait: {e}")))?)
        }
        None => None,
    };
    let parent_gone = async {
        match parent {
            Some(p) => p.exited().await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(parent_gone);
    let mut server_done = false;
    let stop = loop {
        let child_exit = async {
            match child.as_mut() {
                Some(c) => c.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = sigint.recv() => {}
            _ = sigterm.recv() => {}
            _ = sigquit.recv() => {}
            _ = sighup.recv() => {}
            _ = recv(&mut sigusr1) => fatal = Some(libc::SIGUSR1),
            _ = recv(&mut sigusr2) => fatal = Some(libc::SIGUSR2),
            _ = recv(&mut sigalrm) => fatal = Some(libc::SIGALRM),
            _ = stop.wait() => {
                log.debug("a filter asked for shutdown");
            }
            _ = &mut parent_gone => {
                log.debug("parent process exited: shutting down");
                if child.is_none() {
                    break Stop::Quit;
                }
            }
            st = child_exit => {
                break match st {
                    Ok(st) => Stop::Command(captive::exit_code(st, log)),
                    Err(e) => {
                        log.error(&format!("--run: wait: {e}"));
                        Stop::Command(1)
                    }
                };
            }
            _ = &mut server_task, if !server_done => {
                server_done = true;
                if child.is_none() {
                    break Stop::Quit;
                }
                continue;
            }
        }
        // A signal (or the parent's death with --run): the command goes
        // first; its status becomes ours once it has exited.
        match &child {
            Some(c) => captive::terminate(c),
            None => break Stop::Quit,
        }
    };
    if matches!(stop, Stop::Command(_)) {
        listening.remove_now();
    }
    let _ = stop_tx.send(true);
    // Wait for the server to finish its connections: unless it has none
    // (on a listening socket), when the wait would only be the time it
    // takes the accepting tasks to notice, and the runtime's end drops them.
    if !server_done && (cfg.listen == Listen::Stdin || !srv.close_if_idle()) {
        let _ = server_task.await;
    }
    let code = match stop {
        Stop::Quit => 0,
        Stop::Command(c) => c,
    };
    Ok((code, fatal))
}

/// The runtime's worker threads: one per CPU we may run on. Said
/// explicitly, because tokio's own default reads cgroup files, which costs
/// about 0.15 ms of every start-up.
fn cpus() -> usize {
    nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
        .map(|set| {
            (0..nix::sched::CpuSet::count()).filter(|&i| set.is_set(i).unwrap_or(false)).count()
        })
        .unwrap_or(1)
        .max(1)
}

/// Whether `sig` is ignored (SIG_IGN), as inherited from our parent.
fn ignored(sig: i32) -> bool {
    // SAFETY: sigaction with no new action only reads the disposition into
    // a zeroed struct we own.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old) == 0 && old.sa_sigaction == libc::SIG_IGN
    }
}

/// The next delivery of a signal we listen for; never, for one we don't.
async fn recv(s: &mut Option<Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn to_tokio(b: listen::Bound) -> Result<Listener, StartError> {
    let err = |e: std::io::Error| StartError(format!("listen: {e}"));
    Ok(match b {
        listen::Bound::Tcp(t) => {
            t.set_nonblocking(true).map_err(err)?;
            Listener::Tcp(tokio::net::TcpListener::from_std(t).map_err(err)?)
        }
        listen::Bound::Unix(u) => {
            u.set_nonblocking(true).map_err(err)?;
            Listener::Unix(tokio::net::UnixListener::from_std(u).map_err(err)?)
        }
    })
}

/// `-s`: the original stdin and stdout (see [`stdio`]).
fn stdin_stdout() -> Result<(StdioStream, StdioStream), StartError> {
    let dup = |fd: std::os::fd::BorrowedFd<'_>| -> Result<OwnedFd, StartError> {
        fd.try_clone_to_owned().map_err(|e| StartError(format!("-s: {e}")))
    };
    let (r, w) = stdio::saved().unwrap_or((0, 1));
    // SAFETY: borrowing descriptors that stay open for the process.
    let (r, w) =
        unsafe { (std::os::fd::BorrowedFd::borrow_raw(r), std::os::fd::BorrowedFd::borrow_raw(w)) };
    let r = dup(r)?;
    let w = dup(w)?;
    let wrap = |fd| StdioStream::new(fd).map_err(|e| StartError(format!("-s: {e}")));
    Ok((wrap(r)?, wrap(w)?))
}
