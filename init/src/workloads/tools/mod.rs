//! Real benchmark tools, when the root has them: finding them, checking that their shared
//! libraries are present, running them under a timeout, and parsing what they print.
//!
//! A tool is looked for in the `PATH` directories (plus `/usr/sbin` and `/sbin`, where Debian
//! puts bonnie++ and postal). Its ELF is read with goblin: the interpreter (`PT_INTERP`) must
//! exist and every `DT_NEEDED` library, transitively, must be found in the binary's
//! `DT_RUNPATH`/`DT_RPATH`, the directories of `/etc/ld.so.conf` (with its `include`s) or the
//! default library directories. A tool that is absent or incomplete makes its workload
//! `skipped` with the reason; parsers never panic on what a tool prints.

pub mod ab;
pub mod bonnie;
pub mod openssl;
pub mod postal;
pub mod unixbench_run;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use goblin::elf::program_header::PT_INTERP;
use goblin::elf::Elf;

/// Largest ELF read to check libraries.
const MAX_ELF: u64 = 512 << 20;
/// Most libraries followed in one closure.
const MAX_LIBS: usize = 512;
/// Default library directories of glibc's loader on x86-64 (Debian multiarch first).
const DEFAULT_LIB_DIRS: [&str; 6] = [
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];

/// The directories searched for tools: `PATH`, then the sbin directories.
pub fn search_dirs() -> Vec<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = path
        .split(':')
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .collect();
    for d in [
        "/usr/local/sbin",
        "/usr/local/bin",
        "/usr/sbin",
        "/usr/bin",
        "/sbin",
        "/bin",
    ] {
        if !dirs.iter().any(|x| x == Path::new(d)) {
            dirs.push(PathBuf::from(d));
        }
    }
    dirs
}

/// Finds `name` (a bare name, or a path) as an executable file.
pub fn find_tool(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if executable(&p) {
            Ok(p)
        } else {
            Err(format!("{name} is not an executable file"))
        };
    }
    dirs.iter()
        .map(|d| d.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| {
            format!(
                "{name} not found in {}",
                dirs.iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(":")
            )
        })
}

/// Library directories of `/etc/ld.so.conf` under `root` (with `include` globs, bounded).
pub fn ld_so_conf_dirs(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    read_ld_conf(root, Path::new("/etc/ld.so.conf"), &mut out, &mut seen, 0);
    out
}

fn read_ld_conf(
    root: &Path,
    file: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut BTreeSet<PathBuf>,
    depth: u32,
) {
    if depth > 8 || !seen.insert(file.to_path_buf()) || seen.len() > 256 {
        return;
    }
    let Ok(text) = std::fs::read_to_string(rooted(root, file)) else {
        return;
    };
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include") {
            let pattern = pattern.trim();
            let pattern = if pattern.starts_with('/') {
                PathBuf::from(pattern)
            } else {
                file.parent().unwrap_or(Path::new("/")).join(pattern)
            };
            for inc in expand_star(root, &pattern) {
                read_ld_conf(root, &inc, out, seen, depth + 1);
            }
        } else if line.starts_with('/') {
            out.push(PathBuf::from(line));
        }
    }
}

/// Expands one `*` in the last component (what ld.so.conf uses); paths are root-relative.
fn expand_star(root: &Path, pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(dir) = pattern.parent() else {
        return Vec::new();
    };
    let Some((pre, post)) = name.split_once('*') else {
        return vec![pattern.to_path_buf()];
    };
    let mut found: Vec<PathBuf> = std::fs::read_dir(rooted(root, dir))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(pre) && n.ends_with(post) && n.len() >= pre.len() + post.len()
                })
                .map(|n| dir.join(n))
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// `path` (absolute, as seen in the root) under `root`.
fn rooted(root: &Path, path: &Path) -> PathBuf {
    root.join(path.strip_prefix("/").unwrap_or(path))
}

struct ElfInfo {
    interp: Option<String>,
    needed: Vec<String>,
    runpaths: Vec<String>,
}

fn read_elf(path: &Path) -> Result<ElfInfo, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    f.by_ref()
        .take(MAX_ELF)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("read {}: {e}", path.display()))?;
    let elf = Elf::parse(&bytes)
        .map_err(|e| format!("{} is not a readable ELF file: {e}", path.display()))?;
    let interp = elf
        .program_headers
        .iter()
        .any(|ph| ph.p_type == PT_INTERP)
        .then(|| elf.interpreter.map(str::to_owned))
        .flatten();
    let mut runpaths: Vec<String> = elf.runpaths.iter().map(|s| (*s).to_owned()).collect();
    runpaths.extend(elf.rpaths.iter().map(|s| (*s).to_owned()));
    Ok(ElfInfo {
        interp,
        needed: elf.libraries.iter().map(|s| (*s).to_owned()).collect(),
        runpaths,
    })
}

