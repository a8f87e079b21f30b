//! The `nbdkit_*` functions a C plugin calls (nbdkit-plugin(3)), with C
//! linkage and C's ownership rules: strings a plugin gets back from
//! `absolute_path`, `realpath` and `read_password` are `malloc`ed and the
//! plugin frees them; interned strings live until the connection ends (or,
//! outside a connection, until the plugin is unloaded). Each failure
//! reports one `nbdkit_error` and returns -1 (or NULL), as in C.
//!
//! The variadic ones (`nbdkit_error`, `nbdkit_debug`, `nbdkit_printf_intern`
//! and their `v` forms) and the integer parsers are in `shim.c`.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::atomic::Ordering;

use super::{context, error_message, intern, loaded, ExportsCall, ExtentsCall};
use super::{EXPORTS_TAG, EXTENTS_TAG};
use crate::backend::{ExportEntry, ExtentFlags, Peer};

extern "C" {
    fn nbdkit_error(fs: *const c_char, ...);
}

/// Report `msg` as the plugin's error (a plain string, not a format).
pub(super) fn error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    // SAFETY: "%s" with one valid C string.
    unsafe { nbdkit_error(c"%s".as_ptr(), c.as_ptr()) };
}

/// A C string argument, or None for NULL.
///
/// # Safety
/// `s` is NULL or a NUL-terminated string that outlives the result.
unsafe fn arg<'a>(s: *const c_char) -> Option<&'a str> {
    if s.is_null() {
        None
    } else {
        Some(unsafe { CStr::from_ptr(s) }.to_str().unwrap_or(""))
    }
}

/// A path argument: None (after reporting `empty`) if NULL or empty.
///
/// # Safety
/// As [`arg`].
unsafe fn path_arg<'a>(s: *const c_char, empty: &str) -> Option<&'a str> {
    match unsafe { arg(s) } {
        Some(p) if !p.is_empty() => Some(p),
        _ => {
            error(empty);
            None
        }
    }
}

/// A `malloc`ed copy of `s`, for the plugin to `free`.
fn malloc_string(s: &[u8]) -> *mut c_char {
    // SAFETY: we allocate len+1 bytes and write exactly that many.
    unsafe {
        let p = libc::malloc(s.len() + 1).cast::<u8>();
        if p.is_null() {
            return std::ptr::null_mut();
        }
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        *p.add(s.len()) = 0;
        p.cast()
    }
}

/// Set the errno of the request's failure.
#[no_mangle]
pub extern "C" fn nbdkit_set_error(err: c_int) {
    super::set_error(err);
}

/// The export name the client asked for, in a connection's callbacks.
#[no_mangle]
pub extern "C" fn nbdkit_export_name() -> *const c_char {
    match context() {
        Some(c) => c.export.as_ptr(),
        None => {
            error("no connection in this thread");
            std::ptr::null()
        }
    }
}

/// Whether the client is using TLS, in a connection's callbacks.
#[no_mangle]
pub extern "C" fn nbdkit_is_tls() -> c_int {
    match context() {
        Some(c) => c_int::from(c.tls),
        None => {
            error("no connection in this thread");
            -1
        }
    }
}

/// Whether the plugin may use stdin and stdout (not with `-s`).
#[no_mangle]
pub extern "C" fn nbdkit_stdio_safe() -> c_int {
    c_int::from(loaded().is_some_and(|l| l.stdio_safe.load(Ordering::Relaxed)))
}

/// `path` made absolute against the current directory (not resolved).
///
/// # Safety
/// `path` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_absolute_path(path: *const c_char) -> *mut c_char {
    use std::os::unix::ffi::OsStrExt;
    let Some(p) =
        (unsafe { path_arg(path, "cannot convert null or empty path to an absolute path") })
    else {
        return std::ptr::null_mut();
    };
    let abs = match std::path::absolute(p) {
        Ok(a) => a,
        Err(e) => {
            error(&format!("get_current_dir_name: {}", crate::error::io_message(&e)));
            return std::ptr::null_mut();
        }
    };
    malloc_string(abs.as_os_str().as_bytes())
}

