//! C plugins: `nbdkit PATH/nbdkit-NAME-plugin.so`, or `nbdkit NAME` for a
//! plugin that is not built in, found in the plugin directory
//! ([`plugin_dir`]: C's, `/usr/lib/x86_64-linux-gnu/nbdkit/plugins` on
//! Debian, or `$NBDKIT_PLUGINDIR`).
//!
//! The plugin ABI of nbdkit 1.32 (nbdkit-plugin(3)): `plugin_init`, API
//! versions 1 and 2, all four thread models. A loaded plugin is a
//! [`Plugin`] like any other, so filters stack on it; its callbacks run
//! where blocking is allowed (`block_in_place`), never holding up the
//! runtime. The functions plugins call (`nbdkit_error`, `nbdkit_parse_size`
//! ...) are exported by the binary (see `exports.rs`, `shim.c` and
//! build.rs).
//!
//! All the unsafe code that faces the plugin is here and in `exports.rs`.
//! What a plugin hands back is checked: a NULL handle or string, an error
//! with no message, extents out of order or an impossible size give a
//! clear error, never undefined behaviour on our side.
//!
//! Errors: a callback that fails reports the errno it set with
//! `nbdkit_set_error`, or `errno` if the plugin says `errno_is_preserved`,
//! or EIO; and the messages it gave `nbdkit_error` during the call. A
//! message given by a call that succeeds is logged at once.
//!
//! Only one C plugin is loaded per process (as in C nbdkit). Filters as
//! `.so` files are refused at the command line: C's filter ABI requires
//! the server's exact version string.

mod exports;
mod ffi;

use std::cell::{Cell, RefCell};
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use super::PluginInfo;
use crate::backend::shutdown::ShutdownRequest;
use crate::backend::{
    BlockSize, Cache, Caps, Client, Errno, Error, ExportEntry, Extents, Flags, Fua, Handle,
    OpenArgs, Peer, Plugin, Result, ThreadModel, Zero,
};
use crate::error::StartError;
use crate::log::Log;
use crate::params::Params;
use ffi::RawPlugin;

extern "C" {
    fn nbdkit_cabi_set_hooks(
        error: extern "C" fn(*const c_char), debug: extern "C" fn(*const c_char),
        intern: extern "C" fn(*const c_char) -> *const c_char,
    );
}

/// Where `nbdkit NAME` looks for `nbdkit-NAME-plugin.so`:
/// `$NBDKIT_PLUGINDIR`, else C nbdkit's directory on this system.
pub fn plugin_dir() -> String {
    std::env::var("NBDKIT_PLUGINDIR")
        .ok()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| DEFAULT_PLUGIN_DIR.to_string())
}

/// C nbdkit's plugin directory (Debian's multiarch path).
const DEFAULT_PLUGIN_DIR: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins";

/// The loaded plugin: one per process.
pub(crate) struct Loaded {
    /// The plugin's `.name`.
    name: String,
    /// The file it came from.
    path: String,
    /// The `dlopen` handle (never closed: C nbdkit keeps it too).
    lib: Lib,
    raw: RawPlugin,
    /// Its entry in the plugin table (leaked: it lives as long as we do).
    info: &'static PluginInfo,
    log: Mutex<Log>,
    shutdown: Mutex<ShutdownRequest>,
    stdio_safe: AtomicBool,
    /// Strings interned outside any connection.
    interned: Mutex<Vec<CString>>,
}

/// A `dlopen` handle: an address, used only to look symbols up.
struct Lib(*mut c_void);
// SAFETY: dlsym may be called from any thread.
unsafe impl Send for Lib {}
// SAFETY: as above.
unsafe impl Sync for Lib {}

// SAFETY: the struct's pointers are to the plugin's static strings and
// functions, which never change and may be used from any thread (the
// server enforces the plugin's thread model for the calls).
unsafe impl Send for Loaded {}
// SAFETY: as above.
unsafe impl Sync for Loaded {}

static LOADED: OnceLock<Loaded> = OnceLock::new();

fn loaded() -> Option<&'static Loaded> {
    LOADED.get()
}

