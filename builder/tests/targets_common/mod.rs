//! Shared helpers of the targets tests: the real `imgbuild` binary run on the default image and
//! on a custom definition holding every kind of entry, builds shared within one test binary,
//! the manifest, and the real tools the outputs are checked with.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use imgbuild::manifest::{Manifest, Role};

/// The imgbuild binary under test.
pub fn imgbuild() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_imgbuild"))
}

/// The static init every image carries, built beforehand next to imgbuild.
pub fn init() -> PathBuf {
    let bin = imgbuild();
    let dir = bin.parent().unwrap();
    let candidates = [
        dir.join("imgbuild-init"),
        dir.parent().unwrap().join("release/imgbuild-init"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no imgbuild-init at {} (the image carries the init): run \
                 `cargo build --release -p imgbuild-init` first",
                candidates[0].display()
            )
        })
}

/// Asserts that `tool` can be run, naming the Debian package to install otherwise.
pub fn need(tool: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(found, "{tool} is needed: apt-get install -y {package}");
}

/// True when running as root (device nodes, ownership and capabilities on the host need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs imgbuild with `args` (the init is added to builds).
pub fn imgbuild_run<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args
        .into_iter()
        .map(|a| a.as_ref().to_os_string())
        .collect();
    let mut cmd = Command::new(imgbuild());
    cmd.env_remove("SOURCE_DATE_EPOCH")
        .env_remove("IMGBUILD_INIT");
    cmd.args(&args);
    if args
        .first()
        .is_some_and(|a| a != "verify" && a != "collect")
    {
        cmd.arg("--init").arg(init());
    }
    cmd.output().unwrap()
}

/// Text of both streams, for messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Builds into `out` with `args` after `build`; panics with the output if it fails.
pub fn build(out: &Path, args: &[&str]) -> Manifest {
    let mut all: Vec<&OsStr> = vec!["build".as_ref(), "-q".as_ref(), "--out".as_ref()];
    all.push(out.as_os_str());
    all.extend(args.iter().map(OsStr::new));
    let result = imgbuild_run(&all);
    assert!(
        result.status.success(),
        "imgbuild {all:?}\n{}",
        text(&result)
    );
    Manifest::read(out).unwrap()
}

fn tests_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("targets-tests");
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// A fresh scratch directory under the target directory (builds of a few hundred MB stay out
/// of /tmp), removed when dropped, also when the test fails.
pub fn scratch(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("{name}."))
        .tempdir_in(tests_dir())
        .unwrap()
}

/// What a shared build depends on besides its key: the imgbuild and init binaries and the
/// fixture code. A build made by other binaries is made again.
fn stamp() -> String {
    use std::os::unix::fs::MetadataExt;
    let mut s = String::new();
    for p in [imgbuild(), init()] {
        let m = fs::metadata(&p).unwrap();
        s.push_str(&format!(
            "{} {} {}.{}\n",
            p.display(),
            m.len(),
            m.mtime(),
            m.mtime_nsec()
        ));
    }
    use sha2::Digest;
    let fixture = sha2::Sha256::digest(include_str!("mod.rs").as_bytes());
    s.push_str(&format!("fixture {fixture:x}\n"));
    s
}

/// A build shared by every targets test (of this and the other test binaries), made by `make`
/// into the directory it is given, once for a given imgbuild, init and fixture code; returns
/// the directory. Kept under the target directory, replaced when the binaries change.
pub fn shared_build(key: &str, make: impl FnOnce(&Path)) -> PathBuf {
    static SEEN: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let seen = SEEN.get_or_init(Mutex::default);
    let mut map = seen.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(key) {
        return p.clone();
    }
    let root = tests_dir().join("shared");
    fs::create_dir_all(&root).unwrap();
    // Test binaries may run at once: one makes a build, the others wait for it.
    let lock = fs::File::create(root.join(format!("{key}.lock"))).unwrap();
    // SAFETY: flock on an open descriptor; released when the file is closed.
    assert_eq!(
        unsafe { libc::flock(std::os::unix::io::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) },
        0
    );
    let dir = root.join(key);
    let stamp_file = root.join(format!("{key}.stamp"));
    let stamp = stamp();
    if fs::read_to_string(&stamp_file).ok().as_deref() != Some(stamp.as_str()) {
        let _ = fs::remove_file(&stamp_file);
        if dir.exists() {
            fs::remove_dir_all(&dir).unwrap();
        }
        fs::create_dir_all(&dir).unwrap();
        make(&dir);
        fs::write(&stamp_file, &stamp).unwrap();
    }
    drop(lock);
    map.insert(key.to_string(), dir.clone());
    dir
}