/// `path` resolved (symlinks, `..`): it must exist.
///
/// # Safety
/// `path` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_realpath(path: *const c_char) -> *mut c_char {
    use std::os::unix::ffi::OsStrExt;
    let Some(p) = (unsafe { path_arg(path, "cannot resolve a null or empty path") }) else {
        return std::ptr::null_mut();
    };
    match std::fs::canonicalize(p) {
        Ok(r) => malloc_string(r.as_os_str().as_bytes()),
        Err(e) => {
            error(&format!("realpath: {p}: {}", crate::error::io_message(&e)));
            std::ptr::null_mut()
        }
    }
}

/// nbdkit's size syntax (`1M`, `2G`...), or -1.
///
/// # Safety
/// `s` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_size(s: *const c_char) -> i64 {
    let Some(s) = (unsafe { arg(s) }) else {
        error("could not parse size string (null)");
        return -1;
    };
    match crate::size::parse_size(s) {
        Ok(n) if n <= i64::MAX as u64 => n as i64,
        Ok(_) => {
            error(&format!("size ({s}) exceeds maximum value"));
            -1
        }
        Err(e) => {
            error(&e.to_string());
            -1
        }
    }
}

/// A boolean (`1`, `true`, `yes`, `on`... or their opposites), or -1.
///
/// # Safety
/// `s` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_bool(s: *const c_char) -> c_int {
    let s = unsafe { arg(s) }.unwrap_or("");
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "t" | "yes" | "y" | "on" => 1,
        "0" | "false" | "f" | "no" | "n" | "off" => 0,
        _ => {
            error(&format!("could not decipher boolean ({s})"));
            -1
        }
    }
}

/// A probability: `N`, `N%` or `N/M`, between 0 and 1 (newer nbdkit).
///
/// # Safety
/// `what` and `s` are C strings; `r` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_probability(
    what: *const c_char, s: *const c_char, r: *mut f64,
) -> c_int {
    let what = unsafe { arg(what) }.unwrap_or("probability");
    let s = unsafe { arg(s) }.unwrap_or("");
    let bad = || {
        error(&format!("{what}: could not parse '{s}'"));
        -1
    };
    let num = |t: &str| t.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let v = if let Some(p) = s.strip_suffix('%') {
        num(p).map(|v| v / 100.0)
    } else if let Some((a, b)) = s.split_once('/') {
        match (num(a), num(b)) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        }
    } else {
        num(s)
    };
    match v {
        Some(v) if (0.0..=1.0).contains(&v) => {
            if !r.is_null() {
                // SAFETY: the caller gave a writable pointer.
                unsafe { *r = v };
            }
            0
        }
        Some(_) => {
            error(&format!("{what}: probability out of range, should be [0..1]"));
            -1
        }
        None => bad(),
    }
}

/// A delay: seconds with an optional `s`, `ms`, `us` or `ns` suffix
/// (newer nbdkit).
///
/// # Safety
/// `what` and `s` are C strings; `sec` and `nsec` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_parse_delay(
    what: *const c_char, s: *const c_char, sec: *mut c_uint, nsec: *mut c_uint,
) -> c_int {
    let what = unsafe { arg(what) }.unwrap_or("delay");
    let s = unsafe { arg(s) }.unwrap_or("");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix("ns") {
        (n, 1e-9)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 && v * scale < f64::from(u32::MAX) => {
            let total = v * scale;
            // SAFETY: the caller gave writable pointers (or NULL).
            unsafe {
                if !sec.is_null() {
                    *sec = total.trunc() as c_uint;
                }
                if !nsec.is_null() {
                    *nsec = ((total.fract() * 1e9).round() as c_uint).min(999_999_999);
                }
            }
            0
        }
        _ => {
            error(&format!("{what}: could not parse delay '{s}'"));
            -1
        }
    }
}

/// A password from `value`: `-` asks on the terminal, `-FD` reads a file
/// descriptor, `+FILE` reads a file, anything else is the password. The
/// plugin frees `*password`.
///
/// # Safety
/// `value` is a C string; `password` is writable.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_read_password(
    value: *const c_char, password: *mut *mut c_char,
) -> c_int {
    let value = unsafe { arg(value) }.unwrap_or("");
    let got = read_password(value);
    match got {
        Ok(p) => {
            let s = malloc_string(p.as_bytes());
            // SAFETY: the caller gave a writable pointer.
            unsafe { *password = s };
            if s.is_null() {
                error("strdup: Cannot allocate memory");
                return -1;
            }
            0
        }
        Err(m) => {
            error(&m);
            // SAFETY: as above.
            unsafe { *password = std::ptr::null_mut() };
            -1
        }
    }
}