impl Loaded {
    fn log(&self) -> Log {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn shutdown(&self) -> ShutdownRequest {
        self.shutdown.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn v2(&self) -> bool {
        self.raw.api_version == 2
    }
}

/// Whether `p` is a C plugin.
pub fn is_c_plugin(p: &PluginInfo) -> bool {
    loaded().is_some_and(|l| std::ptr::eq(l.info, p))
}

/// Load the plugin at `path`, or return it if it is already loaded.
pub fn load(path: &str) -> std::result::Result<&'static PluginInfo, StartError> {
    if let Some(l) = loaded() {
        if l.path == path {
            return Ok(l.info);
        }
        return Err(StartError(format!(
            "cannot load plugin \"{path}\": the C plugin \"{}\" is already loaded in this process",
            l.path
        )));
    }
    std::hint::black_box(&exports::KEEP.0);
    // SAFETY: the hooks are functions with the signatures shim.c expects.
    unsafe {
        nbdkit_cabi_set_hooks(exports::hook_error, exports::hook_debug, exports::hook_intern)
    };
    let cpath = CString::new(path).map_err(|_| StartError(format!("bad plugin path {path:?}")))?;
    let dlerror = || {
        // SAFETY: dlerror returns NULL or a C string.
        let e = unsafe { libc::dlerror() };
        if e.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: loading a shared object runs its constructors: that is
    // what the user asked for by naming it.
    let lib = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if lib.is_null() {
        return Err(StartError(format!("cannot open plugin \"{path}\": {}", dlerror())));
    }
    // SAFETY: looking up a symbol in a handle we own.
    let init = unsafe { libc::dlsym(lib, c"plugin_init".as_ptr()) };
    if init.is_null() {
        return Err(StartError(format!(
            "{path}: not an nbdkit plugin (it has no plugin_init function)"
        )));
    }
    // SAFETY: plugin_init has this signature (NBDKIT_REGISTER_PLUGIN).
    let init: unsafe extern "C" fn() -> *const c_void = unsafe { std::mem::transmute(init) };
    // SAFETY: calling the plugin's registration function.
    let p = unsafe { init() };
    if p.is_null() {
        return Err(StartError(format!("{path}: plugin registration function failed")));
    }
    // SAFETY: the struct starts with its size and API version.
    let (size, api) = unsafe { (*p.cast::<u64>(), *p.cast::<u8>().add(8).cast::<c_int>()) };
    if api != 1 && api != 2 {
        return Err(StartError(format!(
            "{path}: plugin is incompatible with this version of nbdkit (_api_version = {api})"
        )));
    }
    if (size as usize) < ffi::MIN_SIZE {
        return Err(StartError(format!("{path}: plugin struct is too short ({size} bytes)")));
    }
    // Copy the fields we know and the plugin filled in; the rest stay NULL.
    let mut raw = std::mem::MaybeUninit::<RawPlugin>::zeroed();
    // SAFETY: we copy min(size, ours) bytes from the plugin's struct into
    // a zeroed one; NULL is valid for every pointer and Option<fn>.
    let raw = unsafe {
        std::ptr::copy_nonoverlapping(
            p.cast::<u8>(),
            raw.as_mut_ptr().cast::<u8>(),
            (size as usize).min(ffi::SIZE),
        );
        raw.assume_init()
    };
    let cstr = |s: *const c_char| -> Option<String> {
        // SAFETY: the plugin's strings are NULL or static C strings.
        (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
    };
    let name = cstr(raw.name).unwrap_or_default();
    if name.is_empty()
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(StartError(format!(
            "{path}: plugin.name field must be set and contain only ASCII alphanumeric characters"
        )));
    }
    let v2 = api == 2;
    let missing = if raw.open.is_none() {
        Some("open")
    } else if raw.get_size.is_none() {
        Some("get_size")
    } else if (v2 && raw.pread.is_none()) || (!v2 && raw.pread_v1.is_none()) {
        Some("pread")
    } else {
        None
    };
    if let Some(m) = missing {
        return Err(StartError(format!("{path}: plugin must have a .{m} callback")));
    }
    let thread_model = thread_model_of(raw.thread_model_max).ok_or_else(|| {
        StartError(format!("{path}: plugin has an unknown thread model ({})", raw.thread_model_max))
    })?;
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let info = Box::leak(Box::new(PluginInfo {
        name: leak(name.clone()),
        description: leak(cstr(raw.longname).unwrap_or_default()),
        config_help: leak(cstr(raw.config_help).unwrap_or_default()),
        magic_config_key: cstr(raw.magic_config_key).map(leak),
        thread_model,
        build,
        dump: &[],
    }));
    let l = Loaded {
        name,
        path: path.to_string(),
        lib: Lib(lib),
        raw,
        info,
        log: Mutex::new(Log::default()),
        shutdown: Mutex::new(ShutdownRequest::new()),
        stdio_safe: AtomicBool::new(true),
        interned: Mutex::new(Vec::new()),
    };
    if LOADED.set(l).is_err() {
        return Err(StartError("a C plugin is already loaded in this process".into()));
    }
    let l = loaded().expect("just set");
    if let Some(load) = l.raw.load {
        // SAFETY: the plugin's load callback takes nothing.
        unsafe { load() };
    }
    Ok(l.info)
}

fn thread_model_of(n: c_int) -> Option<ThreadModel> {
    Some(match n {
        0 => ThreadModel::SerializeConnections,
        1 => ThreadModel::SerializeAllRequests,
        2 => ThreadModel::SerializeRequests,
        3 => ThreadModel::Parallel,
        _ => return None,
    })
}

// ----------------------------------------------------------------- calls

/// What the functions a plugin calls know about the connection.
pub(crate) struct Conn {
    export: CString,
    tls: bool,
    peer: Peer,
    /// Strings interned during this connection.
    interned: Mutex<Vec<CString>>,
    /// A context for one call outside `.open` (preconnect, list_exports,
    /// default_export): strings interned there live as long as the
    /// plugin, since a plugin may keep them for the connection's `.open`.
    bare: bool,
}

thread_local! {
    /// The connection of the callback running on this thread.
    static CONTEXT: RefCell<Option<Arc<Conn>>> = const { RefCell::new(None) };
    /// What `nbdkit_set_error` said during the callback.
    static SET_ERROR: Cell<c_int> = const { Cell::new(0) };
    /// Messages `nbdkit_error` gave during the callback, or None outside
    /// one (they are then logged at once).
    static MESSAGES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

fn context() -> Option<Arc<Conn>> {
    CONTEXT.with(|c| c.borrow().clone())
}

fn set_error(err: c_int) {
    SET_ERROR.set(err);
}

/// `nbdkit_error`: kept for the callback's error, or logged.
fn error_message(msg: &str) {
    let kept = MESSAGES.with(|m| match m.borrow_mut().as_mut() {
        Some(v) => {
            v.push(msg.to_string());
            true
        }
        None => false,
    });
    if !kept {
        if let Some(l) = loaded() {
            l.log().error(msg);
        } else {
            eprintln!("nbdkit: error: {msg}");
        }
    }
}

/// Intern a string for the connection (or the plugin's lifetime).
fn intern(s: &[u8]) -> *const c_char {
    let c = CString::new(s.to_vec()).unwrap_or_default();
    let p = c.as_ptr();
    match context().filter(|c| !c.bare) {
        Some(conn) => conn.interned.lock().unwrap_or_else(|e| e.into_inner()).push(c),
        None => match loaded() {
            Some(l) => l.interned.lock().unwrap_or_else(|e| e.into_inner()).push(c),
            None => {
                // Before any plugin: kept for the life of the process.
                return Box::leak(c.into_boxed_c_str()).as_ptr();
            }
        },
    }
    p
}

/// Calls into the plugin under way, on any thread.
static ACTIVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Set once the plugin is being unloaded: no handle is closed after.
static UNLOADING: AtomicBool = AtomicBool::new(false);

/// What one callback did, beyond its return value.
struct Call<T> {
    value: T,
    /// What `nbdkit_set_error` said (0 if nothing).
    set: c_int,
    /// `errno` as the callback left it.
    errno: c_int,
    messages: Vec<String>,
}

/// Call into the plugin with `conn` as the thread's connection, collecting
/// what it reports. Runs on the current thread: see [`blocking`].
fn call<T>(conn: Option<&Arc<Conn>>, f: impl FnOnce() -> T) -> Call<T> {
    struct Active;
    impl Drop for Active {
        fn drop(&mut self) {
            ACTIVE.fetch_sub(1, Ordering::SeqCst);
        }
    }
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    let _active = Active;
    CONTEXT.with(|c| *c.borrow_mut() = conn.cloned());
    SET_ERROR.set(0);
    MESSAGES.with(|m| *m.borrow_mut() = Some(Vec::new()));
    // SAFETY: writing this thread's errno.
    unsafe { *libc::__errno_location() = 0 };
    let value = f();
    // SAFETY: reading this thread's errno.
    let errno = unsafe { *libc::__errno_location() };
    let messages = MESSAGES.with(|m| m.borrow_mut().take()).unwrap_or_default();
    CONTEXT.with(|c| c.borrow_mut().take());
    Call { value, set: SET_ERROR.get(), errno, messages }
}

/// Run `f` where it may block: off the runtime's core threads when there
/// is a multi-threaded runtime, else here.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

impl<T> Call<T> {
    /// The error of a failed call: the errno the plugin set (C's rules:
    /// `nbdkit_set_error`, else `errno` if it is preserved, else EIO), and
    /// its messages, or one saying it gave none.
    fn error(&self, what: &str) -> Error {
        let l = loaded().expect("a plugin is loaded");
        let errno = if self.set != 0 {
            self.set
        } else if l.raw.errno_is_preserved != 0 && self.errno != 0 {
            self.errno
        } else {
            libc::EIO
        };
        Error::new(Errno::from_os(errno), self.message(what))
    }

    fn message(&self, what: &str) -> String {
        if self.messages.is_empty() {
            let name = loaded().map_or("plugin", |l| l.name.as_str());
            format!("{name}: {what}: the plugin failed without giving a message")
        } else {
            self.messages.join("; ")
        }
    }

    /// Log what a successful call reported.
    fn log_messages(&self) {
        if let Some(l) = loaded() {
            for m in &self.messages {
                l.log().error(m);
            }
        }
    }
}

impl Call<c_int> {
    /// 0 or more is success (the value); -1 (or less) an error.
    fn result(self, what: &str) -> Result<c_int> {
        if self.value < 0 {
            return Err(self.error(what));
        }
        self.log_messages();
        Ok(self.value)
    }

    /// A start-up callback: -1 stops the server with its messages.
    fn start(self, what: &str) -> std::result::Result<(), StartError> {
        if self.value < 0 {
            return Err(StartError(self.message(what)));
        }
        self.log_messages();
        Ok(())
    }
}

// --------------------------------------------------------------- start-up

/// The plugin table's `build`: configure the loaded plugin.
fn build(mut params: Params) -> std::result::Result<Arc<dyn Plugin>, StartError> {
    let l = loaded().expect("build is only reachable through load");
    *l.log.lock().unwrap_or_else(|e| e.into_inner()) = params.log();
    *l.shutdown.lock().unwrap_or_else(|e| e.into_inner()) = params.shutdown();
    l.stdio_safe.store(params.stdio_safe(), Ordering::Relaxed);
    // -D NAME.FLAG=N sets the plugin's `int NAME_debug_FLAG`.
    params.debug_flags().apply(&l.name, |flag, value| {
        let sym = format!("{}_debug_{}", l.name, flag).replace(['.', '-'], "_");
        let Ok(sym) = CString::new(sym) else { return false };
        // SAFETY: looking a symbol up in our handle.
        let p = unsafe { libc::dlsym(l.lib.0, sym.as_ptr()) };
        if p.is_null() {
            return false;
        }
        // SAFETY: nbdkit-plugin(3): debug flags are global ints.
        unsafe { *p.cast::<c_int>() = value };
        true
    });
    configure(l, params.take_rest())?;
    if let Some(f) = l.raw.config_complete {
        // SAFETY: a callback with no arguments.
        call(None, || unsafe { f() }).start("config_complete")?;
    }
    if let Some(model) = plugin_thread_model(l)? {
        params.thread_model_choice().narrow(model);
    }
    Ok(Arc::new(CPlugin { l }))
}

/// The plugin's `.thread_model`, if it has one.
fn plugin_thread_model(l: &Loaded) -> std::result::Result<Option<ThreadModel>, StartError> {
    let Some(f) = l.raw.thread_model else { return Ok(None) };
    // SAFETY: a callback with no arguments.
    let c = call(None, || unsafe { f() });
    if c.value < 0 {
        return Err(StartError(c.message("thread_model")));
    }
    let model = thread_model_of(c.value)
        .ok_or_else(|| StartError(format!("{}: .thread_model returned {}", l.name, c.value)))?;
    Ok(Some(model))
}

/// Each parameter to `.config`, in order.
fn configure(l: &Loaded, params: Vec<(String, String)>) -> std::result::Result<(), StartError> {
    for (key, value) in params {
        let Some(config) = l.raw.config else {
            return Err(StartError(format!(
                "{}: this plugin does not need command line configuration",
                l.path
            )));
        };
        // Plugins keep these pointers (C's point into argv): they live
        // as long as the process.
        let k: &'static CStr = Box::leak(cstring(&key)?.into_boxed_c_str());
        let v: &'static CStr = Box::leak(cstring(&value)?.into_boxed_c_str());
        // SAFETY: two C strings that are never freed.
        call(None, || unsafe { config(k.as_ptr(), v.as_ptr()) }).start("config")?;
    }
    Ok(())
}

fn cstring(s: &str) -> std::result::Result<CString, StartError> {
    CString::new(s).map_err(|_| StartError(format!("parameter {s:?} contains a NUL byte")))
}

/// `--dump-plugin` for a C plugin, as C prints it: the parameters go to
/// `.config` first (a language plugin loads its script there), then our
/// lines, then the plugin's own (it prints them itself, on C's stdout).
/// `filtered` is the filters' thread model, if any.
pub fn dump_plugin(
    filtered: Option<ThreadModel>, params: &[(String, String)],
) -> std::result::Result<String, StartError> {
    use std::io::Write;
    let Some(l) = loaded() else { return Ok(String::new()) };
    let r = &l.raw;
    configure(l, params.to_vec())?;
    let mut thread_model = filtered.map_or(l.info.thread_model, |f| f.min(l.info.thread_model));
    if let Some(m) = plugin_thread_model(l)? {
        thread_model = thread_model.min(m);
    }
    let version = if r.version.is_null() {
        String::new()
    } else {
        // SAFETY: a static C string of the plugin's.
        format!("version={}\n", unsafe { CStr::from_ptr(r.version) }.to_string_lossy())
    };
    let path = std::fs::canonicalize(&l.path).map_or(l.path.clone(), |p| p.display().to_string());
    let mut s = format!(
        "path={path}\nname={}\n{version}api_version={}\nstruct_size={}\nmax_thread_model={}\nthread_model={}\nerrno_is_preserved={}\n",
        l.name,
        r.api_version,
        r.struct_size,
        l.info.thread_model.name(),
        thread_model.name(),
        u8::from(r.errno_is_preserved != 0),
    );
    if let Some(k) = l.info.magic_config_key {
        s.push_str(&format!("magic_config_key={k}\n"));
    }
    let has = [
        ("longname", !r.longname.is_null()),
        ("description", !r.description.is_null()),
        ("load", r.load.is_some()),
        ("unload", r.unload.is_some()),
        ("dump_plugin", r.dump_plugin.is_some()),
        ("config", r.config.is_some()),
        ("config_complete", r.config_complete.is_some()),
        ("config_help", !r.config_help.is_null()),
        ("thread_model", r.thread_model.is_some()),
        ("get_ready", r.get_ready.is_some()),
        ("after_fork", r.after_fork.is_some()),
        ("cleanup", r.cleanup.is_some()),
        ("preconnect", r.preconnect.is_some()),
        ("list_exports", r.list_exports.is_some()),
        ("default_export", r.default_export.is_some()),
        ("open", r.open.is_some()),
        ("close", r.close.is_some()),
        ("export_description", r.export_description.is_some()),
        ("get_size", r.get_size.is_some()),
        ("block_size", r.block_size.is_some()),
        ("can_write", r.can_write.is_some()),
        ("can_flush", r.can_flush.is_some()),
        ("is_rotational", r.is_rotational.is_some()),
        ("can_trim", r.can_trim.is_some()),
        ("can_zero", r.can_zero.is_some()),
        ("can_fast_zero", r.can_fast_zero.is_some()),
        ("can_extents", r.can_extents.is_some()),
        ("can_fua", r.can_fua.is_some()),
        ("can_multi_conn", r.can_multi_conn.is_some()),
        ("can_cache", r.can_cache.is_some()),
        ("pread", r.pread.is_some()),
        ("pwrite", r.pwrite.is_some()),
        ("flush", r.flush.is_some()),
        ("trim", r.trim.is_some()),
        ("zero", r.zero.is_some()),
        ("extents", r.extents.is_some()),
        ("cache", r.cache.is_some()),
        ("_pread_v1", r.pread_v1.is_some()),
        ("_pwrite_v1", r.pwrite_v1.is_some()),
        ("_flush_v1", r.flush_v1.is_some()),
        ("_trim_v1", r.trim_v1.is_some()),
        ("_zero_v1", r.zero_v1.is_some()),
    ];
    for (n, yes) in has {
        if yes {
            s.push_str(&format!("has_{n}=1\n"));
        }
    }
    if let Some(f) = r.dump_plugin {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
        s.clear();
        // SAFETY: the plugin's dump callback prints on C's stdout, which
        // we flush after it.
        unsafe {
            f();
            libc::fflush(std::ptr::null_mut());
        }
    }
    Ok(s)
}

/// The `--help` text for a C plugin, as C lays it out.
pub fn help() -> Option<String> {
    let l = loaded()?;
    let cstr = |p: *const c_char| -> Option<String> {
        // SAFETY: the plugin's strings are NULL or static C strings.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    let mut s = format!("plugin: {}", l.name);
    if let Some(long) = cstr(l.raw.longname) {
        s.push_str(&format!(" ({long})"));
    }
    s.push_str(&format!("\n({})\n", l.path));
    for part in [cstr(l.raw.description), cstr(l.raw.config_help)].into_iter().flatten() {
        s.push_str(&part);
        s.push('\n');
    }
    Some(s)
}

/// The plugin's `.version`, for `NAME --version`.
pub fn version() -> Option<String> {
    let l = loaded()?;
    if l.raw.version.is_null() {
        return None;
    }
    // SAFETY: a static C string of the plugin's.
    Some(unsafe { CStr::from_ptr(l.raw.version) }.to_string_lossy().into_owned())
}

// ----------------------------------------------------------------- serving

/// The loaded plugin as one of ours.
struct CPlugin {
    l: &'static Loaded,
}

impl CPlugin {
    /// A connection context for calls outside `open` (no export yet).
    fn bare(&self, tls: bool, peer: Peer) -> Arc<Conn> {
        Arc::new(Conn {
            export: CString::default(),
            tls,
            peer,
            interned: Mutex::default(),
            bare: true,
        })
    }
}

#[async_trait]
impl Plugin for CPlugin {
    async fn open(&self, args: &OpenArgs<'_>) -> Result<Arc<dyn Handle>> {
        let conn = Arc::new(Conn {
            export: CString::new(args.export).unwrap_or_default(),
            tls: args.client.tls,
            peer: args.client.peer.clone(),
            interned: Mutex::default(),
            bare: false,
        });
        let open = self.l.raw.open.expect("checked at load");
        let ro = c_int::from(args.readonly);
        // SAFETY: the plugin's open callback.
        let c = blocking(|| call(Some(&conn), || Ptr(unsafe { open(ro) })));
        if c.value.0.is_null() {
            return Err(c.error("open"));
        }
        c.log_messages();
        Ok(Arc::new(CHandle { l: self.l, h: c.value, conn, closed: AtomicBool::new(false) }))
    }

    fn get_ready(&self, _thread_model: ThreadModel) -> std::result::Result<(), StartError> {
        match self.l.raw.get_ready {
            // SAFETY: a callback with no arguments.
            Some(f) => call(None, || unsafe { f() }).start("get_ready"),
            None => Ok(()),
        }
    }

    fn after_fork(&self) -> std::result::Result<(), StartError> {
        match self.l.raw.after_fork {
            // SAFETY: as above.
            Some(f) => call(None, || unsafe { f() }).start("after_fork"),
            None => Ok(()),
        }
    }

    fn unload(&self) {
        // Requests that outlived the shutdown's grace period may still be
        // inside the plugin: give them a moment, and unload nothing from
        // under them.
        UNLOADING.store(true, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ACTIVE.load(Ordering::SeqCst) > 0 {
            if std::time::Instant::now() > deadline {
                self.l.log().error(&format!(
                    "{}: calls still running at exit: not calling .cleanup and .unload",
                    self.l.name
                ));
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // C's order: cleanup, then unload.
        if let Some(f) = self.l.raw.cleanup {
            // SAFETY: as above.
            call(None, || unsafe { f() }).log_messages();
        }
        if let Some(f) = self.l.raw.unload {
            // SAFETY: as above.
            unsafe { f() };
        }
    }

    async fn preconnect(&self, readonly: bool, client: &Client) -> Result<()> {
        let Some(f) = self.l.raw.preconnect else { return Ok(()) };
        let conn = self.bare(client.tls, client.peer.clone());
        let ro = c_int::from(readonly);
        // SAFETY: the plugin's preconnect callback.
        blocking(|| call(Some(&conn), || unsafe { f(ro) })).result("preconnect").map(drop)
    }

    async fn list_exports(&self, readonly: bool, is_tls: bool) -> Result<Vec<ExportEntry>> {
        let mut call_list = ExportsCall { tag: EXPORTS_TAG, list: Vec::new() };
        match self.l.raw.list_exports {
            Some(f) => {
                let conn = self.bare(is_tls, Peer::Unknown);
                let (ro, tls) = (c_int::from(readonly), c_int::from(is_tls));
                let p = (&mut call_list as *mut ExportsCall).cast::<c_void>();
                // SAFETY: the list outlives the call; nbdkit_add_export
                // casts the pointer back.
                blocking(|| call(Some(&conn), || unsafe { f(ro, tls, p) }))
                    .result("list_exports")?;
            }
            None => call_list.list.push(None),
        }
        let mut out = Vec::with_capacity(call_list.list.len());
        for e in call_list.list {
            out.push(match e {
                Some(e) => e,
                None => ExportEntry {
                    name: self.default_export(readonly, is_tls).await?,
                    description: None,
                },
            });
        }
        Ok(out)
    }

    async fn default_export(&self, readonly: bool, is_tls: bool) -> Result<String> {
        let Some(f) = self.l.raw.default_export else { return Ok(String::new()) };
        let conn = self.bare(is_tls, Peer::Unknown);
        let (ro, tls) = (c_int::from(readonly), c_int::from(is_tls));
        // SAFETY: the plugin's default_export callback; the string it
        // returns is copied before the connection's interned strings go.
        let c = blocking(|| {
            call(Some(&conn), || {
                let s = unsafe { f(ro, tls) };
                (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
            })
        });
        match &c.value {
            Some(s) => {
                c.log_messages();
                Ok(s.clone())
            }
            None => Err(c.error("default_export")),
        }
    }
}

/// The plugin's handle: an opaque pointer.
#[derive(Clone, Copy)]
struct Ptr(*mut c_void);

/// One connection's handle.
struct CHandle {
    l: &'static Loaded,
    h: Ptr,
    conn: Arc<Conn>,
    closed: AtomicBool,
}

// SAFETY: the server calls the plugin only as its thread model allows.
unsafe impl Send for CHandle {}
// SAFETY: as above.
unsafe impl Sync for CHandle {}

/// Most one call covers of a 64-bit trim, zero or cache (the callbacks
/// take 32-bit counts): whole 4 KiB blocks.
const PIECE: u64 = 0xffff_f000;

impl CHandle {
    /// Call `f` with the handle, on a thread that may block.
    fn run<T>(&self, f: impl FnOnce(*mut c_void) -> T) -> Call<T> {
        let h = self.h.0;
        blocking(|| call(Some(&self.conn), || f(h)))
    }

    /// A `can_*` callback's answer, or `default` when there is none.
    fn can(
        &self, f: Option<unsafe extern "C" fn(*mut c_void) -> c_int>, default: c_int, what: &str,
    ) -> Result<c_int> {
        match f {
            // SAFETY: a can_* callback taking the handle.
            Some(f) => self.run(|h| unsafe { f(h) }).result(what),
            None => Ok(default),
        }
    }

    /// Split `[offset, offset+count)` into pieces a 32-bit count can say.
    fn pieces(
        &self, count: u64, offset: u64, what: &str,
        mut f: impl FnMut(*mut c_void, u32, u64) -> c_int,
    ) -> Result<()> {
        let mut done = 0;
        while done < count {
            let n = (count - done).min(PIECE);
            self.run(|h| f(h, n as u32, offset + done)).result(what)?;
            done += n;
        }
        Ok(())
    }
}

impl CHandle {
    /// `.close`, the first time only: at the end of the connection, or
    /// when the handle is dropped without one (a failed handshake).
    fn close_once(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) && !UNLOADING.load(Ordering::SeqCst) {
            if let Some(f) = self.l.raw.close {
                // SAFETY: closing the handle the plugin gave us, once.
                self.run(|h| unsafe { f(h) }).log_messages();
            }
        }
    }
}

impl Drop for CHandle {
    fn drop(&mut self) {
        self.close_once();
    }
}

#[async_trait]
impl Handle for CHandle {
    async fn size(&self) -> Result<u64> {
        let f = self.l.raw.get_size.expect("checked at load");
        // SAFETY: the plugin's get_size callback.
        let c = self.run(|h| unsafe { f(h) });
        if c.value < 0 {
            return Err(c.error("get_size"));
        }
        c.log_messages();
        Ok(c.value as u64)
    }

    async fn caps(&self) -> Result<Caps> {
        let r = &self.l.raw;
        let v2 = self.l.v2();
        let has = |v2f: bool, v1f: bool| c_int::from(if v2 { v2f } else { v1f });
        let write =
            self.can(r.can_write, has(r.pwrite.is_some(), r.pwrite_v1.is_some()), "can_write")?
                != 0;
        let flush =
            self.can(r.can_flush, has(r.flush.is_some(), r.flush_v1.is_some()), "can_flush")? != 0;
        let rotational = self.can(r.is_rotational, 0, "is_rotational")? != 0;
        let trim =
            self.can(r.can_trim, has(r.trim.is_some(), r.trim_v1.is_some()), "can_trim")? != 0;
        let zero_cb = if v2 { r.zero.is_some() } else { r.zero_v1.is_some() };
        // .can_zero says whether to call .zero; without .zero the server
        // writes zeroes itself.
        let zero = if !write {
            Zero::None
        } else if r.can_zero.is_some() {
            if self.can(r.can_zero, 0, "can_zero")? != 0 && zero_cb {
                Zero::Native
            } else {
                Zero::Emulate
            }
        } else if zero_cb {
            Zero::Native
        } else {
            Zero::Emulate
        };
        // As C: fast zeroes are fast failures when .zero would not be
        // called (version 1 plugins have no fast-zero flag to pass).
        let fast_zero = match r.can_fast_zero {
            Some(_) => self.can(r.can_fast_zero, 0, "can_fast_zero")? != 0,
            None => !(v2 && r.zero.is_some()) || zero != Zero::Native,
        };
        let fua = match r.can_fua {
            Some(_) => match self.can(r.can_fua, 0, "can_fua")? {
                ffi::NONE => Fua::None,
                ffi::NATIVE if v2 => Fua::Native,
                _ => Fua::Emulate,
            },
            None if flush => Fua::Emulate,
            None => Fua::None,
        };
        let multi_conn = self.can(r.can_multi_conn, 0, "can_multi_conn")? != 0;
        let extents =
            self.can(r.can_extents, c_int::from(r.extents.is_some()), "can_extents")? != 0;
        let cache = match r.can_cache {
            Some(_) => match self.can(r.can_cache, 0, "can_cache")? {
                ffi::NONE => Cache::None,
                ffi::NATIVE if r.cache.is_some() => Cache::Native,
                _ => Cache::Emulate,
            },
            None if r.cache.is_some() => Cache::Native,
            None => Cache::None,
        };
        Ok(Caps {
            write,
            flush,
            fua,
            trim,
            zero,
            fast_zero,
            cache,
            extents,
            multi_conn,
            rotational,
        })
    }

    async fn block_size(&self) -> Result<Option<BlockSize>> {
        let Some(f) = self.l.raw.block_size else { return Ok(None) };
        let (mut min, mut pref, mut max) = (0u32, 0u32, 0u32);
        // SAFETY: three writable u32s for the callback.
        self.run(|h| unsafe { f(h, &mut min, &mut pref, &mut max) }).result("block_size")?;
        if min == 0 && pref == 0 && max == 0 {
            return Ok(None);
        }
        let ok = min.is_power_of_two()
            && min <= 65536
            && pref.is_power_of_two()
            && pref >= 512.max(min)
            && max >= pref
            && (max == u32::MAX || max % min == 0);
        if !ok {
            return Err(Error::new(
                Errno::Inval,
                format!(
                    "{}: .block_size returned invalid constraints: minimum={min} preferred={pref} maximum={max}",
                    self.l.name
                ),
            ));
        }
        Ok(Some(BlockSize::new(min, pref, max)))
    }

    fn description(&self) -> Option<String> {
        let f = self.l.raw.export_description?;
        // SAFETY: the callback returns NULL or a C string that lives at
        // least as long as the connection; we copy it at once.
        let c = self.run(|h| {
            let s = unsafe { f(h) };
            (!s.is_null()).then(|| unsafe { CStr::from_ptr(s) }.to_string_lossy().into_owned())
        });
        c.log_messages();
        c.value
    }

    async fn close(&self) {
        self.close_once();
    }

    async fn pread(&self, buf: &mut [u8], offset: u64, _f: Flags) -> Result<()> {
        let (p, n) = (buf.as_mut_ptr().cast::<c_void>(), buf.len() as u32);
        let r = &self.l.raw;
        let c = if self.l.v2() {
            let f = r.pread.expect("checked at load");
            // SAFETY: `buf` is writable for `n` bytes for the call.
            self.run(|h| unsafe { f(h, p, n, offset, 0) })
        } else {
            let f = r.pread_v1.expect("checked at load");
            // SAFETY: as above.
            self.run(|h| unsafe { f(h, p, n, offset) })
        };
        c.result("pread").map(drop)
    }

    async fn pwrite(&self, buf: &[u8], offset: u64, fl: Flags) -> Result<()> {
        let (p, n) = (buf.as_ptr().cast::<c_void>(), buf.len() as u32);
        let r = &self.l.raw;
        let c = match (self.l.v2(), r.pwrite, r.pwrite_v1) {
            (true, Some(f), _) => {
                let flags = if fl.fua { ffi::FLAG_FUA } else { 0 };
                // SAFETY: `buf` is readable for `n` bytes for the call.
                self.run(|h| unsafe { f(h, p, n, offset, flags) })
            }
            // SAFETY: as above.
            (false, _, Some(f)) => self.run(|h| unsafe { f(h, p, n, offset) }),
            _ => return Err(Error::new(Errno::Perm, "the plugin cannot write")),
        };
        c.result("pwrite").map(drop)
    }

    async fn flush(&self, _f: Flags) -> Result<()> {
        let r = &self.l.raw;
        let c = match (self.l.v2(), r.flush, r.flush_v1) {
            // SAFETY: the plugin's flush callback.
            (true, Some(f), _) => self.run(|h| unsafe { f(h, 0) }),
            // SAFETY: as above.
            (false, _, Some(f)) => self.run(|h| unsafe { f(h) }),
            _ => return Err(Error::new(Errno::Inval, "the plugin cannot flush")),
        };
        c.result("flush").map(drop)
    }

    async fn trim(&self, count: u64, offset: u64, fl: Flags) -> Result<()> {
        let r = &self.l.raw;
        match (self.l.v2(), r.trim, r.trim_v1) {
            (true, Some(f), _) => {
                let flags = if fl.fua { ffi::FLAG_FUA } else { 0 };
                // SAFETY: the plugin's trim callback.
                self.pieces(count, offset, "trim", |h, n, o| unsafe { f(h, n, o, flags) })
            }
            // SAFETY: as above.
            (false, _, Some(f)) => {
                self.pieces(count, offset, "trim", |h, n, o| unsafe { f(h, n, o) })
            }
            _ => Err(Error::new(Errno::Inval, "the plugin cannot trim")),
        }
    }

    async fn zero(&self, count: u64, offset: u64, fl: Flags) -> Result<()> {
        let r = &self.l.raw;
        match (self.l.v2(), r.zero, r.zero_v1) {
            (true, Some(f), _) => {
                let mut flags = 0;
                if fl.may_trim {
                    flags |= ffi::FLAG_MAY_TRIM;
                }
                if fl.fua {
                    flags |= ffi::FLAG_FUA;
                }
                if fl.fast_zero {
                    flags |= ffi::FLAG_FAST_ZERO;
                }
                // SAFETY: the plugin's zero callback.
                self.pieces(count, offset, "zero", |h, n, o| unsafe { f(h, n, o, flags) })
            }
            (false, _, Some(f)) => {
                let may_trim = c_int::from(fl.may_trim);
                // SAFETY: as above.
                self.pieces(count, offset, "zero", |h, n, o| unsafe { f(h, n, o, may_trim) })
            }
            _ => Err(Error::new(Errno::NotSup, "the plugin cannot zero")),
        }
    }

    async fn extents(&self, count: u64, offset: u64, fl: Flags, ext: &mut Extents) -> Result<()> {
        let Some(f) = self.l.raw.extents else {
            ext.add(offset, count, crate::backend::ExtentFlags::DATA);
            return Ok(());
        };
        let flags = if fl.req_one { ffi::FLAG_REQ_ONE } else { 0 };
        let n = count.min(PIECE) as u32;
        let mut call_ext = ExtentsCall { tag: EXTENTS_TAG, ext, next: None };
        let p = (&mut call_ext as *mut ExtentsCall<'_>).cast::<c_void>();
        // SAFETY: `call_ext` outlives the call; nbdkit_add_extent casts
        // the pointer back.
        self.run(|h| unsafe { f(h, n, offset, flags, p) }).result("extents").map(drop)
    }

    async fn cache(&self, count: u64, offset: u64, _f: Flags) -> Result<()> {
        let Some(f) = self.l.raw.cache else { return Ok(()) };
        // SAFETY: the plugin's cache callback.
        self.pieces(count, offset, "cache", |h, n, o| unsafe { f(h, n, o, 0) })
    }
}

/// What `.extents` fills through `nbdkit_add_extent`: our collector, and
/// where the next extent must start (C requires them contiguous).
#[repr(C)]
pub(crate) struct ExtentsCall<'a> {
    /// [`EXTENTS_TAG`]: the list a plugin passes back is checked to be
    /// one of these before it is used.
    tag: u64,
    ext: &'a mut Extents,
    next: Option<u64>,
}

/// What `.list_exports` fills through `nbdkit_add_export`: the exports,
/// None standing for the default export.
#[repr(C)]
pub(crate) struct ExportsCall {
    /// [`EXPORTS_TAG`], as above.
    tag: u64,
    list: Vec<Option<ExportEntry>>,
}

/// The first words of the two lists a plugin is handed, so that a plugin
/// passing one where the other belongs gets an error, not a corrupted
/// list.
pub(crate) const EXTENTS_TAG: u64 = u64::from_be_bytes(*b"nbdkexts");
pub(crate) const EXPORTS_TAG: u64 = u64::from_be_bytes(*b"nbdkexps");
