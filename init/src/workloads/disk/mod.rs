//! `disk`: a Bonnie++-like filesystem benchmark in the work directory.
//!
//! Block tests (bonnie++'s "Sequential Output Block", "Rewrite", "Sequential Input Block") on
//! one file, and file tests (`-n`: sequential and random create/stat/delete). The page cache
//! must not inflate the block figures: by default the file is opened with O_DIRECT and aligned
//! buffers when the filesystem supports it; otherwise (or with `direct: "never"`) the file is
//! made at least twice the RAM, bonnie++'s own rule. `info.io_mode` says which was used.

mod block;
mod files;

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{parse_params, Context, Repetition, Sample, Workload};

/// The disk workload.
pub struct Disk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Direct {
    Auto,
    Always,
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Part {
    Block,
    Files,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default)]
    size_mib: Option<u64>,
    #[serde(default = "default_chunk")]
    chunk_kib: u64,
    #[serde(default = "auto")]
    direct: Direct,
    #[serde(default)]
    fsync: bool,
    #[serde(default = "default_files")]
    files: u64,
    #[serde(default)]
    file_max_bytes: u64,
    #[serde(default)]
    file_min_bytes: u64,
    #[serde(default = "both_parts")]
    tests: Vec<Part>,
}

fn default_chunk() -> u64 {
    8
}
fn auto() -> Direct {
    Direct::Auto
}
fn default_files() -> u64 {
    16 * 1024
}
fn both_parts() -> Vec<Part> {
    vec![Part::Block, Part::Files]
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if p.chunk_kib == 0 || p.chunk_kib % 4 != 0 || p.chunk_kib > 65536 {
        return Err(format!(
            "chunk_kib {} must be a multiple of 4 in 4..=65536 (O_DIRECT alignment)",
            p.chunk_kib
        ));
    }
    if p.size_mib == Some(0) || p.size_mib.is_some_and(|s| s > 1 << 24) {
        return Err("size_mib must be in 1..=16777216".into());
    }
    if p.files == 0 || p.files > 10_000_000 {
        return Err(format!("files {} outside 1..=10000000", p.files));
    }
    if p.file_min_bytes > p.file_max_bytes || p.file_max_bytes > 1 << 30 {
        return Err("need file_min_bytes <= file_max_bytes <= 1 GiB".into());
    }
    if p.tests.is_empty() {
        return Err("tests must not be empty".into());
    }
    Ok(p)
}

/// The memory the page cache can use, MiB: MemTotal, or less when our cgroup has a memory
/// limit (a container's, or a benchmark's), since the page cache is charged to it.
fn ram_mib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let total = crate::platform::mem_total_kib(&text).map(|k| k.div_ceil(1024))?;
    let limit = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|c| cgroup_memory_limit(&c))
        .map(|bytes| bytes >> 20);
    Some(limit.map_or(total, |l| l.clamp(1, total)))
}

/// The memory limit, bytes, of the cgroup named in /proc/self/cgroup text: cgroup v1's memory
/// controller (`N:memory:PATH`, `memory.limit_in_bytes`) or v2's unified hierarchy (`0::PATH`,
/// `memory.max`), mounted where systemd and Docker mount them.
fn cgroup_memory_limit(text: &str) -> Option<u64> {
    let files = cgroup_limit_files(text);
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .min()
}

/// Candidate limit files for /proc/self/cgroup text.
fn cgroup_limit_files(text: &str) -> Vec<String> {
    let safe = |p: &str| p.starts_with('/') && !p.contains("..");
    let mut files = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if !safe(path) {
            continue;
        }
        let path = path.trim_end_matches('/');
        if controllers.is_empty() {
            for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
                files.push(format!("{root}{path}/memory.max"));
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            files.push(format!("/sys/fs/cgroup/memory{path}/memory.limit_in_bytes"));
        }
    }
    files
}

