//! `imgbuild run OUT --on ENGINE`: boots a build on an engine, collects, writes
//! `OUT/results/<engine>-<n>.json`.
//!
//! Exit status: 0 when every boot completed with every workload ok and the guest's digest not
//! different; 3 when a boot was incomplete (timed out, crashed, no `run_end`) or a workload
//! did not end ok — its results are still written; 2 for bad usage or a bad build; 1 when the
//! engine or its tools fail.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;
use clap::{Args, ValueEnum};
use imgbuild::run::qemu::CacheMode;
use imgbuild::run::{print_command, run, RunOptions};

use super::Failure;

/// Cache modes accepted on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Cache {
    /// O_DIRECT on the host (QEMU `cache=none`).
    None,
    /// The host's page cache, write-back.
    Writeback,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// A build output directory (it holds manifest.json).
    out: PathBuf,
    /// Engine: qemu, vmware, xen-image, xen (--print only), openvz or host.
    #[arg(long = "on", value_name = "ENGINE")]
    engine: String,
    /// Profile to run instead of the image's: a built-in one (smoke, quick, paper) or the
    /// image's own by name.
    #[arg(long, value_name = "P")]
    profile: Option<String>,
    /// vCPUs (default: the package's own setting).
    #[arg(long, value_name = "N")]
    cpus: Option<u32>,
    /// Memory in MiB (default: the package's own setting).
    #[arg(long, value_name = "MB")]
    memory: Option<u32>,
    /// Kill a guest still running after this many seconds.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    timeout: f64,
    /// Boot this many times, each on fresh copies of the disks.
    #[arg(long, value_name = "K", default_value_t = 1)]
    repeat: u32,
    /// Disk cache mode of the VM engines.
    #[arg(long, value_enum, default_value_t = Cache::None)]
    cache: Cache,
    /// Forward 127.0.0.1:PORT on the host to the guest's port 80 and give the guest the user
    /// network's address (10.0.2.15/24), for a client on the host such as a real `ab` against
    /// the http workload's serve mode (qemu and xen-image).
    #[arg(long, value_name = "PORT")]
    forward_http: Option<u16>,
    /// Print the command that boots the build's own files, and run nothing.
    #[arg(long)]
    print: bool,
}

/// Runs `run`.
pub fn run_cmd(args: RunArgs) -> Result<(), Failure> {
    let engine = args
        .engine
        .parse()
        .map_err(|e: imgbuild::run::RunError| Failure::input(anyhow!(e)))?;
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .ok_or_else(|| {
            Failure::input(anyhow!(
                "--timeout {}: use a positive number of seconds",
                args.timeout
            ))
        })?;
    let options = RunOptions {
        engine,
        profile: args.profile,
        cpus: args.cpus,
        memory_mb: args.memory,
        timeout,
        repeat: args.repeat,
        cache: match args.cache {
            Cache::None => CacheMode::None,
            Cache::Writeback => CacheMode::Writeback,
        },
        forward_http: args.forward_http,
    };
    let fail = |e: imgbuild::run::RunError| Failure {
        code: e.exit_code(),
        error: e.into(),
    };
    if args.print {
        println!("{}", print_command(&args.out, &options).map_err(fail)?);
        return Ok(());
    }
    let records = run(&args.out, &options, &|line| eprintln!("{line}")).map_err(fail)?;
    let mut bad = Vec::new();
    for r in &records {
        println!("{}", r.summary());
        println!("  command: {}", r.command);
        println!("  record:  {}", r.json_path().display());
        println!("  console: {}", r.console_log);
        for p in r.problems() {
            println!("  problem: {p}");
        }
        if !r.ok() {
            bad.push(format!("{}-{}", r.engine, r.run));
        }
    }
    if bad.is_empty() {
        Ok(())
    } else {
        Err(Failure {
            code: 3,
            error: anyhow!(
                "{} of {} run(s) incomplete or with workloads not ok: {} (results written)",
                bad.len(),
                records.len(),
                bad.join(", ")
            ),
        })
    }
}
