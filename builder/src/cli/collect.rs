//! `imgbuild collect DISK`: prints what a guest wrote to its results disk, as JSON.

use std::path::PathBuf;

use clap::Args;
use imgbuild::collect::collect;

use super::Failure;

/// Arguments of `collect`.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// A results disk (raw image or VMDK) or a container's results file.
    disk: PathBuf,
}

/// Runs `collect`. An incomplete run is still printed (exit 0); the JSON says `complete: false`.
pub fn run(args: CollectArgs) -> Result<(), Failure> {
    let collected = collect(&args.disk).map_err(Failure::input)?;
    let text = serde_json::to_string_pretty(&collected).map_err(Failure::internal)?;
    println!("{text}");
    Ok(())
}
