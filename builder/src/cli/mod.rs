//! Command-line arguments, one module per subcommand.

mod build;
mod collect;
mod report;
mod run;
mod verify;

use clap::{Parser, Subcommand};

/// An error with the exit code it maps to: 2 for bad usage or input, 1 for failures of the tool.
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub error: anyhow::Error,
}

impl Failure {
    /// Bad usage or input.
    pub fn input(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }

    /// A failure of the tool or its environment.
    pub fn internal(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 1,
            error: error.into(),
        }
    }
}

/// Builds one root filesystem and packages it identically for Xen, OpenVZ, VMware and QEMU.
///
/// `imgbuild --target all` builds the embedded default image; `imgbuild build --image FILE
/// --target xen` builds a definition of yours.
#[derive(Debug, Parser)]
#[command(name = "imgbuild", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: build::BuildArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an image for one or more targets.
    Build(build::BuildArgs),
    /// Check that every artefact of a build carries the same root tree.
    Verify(verify::VerifyArgs),
    /// Print the results a guest wrote to its results disk, as JSON.
    Collect(collect::CollectArgs),
    /// Boot a build on an engine (qemu, vmware, xen-image, openvz, host) and collect.
    Run(run::RunArgs),
    /// Put runs side by side: a table, and an HTML page with charts.
    Report(report::ReportArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Some(Command::Build(args)) => build::run(args),
        Some(Command::Verify(args)) => verify::run(args),
        Some(Command::Collect(args)) => collect::run(args),
        Some(Command::Run(args)) => run::run_cmd(args),
        Some(Command::Report(args)) => report::run(args),
        None if cli.build.targets.is_empty() => Err(Failure::input(anyhow::anyhow!(
            "name a target (--target xen|openvz|vmware|qemu|all) or a subcommand; see --help"
        ))),
        None => build::run(cli.build),
    }
}
