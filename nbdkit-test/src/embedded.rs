//! The server compiled into the test executable: with no binary configured,
//! a disk is served by re-executing the running test executable with the
//! nbdkit command line. A load-time hook (an `.init_array` entry, run by
//! the dynamic loader before libtest's `main`) sees the request in the
//! environment, runs nbdkit, and exits: the test harness never starts in
//! that process.
//!
//! So every promise the guard makes still holds: the server is a fresh
//! process with the same command line as an installed nbdkit's
//! (`--exit-with-parent`, `-U -`, `--print-uri`), only its executable is
//! the test's own.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// Set (to [`TOKEN`]) in the environment of a re-executed test binary
/// that is to be nbdkit. Removed before the server starts, so nothing it
/// runs inherits it.
pub(crate) const ENV: &str = "NBDKIT_TEST_EMBEDDED_SERVER";

/// The value of [`ENV`]: a stray variable with another value is ignored.
pub(crate) const TOKEN: &str = "serve-v1";

/// What the child runs: the test executable itself.
pub(crate) fn executable() -> std::io::Result<PathBuf> {
    // Keep the hook in the link: it sits in this module, which is only
    // pulled into a test executable if something in it is used.
    std::hint::black_box(&HOOK);
    std::env::current_exe()
}

#[used]
#[link_section = ".init_array"]
static HOOK: extern "C" fn() = hook;

/// Runs at load time in every process of the test executable. Does nothing
/// unless asked to be nbdkit.
extern "C" fn hook() {
    // SAFETY: getenv with a NUL-terminated name; nothing else runs yet.
    let v = unsafe { libc::getenv(c"NBDKIT_TEST_EMBEDDED_SERVER".as_ptr()) };
    if v.is_null() {
        return;
    }
    // SAFETY: getenv returned a valid C string.
    if unsafe { std::ffi::CStr::from_ptr(v) }.to_bytes() != TOKEN.as_bytes() {
        return;
    }
    // SAFETY: as above; the process is still single-threaded.
    unsafe {
        libc::unsetenv(c"NBDKIT_TEST_EMBEDDED_SERVER".as_ptr());
        // What a Rust binary's runtime does before main, and what the
        // nbdkit binary relies on: a closed client is an error, not a
        // signal.
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
    // The arguments from the kernel (std's own copy may not be set up yet
    // at this point of loading).
    // Each argument ends with a NUL.
    let raw = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .skip(1)
        .map(|a| OsString::from_vec(a.to_vec()).to_string_lossy().into_owned())
        .collect();
    let code = nbdkit::main_with_args(&args);
    std::process::exit(i32::from(code));
}
