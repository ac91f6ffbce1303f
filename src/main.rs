//! The `mnpflow` binary: parse, run, print the error chain once.

#![deny(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match mnpflow::cli::run() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