/// A phase's two samples, as Bonnie++ reports each: its rate (`{name}_{suffix}`, `unit`, higher
/// is better) and its worst single-operation latency.
fn phase_samples(name: &str, rate: (&str, &str, f64), max_latency_s: f64) -> [Sample; 2] {
    let (suffix, unit, value) = rate;
    [
        Sample::new(format!("{name}_{suffix}"), unit, true, value),
        Sample::new(
            format!("{name}_max_latency_ms"),
            "ms",
            false,
            max_latency_s * 1000.0,
        ),
    ]
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: c is a valid C string and st a valid out pointer.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs succeeded and filled st.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

impl Workload for Disk {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn summary(&self) -> &'static str {
        "bonnie++-like block write/rewrite/read KiB/s (O_DIRECT or 2x RAM) and small-file \
         create/stat/delete per second, sequential and random"
    }

    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }

    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let mut info: BTreeMap<String, serde_json::Value> = BTreeMap::new();
        let mut samples = Vec::new();
        let mut too_fast = Vec::new();
        let mut note_fast = |name: &str, secs: f64| {
            // bonnie++ prints +++++ for tests under 0.5 s.
            if secs < 0.5 {
                too_fast.push(name.to_owned());
            }
        };
        if p.tests.contains(&Part::Block) {
            let ram = ram_mib();
            let direct = match p.direct {
                Direct::Never => false,
                Direct::Always => true,
                Direct::Auto => block::direct_supported(&ctx.workdir),
            };
            let twice_ram = ram.map(|r| r * 2);
            let size_mib = match (direct, p.size_mib, twice_ram) {
                (true, Some(s), _) => s,
                (true, None, Some(t)) => t,
                (false, s, Some(t)) => s.unwrap_or(0).max(t),
                (false, Some(s), None) => s,
                (_, None, None) => return Err("no size_mib and /proc/meminfo unreadable".into()),
            };
            let chunk = (p.chunk_kib * 1024) as usize;
            let chunks = size_mib * 1024 / p.chunk_kib;
            let need = chunks * chunk as u64;
            if let Some(free) = free_bytes(&ctx.workdir) {
                if free < need {
                    return Err(format!(
                        "{} has {} MiB free, the test file needs {size_mib} MiB",
                        ctx.workdir.display(),
                        free >> 20
                    ));
                }
            }
            info.insert(
                "io_mode".into(),
                if direct {
                    "O_DIRECT with page-aligned buffers"
                } else {
                    "buffered, file at least twice the RAM, fsync inside the write timing"
                }
                .into(),
            );
            info.insert("file_size_mib".into(), size_mib.into());
            info.insert("chunk_bytes".into(), chunk.into());
            if let Some(r) = ram {
                info.insert("ram_mib".into(), r.into());
            }
            let path = ctx.workdir.join(format!("bonnie-{}", std::process::id()));
            let r = (|| {
                let w = block::write(&path, chunk, chunks, direct, p.fsync)?;
                let rw = block::rewrite(&path, chunk, chunks, direct)?;
                let rd = block::read(&path, chunk, chunks, direct)?;
                Ok::<_, String>((w, rw, rd))
            })();
            let _ = std::fs::remove_file(&path);
            let (w, rw, rd) = r?;
            for (name, ph) in [("block_write", w), ("rewrite", rw), ("block_read", rd)] {
                note_fast(name, ph.seconds);
                samples.extend(phase_samples(
                    name,
                    ("kib_per_s", "KiB/s", ph.kib_per_s()),
                    ph.max_latency_s,
                ));
            }
        }
        if p.tests.contains(&Part::Files) {
            let set = files::FileSet {
                files: p.files,
                max_bytes: p.file_max_bytes,
                min_bytes: p.file_min_bytes,
            };
            let dir = ctx
                .workdir
                .join(format!("bonnie-files-{}", std::process::id()));
            let r = files::run(&dir, set, u64::from(ctx.repetition) + 0x5eed)?;
            for (name, ph) in [
                ("seq_create", r.seq_create),
                ("seq_stat", r.seq_stat),
                ("seq_delete", r.seq_delete),
                ("random_create", r.random_create),
                ("random_stat", r.random_stat),
                ("random_delete", r.random_delete),
            ] {
                note_fast(name, ph.seconds);
                samples.extend(phase_samples(
                    name,
                    ("per_s", "ops/s", ph.per_s()),
                    ph.max_latency_s,
                ));
            }
            info.insert("files".into(), p.files.into());
        }
        info.insert("under_half_a_second".into(), serde_json::json!(too_fast));
        Ok(Repetition {
            samples,
            tool: None,
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_run_reports_every_column() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            workdir: dir.path().to_path_buf(),
            online_cpus: 2,
            repetition: 0,
            repetitions: 1,
        };
        // Direct I/O when the temporary directory allows it; otherwise the 2x RAM rule would
        // make this file huge, so the test asks for direct I/O only where it works.
        let direct = block::direct_supported(dir.path());
        let params = serde_json::json!({"size_mib": 4, "files": 100,
            "direct": if direct { "always" } else { "never" }});
        if !direct {
            return;
        }
        let rep = Disk.run(&params, &ctx).unwrap();
        assert_eq!(rep.samples.len(), 2 * 9);
        assert!(rep
            .samples
            .iter()
            .all(|s| s.value > 0.0 || s.metric.contains("latency")));
        assert_eq!(rep.info["io_mode"], "O_DIRECT with page-aligned buffers");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn params_are_checked() {
        for bad in [
            serde_json::json!({"chunk_kib": 6}),
            serde_json::json!({"size_mib": 0}),
            serde_json::json!({"files": 0}),
            serde_json::json!({"file_min_bytes": 5, "file_max_bytes": 4}),
            serde_json::json!({"tests": []}),
            serde_json::json!({"direct": "sometimes"}),
        ] {
            assert!(Disk.check(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cgroup_limit_files_for_both_hierarchies() {
        assert_eq!(
            cgroup_limit_files("4:memory:/bench\n1:cpu:/\n0::/imgbuild-bench\n"),
            [
                "/sys/fs/cgroup/memory/bench/memory.limit_in_bytes",
                "/sys/fs/cgroup/imgbuild-bench/memory.max",
                "/sys/fs/cgroup/unified/imgbuild-bench/memory.max",
            ]
        );
        assert_eq!(
            cgroup_limit_files("0::/\n"),
            [
                "/sys/fs/cgroup/memory.max",
                "/sys/fs/cgroup/unified/memory.max"
            ]
        );
        assert!(cgroup_limit_files("0::/../etc\n4:memory:x\n").is_empty());
        assert!(ram_mib().is_some_and(|m| m > 0));
    }
}
