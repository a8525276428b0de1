//! Builds the initramfs of a kernel and prints its report as JSON: the measuring tool behind
//! `benches/initramfs_size.sh`.
//!
//! `kernel_initramfs [--kernel VMLINUZ] [--modules DIR] [--init PATH] [--drivers a,b,…] [--xz] OUT`

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use imgbuild::definition::KernelSpec;
use imgbuild::kernel::{self, Compression, InitramfsOptions, EM_X86_64};

fn main() -> Result<()> {
    let mut spec = KernelSpec::default();
    let mut init = None;
    let mut drivers: Option<Vec<String>> = None;
    let mut compression = Compression::Gzip;
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--kernel" => spec.path = Some(PathBuf::from(value()?)),
            "--modules" => spec.modules = Some(PathBuf::from(value()?)),
            "--init" => init = Some(PathBuf::from(value()?)),
            "--drivers" => {
                drivers = Some(
                    value()?
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect(),
                )
            }
            "--xz" => compression = Compression::Xz,
            "--none" => compression = Compression::None,
            _ if arg.starts_with("--") => bail!("unknown option {arg}"),
            _ => out = Some(PathBuf::from(arg)),
        }
    }
    let out = out.context("usage: kernel_initramfs [options] OUT")?;
    let kernel = kernel::resolve(Some(&spec))?;
    let init = kernel::locate_init(init.as_deref())?;
    let options = InitramfsOptions {
        drivers: drivers.as_deref(),
        init: &init,
        mtime: kernel::initramfs::mtime_from_env(),
        compression,
        machine: EM_X86_64,
    };
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    let report = kernel::build_initramfs_with(&kernel, &options, &mut file)?;
    std::io::Write::flush(&mut file)?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
