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
    let bindir = exe.parent().map(|p| p.display().to_string()).unwrap_or_default();
    let (major, minor) = {
        let mut it = COMPAT_VERSION.split('.');
        (it.next().unwrap_or("1"), it.next().unwrap_or("0"))
    };
    format!(
        "binary={}\nbindir={bindir}\nexit_with_parent=yes\nhost_cpu={}\nhost_os=linux-gnu\nname=nbdkit\nplugindir={}\nroot_tls_certificates_dir={}\ntls=yes\nversion={COMPAT_VERSION}\nversion_extra={VERSION_EXTRA}\nversion_major={major}\nversion_minor={minor}\nzstd=no\n",
        exe.display(),
        std::env::consts::ARCH,
        crate::plugins::cabi::plugin_dir(),
        crate::server::tls::ROOT_CERTIFICATES_DIR,
    )
}

/// The callbacks C nbdkit 1.32's plugin of each name defines, in C's
/// order, for `--dump-plugin`'s `has_NAME=1` lines: scripts read them to
/// learn what a plugin can do. Ours are API version 2 throughout, so split
/// and partitioning show `pread` where C's (version 1) show `_pread_v1`.
const C_CALLBACKS: &[(&str, &str)] = &[
        ("data", "unload dump_plugin config config_complete config_help get_ready open get_size can_fast_zero can_fua can_multi_conn can_cache pread pwrite flush trim zero extents"),
        ("eval", "load unload dump_plugin config config_complete config_help thread_model get_ready after_fork preconnect list_exports default_export open close export_description get_size block_size can_write can_flush is_rotational can_trim can_zero can_fast_zero can_extents can_fua can_multi_conn can_cache pread pwrite flush trim zero extents cache"),
        ("example1", "load open get_size pread"),
        ("file", "longname unload dump_plugin config config_complete config_help list_exports open close get_size can_write can_trim can_extents can_fua can_multi_conn can_cache pread pwrite flush trim zero extents cache"),
        ("full", "config config_complete config_help open get_size can_multi_conn can_cache pread pwrite trim extents"),
        ("info", "load dump_plugin config config_help open close get_size can_multi_conn can_cache pread"),
        ("memory", "unload dump_plugin config config_complete config_help get_ready open get_size can_fast_zero can_fua can_multi_conn can_cache pread pwrite flush trim zero extents"),
        ("nbd", "longname unload dump_plugin config config_complete config_help after_fork list_exports default_export open close export_description get_size block_size can_write can_flush is_rotational can_trim can_zero can_fast_zero can_extents can_fua can_multi_conn can_cache pread pwrite flush trim zero extents cache"),
        ("null", "config config_help open get_size can_fast_zero can_fua can_multi_conn can_cache pread pwrite flush trim zero extents"),
        ("ondemand", "unload config config_complete config_help get_ready list_exports default_export open close get_size can_trim can_fua can_multi_conn pread pwrite flush trim"),
        ("partitioning", "load unload config config_complete config_help get_ready open get_size can_multi_conn can_cache pread pwrite flush"),
        ("pattern", "config config_help open get_size can_multi_conn can_cache pread"),
        ("random", "load config config_help open get_size can_multi_conn can_cache pread pwrite trim zero"),
        ("sh", "load unload dump_plugin config config_complete config_help thread_model get_ready after_fork preconnect list_exports default_export open close export_description get_size block_size can_write can_flush is_rotational can_trim can_zero can_fast_zero can_extents can_fua can_multi_conn can_cache pread pwrite flush trim zero extents cache"),
        ("sparse-random", "load unload config config_help get_ready open get_size can_multi_conn can_cache pread pwrite flush trim zero extents"),
        ("split", "unload config config_help open close get_size can_cache extents cache pread pwrite"),
        ("tmpdisk", "load unload config config_complete config_help open close get_size can_trim can_fua can_multi_conn pread pwrite flush trim"),
        ("zero", "open get_size can_multi_conn can_cache pread"),
    ("tar", "config config_complete config_help open get_size can_multi_conn pread pwrite flush"),
];

/// The fixed `--dump-plugin` lines; `thread_model=` is the strictest of the
/// plugin's limit and what its script (if any) chose.
fn dump_plugin(p: &PluginInfo, chosen: Option<crate::backend::ThreadModel>) -> String {
    let tm = chosen.map_or(p.thread_model, |c| c.min(p.thread_model));
    let mut s = format!(
        "path=(built-in)\nname={}\nversion={COMPAT_VERSION}\napi_version=2\nmax_thread_model={}\nthread_model={}\nerrno_is_preserved=1\n",
        p.name,
        p.thread_model.name(),
        tm.name(),
    );
    if let Some(k) = p.magic_config_key {
        s.push_str(&format!("magic_config_key={k}\n"));
    }
    let has = C_CALLBACKS.iter().find(|(n, _)| *n == p.name);
    for cb in has.map_or("", |(_, l)| l).split_whitespace() {
        s.push_str(&format!("has_{cb}=1\n"));
    }
    for (k, v) in p.dump {
        s.push_str(&format!("{k}={v}\n"));
    }
    s
}

/// The text to print for an informational action.
pub fn text(cfg: &Config) -> Result<String, crate::error::StartError> {
    if let (Action::DumpPlugin, Some(p)) = (cfg.action, cfg.plugin) {
        // As in C, the filters take their parameters first, and their
        // thread models count; the plugin (a script) sees the rest.
        let mut params = crate::params::Params::new(p.name, cfg.params.clone());
        let mut filtered: Option<crate::backend::ThreadModel> = None;
        for f in &cfg.filters {
            let tm = (f.build)(&mut params)?.thread_model();
            filtered = Some(filtered.map_or(tm, |t| t.min(tm)));
        }
        let rest = params.take_rest();
        if crate::plugins::cabi::is_c_plugin(p) {
            return crate::plugins::cabi::dump_plugin(filtered, &rest);
        }
        return Ok(match crate::plugins::dump_more(p, &rest)? {
            Some((tm, more)) => dump_plugin(p, Some(filtered.map_or(tm, |f| f.min(tm)))) + &more,
            None => dump_plugin(p, filtered),
        });
    }
    Ok(match cfg.action {
        Action::Help => {
            let mut s = cli::USAGE.to_string();
            for f in &cfg.filters {
                s.push_str(&format!(
                    "\nfilter: {} ({})\n{}\n",
                    f.name, f.description, f.config_help
                ));
            }
            match cfg.plugin {
                Some(p) if crate::plugins::cabi::is_c_plugin(p) => {
                    s.push('\n');
                    s.push_str(&crate::plugins::cabi::help().unwrap_or_default());
                }
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
            // With a plugin: each filter in the order given, then it.
            if let Some(p) = cfg.plugin {
                for f in &cfg.filters {
                    s.push_str(&format!("{} {COMPAT_VERSION}\n", f.name));
                }
                if crate::plugins::cabi::is_c_plugin(p) {
                    match crate::plugins::cabi::version() {
                        Some(v) => s.push_str(&format!("{} {v}\n", p.name)),
                        None => s.push_str(&format!("{}\n", p.name)),
                    }
                } else {
                    s.push_str(&format!("{} {COMPAT_VERSION}\n", p.name));
                }
            }
            s
        }
        Action::DumpConfig => dump_config(),
        Action::DumpPlugin => cfg.plugin.map(|p| dump_plugin(p, None)).unwrap_or_default(),
        Action::LongOptions => cli::long_options(),
        Action::ShortOptions => cli::short_options(),
        Action::Serve => String::new(),
    })
}
