//! `imgbuild build` (and `imgbuild --target …` without a subcommand).

use std::path::PathBuf;

use anyhow::anyhow;
use clap::Args;
use imgbuild::build::{build, BuildOptions};
use imgbuild::definition::{load, LayerSpec, SetArg};
use imgbuild::target::parse_targets;

use super::Failure;

/// Arguments of `build`.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// Image definition (TOML); the embedded images/minimal.toml when absent.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Targets: xen, openvz, vmware, qemu or all (repeatable, or comma-separated).
    #[arg(long = "target", short = 't', value_name = "TARGET")]
    pub targets: Vec<String>,
    /// Output directory (default: out/<image name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Override a definition key: --set filesystem.size=2G, --set rootfs.tar=PATH.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Add a layer on top of the definition's: dir=PATH, tar=PATH, rpm=GLOB, deb=GLOB.
    #[arg(long = "layer", value_name = "KIND=PATH")]
    layers: Vec<String>,
    /// The static init binary to put in the image (default: imgbuild-init next to imgbuild).
    #[arg(long, value_name = "FILE")]
    init: Option<PathBuf>,
    /// Write the Xen root filesystem straight onto this partition or block device.
    #[arg(long, value_name = "DEVICE")]
    device: Option<PathBuf>,
    /// Directory where the Xen files will live on dom0 (absolute paths in the xl config).
    #[arg(long, value_name = "DIR")]
    xen_dir: Option<PathBuf>,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the manifest as JSON on stdout.
    #[arg(long)]
    json: bool,
}

fn layer_arg(text: &str) -> Result<LayerSpec, Failure> {
    let (kind, value) = text
        .split_once('=')
        .ok_or_else(|| Failure::input(anyhow!("--layer {text:?} is not KIND=PATH")))?;
    let cwd = std::env::current_dir().map_err(Failure::internal)?;
    let path = cwd.join(value);
    let mut layer = LayerSpec::default();
    match kind {
        "dir" => layer.dir = Some(path),
        "tar" => layer.tar = Some(path),
        "rpm" => layer.rpm = Some(vec![path.display().to_string()]),
        "deb" => layer.deb = Some(vec![path.display().to_string()]),
        other => {
            return Err(Failure::input(anyhow!(
                "--layer {other}=…: the kinds are dir, tar, rpm and deb"
            )))
        }
    }
    Ok(layer)
}

/// Runs a build.
pub fn run(args: BuildArgs) -> Result<(), Failure> {
    let targets = parse_targets(&args.targets).map_err(Failure::input)?;
    if targets.is_empty() {
        return Err(Failure::input(anyhow!(
            "name at least one --target (xen, openvz, vmware, qemu or all)"
        )));
    }
    let sets = args
        .sets
        .iter()
        .map(|s| {
            s.parse::<SetArg>()
                .map_err(|e| Failure::input(anyhow!("--set {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let loaded = load(args.image.as_deref(), &sets).map_err(Failure::input)?;
    let extra_layers = args
        .layers
        .iter()
        .map(|l| layer_arg(l))
        .collect::<Result<Vec<_>, _>>()?;
    let options = BuildOptions {
        targets,
        out_dir: args.out,
        extra_layers,
        init: args.init,
        device: args.device,
        xen_dir: args.xen_dir,
        quiet: args.quiet || args.json,
    };
    let output = build(&loaded, &options).map_err(|e| Failure {
        code: e.exit_code(),
        error: e.into(),
    })?;
    if args.json {
        let text = serde_json::to_string_pretty(&output.manifest).map_err(Failure::internal)?;
        println!("{text}");
    } else if !args.quiet {
        eprintln!(
            "built {} into {} (rootfs {})",
            output.manifest.image,
            output.out_dir.display(),
            output.manifest.rootfs_digest
        );
    }
    Ok(())
}