fn read_password(value: &str) -> Result<String, String> {
    use std::io::{BufRead, Read};
    use std::os::fd::FromRawFd;
    let first_line = |text: &str| text.split('\n').next().unwrap_or("").to_string();
    if value == "-" {
        if !loaded().is_some_and(|l| l.stdio_safe.load(Ordering::Relaxed)) {
            return Err("stdin is not available for reading password".into());
        }
        // SAFETY: isatty on fd 0.
        if unsafe { libc::isatty(0) } == 0 {
            return Err("stdin is not a tty, cannot read password interactively".into());
        }
        eprint!("password: ");
        let echo_off = nix::sys::termios::tcgetattr(std::io::stdin()).ok();
        if let Some(t) = &echo_off {
            let mut quiet = t.clone();
            quiet.local_flags.remove(nix::sys::termios::LocalFlags::ECHO);
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSAFLUSH,
                &quiet,
            );
        }
        let mut line = String::new();
        let r = std::io::stdin().lock().read_line(&mut line);
        if let Some(t) = &echo_off {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSAFLUSH,
                t,
            );
        }
        eprintln!();
        r.map_err(|e| format!("could not read password from stdin: {e}"))?;
        return Ok(line.trim_end_matches(['\n', '\r']).to_string());
    }
    if let Some(fd) = value.strip_prefix('-') {
        let fd: i32 =
            fd.parse().map_err(|_| format!("could not parse file descriptor: {value}"))?;
        if fd <= 2 {
            return Err("cannot use password -FD for stdin/stdout/stderr".into());
        }
        // SAFETY: the user gave us this descriptor to read and own.
        let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
        let mut s = String::new();
        f.read_to_string(&mut s)
            .map_err(|e| format!("could not read password from {value}: {e}"))?;
        return Ok(first_line(&s));
    }
    if let Some(file) = value.strip_prefix('+') {
        let s = std::fs::read_to_string(file)
            .map_err(|e| format!("open {file}: {}", crate::error::io_message(&e)))?;
        return Ok(first_line(&s));
    }
    Ok(value.to_string())
}

/// Sleep, waking early (with an error) if the server shuts down.
#[no_mangle]
pub extern "C" fn nbdkit_nanosleep(sec: c_uint, nsec: c_uint) -> c_int {
    let total = std::time::Duration::new(u64::from(sec), nsec.min(999_999_999));
    let end = std::time::Instant::now() + total;
    loop {
        if loaded().is_some_and(|l| l.shutdown().requested()) {
            error("aborting sleep because of server shut down");
            super::set_error(libc::ESHUTDOWN);
            return -1;
        }
        if crate::backend::shutdown::connection_ending() {
            error("aborting sleep because of connection close or error");
            super::set_error(libc::ESHUTDOWN);
            return -1;
        }
        let now = std::time::Instant::now();
        if now >= end {
            return 0;
        }
        std::thread::sleep((end - now).min(std::time::Duration::from_millis(50)));
    }
}

/// Close the current client's connection: with `force`, at once;
/// otherwise once the requests in flight are answered (newer nbdkit).
#[no_mangle]
pub extern "C" fn nbdkit_disconnect(force: c_int) {
    if !crate::backend::shutdown::request_disconnect(force != 0) {
        error("nbdkit_disconnect: no connection in this thread");
    }
}

/// Ask the server to shut down, as a signal would.
#[no_mangle]
pub extern "C" fn nbdkit_shutdown() {
    if let Some(l) = loaded() {
        l.shutdown().request();
    }
}

/// The client's address: TCP clients only (as `getpeername` gives it).
///
/// # Safety
/// `addr` has room for `*addrlen` bytes.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_peer_name(addr: *mut libc::sockaddr, addrlen: *mut u32) -> c_int {
    let Some(c) = context() else {
        error("no connection in this thread");
        return -1;
    };
    let Peer::Tcp(a) = c.peer else {
        error("peername: the client is not on a TCP socket");
        return -1;
    };
    let storage = nix::sys::socket::SockaddrStorage::from(a);
    let len = nix::sys::socket::SockaddrLike::len(&storage) as usize;
    // SAFETY: we copy at most the room the caller says it has.
    unsafe {
        let room = *addrlen as usize;
        let src = nix::sys::socket::SockaddrLike::as_ptr(&storage).cast::<u8>();
        std::ptr::copy_nonoverlapping(src, addr.cast::<u8>(), len.min(room));
        *addrlen = len as u32;
    }
    0
}

