//! The `nbdkit` binary: parse, run, report.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> =
        std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    ExitCode::from(nbdkit::main_with_args(&args))
}
