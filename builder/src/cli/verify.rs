//! `imgbuild verify DIR`: re-reads every artefact of a build and checks it carries the
//! manifest's root tree.

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use imgbuild::verify::verify;

use super::Failure;

/// Arguments of `verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The output directory of a build (it holds manifest.json).
    dir: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `verify`; exit 0 only when every artefact agrees.
pub fn run(args: VerifyArgs) -> Result<(), Failure> {
    let report = verify(&args.dir).map_err(Failure::input)?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(Failure::internal)?;
        println!("{text}");
    } else {
        println!("{} {}", report.image, report.rootfs_digest);
        for f in &report.files {
            let digest = f
                .digest
                .map(|d| {
                    format!(
                        " tree {}",
                        if d == report.rootfs_digest {
                            "same"
                        } else {
                            "DIFFERENT"
                        }
                    )
                })
                .unwrap_or_default();
            match &f.problem {
                None => println!("  ok    {:<8} {}{digest}", f.target, f.path),
                Some(p) => println!("  FAIL  {:<8} {}: {p}", f.target, f.path),
            }
        }
    }
    if report.ok() {
        Ok(())
    } else {
        let bad: Vec<&str> = report
            .files
            .iter()
            .filter(|f| !f.ok())
            .map(|f| f.path.as_str())
            .collect();
        Err(Failure::input(anyhow!(
            "{} artefact(s) differ from the manifest: {}",
            bad.len(),
            bad.join(", ")
        )))
    }
}