/// The client's credentials (Unix sockets): pid, uid or gid.
fn peer_cred(what: fn(&crate::backend::Cred) -> i64) -> i64 {
    let Some(c) = context() else {
        error("no connection in this thread");
        return -1;
    };
    match &c.peer {
        Peer::Unix(Some(cred)) => what(cred),
        _ => {
            error("nbdkit_peer_pid, nbdkit_peer_uid and nbdkit_peer_gid can only be used on Unix domain sockets");
            -1
        }
    }
}

/// The client's process id (Unix sockets).
#[no_mangle]
pub extern "C" fn nbdkit_peer_pid() -> i64 {
    peer_cred(|c| i64::from(c.pid))
}

/// The client's user id (Unix sockets).
#[no_mangle]
pub extern "C" fn nbdkit_peer_uid() -> i64 {
    peer_cred(|c| i64::from(c.uid))
}

/// The client's group id (Unix sockets).
#[no_mangle]
pub extern "C" fn nbdkit_peer_gid() -> i64 {
    peer_cred(|c| i64::from(c.gid))
}

/// A copy of `s` that lives as long as the connection (or the plugin).
///
/// # Safety
/// `s` is NULL or a C string.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_strdup_intern(s: *const c_char) -> *const c_char {
    if s.is_null() {
        error("nbdkit_strdup_intern: no string given");
        return std::ptr::null();
    }
    // SAFETY: a C string, as the caller promises.
    intern(unsafe { CStr::from_ptr(s) }.to_bytes())
}

/// A copy of at most `n` bytes of `s`, interned.
///
/// # Safety
/// `s` is NULL or points to `n` readable bytes or a shorter C string.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_strndup_intern(s: *const c_char, n: usize) -> *const c_char {
    if s.is_null() {
        error("nbdkit_strndup_intern: no string given");
        return std::ptr::null();
    }
    // SAFETY: strnlen reads at most n bytes.
    let len = unsafe { libc::strnlen(s, n) };
    // SAFETY: those len bytes are readable.
    intern(unsafe { std::slice::from_raw_parts(s.cast::<u8>(), len) })
}

/// One extent, from the plugin's `.extents`: in order, contiguous.
///
/// # Safety
/// `ext` is the pointer the server passed to `.extents`.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_add_extent(
    ext: *mut c_void, offset: u64, length: u64, typ: u32,
) -> c_int {
    if ext.is_null() {
        error("nbdkit_add_extent: no extents list");
        return -1;
    }
    // SAFETY: the server passes a live `ExtentsCall` for the call's
    // duration; its tag is checked before anything else is read.
    if unsafe { *ext.cast::<u64>() } != EXTENTS_TAG {
        error("nbdkit_add_extent: that is not the extents list of this call");
        return -1;
    }
    let call = unsafe { &mut *ext.cast::<ExtentsCall<'_>>() };
    if call.next.is_some_and(|n| n != offset) {
        error("nbdkit_add_extent: extents must be added in ascending order and must be contiguous");
        return -1;
    }
    let Some(end) = offset.checked_add(length) else {
        error("nbdkit_add_extent: offset + length overflows");
        return -1;
    };
    call.next = Some(end);
    if length > 0 {
        call.ext.add(offset, length, ExtentFlags::from_bits_truncate(typ & 3));
    }
    0
}

/// The export list a plugin passed back, if it is one.
///
/// # Safety
/// `exports` is the pointer the server passed to `.list_exports` (its
/// tag is checked first).
unsafe fn exports_list<'a>(
    exports: *mut c_void, what: &str,
) -> Option<&'a mut Vec<Option<ExportEntry>>> {
    // SAFETY: a live `ExportsCall` for the call's duration, tag first.
    if unsafe { *exports.cast::<u64>() } != EXPORTS_TAG {
        error(&format!("{what}: that is not the export list of this call"));
        return None;
    }
    Some(&mut unsafe { &mut *exports.cast::<ExportsCall>() }.list)
}

