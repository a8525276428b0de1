//! Least privilege: the builder needs no root for any target. Run as root, these tests drop to
//! `nobody` (setpriv) and build every target of the default image into a directory that user
//! owns, verify it, and check that the root tree is the one a root build makes; `--device` is
//! the only thing that needs a permission, write access to the device. Skipped, with the reason
//! printed, when the tests cannot switch users.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input_common;

use std::path::Path;
use std::process::{Command, Output};

use bad_input_common::*;

const NOBODY: u32 = 65534;

/// Runs the CLI as nobody with HOME and TMPDIR in `home`; None when that is not possible.
fn as_nobody(home: &Path, args: &[&std::ffi::OsStr]) -> Option<Output> {
    if is_root() {
        let tmp = home.join("tmp");
        std::fs::create_dir_all(&tmp).unwrap();
        sh(&format!("chown -R {NOBODY}:{NOBODY} {}", q(home)));
        let out = Command::new("setpriv")
            .args([
                &format!("--reuid={NOBODY}"),
                &format!("--regid={NOBODY}"),
                "--clear-groups",
                "env",
            ])
            .arg(format!("HOME={}", home.display()))
            .arg(format!("TMPDIR={}", tmp.display()))
            .arg(BIN)
            .args(args)
            .current_dir(home)
            .output()
            .ok()?;
        Some(out)
    } else {
        None
    }
}

fn is_root() -> bool {
    sh("id -u").trim() == "0"
}

/// A directory nobody can use: under the target directory, with every parent searchable.
fn home() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("nobody-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    std::fs::set_permissions(
        d.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    d
}

fn digest(out: &Path) -> String {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    m["rootfs_digest"].as_str().unwrap().to_string()
}

#[test]
fn every_target_builds_and_verifies_as_nobody() {
    let home = home();
    let out = home.path().join("out");
    let init = init_binary();
    let args = [
        "build".as_ref(),
        "--target".as_ref(),
        "all".as_ref(),
        "--quiet".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--init".as_ref(),
        init.as_os_str(),
    ];
    let Some(o) = as_nobody(home.path(), &args) else {
        eprintln!("skipped: not root, cannot switch to nobody");
        return;
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    if stderr.contains("Permission denied") && !out.exists() {
        eprintln!("skipped: nobody cannot read the binaries or the kernel here: {stderr}");
        return;
    }
    assert!(o.status.success(), "build as nobody: {stderr}");
    for t in ["xen", "qemu", "vmware", "openvz"] {
        assert!(out.join(t).is_dir(), "{t} missing");
    }
    // Every file belongs to nobody, and the tree is the root build's.
    let owners = sh(&format!("find {} ! -user {NOBODY} | wc -l", q(&out)));
    assert_eq!(owners.trim(), "0", "files not owned by nobody");
    assert_eq!(digest(&out), digest(good_build()));
    let v = as_nobody(home.path(), &["verify".as_ref(), out.as_os_str()]).unwrap();
    assert!(
        v.status.success(),
        "verify as nobody: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );
    let left = sh(&format!("ls -A {}", q(&home.path().join("tmp"))));
    assert!(left.trim().is_empty(), "left in TMPDIR: {left}");
}

#[test]
fn device_needs_write_access_and_nothing_else() {
    let home = home();
    // A loop device big enough for the image, owned by root (mode 0660): nobody may not open it.
    let backing = home.path().join("disk.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(512 << 20)
        .unwrap();
    let Ok(attach) = Command::new("losetup")
        .arg("-f")
        .arg("--show")
        .arg(&backing)
        .output()
    else {
        eprintln!("skipped: no losetup");
        return;
    };
    if !attach.status.success() {
        eprintln!(
            "skipped: cannot attach a loop device ({})",
            String::from_utf8_lossy(&attach.stderr).trim()
        );
        return;
    }
    let dev = String::from_utf8_lossy(&attach.stdout).trim().to_string();
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());
    sh(&format!("chown 0:0 {dev} && chmod 0660 {dev}"));
    let out = home.path().join("out");
    let init = init_binary();
    let args = [
        "build".as_ref(),
        "--target".as_ref(),
        "xen".as_ref(),
        "--quiet".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
        "--init".as_ref(),
        init.as_os_str(),
        "--device".as_ref(),
        dev.as_ref(),
    ];
    let Some(o) = as_nobody(home.path(), &args) else {
        eprintln!("skipped: not root, cannot switch to nobody");
        return;
    };
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(INPUT), "{stderr}");
    assert!(
        stderr.contains(&dev) && stderr.contains("Permission denied"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    let untouched = sh(&format!(
        "cmp -s {} /dev/zero -n 1048576; echo $?",
        q(&backing)
    ));
    assert_eq!(untouched.trim(), "0", "the device was written");
    assert!(!out.join("xen").exists(), "a failed build left outputs");
}
