//! `--on openvz`: the OpenVZ template started as a system container by the OCI runtime runc.
//!
//! The template is read by the project's tar reader into a tree and written out with
//! [`crate::run::extract`] into `<engine>-<n>.work/rootfs` — never following a symlink, so a
//! hostile template cannot write outside the directory. (GNU tar with `--no-overwrite-dir`
//! into an empty directory would be safe too, but this way the same reader that `verify`
//! trusts decides what the container gets, and xattrs and device nodes come out exactly as
//! the tree has them.) runc runs `/sbin/init` with `container=openvz`; the init detects the
//! container, runs the profile and writes `/var/lib/imgbuild/results` in the root, which is
//! copied out before the bundle is removed — on failure and timeout too (`runc kill`,
//! `runc delete -f`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use super::{drop_empty, Booted, Context, Engine, VmSize};
use crate::manifest::Role;
use crate::run::build_dir::{key_values, read_config, vz_limit};
use crate::run::extract::write_tree;
use crate::run::oci::{self, ContainerSpec};
use crate::run::qemu::{find_on_path, shell_quote, supervise_with};
use crate::run::watch::{ResultsKind, Watch};
use crate::run::{BuildDir, EngineKind, RunError, Settings};
use crate::tree::{Meta, Tree};

/// The results file the container init writes, relative to the root.
const RESULTS_IN_ROOT: &str = "var/lib/imgbuild/results";

/// The OpenVZ engine.
pub struct Openvz;

fn runc() -> Result<PathBuf, RunError> {
    std::env::var_os("IMGBUILD_RUNC")
        .map(PathBuf::from)
        .or_else(|| find_on_path("runc"))
        .ok_or_else(|| RunError::MissingTool {
            tool: "runc".into(),
            hint: "apt-get install runc, or set IMGBUILD_RUNC".into(),
        })
}

fn engine_error(message: String) -> RunError {
    RunError::Engine {
        engine: EngineKind::Openvz,
        message,
    }
}

/// The runc command line for a bundle.
fn runc_args(state: &Path, bundle: &Path, id: &str) -> Vec<String> {
    vec![
        "--root".into(),
        state.display().to_string(),
        "run".into(),
        "--bundle".into(),
        bundle.display().to_string(),
        id.to_string(),
    ]
}

/// Deletes the container and the bundle however the run ended.
struct Cleanup<'a> {
    runc: &'a Path,
    state: PathBuf,
    id: String,
    work: PathBuf,
}

