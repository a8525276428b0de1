//! `imgbuild report RESULTS… [-o report.html]`: runs side by side, a table on stdout and an
//! HTML page with charts.

use std::path::PathBuf;

use clap::Args;
use imgbuild::report::{default_output, html, load, text, Comparison};

use super::Failure;

/// Arguments of `report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run records (`OUT/results/<engine>-<n>.json`) or directories holding them.
    #[arg(required = true, value_name = "RESULTS")]
    inputs: Vec<PathBuf>,
    /// The HTML page to write (default: report.html in the first input's directory).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Runs `report`.
pub fn run(args: ReportArgs) -> Result<(), Failure> {
    let runs = load(&args.inputs).map_err(Failure::input)?;
    let comparison = Comparison::new(runs);
    print!("{}", text::render(&comparison));
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| default_output(&args.inputs));
    let sources: Vec<String> = args
        .inputs
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let page = html::render_page(&comparison, &sources);
    std::fs::write(&output, page).map_err(|e| {
        Failure::internal(anyhow::anyhow!("cannot write {}: {e}", output.display()))
    })?;
    println!();
    println!("report: {}", output.display());
    Ok(())
}
