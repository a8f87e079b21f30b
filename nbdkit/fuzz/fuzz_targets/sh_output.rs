//! `nbdkit::fuzz::sh_output` under libFuzzer (see that function for what it covers).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nbdkit::fuzz::sh_output(data));