/// Checks that `binary`'s interpreter and shared libraries (transitively) exist under `root`;
/// the error names what is missing. A static binary passes.
pub fn check_libraries(binary: &Path, root: &Path) -> Result<(), String> {
    let conf_dirs = ld_so_conf_dirs(root);
    let mut queue = vec![binary.to_path_buf()];
    let mut done = BTreeSet::new();
    let mut missing = BTreeSet::new();
    while let Some(file) = queue.pop() {
        if !done.insert(file.clone()) || done.len() > MAX_LIBS {
            continue;
        }
        let info = read_elf(&file)?;
        if let Some(interp) = &info.interp {
            if !rooted(root, Path::new(interp)).exists() {
                missing.insert(format!("interpreter {interp}"));
            }
        }
        let origin = file
            .parent()
            .unwrap_or(Path::new("/"))
            .to_string_lossy()
            .into_owned();
        let mut dirs: Vec<PathBuf> = info
            .runpaths
            .iter()
            .flat_map(|r| r.split(':').map(str::to_owned).collect::<Vec<_>>())
            .filter(|d| !d.is_empty())
            .map(|d| PathBuf::from(d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin)))
            .collect();
        dirs.extend(conf_dirs.iter().cloned());
        dirs.extend(DEFAULT_LIB_DIRS.iter().map(PathBuf::from));
        for lib in &info.needed {
            let found = if lib.contains('/') {
                Some(PathBuf::from(lib)).filter(|p| rooted(root, p).exists())
            } else {
                dirs.iter()
                    .map(|d| d.join(lib))
                    .find(|p| rooted(root, p).exists())
            };
            match found {
                Some(p) => queue.push(rooted(root, &p)),
                None => {
                    missing.insert(lib.clone());
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} needs shared libraries missing from the root: {}",
            binary.display(),
            missing.into_iter().collect::<Vec<_>>().join(", ")
        ))
    }
}

/// Finds `name` and checks its libraries against `/`; the reason to skip otherwise.
pub fn locate(name: &str) -> Result<PathBuf, String> {
    let path = find_tool(name, &search_dirs())?;
    check_libraries(&path, Path::new("/"))?;
    Ok(path)
}

/// What a tool run produced.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit code (`None` when killed by a signal, e.g. at the timeout).
    pub code: Option<i32>,
    /// Standard output (bounded).
    pub stdout: String,
    /// Standard error (bounded).
    pub stderr: String,
    /// Whether it was killed at the timeout.
    pub timed_out: bool,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Largest output kept per stream.
const MAX_OUTPUT: u64 = 8 << 20;

fn drain(mut child_stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = child_stream.by_ref().take(MAX_OUTPUT).read_to_end(&mut buf);
        // Keep reading past the bound so the tool never blocks on a full pipe.
        let _ = std::io::copy(&mut child_stream, &mut std::io::sink());
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Runs `cmd` with stdin closed, capturing its output. At `timeout` its process group gets
/// `signals` one after the other, 300 ms apart (postal needs three SIGINTs to exit), and
/// SIGKILL 5 s after the last if it is still there.
pub fn run_tool(
    mut cmd: Command,
    timeout: Duration,
    signals: &[libc::c_int],
) -> Result<ToolOutput, String> {
    use std::os::unix::process::CommandExt;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Its own process group, so that the timeout reaches whatever the tool started too.
    cmd.process_group(0);
    let shown = format!("{cmd:?}");
    let start = Instant::now();
    let mut child: Child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let group = -(child.id() as libc::pid_t);
    let mut sent = 0usize;
    let mut killed_hard = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {shown}: {e}")),
        }
        let elapsed = start.elapsed();
        let step = Duration::from_millis(300);
        if sent < signals.len() && elapsed >= timeout + step * sent as u32 {
            // SAFETY: signalling our own child's process group.
            unsafe { libc::kill(group, signals[sent]) };
            sent += 1;
        }
        let last = timeout + step * signals.len().saturating_sub(1) as u32;
        if !killed_hard && elapsed >= last + Duration::from_secs(5) {
            killed_hard = true;
            // SAFETY: as above.
            unsafe { libc::kill(group, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let timed_out = sent > 0 || killed_hard;
    let stdout = out.and_then(|h| h.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|h| h.join().ok()).unwrap_or_default();
    Ok(ToolOutput {
        code: status.code(),
        stdout,
        stderr,
        timed_out,
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// The first non-empty line of `text`, trimmed, for tool versions.
pub fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_its_libraries_are_present() {
        let sh = find_tool("sh", &search_dirs()).unwrap();
        check_libraries(&sh, Path::new("/")).unwrap();
        assert!(find_tool("no-such-tool-xyz", &search_dirs())
            .unwrap_err()
            .contains("not found"));
    }

    #[test]
    fn a_root_without_the_libraries_names_them() {
        // An empty root: /bin/sh's interpreter and libc are missing there.
        let root = tempfile::tempdir().unwrap();
        let sh = find_tool("sh", &search_dirs()).unwrap();
        let err = check_libraries(&sh, root.path()).unwrap_err();
        assert!(err.contains("libc.so.6"), "{err}");
        assert!(err.contains("interpreter"), "{err}");
    }

    #[test]
    fn ld_so_conf_includes_are_followed() {
        let root = tempfile::tempdir().unwrap();
        let etc = root.path().join("etc");
        std::fs::create_dir_all(etc.join("ld.so.conf.d")).unwrap();
        std::fs::write(
            etc.join("ld.so.conf"),
            "include /etc/ld.so.conf.d/*.conf\n/opt/a # x\n",
        )
        .unwrap();
        std::fs::write(etc.join("ld.so.conf.d/x.conf"), "/opt/b\n").unwrap();
        std::fs::write(etc.join("ld.so.conf.d/y.txt"), "/opt/c\n").unwrap();
        let dirs = ld_so_conf_dirs(root.path());
        assert_eq!(dirs, [PathBuf::from("/opt/b"), PathBuf::from("/opt/a")]);
    }

    #[test]
    fn non_elf_files_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("garbage");
        std::fs::write(&f, b"\x7fELF\x02\x01\x01garbage").unwrap();
        assert!(check_libraries(&f, Path::new("/")).is_err());
    }

    #[test]
    fn run_tool_times_out_and_captures() {
        let mut c = Command::new("sh");
        c.args(["-c", "echo out; echo err >&2; sleep 30"]);
        let o = run_tool(c, Duration::from_millis(300), &[libc::SIGTERM]).unwrap();
        assert!(o.timed_out);
        assert_eq!(o.stdout, "out\n");
        assert_eq!(o.stderr, "err\n");
        assert!(o.seconds < 10.0);
    }
}