impl Cleanup<'_> {
    fn runc_quietly(&self, args: &[&str]) {
        let _ = Command::new(self.runc)
            .arg("--root")
            .arg(&self.state)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if self.state.exists() {
            self.runc_quietly(&["delete", "-f", &self.id]);
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

impl Engine for Openvz {
    fn kind(&self) -> EngineKind {
        EngineKind::Openvz
    }

    fn defaults(&self, build: &BuildDir) -> Result<VmSize, RunError> {
        let path = build.config("openvz", ".conf-sample")?;
        let kv = key_values(&read_config(&path)?);
        let bad = |message: String| RunError::BadBuild {
            dir: path.clone(),
            message,
        };
        let memory = match kv.get("PHYSPAGES") {
            Some(v) => vz_limit(v).map_err(|e| bad(format!("PHYSPAGES: {e}")))?,
            None => None,
        };
        let cpus = kv.get("CPUS").and_then(|v| v.parse::<u32>().ok());
        Ok(VmSize {
            cpus: cpus.unwrap_or(1),
            // An unlimited container gets what the VMs get by default.
            memory_mb: memory
                .map(|b| u32::try_from(b >> 20).unwrap_or(u32::MAX))
                .unwrap_or(512),
        })
    }

    fn print(&self, build: &BuildDir, settings: &Settings) -> Result<String, RunError> {
        let template = build.file("openvz", Role::Template)?;
        let bundle = build.dir.join("results").join("openvz-bundle");
        let args = runc_args(
            &bundle.join("state"),
            &bundle,
            &format!("imgbuild-{}", build.manifest.image),
        );
        let words: Vec<String> = args.iter().map(|a| shell_quote(a)).collect();
        Ok(format!(
            "# unpack {} into {}/rootfs and write config.json ({} vCPUs, {} MiB; `imgbuild run` \
             does both), then:\nrunc {}",
            template.display(),
            bundle.display(),
            settings.cpus,
            settings.memory_mb,
            words.join(" ")
        ))
    }

    fn boot(&self, cx: &Context<'_>) -> Result<Booted, RunError> {
        let runc = runc()?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(engine_error(
                "runc needs root here: the container's owners, device nodes and namespaces \
                 cannot be made by a user"
                    .into(),
            ));
        }
        let template = cx.build.file("openvz", Role::Template)?;
        let paths = cx.paths;
        let work = paths.work.clone();
        std::fs::create_dir_all(&work).map_err(RunError::io(&work, "create"))?;
        let id = format!("imgbuild-{}-{}", std::process::id(), paths.stem);
        let state = work.join("state");
        let cleanup = Cleanup {
            runc: &runc,
            state: state.clone(),
            id: id.clone(),
            work: work.clone(),
        };
        let rootfs = work.join("rootfs");
        std::fs::create_dir(&rootfs).map_err(RunError::io(&rootfs, "create"))?;
        let mut tree = Tree::new(Meta::root(0o755, 0));
        crate::sources::tar::apply(&mut tree, &template, None)?;
        let report = write_tree(&tree, &rootfs)?;
        drop(tree);

        let mut notes = vec![format!(
            "{} unpacked without following symlinks: {} entries, {} bytes; bundle removed after \
             the run",
            template.display(),
            report.entries,
            report.bytes
        )];
        let (caps, dropped) = oci::capabilities(oci::own_bounding_set());
        if !dropped.is_empty() {
            notes.push(format!(
                "capabilities this process lacks, so the container lacks them too: {}",
                dropped.join(", ")
            ));
        }
        notes.push(
            "no disk cache mode: the container's files are on the host's filesystem and page \
             cache"
                .into(),
        );
        let mount_sys = rootfs.join("sys").is_dir();
        if !rootfs.join("proc").is_dir() {
            notes.push("the image has no /proc: runc creates it, so the digest differs".into());
        }
        let mut init_args = Vec::new();
        if let Some(p) = &cx.settings.profile {
            init_args.extend(["--profile".to_string(), p.clone()]);
        }
        let config = oci::config(
            &ContainerSpec {
                hostname: &cx.build.manifest.image,
                init_args,
                memory_bytes: u64::from(cx.settings.memory_mb) << 20,
                cpus: cx.settings.cpus,
                capabilities: caps,
                mount_sys,
            },
            &rootfs,
        );
        let config_path = work.join("config.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).unwrap_or_default(),
        )
        .map_err(RunError::io(&config_path, "write"))?;

        let args = runc_args(&state, &work, &id);
        let words: Vec<String> = std::iter::once(runc.display().to_string())
            .chain(args.iter().cloned())
            .map(|w| shell_quote(&w))
            .collect();
        let console = std::fs::File::create(&paths.console)
            .map_err(RunError::io(&paths.console, "create"))?;
        let console_err = console
            .try_clone()
            .map_err(RunError::io(&paths.console, "open"))?;
        let results_in_root = rootfs.join(RESULTS_IN_ROOT);
        let start = Instant::now();
        let child = Command::new(&runc)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(console)
            .stderr(console_err)
            .spawn()
            .map_err(|e| engine_error(format!("cannot start {}: {e}", runc.display())))?;
        let mut watch = Watch::new(results_in_root.clone(), ResultsKind::File, start);
        let outcome = supervise_with(
            child,
            cx.settings.timeout,
            start,
            &mut || watch.poll(),
            &mut |c: &mut Child| {
                cleanup.runc_quietly(&["kill", &id, "KILL"]);
                // runc run returns once its container is gone; if the kill did not take,
                // the runtime process goes too (the container follows with delete -f).
                std::thread::sleep(std::time::Duration::from_millis(500));
                if c.try_wait().ok().flatten().is_none() {
                    let _ = c.kill();
                }
            },
        )
        .map_err(|e| engine_error(format!("waiting for runc: {e}")))?;
        let results = paths.file("results");
        let _ = std::fs::remove_file(&results);
        if results_in_root.is_file() {
            std::fs::copy(&results_in_root, &results).map_err(RunError::io(&results, "copy to"))?;
        } else {
            notes.push(format!("the container wrote no {RESULTS_IN_ROOT}"));
        }
        drop_empty(&paths.console);
        drop(cleanup);
        Ok(Booted {
            command: words.join(" "),
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
