//! Shared machinery of the bad-input suites: runs the real `imgbuild` binary on one bad input
//! and checks what every failure must look like.
//!
//! Each case starts from a copy of one good build (made once per test binary) in its output
//! directory, runs the bad build into that directory with an empty `TMPDIR` and an empty working
//! directory, and then checks: the exit code is the documented one (2 input, 1 tool or
//! environment), stderr names the input and the problem, nothing panicked, the earlier build is
//! untouched file by file (no staging leftovers either), and no file appeared in `TMPDIR`, the
//! working directory or the directory holding the inputs.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "../shell/mod.rs"]
mod shell;
pub use shell::{q, sh_strict as sh};

use sha2::{Digest, Sha256};

/// The CLI under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_imgbuild");

/// Exit code of bad input (README "Exit codes").
pub const INPUT: i32 = 2;
/// Exit code of a failure of the tool or its environment.
pub const ENVIRONMENT: i32 = 1;

/// The init binary, found the way the builder finds it (`IMGBUILD_INIT`, next to the binary or
/// in its parent directory), plus the release build, which is what `scripts/test` makes.
pub fn init_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("IMGBUILD_INIT").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let dir = Path::new(BIN).parent().expect("the binary has a directory");
    let mut tried = vec![dir.join("imgbuild-init")];
    if let Some(up) = dir.parent() {
        tried.push(up.join("imgbuild-init"));
        tried.push(up.join("release/imgbuild-init"));
        tried.push(up.join("debug/imgbuild-init"));
    }
    match tried.iter().find(|p| p.is_file()) {
        Some(p) => p.clone(),
        None => panic!(
            "the guest init is not built; run `cargo build --release -p imgbuild-init` first \
             (or set IMGBUILD_INIT). Looked at: {tried:?}"
        ),
    }
}

/// State of one entry of a directory tree, enough to see any write, rename or new file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryState {
    kind: &'static str,
    len: u64,
    ino: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    /// sha256 of files up to 4 MiB (configs, manifest, kernel, initrd, results disk).
    sha256: Option<[u8; 32]>,
}

/// Every entry below `dir` (hidden ones included), by relative path; a file is one entry.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, EntryState> {
    let mut out = BTreeMap::new();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => walk(dir, dir, &mut out),
        Ok(_) => {
            out.insert(PathBuf::new(), state(dir));
        }
        Err(_) => {}
    }
    out
}

fn state(path: &Path) -> EntryState {
    let meta = std::fs::symlink_metadata(path).unwrap();
    let kind = if meta.is_dir() {
        "dir"
    } else if meta.is_file() {
        "file"
    } else if meta.file_type().is_symlink() {
        "symlink"
    } else {
        "other"
    };
    let sha256 = (meta.is_file() && meta.len() <= 4 << 20)
        .then(|| Sha256::digest(std::fs::read(path).unwrap()).into());
    EntryState {
        kind,
        len: meta.len(),
        ino: meta.ino(),
        mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        sha256,
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, EntryState>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let st = state(&path);
        let is_dir = st.kind == "dir";
        out.insert(path.strip_prefix(root).unwrap().to_path_buf(), st);
        if is_dir {
            walk(root, &path, out);
        }
    }
}

/// The arguments every build of the suites gets: the default image, the Xen target, quiet.
pub fn base_args(out: &Path) -> Vec<OsString> {
    vec![
        "build".into(),
        "--target".into(),
        "xen".into(),
        "--out".into(),
        out.into(),
        "--quiet".into(),
    ]
}

/// Runs the CLI with `args`, `TMPDIR` set to `tmp` and the working directory `cwd`.
pub fn run(args: &[OsString], envs: &[(&str, &str)], tmp: &Path, cwd: &Path) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .current_dir(cwd)
        .env("TMPDIR", tmp)
        .env_remove("IMGBUILD_MAX_EXPANDED")
        .env_remove("SOURCE_DATE_EPOCH");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// One good build of the default image for the Xen target, made once per test binary (under
