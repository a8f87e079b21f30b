//! - Link the `nbdkit` binary as a position-dependent executable: a PIE's
//!   33,000 relocations are written at every start, which costs about
//!   0.45 ms of a captive server's few milliseconds, and makes the forks
//!   of start-up dearer too.
//! - Compile the C part of the plugin ABI (`shim.c`: the variadic
//!   `nbdkit_error` and friends), and export every `nbdkit_*` function from
//!   the binary, so that the C plugins it loads find them.

fn main() {
    println!("cargo:rerun-if-changed=src/plugins/cabi/shim.c");
    cc::Build::new()
        .file("src/plugins/cabi/shim.c")
        .warnings(true)
        .extra_warnings(true)
        .compile("nbdkit_cabi_shim");
    println!("cargo:rustc-link-arg-bins=-no-pie");
    println!("cargo:rustc-link-arg-bins=-Wl,--export-dynamic-symbol=nbdkit_*");
}
