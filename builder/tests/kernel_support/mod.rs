//! Shared helpers of the kernel integration tests: finding the host's kernel (or failing when
//! `IMGBUILD_REQUIRE_QEMU=1` says it must be there) and compiling small static programs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The host's newest kernel with a modules directory: (image, modules dir, release).
/// `None` (with the reason printed) when there is none, unless IMGBUILD_REQUIRE_QEMU=1.
pub fn host_kernel() -> Option<(PathBuf, PathBuf, String)> {
    let mut found: Vec<(String, PathBuf, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/boot") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(rel) = name.strip_prefix("vmlinuz-") {
                let modules = Path::new("/lib/modules").join(rel);
                if modules.join("modules.dep").is_file() {
                    found.push((rel.to_string(), e.path(), modules));
                }
            }
        }
    }
    found.sort_by(|a, b| imgbuild::kernel::version_cmp(&a.0, &b.0));
    match found.pop() {
        Some((rel, image, modules)) => Some((image, modules, rel)),
        None => {
            require("no /boot/vmlinuz-X with /lib/modules/X/modules.dep on this host");
            None
        }
    }
}

/// Fails under IMGBUILD_REQUIRE_QEMU=1, else prints why the test is skipped.
pub fn require(reason: &str) {
    if std::env::var("IMGBUILD_REQUIRE_QEMU").as_deref() == Ok("1") {
        panic!("IMGBUILD_REQUIRE_QEMU=1 but {reason}");
    }
    eprintln!("skipping: {reason}");
}

/// Whether a program is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Compiles C `source` into `dir/name` with `gcc` and `flags` (e.g. `-static`).
pub fn compile_c(dir: &Path, name: &str, source: &str, flags: &[&str]) -> PathBuf {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-O2")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc {flags:?} failed for {name}");
    out
}

/// A static program that does nothing (a stand-in init for archive tests).
pub fn tiny_static(dir: &Path) -> PathBuf {
    compile_c(
        dir,
        "tiny",
        "int main(void) { return 0; }\n",
        &["-static", "-s"],
    )
}
