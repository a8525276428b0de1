//! What one boot leaves in `OUT/results/`: the file names of run `n` of an engine, and the
//! [`RunRecord`] written as `<engine>-<n>.json` (the collected results with everything needed to
//! judge and repeat the run: engine, accelerator, exact command line, vCPUs, memory, cache
//! mode, wall time, whether it timed out, where the console log is).

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use imgbuild_init::digest::RootfsDigest;
use imgbuild_init::results::schema::{DigestStatus, RunStatus, Status};
use serde::{Deserialize, Serialize};

use super::engine::Booted;
use super::qemu::{Accel, CacheMode};
use super::{BuildDir, EngineKind, RunError, Settings};
use crate::collect::{collect, Collected};

/// Runs numbered beyond this are refused (a results directory is not a database).
const MAX_RUNS: u32 = 100_000;

/// The files of run `n` of an engine.
#[derive(Debug, Clone)]
pub struct RunPaths {
    /// Run number, from 1.
    pub n: u32,
    /// `<engine>-<n>`.
    pub stem: String,
    /// `<engine>-<n>.json`.
    pub json: PathBuf,
    /// `<engine>-<n>.console.log`: the serial console (VMs) or the init's output.
    pub console: PathBuf,
    /// `<engine>-<n>.stderr.log`: the engine program's own messages (removed when empty).
    pub stderr: PathBuf,
    /// `<engine>-<n>.work/`: scratch copies of disks, the container bundle; removed after.
    pub work: PathBuf,
    /// The results directory.
    pub dir: PathBuf,
}

