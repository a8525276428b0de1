//! The `imgbuild` command line: parses (clap), calls the library, maps errors to exit codes.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // Rust ignores SIGPIPE, which turns `imgbuild collect DISK | head` into a panic in println!.
    // A command-line tool should end quietly like cat does.
    // SAFETY: called first thing, before any other thread exists; SIG_DFL is a valid handler.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("imgbuild: {}", message(&failure.error));
            ExitCode::from(failure.code)
        }
    }
}

/// The error with its causes, each cause added only when the text so far does not already
/// say it (most of our messages name their source themselves).
fn message(error: &anyhow::Error) -> String {
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}
