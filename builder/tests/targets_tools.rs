//! The disks of `--target all` checked with independent tools: `qemu-img check`, `qemu-img
//! info` (the create type of each VMDK form), `qemu-img compare` of the raw disk against every
//! VMDK, and `e2fsck -fn` on every filesystem inside every artefact: the bare ext4 image, the
//! partition of the raw disk (cut out with `dd` where `sfdisk` says it is), the partition inside
//! each VMDK (converted to raw by qemu-img first). For the default and the custom image.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::path::Path;
use std::process::Command;

use imgbuild::manifest::{Manifest, Role};
use targets_common::*;

fn qemu_info(path: &Path) -> serde_json::Value {
    let out = ok(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(path));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The VMDKs qemu-img opens: everything but the raw extent of monolithicFlat.
fn vmdks(manifest: &Manifest) -> Vec<String> {
    files(manifest)
        .into_iter()
        .filter(|(t, _, p)| t == "vmware" && p.ends_with(".vmdk") && !p.ends_with("-flat.vmdk"))
        .map(|(_, _, p)| p)
        .collect()
}

fn check_disks(out: &Path, name: &str) {
    need("qemu-img", "qemu-utils");
    let manifest = Manifest::read(out).unwrap();
    let raw = out.join(format!("qemu/{name}.raw"));
    let all = vmdks(&manifest);
    let expected = [
        (format!("vmware/{name}.vmdk"), "monolithicSparse"),
        (format!("vmware/{name}-stream.vmdk"), "streamOptimized"),
        (format!("vmware/{name}-esx.vmdk"), "monolithicFlat"),
        (format!("vmware/{name}-results.vmdk"), "monolithicSparse"),
    ];
    assert_eq!(all.len(), expected.len(), "{all:?}");
    for (path, create_type) in &expected {
        assert!(all.contains(path), "{path} not in {all:?}");
        let full = out.join(path);
        let check = ok(Command::new("qemu-img")
            .args(["check", "-f", "vmdk"])
            .arg(&full));
        assert!(
            String::from_utf8_lossy(&check.stdout).contains("No errors"),
            "{}",
            text(&check)
        );
        let info = qemu_info(&full);
        assert_eq!(info["format"], "vmdk", "{path}: {info}");
        assert_eq!(
            info["format-specific"]["data"]["create-type"], *create_type,
            "{path}: {info}"
        );
        if path.ends_with("-results.vmdk") {
            continue;
        }
        assert_eq!(
            info["virtual-size"].as_u64(),
            Some(std::fs::metadata(&raw).unwrap().len()),
            "{path}"
        );
        let cmp = ok(Command::new("qemu-img")
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&raw)
            .arg(&full));
        assert!(
            String::from_utf8_lossy(&cmp.stdout).contains("Images are identical"),
            "{path}: {}",
            text(&cmp)
        );
    }
    // The flat extent is the raw disk itself.
    let flat = out.join(format!("vmware/{name}-esx-flat.vmdk"));
    ok(Command::new("cmp").arg(&raw).arg(&flat));
}

fn fsck_everything(out: &Path, name: &str) {
    need("e2fsck", "e2fsprogs");
    need("sfdisk", "fdisk");
    need("qemu-img", "qemu-utils");
    let manifest = Manifest::read(out).unwrap();
    let work = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for (_, role, path) in files(&manifest) {
        let full = out.join(&path);
        match role {
            Role::Rootfs => {
                e2fsck(&full);
                checked.push(path);
            }
            Role::Disk if path.ends_with("-flat.vmdk") || path.ends_with(".raw") => {
                let part = work.path().join("part.img");
                extract_first_partition(&full, &part);
                e2fsck(&part);
                std::fs::remove_file(&part).unwrap();
                checked.push(path);
            }
            Role::Disk if path.ends_with(".vmdk") => {
                let raw = work.path().join("converted.raw");
                ok(Command::new("qemu-img")
                    .args(["convert", "-f", "vmdk", "-O", "raw"])
                    .arg(&full)
                    .arg(&raw));
                let part = work.path().join("part.img");
                extract_first_partition(&raw, &part);
                e2fsck(&part);
                std::fs::remove_file(&part).unwrap();
                std::fs::remove_file(&raw).unwrap();
                checked.push(path);
            }
            _ => {}
        }
    }
    for want in [
        format!("xen/{name}.ext4"),
        format!("qemu/{name}.raw"),
        format!("vmware/{name}.vmdk"),
        format!("vmware/{name}-stream.vmdk"),
        format!("vmware/{name}-esx.vmdk"),
        format!("vmware/{name}-esx-flat.vmdk"),
    ] {
        assert!(checked.contains(&want), "{want} not checked: {checked:?}");
    }
}

#[test]
fn default_image_disks_pass_qemu_img() {
    check_disks(&default_all(), "minimal");
}

#[test]
fn custom_image_disks_pass_qemu_img() {
    check_disks(&custom_all(), "custom");
}

#[test]
fn default_image_filesystems_pass_e2fsck() {
    fsck_everything(&default_all(), "minimal");
}

#[test]
fn custom_image_filesystems_pass_e2fsck() {
    fsck_everything(&custom_all(), "custom");
}

#[test]
fn e2fsck_and_qemu_img_catch_damage() {
    // The tools used above must be able to fail: a zeroed superblock and a truncated VMDK.
    let out = default_all();
    let work = tempfile::tempdir().unwrap();
    let image = work.path().join("broken.ext4");
    ok(Command::new("cp")
        .arg("--sparse=always")
        .arg(out.join("xen/minimal.ext4"))
        .arg(&image));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&image)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &[0u8; 1024], 1024).unwrap();
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&image)
        .output()
        .unwrap();
    assert!(!fsck.status.success());

    let vmdk = work.path().join("broken.vmdk");
    std::fs::copy(out.join("vmware/minimal.vmdk"), &vmdk).unwrap();
    // Point the first grain table entry of both directories past the end of the file.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&vmdk)
        .unwrap();
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 64];
    f.read_exact_at(&mut header, 0).unwrap();
    for at in [48, 56] {
        let gd = u64::from_le_bytes(header[at..at + 8].try_into().unwrap());
        let mut gt = [0u8; 4];
        f.read_exact_at(&mut gt, gd * 512).unwrap();
        let gt = u64::from(u32::from_le_bytes(gt));
        f.write_all_at(&0x7fff_ff00u32.to_le_bytes(), gt * 512)
            .unwrap();
    }
    let check = Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(&vmdk)
        .output()
        .unwrap();
    assert!(!check.status.success(), "{}", text(&check));
}
