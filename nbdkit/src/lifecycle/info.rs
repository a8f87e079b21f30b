//! The actions that print and exit: `--help`, `--version`, `--dump-config`,
//! `--dump-plugin`, `--long-options`, `--short-options`.

use crate::cli::{self, Action, Config};
use crate::plugins::PluginInfo;

/// The C nbdkit release whose command line and behaviour we match. Tools
/// parse `nbdkit --version`, so this is what comes first.
pub const COMPAT_VERSION: &str = "1.32.0";
/// Our own version, shown after it.
pub const VERSION_EXTRA: &str = concat!("rust-", env!("CARGO_PKG_VERSION"));

fn dump_config() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let bindir = exe
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let (major, minor) = {
        let mut it = COMPAT_VERSION.split('.');
        (it.next().unwrap_or("1"), it.next().unwrap_or("0"))
    };
    format!(
        "binary={}\nbindir={bindir}\nexit_with_parent=yes\nhost_cpu={}\nhost_os=linux-gnu\nname=nbdkit\ntls=no\nversion={COMPAT_VERSION}\nversion_extra={VERSION_EXTRA}\nversion_major={major}\nversion_minor={minor}\nzstd=no\n",
        exe.display(),
        std::env::consts::ARCH,
    )
}

fn dump_plugin(p: &PluginInfo) -> String {
    let mut s = format!(
        "path=(built-in)\nname={}\nversion={COMPAT_VERSION}\napi_version=2\nmax_thread_model={tm}\nthread_model={tm}\nerrno_is_preserved=1\n",
        p.name,
        tm = p.thread_model.name(),
    );
    if let Some(k) = p.magic_config_key {
        s.push_str(&format!("magic_config_key={k}\n"));
    }
    for (k, v) in p.dump {
        s.push_str(&format!("{k}={v}\n"));
    }
    s
}

/// The text to print for an informational action.
pub fn text(cfg: &Config) -> String {
    match cfg.action {
        Action::Help => {
            let mut s = cli::USAGE.to_string();
            for f in &cfg.filters {
                s.push_str(&format!(
                    "\nfilter: {} ({})\n{}\n",
                    f.name, f.description, f.config_help
                ));
            }
            match cfg.plugin {
                Some(p) => s.push_str(&format!(
                    "\nplugin: {} ({})\n{}\n",
                    p.name, p.description, p.config_help
                )),
                None => {
                    s.push_str("\nBuilt-in plugins:\n");
                    for p in crate::plugins::PLUGINS {
                        s.push_str(&format!("  {:<14} {}\n", p.name, p.description));
                    }
                    s.push_str("\nBuilt-in filters:\n");
                    for f in crate::filters::FILTERS {
                        s.push_str(&format!("  {:<14} {}\n", f.name, f.description));
                    }
                }
            }
            s
        }
        Action::Version => {
            let mut s = format!("nbdkit {COMPAT_VERSION} ({VERSION_EXTRA})\n");
            if let Some(p) = cfg.plugin {
                s.push_str(&format!("{} {COMPAT_VERSION}\n", p.name));
            }
            s
        }
        Action::DumpConfig => dump_config(),
        Action::DumpPlugin => cfg.plugin.map(dump_plugin).unwrap_or_default(),
        Action::LongOptions => cli::long_options(),
        Action::ShortOptions => cli::short_options(),
        Action::Serve => String::new(),
    }
}
