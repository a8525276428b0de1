//! The `imgbuild` command line: parses (clap), calls the library, maps errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // Every error of the library names its cause in its own message (the project's
            // style), so the alternate form, which appends the causes again, would repeat them.
            eprintln!("imgbuild: {}", failure.error);
            ExitCode::from(failure.code)
        }
    }
}
