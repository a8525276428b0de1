//! `--on host`: the baseline, the init's host mode on this machine —
//! `imgbuild-init --host --profile P --results FILE --workdir DIR`, with the init found next to
//! imgbuild as the builder finds it. The profile is the image's own (extracted from the build
//! into `results/profile-<name>.json`) unless `--profile` names another. With fewer vCPUs than
//! the host has, it runs under `taskset` on the first ones; memory is not limited (the note
//! says so); the work directory is on the output directory's filesystem, like the other
//! engines' disks.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::{drop_empty, Booted, Context, Engine, VmSize};
use crate::kernel::elf_check::locate_init;
use crate::run::build_dir::{key_values, parse_qemu_script, read_config};
use crate::run::qemu::{find_on_path, shell_quote, supervise_with};
use crate::run::watch::{ResultsKind, Watch};
use crate::run::{BuildDir, EngineKind, RunError, Settings};

/// The host engine.
pub struct Host;

fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

/// The `--profile` argument: a built-in name, or the image's profile as a file.
fn profile_arg(build: &BuildDir, settings: &Settings) -> Result<String, RunError> {
    if let Some(p) = &settings.profile {
        if imgbuild_init::profile::BUILTIN_NAMES.contains(&p.as_str()) {
            return Ok(p.clone());
        }
    }
    let profile = build.image_profile()?;
    let dir = build.dir.join("results");
    std::fs::create_dir_all(&dir).map_err(RunError::io(&dir, "create"))?;
    let path = dir.join(format!("profile-{}.json", profile.name));
    let text = serde_json::to_vec_pretty(&profile).unwrap_or_default();
    std::fs::write(&path, text).map_err(RunError::io(&path, "write"))?;
    Ok(path.display().to_string())
}

fn argv(
    build: &BuildDir,
    settings: &Settings,
    results: &std::path::Path,
    workdir: &std::path::Path,
) -> Result<Vec<String>, RunError> {
    let init = locate_init(None).map_err(|e| RunError::MissingTool {
        tool: "imgbuild-init".into(),
        hint: format!("{e}; build it with cargo build --release -p imgbuild-init"),
    })?;
    let mut words = Vec::new();
    if settings.cpus < host_cpus() {
        let taskset = find_on_path("taskset").ok_or_else(|| RunError::MissingTool {
            tool: "taskset".into(),
            hint: "apt-get install util-linux".into(),
        })?;
        words.push(taskset.display().to_string());
        words.push("-c".into());
        words.push(format!("0-{}", settings.cpus.saturating_sub(1)));
    }
    words.extend([
        init.display().to_string(),
        "--host".into(),
        "--profile".into(),
        profile_arg(build, settings)?,
        "--results".into(),
        results.display().to_string(),
        "--workdir".into(),
        workdir.display().to_string(),
    ]);
    Ok(words)
}

impl Engine for Host {
    fn kind(&self) -> EngineKind {
        EngineKind::Host
    }

    /// The VM packages' size (the QEMU script's, else the xl config's), so that the baseline
    /// gets the vCPUs the guests get.
    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        if let Ok(path) = build.config("qemu", ".sh") {
            if let Ok(s) = parse_qemu_script(&read_config(&path)?) {
                if let (Some(cpus), Some(memory_mb)) = (s.cpus, s.memory_mb) {
                    return Ok(VmSize { cpus, memory_mb });
                }
            }
        }
        if let Ok(path) = build.config("xen", ".cfg") {
            let kv = key_values(&read_config(&path)?);
            if let (Some(cpus), Some(memory_mb)) = (
                kv.get("vcpus").and_then(|v| v.parse().ok()),
                kv.get("memory").and_then(|v| v.parse().ok()),
            ) {
                return Ok(VmSize { cpus, memory_mb });
            }
        }
        Ok(VmSize {
            cpus: host_cpus(),
            memory_mb: 512,
        })
    }

    fn print(&self, build: &BuildDir, settings: &Settings) -> Result<String, RunError> {
        let dir = build.dir.join("results");
        let words = argv(
            build,
            settings,
            &dir.join("host.results"),
            &dir.join("host.work"),
        )?;
        Ok(words
            .iter()
            .map(|w| shell_quote(w))
            .collect::<Vec<_>>()
            .join(" "))
    }

    fn boot(&self, cx: &Context<'_>) -> Result<Booted, RunError> {
        let paths = cx.paths;
        let results = paths.file("results");
        let _ = std::fs::remove_file(&results);
        let words = argv(cx.build, cx.settings, &results, &paths.work)?;
        let mut notes = vec![
            "memory is not limited: the host's own".into(),
            "no disk cache mode: files on the host's filesystem and page cache".into(),
        ];
        if cx.settings.cpus > host_cpus() {
            notes.push(format!(
                "{} vCPUs asked for, the host has {}",
                cx.settings.cpus,
                host_cpus()
            ));
        }
        let console = std::fs::File::create(&paths.console)
            .map_err(RunError::io(&paths.console, "create"))?;
        let console_err = console
            .try_clone()
            .map_err(RunError::io(&paths.console, "open"))?;
        let start = Instant::now();
        let child = Command::new(PathBuf::from(&words[0]))
            .args(&words[1..])
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .spawn()
            .map_err(|e| RunError::Engine {
                engine: EngineKind::Host,
                message: format!("cannot start {}: {e}", words[0]),
            })?;
        let mut watch = Watch::new(results.clone(), ResultsKind::File, start);
        let outcome = supervise_with(
            child,
            cx.settings.timeout,
            start,
            &mut || watch.poll(),
            &mut |c| {
                let _ = c.kill();
            },
        );
        let outcome = outcome.map_err(|e| RunError::Engine {
            engine: EngineKind::Host,
            message: format!("waiting for the init: {e}"),
        })?;
        let _ = std::fs::remove_dir_all(&paths.work);
        drop_empty(&paths.console);
        Ok(Booted {
            command: words
                .iter()
                .map(|w| shell_quote(w))
                .collect::<Vec<_>>()
                .join(" "),
            accel: None,
            cache: None,
            results,
            wall: outcome.wall,
            first_record: watch.first_record(),
            timed_out: outcome.timed_out,
            exit_status: outcome.status.and_then(|s| s.code()),
            notes,
        })
    }
}