/// The default image, `--target all`, built once for all tests; returns the output dir.
pub fn default_all() -> PathBuf {
    shared_build("default-all", |dir| {
        build(&dir.join("out"), &["--target", "all"]);
    })
    .join("out")
}

/// The custom image (see [`write_custom`]), `--target all`, built once for all tests.
pub fn custom_all() -> PathBuf {
    shared_build("custom-all", |dir| {
        let def = write_custom(&dir.join("fixture"));
        build(
            &dir.join("out"),
            &["--image", def.to_str().unwrap(), "--target", "all"],
        );
    })
    .join("out")
}

/// Content of the marker file of the custom image: unique bytes the corruption tests find in
/// uncompressed artefacts.
pub const MARKER: &[u8] = b"imgbuild-targets-marker-5b1f0c9e";
/// Where the marker file lies in the image.
pub const MARKER_PATH: &str = "/srv/marker.txt";
/// A VFS capability (revision 2, effective) granting cap_net_raw, as setcap writes it.
pub const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and a valid buffer of value.len() bytes.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(rc, 0, "setxattr {name} on {}", path.display());
}

fn mknod(path: &Path, mode: u32, major: u32, minor: u32) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid C string; mknod has no memory effects.
    let rc = unsafe { libc::mknod(p.as_ptr(), mode, libc::makedev(major, minor)) };
    assert_eq!(rc, 0, "mknod {}", path.display());
    // mknod applies the umask; the test wants the mode it asked for.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o7777)).unwrap();
}