impl RunPaths {
    /// Reserves the next free run number of `engine` in `dir` by creating its JSON file
    /// exclusively, so that concurrent runs into one output directory never share a number.
    pub fn reserve(dir: &Path, engine: EngineKind) -> Result<RunPaths, RunError> {
        let prefix = format!("{engine}-");
        let mut n = 1 + fs::read_dir(dir)
            .map_err(RunError::io(dir, "list"))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let rest = name.strip_prefix(&prefix)?;
                rest.split('.').next()?.parse::<u32>().ok()
            })
            .max()
            .unwrap_or(0);
        while n <= MAX_RUNS {
            let paths = RunPaths::numbered(dir, engine, n);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&paths.json)
            {
                Ok(_) => return Ok(paths),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => n += 1,
                Err(e) => return Err(RunError::io(&paths.json, "create")(e)),
            }
        }
        Err(RunError::Usage(format!(
            "{} holds {MAX_RUNS} runs of {engine} already",
            dir.display()
        )))
    }

    /// The names of run `n` (nothing is created).
    pub fn numbered(dir: &Path, engine: EngineKind, n: u32) -> RunPaths {
        let stem = format!("{engine}-{n}");
        RunPaths {
            n,
            json: dir.join(format!("{stem}.json")),
            console: dir.join(format!("{stem}.console.log")),
            stderr: dir.join(format!("{stem}.stderr.log")),
            work: dir.join(format!("{stem}.work")),
            dir: dir.to_path_buf(),
            stem,
        }
    }

    /// `<engine>-<n>.<suffix>` in the results directory.
    pub fn file(&self, suffix: &str) -> PathBuf {
        self.dir.join(format!("{}.{suffix}", self.stem))
    }

    /// Gives the number back after a boot that could not start.
    pub fn release(&self) {
        let _ = fs::remove_file(&self.json);
        let _ = fs::remove_dir_all(&self.work);
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One boot and what it produced: `OUT/results/<engine>-<n>.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunRecord {
    /// Engine name (`qemu`, `vmware`, `xen-image`, `openvz`, `host`).
    pub engine: String,
    /// Run number.
    pub run: u32,
    /// Image name from the manifest.
    pub image: String,
    /// The build's output directory.
    pub build_dir: String,
    /// Rootfs digest from the manifest.
    pub build_digest: RootfsDigest,
    /// Kernel the VM packages boot, from the manifest.
    pub kernel: Option<String>,
    /// KVM or TCG for QEMU engines.
    pub accel: Option<Accel>,
    /// The exact command line, shell-quoted.
    pub command: String,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mb: u32,
    /// Disk cache mode (VM engines; containers and the host use the host's page cache).
    pub cache: Option<CacheMode>,
    /// Profile override, when one was given.
    pub profile: Option<String>,
    /// Time limit, seconds.
    pub timeout_s: f64,
    /// When the engine started, seconds since the Unix epoch.
    pub started_unix_s: f64,
    /// Wall time from the engine's start to its exit, seconds.
    pub wall_s: f64,
    /// Wall time from the engine's start until the first record (`run_start`, written just
    /// before the first workload starts) was seen in the results, seconds.
    pub first_record_s: Option<f64>,
    /// The engine was killed at the timeout.
    pub timed_out: bool,
    /// The engine's exit code (None when killed).
    pub exit_status: Option<i32>,
    /// The guest finished its run: a `run_end` record saying complete, and no timeout.
    pub complete: bool,
    /// Why the run is not complete.
    pub incomplete_reason: Option<String>,
    /// Console log, absolute path.
    pub console_log: String,
    /// The results disk or file the guest wrote (a copy; the build's is untouched).
    pub results_file: String,
    /// Facts about how the engine ran (capabilities dropped, limits not applied…).
    pub notes: Vec<String>,
    /// What the results held.
    pub collected: Option<Collected>,
    /// Why the results could not be read at all.
    pub collect_error: Option<String>,
}

impl RunRecord {
    /// Collects the results of a boot and judges it.
    pub fn new(
        build: &BuildDir,
        engine: EngineKind,
        paths: &RunPaths,
        settings: &Settings,
        started_unix_s: f64,
        booted: Booted,
    ) -> RunRecord {
        let (collected, collect_error) = match collect(&booted.results) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mut record = RunRecord {
            engine: engine.name().to_string(),
            run: paths.n,
            image: build.manifest.image.clone(),
            build_dir: build.dir.display().to_string(),
            build_digest: build.manifest.rootfs_digest,
            kernel: build.manifest.kernel.clone(),
            accel: booted.accel,
            command: booted.command,
            cpus: settings.cpus,
            memory_mb: settings.memory_mb,
            cache: booted.cache,
            profile: settings.profile.clone(),
            timeout_s: settings.timeout.as_secs_f64(),
            started_unix_s,
            wall_s: booted.wall.as_secs_f64(),
            first_record_s: booted.first_record.map(|d| d.as_secs_f64()),
            timed_out: booted.timed_out,
            exit_status: booted.exit_status,
            complete: false,
            incomplete_reason: None,
            console_log: paths.console.display().to_string(),
            results_file: booted.results.display().to_string(),
            notes: booted.notes,
            collected,
            collect_error,
        };
        record.incomplete_reason = record.judge();
        record.complete = record.incomplete_reason.is_none();
        record
    }

    fn judge(&self) -> Option<String> {
        if self.timed_out {
            return Some(format!(
                "the guest did not finish within {} s and was killed; the records it finished \
                 are kept",
                self.timeout_s
            ));
        }
        let Some(c) = &self.collected else {
            return Some(format!(
                "no results could be read: {}",
                self.collect_error.as_deref().unwrap_or("unknown error")
            ));
        };
        let end = c.records.iter().find_map(|r| match r {
            imgbuild_init::results::schema::Record::RunEnd(e) => Some(e),
            _ => None,
        });
        match end {
            None => Some(format!(
                "no run_end record: the guest stopped in the middle of its run (exit status {}; \
                 see {})",
                self.exit_status
                    .map_or_else(|| "none".to_string(), |s| s.to_string()),
                self.console_log
            )),
            Some(e) if e.status == RunStatus::Failed => Some(format!(
                "the init recorded a failed run: {}",
                e.reason.as_deref().unwrap_or("no reason given")
            )),
            Some(_) => None,
        }
    }

    /// Everything went right: complete, every workload ok, the guest's digest not different.
    pub fn ok(&self) -> bool {
        self.complete && self.problems().is_empty()
    }

    /// What is wrong besides completeness: workloads not ok, a digest that differs.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let Some(c) = &self.collected else {
            return out;
        };
        for r in &c.records {
            match r {
                imgbuild_init::results::schema::Record::Workload(w) if w.status != Status::Ok => {
                    out.push(format!(
                        "workload {} {:?}: {}",
                        w.name,
                        w.status,
                        w.reason.as_deref().unwrap_or("")
                    ))
                }
                imgbuild_init::results::schema::Record::RunStart(s)
                    if matches!(
                        s.digest_check.status,
                        DigestStatus::Mismatch | DigestStatus::Error
                    ) =>
                {
                    out.push(format!(
                        "rootfs digest check {:?}: {}",
                        s.digest_check.status,
                        s.digest_check.reason.as_deref().unwrap_or("")
                    ))
                }
                _ => {}
            }
        }
        out
    }

    /// Where [`RunRecord::write`] put this record.
    pub fn json_path(&self) -> PathBuf {
        Path::new(&self.build_dir)
            .join("results")
            .join(format!("{}-{}.json", self.engine, self.run))
    }

    /// One line for the terminal.
    pub fn summary(&self) -> String {
        let workloads = self
            .collected
            .as_ref()
            .map(|c| {
                let total = c
                    .records
                    .iter()
                    .filter(|r| {
                        matches!(r, imgbuild_init::results::schema::Record::Workload(_))
                    })
                    .count();
                let ok = c
                    .records
                    .iter()
                    .filter(|r| matches!(r, imgbuild_init::results::schema::Record::Workload(w) if w.status == Status::Ok))
                    .count();
                format!("{ok}/{total} workloads ok")
            })
            .unwrap_or_else(|| "no results".into());
        let state = if self.complete {
            "complete"
        } else {
            "INCOMPLETE"
        };
        let mut line = format!(
            "{}-{}: {state}, {workloads}, {:.1} s wall",
            self.engine, self.run, self.wall_s
        );
        if let Some(t) = self.first_record_s {
            line.push_str(&format!(", first workload after {t:.2} s"));
        }
        if let Some(reason) = &self.incomplete_reason {
            line.push_str(&format!(" ({reason})"));
        }
        line
    }

    /// Writes the record to its JSON file (through a temporary file and a rename).
    pub fn write(&self, paths: &RunPaths) -> Result<(), RunError> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| RunError::Io {
            path: paths.json.clone(),
            action: "encode",
            source: std::io::Error::other(e),
        })?;
        let tmp = paths.file("json.tmp");
        fs::write(&tmp, text).map_err(RunError::io(&tmp, "write"))?;
        fs::rename(&tmp, &paths.json).map_err(RunError::io(&paths.json, "write"))
    }

    /// Reads a record written by [`RunRecord::write`].
    pub fn read(path: &Path) -> Result<RunRecord, String> {
        let file =
            fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len > 256 << 20 {
            return Err(format!(
                "{}: {len} bytes is too large for a run record",
                path.display()
            ));
        }
        serde_json::from_reader(std::io::BufReader::new(file))
            .map_err(|e| format!("{} is not a run record: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_numbers_are_reserved_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = RunPaths::reserve(dir.path(), EngineKind::Qemu).unwrap();
        let b = RunPaths::reserve(dir.path(), EngineKind::Qemu).unwrap();
        let c = RunPaths::reserve(dir.path(), EngineKind::XenImage).unwrap();
        assert_eq!((a.n, b.n, c.n), (1, 2, 1));
        assert!(b.json.ends_with("qemu-2.json"));
        assert!(c.console.ends_with("xen-image-1.console.log"));
        a.release();
        // Numbers continue after the highest, so a released gap is not reused by accident.
        let d = RunPaths::reserve(dir.path(), EngineKind::Qemu).unwrap();
        assert_eq!(d.n, 3);
        fs::write(dir.path().join("qemu-17.results.img"), b"").unwrap();
        assert_eq!(
            RunPaths::reserve(dir.path(), EngineKind::Qemu).unwrap().n,
            18
        );
    }
}
