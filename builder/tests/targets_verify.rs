//! `imgbuild verify` on real builds: every artefact of the default and the custom image agrees
//! with the manifest; one corrupted byte in the root tree inside any artefact (ext4 image,
//! raw disk, each VMDK form, the OpenVZ template) makes verify fail naming that file — also
//! when the manifest's sha256 is updated to match, so the tree itself is what was re-read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::fs;
use std::path::Path;
use std::process::Command;

use imgbuild::manifest::{Manifest, Role};
use targets_common::*;

fn verify(dir: &Path) -> (bool, String, String) {
    let out = imgbuild_run([OsStrArg::from("verify"), OsStrArg::from(dir)]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

type OsStrArg = std::ffi::OsString;

#[test]
fn default_image_verifies() {
    let out = default_all();
    let (ok, stdout, stderr) = verify(&out);
    assert!(ok, "{stdout}\n{stderr}");
    let manifest = Manifest::read(&out).unwrap();
    // Every root-carrying file was re-read and found the same.
    for (_, role, path) in files(&manifest) {
        let line = stdout
            .lines()
            .find(|l| l.trim_end().ends_with(&path) || l.contains(&format!("{path} ")))
            .unwrap_or_else(|| panic!("{path} not in\n{stdout}"));
        assert!(line.trim_start().starts_with("ok"), "{line}");
        if matches!(role, Role::Rootfs | Role::Disk | Role::Template) {
            assert!(line.ends_with("tree same"), "{line}");
        }
    }
}

fn sha256_hex(path: &Path) -> String {
    let out = ok(Command::new("sha256sum").arg(path));
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Points the manifest's entry for `relative` at the file's present bytes.
fn update_manifest_sha(dir: &Path, relative: &str) {
    let path = dir.join("manifest.json");
    let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let sha = sha256_hex(&dir.join(relative));
    let mut found = false;
    for target in m["targets"].as_object_mut().unwrap().values_mut() {
        for f in target["files"].as_array_mut().unwrap() {
            if f["path"] == relative {
                f["sha256"] = sha.clone().into();
                found = true;
            }
        }
    }
    assert!(found, "{relative} not in the manifest");
    fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

/// Changes one byte of the marker file's data inside the artefact at `relative`.
fn corrupt(dir: &Path, relative: &str) {
    let path = dir.join(relative);
    let scratch = dir.join("corrupt.tmp");
    if relative.ends_with(".tar.gz") {
        let tar = ok(Command::new("gzip").arg("-dc").arg(&path)).stdout;
        fs::write(&scratch, tar).unwrap();
        let at = find_bytes(&scratch, MARKER).expect("marker in the template");
        flip_byte(&scratch, at + 3);
        let gz = ok(Command::new("gzip").args(["-n", "-c"]).arg(&scratch)).stdout;
        fs::write(&path, gz).unwrap();
    } else if relative.ends_with("-stream.vmdk") {
        // Compressed grains: through qemu-img to raw and back to a streamOptimized VMDK.
        ok(Command::new("qemu-img")
            .args(["convert", "-f", "vmdk", "-O", "raw"])
            .arg(&path)
            .arg(&scratch));
        let at = find_bytes(&scratch, MARKER).expect("marker in the disk");
        flip_byte(&scratch, at + 3);
        fs::remove_file(&path).unwrap();
        ok(Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "vmdk"])
            .args(["-o", "subformat=streamOptimized,adapter_type=lsilogic"])
            .arg(&scratch)
            .arg(&path));
    } else {
        let at = find_bytes(&path, MARKER).unwrap_or_else(|| panic!("marker in {relative}"));
        flip_byte(&path, at + 3);
    }
    let _ = fs::remove_file(&scratch);
}

fn failing_paths(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("FAIL"))
        .map(|l| {
            let rest = l.trim_start().trim_start_matches("FAIL").trim_start();
            let rest = rest.split_once(' ').map_or(rest, |(_, r)| r).trim_start();
            rest.split_once(": ").map_or(rest, |(p, _)| p).to_string()
        })
        .collect()
}

#[test]
fn custom_image_verifies_and_every_corruption_is_named() {
    need("qemu-img", "qemu-utils");
    need("sha256sum", "coreutils");
    let out = custom_all();
    let (good, stdout, stderr) = verify(&out);
    assert!(good, "{stdout}\n{stderr}");
    let manifest = Manifest::read(&out).unwrap();
    let carriers: Vec<String> = files(&manifest)
        .into_iter()
        .filter(|(_, role, path)| {
            matches!(role, Role::Rootfs | Role::Disk | Role::Template)
                // The monolithicFlat descriptor is text; its extent carries the data.
                && !path.ends_with("-esx.vmdk")
        })
        .map(|(_, _, path)| path)
        .collect();
    for want in [
        "xen/custom.ext4",
        "qemu/custom.raw",
        "vmware/custom.vmdk",
        "vmware/custom-stream.vmdk",
        "vmware/custom-esx-flat.vmdk",
        "openvz/testos-7-x86_64-bench.tar.gz",
    ] {
        assert!(carriers.iter().any(|c| c == want), "{want}: {carriers:?}");
    }

    let scratch_dir = scratch("verify-corrupt");
    let work = scratch_dir.path();
    for (i, relative) in carriers.iter().enumerate() {
        let copy = work.join(format!("case{i}"));
        copy_tree(&out, &copy);
        corrupt(&copy, relative);

        // The sha256 no longer matches: verify names the file.
        let (good, stdout, stderr) = verify(&copy);
        assert!(!good, "{relative}: verify passed\n{stdout}");
        let failing = failing_paths(&stdout);
        assert!(
            failing.contains(relative),
            "{relative}: {failing:?}\n{stdout}"
        );
        assert!(stderr.contains(relative.as_str()), "{stderr}");

        // With the manifest's sha256 updated, only re-reading the tree can find the change.
        update_manifest_sha(&copy, relative);
        let out = imgbuild_run([OsStrArg::from("verify"), OsStrArg::from(&copy)]);
        assert_eq!(out.status.code(), Some(2), "{relative}\n{}", text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let line = stdout
            .lines()
            .find(|l| l.contains(relative.as_str()) && l.contains("FAIL"))
            .unwrap_or_else(|| panic!("{relative} not failing\n{stdout}"));
        assert!(line.contains("tree digest"), "{line}");
        assert!(!line.contains("sha256 is"), "{line}");
        // Everything else is still fine (the flat extent's descriptor reads the same data).
        for other in failing_paths(&stdout) {
            let descriptor_of_flat = relative.ends_with("-esx-flat.vmdk")
                && other == relative.replace("-flat.vmdk", ".vmdk");
            assert!(
                other == *relative || descriptor_of_flat,
                "{relative} corrupted, {other} fails too\n{stdout}"
            );
        }
        fs::remove_dir_all(&copy).unwrap();
    }
}