/// Writes a host tree and a definition using it under `dir`; returns the definition's path.
///
/// The tree (a `dir` layer) has hard links across directories, files and a directory owned by
/// uid 70000, a file capability and a user xattr set on the host, a character device, a fifo,
/// a symlink, a setuid file, a sparse file and the marker file. A `files` layer adds inline
/// entries: a capability, character and block devices, uid 70000, a user xattr.
pub fn write_custom(dir: &Path) -> PathBuf {
    assert!(
        is_root(),
        "the custom image needs root: device nodes, uid 70000 and security.capability on the host"
    );
    let tree = dir.join("tree");
    let srv = tree.join("srv");
    for d in ["data", "other", "owned", "caps", "dev"] {
        fs::create_dir_all(srv.join(d)).unwrap();
    }
    let data: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    fs::write(srv.join("data/a.bin"), &data).unwrap();
    fs::hard_link(srv.join("data/a.bin"), srv.join("data/a-link.bin")).unwrap();
    fs::hard_link(srv.join("data/a.bin"), srv.join("other/a-third.bin")).unwrap();
    fs::write(srv.join("owned/file"), b"owned by 70000\n").unwrap();
    std::os::unix::fs::chown(srv.join("owned/file"), Some(70000), Some(70001)).unwrap();
    std::os::unix::fs::chown(srv.join("owned"), Some(70000), Some(70000)).unwrap();
    fs::write(srv.join("caps/tool"), b"#!/bin/sh\necho tool\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(srv.join("caps/tool"), fs::Permissions::from_mode(0o755)).unwrap();
    set_xattr(&srv.join("caps/tool"), "security.capability", &CAP_NET_RAW);
    set_xattr(&srv.join("caps/tool"), "user.origin", b"targets test");
    mknod(&srv.join("dev/null2"), libc::S_IFCHR | 0o666, 1, 3);
    mknod(&srv.join("fifo"), libc::S_IFIFO | 0o644, 0, 0);
    std::os::unix::fs::symlink("data/a.bin", srv.join("link")).unwrap();
    fs::write(srv.join("setuid"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(srv.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    let sparse = fs::File::create(srv.join("sparse")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"end", (8 << 20) - 3).unwrap();
    let mut marker = Vec::new();
    while marker.len() < 8192 {
        marker.extend_from_slice(MARKER);
        marker.push(b'\n');
    }
    fs::write(tree.join(MARKER_PATH.trim_start_matches('/')), &marker).unwrap();

    let def = dir.join("custom.toml");
    let cap_hex: String = CAP_NET_RAW.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(
        &def,
        format!(
            r#"name = "custom"
description = "targets tests: every kind of entry"

[filesystem]
fs = "ext4"
size = "auto"
free = "8M"

[vm]
memory = 256
vcpus = 1
results_disk = "4M"

[openvz]
dist = "testos"
version = "7"
extra = "bench"

[[layers]]
name = "base"
builtin = true

[[layers]]
name = "tree"
dir = "{tree}"

[[layers]]
name = "inline"
files = [
  {{ path = "/opt/inline/ping", content = "ping\n", mode = "0755", xattrs = {{ "security.capability" = "hex:{cap_hex}" }} }},
  {{ path = "/opt/inline/ttyX", type = "char", major = 4, minor = 64, mode = "0620", owner = "0:5" }},
  {{ path = "/opt/inline/sdz", type = "block", major = 8, minor = 240, mode = "0660", owner = "0:6" }},
  {{ path = "/opt/inline/owned", content = "uid 70000\n", owner = "70000:70001", mode = "0640" }},
  {{ path = "/opt/inline/note", content = "x\n", xattrs = {{ "user.note" = "hello" }} }},
]
"#,
            tree = tree.display()
        ),
    )
    .unwrap();
    def
}

/// Every file of the manifest: (target, role, path relative to the output directory).
pub fn files(manifest: &Manifest) -> Vec<(String, Role, String)> {
    manifest
        .targets
        .iter()
        .flat_map(|(t, f)| {
            f.files
                .iter()
                .map(move |f| (t.clone(), f.role, f.path.clone()))
        })
        .collect()
}

/// Runs a command; panics with its output unless it exits 0.
pub fn ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}\n{}", text(&out));
    out
}

/// Copies `from` into `to` file by file, keeping holes (`cp --sparse=always`).
pub fn copy_tree(from: &Path, to: &Path) {
    ok(Command::new("cp")
        .args(["-a", "--sparse=always"])
        .arg(from)
        .arg(to));
}

/// Offset of the first `needle` in the file at `path` (read in 8 MiB pieces, sparse-safe
/// enough for test images of a few hundred MiB).
pub fn find_bytes(path: &Path, needle: &[u8]) -> Option<u64> {
    use std::io::Read;
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    let mut base = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return None;
        }
        let mut window = std::mem::take(&mut carry);
        let start = base - window.len() as u64;
        window.extend_from_slice(&buf[..n]);
        if let Some(i) = window.windows(needle.len()).position(|w| w == needle) {
            return Some(start + i as u64);
        }
        carry = window[window.len().saturating_sub(needle.len() - 1)..].to_vec();
        base += n as u64;
    }
}

/// Flips one byte of the file at `offset`.
pub fn flip_byte(path: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x20;
    f.write_all_at(&b, offset).unwrap();
}

/// The first partition of an MBR disk image, as `sfdisk` (util-linux) reads the table,
/// copied out with `dd conv=sparse` into `dest`.
pub fn extract_first_partition(disk: &Path, dest: &Path) {
    let out = ok(Command::new("sfdisk").arg("-J").arg(disk));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let part = &json["partitiontable"]["partitions"][0];
    let (start, size) = (
        part["start"].as_u64().unwrap(),
        part["size"].as_u64().unwrap(),
    );
    assert!(start > 0 && size > 0, "{json}");
    ok(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", dest.display()))
        .args(["bs=512", "conv=sparse", "status=none"])
        .arg(format!("skip={start}"))
        .arg(format!("count={size}")));
}

/// `e2fsck -fn` on an image file; panics with its output unless it exits 0.
pub fn e2fsck(image: &Path) {
    ok(Command::new("e2fsck").arg("-fn").arg(image));
}

/// Names of the entries of `dir`, sorted (for "nothing written" checks).
pub fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let meta = fs::symlink_metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        out.push((
            p.strip_prefix(root).unwrap().display().to_string(),
            (meta.mtime_nsec() as u64) ^ ((meta.mtime() as u64) << 30) ^ meta.len(),
        ));
        if meta.is_dir() {
            walk(root, &p, out);
        }
    }
}