/// the target directory, replaced by the next run); cases copy it into their own output
/// directory.
pub fn good_build() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("good-build-{}", env!("CARGO_CRATE_NAME")));
        let _ = std::fs::remove_dir_all(&root);
        let (out, tmp, cwd) = (root.join("out"), root.join("tmp"), root.join("cwd"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&cwd).unwrap();
        let mut args = base_args(&out);
        args.extend(["--init".into(), init_binary().into()]);
        let o = run(&args, &[], &tmp, &cwd);
        assert!(
            o.status.success(),
            "the good build failed (a readable kernel in /boot is needed for --target xen):\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.join("manifest.json").is_file());
        out
    })
}

/// A case's scratch space: `inputs/` for the bad files, `out/` (a copy of the good build),
/// an empty `tmp/` for TMPDIR and an empty `cwd/`.
pub struct Scratch {
    /// Holds everything; removed on drop.
    pub dir: tempfile::TempDir,
    /// Where the case writes its inputs.
    pub inputs: PathBuf,
    /// The output directory.
    pub out: PathBuf,
    /// TMPDIR of the run.
    pub tmp: PathBuf,
    /// Working directory of the run.
    pub cwd: PathBuf,
}

impl Scratch {
    /// Fresh scratch space whose `out/` holds a copy of the good build.
    pub fn new() -> Scratch {
        let good = good_build();
        let dir = tempfile::Builder::new()
            .prefix("bad-input-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let s = Scratch {
            inputs: dir.path().join("inputs"),
            out: dir.path().join("out"),
            tmp: dir.path().join("tmp"),
            cwd: dir.path().join("cwd"),
            dir,
        };
        for d in [&s.inputs, &s.tmp, &s.cwd] {
            std::fs::create_dir_all(d).unwrap();
        }
        sh(&format!("cp -a --sparse=always {} {}", q(good), q(&s.out)));
        s
    }

    /// A path in `inputs/`.
    pub fn input(&self, name: &str) -> PathBuf {
        self.inputs.join(name)
    }
}

/// What a bad build must produce.
pub struct Expect<'a> {
    /// The documented exit code.
    pub code: i32,
    /// Texts that must all appear in stderr (the input's name, the problem).
    pub needles: &'a [&'a str],
}

/// Runs a bad build into `s.out` with `extra` arguments after [`base_args`] and checks every
/// property of a clean failure; returns stderr.
pub fn bad_build(s: &Scratch, extra: &[OsString], envs: &[(&str, &str)], expect: Expect) -> String {
    let before_out = snapshot(&s.out);
    let before_inputs = snapshot(&s.inputs);
    let mut args = base_args(&s.out);
    args.extend_from_slice(extra);
    if !extra.iter().any(|a| a == "--init") {
        args.extend(["--init".into(), init_binary().into()]);
    }
    let o = run(&args, envs, &s.tmp, &s.cwd);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let shown = format!("args {args:?}\nstderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "a panic: {shown}");
    assert_ne!(o.status.code(), Some(101), "a panic: {shown}");
    assert_eq!(o.status.code(), Some(expect.code), "exit code: {shown}");
    assert!(stderr.starts_with("imgbuild: "), "no error line: {shown}");
    for needle in expect.needles {
        assert!(
            stderr.contains(needle),
            "{needle:?} not in the message: {shown}"
        );
    }
    assert_eq!(
        before_out,
        snapshot(&s.out),
        "the earlier build in the output directory changed: {shown}"
    );
    assert_eq!(
        before_inputs,
        snapshot(&s.inputs),
        "the inputs changed: {shown}"
    );
    assert!(snapshot(&s.tmp).is_empty(), "files left in TMPDIR: {shown}");
    assert!(
        snapshot(&s.cwd).is_empty(),
        "files left in the working directory: {shown}"
    );
    // Shown with --nocapture: the messages are the point of the suite.
    eprintln!("[exit {}] {}", expect.code, stderr.trim_end());
    stderr
}

/// `--layer KIND=PATH` as arguments.
pub fn layer(kind: &str, path: &Path) -> Vec<OsString> {
    let mut value = OsString::from(format!("{kind}="));
    value.push(path);
    vec!["--layer".into(), value]
}

/// Flips bit `bit` of byte `at` of the file at `path`.
pub fn flip(path: &Path, at: usize, bit: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 1 << bit;
    std::fs::write(path, bytes).unwrap();
}

/// Cuts the file at `path` to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}