/// One export, from the plugin's `.list_exports`.
///
/// # Safety
/// `exports` is the pointer the server passed; the strings are C strings
/// (the description may be NULL).
#[no_mangle]
pub unsafe extern "C" fn nbdkit_add_export(
    exports: *mut c_void, name: *const c_char, description: *const c_char,
) -> c_int {
    if exports.is_null() || name.is_null() {
        error("nbdkit_add_export: no export list or no name");
        return -1;
    }
    let Some(list) = (unsafe { exports_list(exports, "nbdkit_add_export") }) else {
        return -1;
    };
    let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
    if name.len() > 4096 {
        error("nbdkit_add_export: export name too long");
        return -1;
    }
    let description = unsafe { arg(description) }.map(str::to_string);
    list.push(Some(ExportEntry { name, description }));
    0
}

/// List the default export (its name comes from `.default_export`).
///
/// # Safety
/// `exports` is the pointer the server passed.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_use_default_export(exports: *mut c_void) -> c_int {
    if exports.is_null() {
        error("nbdkit_use_default_export: no export list");
        return -1;
    }
    let Some(list) = (unsafe { exports_list(exports, "nbdkit_use_default_export") }) else {
        return -1;
    };
    list.push(None);
    0
}

/// Part of the filter API (`nbdkit-filter.h`) that Debian's plugins
/// reference from shared cleanup code but never call on lists of ours: a
/// plugin never owns an extents list, so nothing is freed.
///
/// # Safety
/// Any pointer: it is not used.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_extents_free(ext: *mut c_void) {
    if !ext.is_null() {
        error("nbdkit_extents_free: a plugin cannot free the server's extents list");
    }
}

/// As [`nbdkit_extents_free`], for export lists.
///
/// # Safety
/// Any pointer: it is not used.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_exports_free(exports: *mut c_void) {
    if !exports.is_null() {
        error("nbdkit_exports_free: a plugin cannot free the server's export list");
    }
}

/// Hooks for shim.c's formatted messages.
pub(super) extern "C" fn hook_error(msg: *const c_char) {
    // SAFETY: shim.c passes a C string.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
    error_message(&msg);
}

pub(super) extern "C" fn hook_debug(msg: *const c_char) {
    // SAFETY: shim.c passes a C string.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy();
    if let Some(l) = loaded() {
        l.log().debug(&format!("{}: {msg}", l.name));
    }
}

pub(super) extern "C" fn hook_intern(s: *const c_char) -> *const c_char {
    // SAFETY: shim.c passes a C string.
    intern(unsafe { CStr::from_ptr(s) }.to_bytes())
}

/// Function addresses: raw pointers, which are not `Sync`, but never
/// written.
pub(super) struct Keep(pub [*const (); 28]);
// SAFETY: the array is immutable, and holds only function addresses.
unsafe impl Sync for Keep {}

/// Every function above, referenced so that the linker keeps them all in
/// the binary, where `-Wl,--export-dynamic-symbol=nbdkit_*` (build.rs)
/// makes them visible to the plugins we `dlopen`.
#[used]
pub(super) static KEEP: Keep = Keep([
    nbdkit_set_error as *const (),
    nbdkit_export_name as *const (),
    nbdkit_is_tls as *const (),
    nbdkit_stdio_safe as *const (),
    nbdkit_absolute_path as *const (),
    nbdkit_realpath as *const (),
    nbdkit_parse_size as *const (),
    nbdkit_parse_bool as *const (),
    nbdkit_parse_probability as *const (),
    nbdkit_parse_delay as *const (),
    nbdkit_read_password as *const (),
    nbdkit_nanosleep as *const (),
    nbdkit_shutdown as *const (),
    nbdkit_disconnect as *const (),
    nbdkit_peer_name as *const (),
    nbdkit_peer_pid as *const (),
    nbdkit_peer_uid as *const (),
    nbdkit_peer_gid as *const (),
    nbdkit_strdup_intern as *const (),
    nbdkit_strndup_intern as *const (),
    nbdkit_add_extent as *const (),
    nbdkit_add_export as *const (),
    nbdkit_use_default_export as *const (),
    nbdkit_extents_free as *const (),
    nbdkit_exports_free as *const (),
    hook_error as *const (),
    hook_debug as *const (),
    hook_intern as *const (),
]);
