//! Shell Scripts (1 and 8 concurrent): `looper DURATION multi.sh N` of UnixBench 5.1.3.
//!
//! `multi.sh N` starts N background `/bin/sh tst.sh` and waits; `tst.sh` sorts `sort.src`, runs
//! `od` on the result and sorts that numerically, and pipes a `grep` through `tee` into `wc`,
//! then removes its files. The looper runs `/bin/sh multi.sh N` again and again and counts
//! completed runs; the rate is loops per minute (timebase 60). The scripts are written into the
//! work directory with the same commands as 5.1.3's (`sort -n -k 1` instead of the obsolete
//! `+1` syntax); `sort.src` is generated text of about the same size as UnixBench's. Without
//! `/bin/sh` or one of the tools the test is skipped with the reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::score::Pass;

/// The tools `tst.sh` runs besides the shell.
pub const TOOLS: [&str; 6] = ["sort", "od", "grep", "tee", "wc", "rm"];

const MULTI_SH: &str = "\
#!/bin/sh
# multi.sh of UnixBench 5.1.3: N concurrent tst.sh
instance=1
while [ $instance -le $1 ]; do
\t/bin/sh ./tst.sh &
\tinstance=$(($instance + 1))
done
wait
";

const TST_SH: &str = "\
#!/bin/sh
# tst.sh of UnixBench 5.1.3
sort >sort.$$ <sort.src
od sort.$$ | sort -n -k 1 > od.$$
grep the sort.$$ | tee grep.$$ | wc > wc.$$
rm sort.$$ grep.$$ od.$$ wc.$$
";

/// Why the shell tests cannot run in this root, if they cannot: `/bin/sh` or a tool missing
/// from the directories of `path` (the `PATH` value).
pub fn missing_tools(path: &str) -> Option<String> {
    if !is_executable(Path::new("/bin/sh")) {
        return Some("/bin/sh is missing".into());
    }
    let missing: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|tool| find_in_path(tool, path).is_none())
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!(
            "tools tst.sh needs are missing from PATH: {}",
            missing.join(", ")
        ))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the directories of `path`.
pub fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| is_executable(p))
}

/// Text like UnixBench's `sort.src`: lines of words, some of them "the".
fn sort_src() -> String {
    const WORDS: [&str; 16] = [
        "the",
        "benchmark",
        "system",
        "process",
        "file",
        "shell",
        "sort",
        "pipe",
        "kernel",
        "memory",
        "count",
        "time",
        "loop",
        "unix",
        "byte",
        "test",
    ];
    let mut out = String::new();
    let mut x: u32 = 12345;
    for _ in 0..200 {
        let mut line = Vec::new();
        for _ in 0..8 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            line.push(WORDS[((x >> 16) % 16) as usize]);
        }
        out.push_str(&line.join(" "));
        out.push('\n');
    }
    out
}

/// Writes the scripts and input into `dir`.
pub fn prepare(dir: &Path) -> Result<(), String> {
    for (name, text) in [
        ("multi.sh", MULTI_SH.to_string()),
        ("tst.sh", TST_SH.to_string()),
        ("sort.src", sort_src()),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs `multi.sh concurrency` in `dir` until `duration` is over (at least once); loops per
/// minute.
pub fn looper(dir: &Path, concurrency: u32, duration: Duration) -> Result<Pass, String> {
    prepare(dir)?;
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        let status = Command::new("/bin/sh")
            .arg("./multi.sh")
            .arg(concurrency.to_string())
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run /bin/sh multi.sh: {e}"))?;
        if !status.success() {
            return Err(format!("multi.sh {concurrency} failed: {status}"));
        }
        count += 1;
        if start.elapsed() >= duration {
            break;
        }
    }
    let leftovers = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("sort."))
                .filter(|e| e.file_name() != "sort.src")
                .count()
        })
        .unwrap_or(0);
    if leftovers > 0 {
        return Err(format!(
            "tst.sh left {leftovers} files behind: a tool failed"
        ));
    }
    Ok(Pass {
        count: count as f64,
        time_s: start.elapsed().as_secs_f64(),
        timebase: 60.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_loop_runs_the_real_scripts() {
        let path = std::env::var("PATH").unwrap_or_default();
        if let Some(reason) = missing_tools(&path) {
            panic!("this host should have the shell tools: {reason}");
        }
        let dir = tempfile::tempdir().unwrap();
        let pass = looper(dir.path(), 2, Duration::from_millis(1)).unwrap();
        assert_eq!(pass.count, 1.0);
        assert_eq!(pass.timebase, 60.0);
        assert!(pass.rate() > 0.0);
    }

    #[test]
    fn missing_tools_are_named() {
        let reason = missing_tools("/nonexistent").unwrap();
        assert!(reason.contains("sort") && reason.contains("wc"), "{reason}");
        assert!(find_in_path("sh", "/nonexistent:/bin:/usr/bin").is_some());
    }

    #[test]
    fn sort_src_has_the_word_grep_looks_for() {
        let text = sort_src();
        assert!(text.lines().count() == 200 && text.contains("the "));
    }
}
