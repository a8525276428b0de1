//! The musl build of the guest init, for SL5 (2.6.18) and SL6 / OpenVZ 6 (2.6.32) kernels that
//! glibc's static startup refuses. These tests need the `x86_64-unknown-linux-musl` Rust target:
//! without it they print why and pass (CI machines may lack it; nothing else depends on it).
//! With the target installed and the binary not yet built, they build it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sl_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::kernel::elf_check::{
    check_kernel_compat, check_static_executable, locate_musl_init, min_kernel, ElfCheckError,
    EM_X86_64, MUSL_BUILD,
};
use sl_common::{el_root_tar, gnu_init, image, musl_init, q, sh};

/// The musl init, built if the target is there; `None` (with the reason printed) otherwise.
fn musl() -> Option<PathBuf> {
    match musl_init() {
        Ok(p) => Some(p),
        Err(why) if why.contains("is not built") => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let status = Command::new(cargo)
                .current_dir(sl_common::repo())
                .args(MUSL_BUILD.split_whitespace().skip(1))
                .status()
                .unwrap();
            assert!(status.success(), "{MUSL_BUILD} failed");
            Some(musl_init().unwrap())
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            None
        }
    }
}

#[test]
fn musl_init_is_static_with_no_kernel_floor_and_glibc_has_one() {
    let Some(musl) = musl() else { return };
    let found = check_static_executable(&musl, EM_X86_64).unwrap();
    assert!(found.size > 0);
    // The real tools agree that nothing is loaded at run time.
    let headers = sh(&format!("readelf -lW {}", q(&musl)));
    assert!(!headers.contains("INTERP"), "{headers}");
    let dynamic = sh(&format!("readelf -dW {}", q(&musl)));
    assert!(!dynamic.contains("NEEDED"), "{dynamic}");

    let musl_bytes = std::fs::read(&musl).unwrap();
    assert_eq!(min_kernel(&musl_bytes), None);
    check_kernel_compat(&musl, &musl_bytes, "2.6.18-398.el5").unwrap();
    check_kernel_compat(&musl, &musl_bytes, "2.6.32-754.35.1.el6.x86_64").unwrap();

    // glibc's note, as `file` reads it, is what the builder enforces.
    let gnu = gnu_init();
    let gnu_bytes = std::fs::read(&gnu).unwrap();
    let floor = min_kernel(&gnu_bytes).expect("glibc static binaries carry an ABI note");
    let described = sh(&format!("file -b {}", q(&gnu)));
    let shown = format!("for GNU/Linux {}.{}.{}", floor[0], floor[1], floor[2]);
    assert!(described.contains(&shown), "{described} vs {shown}");
    let err = check_kernel_compat(&gnu, &gnu_bytes, "2.6.32-754.35.1.el6.x86_64").unwrap_err();
    assert!(matches!(err, ElfCheckError::KernelTooOld { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(MUSL_BUILD) && text.contains("libc = \"musl\""),
        "{text}"
    );
    check_kernel_compat(&gnu, &gnu_bytes, "3.10.0-1160.el7.x86_64").unwrap();
}

#[test]
fn musl_init_runs_in_host_mode() {
    let Some(musl) = musl() else { return };
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.bin");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let o = Command::new(&musl)
        .args(["--host", "--profile", "smoke", "--results"])
        .arg(&results)
        .arg("--workdir")
        .arg(&work)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The builder reads the results the musl init wrote.
    let c = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .arg("collect")
        .arg(&results)
        .output()
        .unwrap();
    assert!(c.status.success(), "{}", String::from_utf8_lossy(&c.stderr));
}

#[test]
fn sl6_build_finds_the_musl_init_itself() {
    let Some(musl) = musl() else { return };
    // From this test's own location (target/<gnu triple>/<profile>/deps).
    assert_eq!(
        locate_musl_init(None).unwrap().canonicalize().unwrap(),
        musl.canonicalize().unwrap()
    );
    let work = tempfile::tempdir().unwrap();
    let tar = el_root_tar(work.path());
    let out = work.path().join("out");
    // No --init, no IMGBUILD_INIT: the imgbuild binary looks in the target directory it runs
    // from, as the definition's `[init] libc = "musl"` asks.
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .env_remove("IMGBUILD_INIT")
        .args(["build", "--image"])
        .arg(image("sl6-bench.toml"))
        .arg("--set")
        .arg(format!("rootfs.tar={}", tar.display()))
        .args(["--target", "openvz", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let template = out.join("openvz/scientific-6-x86_64-bench.tar.gz");
    let inside = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -xzOf {} ./sbin/imgbuild-init 2>/dev/null || tar -xzOf {} sbin/imgbuild-init",
            q(&template),
            q(&template)
        ))
        .output()
        .unwrap()
        .stdout;
    assert!(
        inside == std::fs::read(&musl).unwrap(),
        "the template's init is not the musl build"
    );
}

/// A copy of the host kernel whose version string claims a 2.6.32 EL6 release of the same
/// length (the string sits in the setup header's area and cannot grow).
fn kernel_claiming_2_6_32(dir: &Path) -> Option<(PathBuf, String)> {
    let (host_release, vmlinuz) = sl_common::host_kernel()?;
    let n = host_release.len();
    let fake = if n >= 20 {
        format!("2.6.32-{}75.el6.x86_64", "0".repeat(n - 20))
    } else if n > 7 {
        format!("2.6.32-{}", "0".repeat(n - 7))
    } else {
        return None;
    };
    let mut bytes = std::fs::read(vmlinuz).ok()?;
    let needle = format!("{host_release} (");
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_bytes())?;
    bytes[at..at + n].copy_from_slice(fake.as_bytes());
    let path = dir.join(format!("vmlinuz-{fake}"));
    std::fs::write(&path, bytes).ok()?;
    Some((path, fake))
}

#[test]
fn glibc_init_with_a_2_6_32_kernel_is_refused_before_building() {
    let work = tempfile::tempdir().unwrap();
    let Some((kernel, release)) = kernel_claiming_2_6_32(work.path()) else {
        eprintln!("skipped: no host kernel to disguise");
        return;
    };
    let tar = el_root_tar(work.path());
    let out = work.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["build", "--image"])
        .arg(image("sl6-bench.toml"))
        .arg("--set")
        .arg(format!("rootfs.tar={}", tar.display()))
        .arg("--set")
        .arg(format!("kernel.path={}", kernel.display()))
        .args(["--set", "init.libc=gnu", "--init"])
        .arg(gnu_init())
        .args(["--target", "qemu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(e.contains("FATAL: kernel too old"), "{e}");
    assert!(e.contains(&format!("kernel {release}")), "{e}");
    assert!(e.contains(MUSL_BUILD), "{e}");
    assert!(!out.join("manifest.json").exists());
}
