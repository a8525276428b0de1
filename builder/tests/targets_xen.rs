//! The xl domain config read by Xen's own parser: a small C program (tests/xl_parse.c) built
//! against libxlutil and libxenlight (Debian's libxen-dev) reads it with xlu_cfg_readfile, the
//! keys with xlu_cfg_get_string/long, every disk with xlu_disk_parse, and prints what libxl
//! made of it. Direct kernel boot (PVH and PV), pygrub, and `--xen-dir`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use imgbuild::manifest::Manifest;
use serde_json::Value;
use targets_common::*;

/// The parser helper, compiled once per test run.
fn xl_parse() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        need("gcc", "gcc");
        assert!(
            Path::new("/usr/include/libxlutil.h").exists(),
            "Xen's headers are needed: apt-get install -y libxen-dev"
        );
        // Kept for the whole run (a static is never dropped), at a fixed place so that runs
        // replace it rather than pile up.
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("targets-tests");
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("xl_parse");
        ok(Command::new("gcc")
            .args(["-Wall", "-Wextra", "-Werror", "-O1", "-o"])
            .arg(&bin)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/xl_parse.c"))
            .args(["-lxlutil", "-lxenlight"]));
        bin
    })
    .clone()
}

/// The config as Xen's parser reads it.
fn parse(cfg: &Path) -> Value {
    let out = ok(Command::new(xl_parse()).arg(cfg));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}\n{}", text(&out)))
}

fn disk<'a>(parsed: &'a Value, vdev: &str) -> &'a Value {
    parsed["disks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["vdev"] == vdev)
        .unwrap_or_else(|| panic!("no {vdev} in {parsed}"))
}

fn check_disk(d: &Value, target: &Path) {
    assert_eq!(d["format"], "raw", "{d}");
    assert_eq!(d["readwrite"], 1, "{d}");
    assert_eq!(
        d["pdev_path"].as_str(),
        Some(target.to_str().unwrap()),
        "{d}"
    );
    assert!(target.is_absolute());
}

fn xen_build(key: &str, args: &[&str]) -> (PathBuf, Manifest) {
    let dir = shared_build(key, |dir| {
        let mut all = vec!["--target", "xen"];
        all.extend_from_slice(args);
        build(&dir.join("out"), &all);
    });
    let out = dir.join("out");
    let manifest = Manifest::read(&out).unwrap();
    (out, manifest)
}

#[test]
fn direct_boot_config_parses_with_xen_dir() {
    let dom0 = "/srv/xen/minimal";
    let (out, manifest) = xen_build("pvh-dir", &["--xen-dir", dom0]);
    let p = parse(&out.join("xen/minimal.cfg"));
    assert_eq!(p["name"], "minimal");
    assert_eq!(p["type"], "pvh");
    assert_eq!(p["memory"], 512);
    assert_eq!(p["vcpus"], 2);
    assert_eq!(p["on_poweroff"], "destroy");
    assert_eq!(p["on_crash"], "destroy");
    assert_eq!(p["bootloader"], Value::Null);
    let kernel = manifest.kernel.clone().unwrap();
    assert_eq!(p["kernel"], format!("{dom0}/vmlinuz-{kernel}"));
    assert_eq!(p["ramdisk"], format!("{dom0}/initrd.img-{kernel}"));
    let uuid = &manifest.filesystem.as_ref().unwrap().uuid;
    let extra = p["extra"].as_str().unwrap();
    assert!(extra.contains(&format!("root=UUID={uuid}")), "{extra}");
    assert!(extra.contains("console=hvc0"), "{extra}");
    assert_eq!(p["disks"].as_array().unwrap().len(), 2);
    check_disk(disk(&p, "xvda1"), &Path::new(dom0).join("minimal.ext4"));
    check_disk(
        disk(&p, "xvdb"),
        &Path::new(dom0).join("minimal-results.img"),
    );
    // The files the config names are the ones in xen/, by name.
    for name in [
        "minimal.ext4".to_string(),
        "minimal-results.img".into(),
        format!("vmlinuz-{kernel}"),
        format!("initrd.img-{kernel}"),
    ] {
        assert!(out.join("xen").join(&name).is_file(), "{name}");
    }
}

#[test]
fn default_xen_dir_is_the_output_folder() {
    let out = default_all();
    let p = parse(&out.join("xen/minimal.cfg"));
    let xen = out.canonicalize().unwrap().join("xen");
    check_disk(disk(&p, "xvda1"), &xen.join("minimal.ext4"));
    check_disk(disk(&p, "xvdb"), &xen.join("minimal-results.img"));
    for key in ["kernel", "ramdisk"] {
        let path = PathBuf::from(p[key].as_str().unwrap());
        assert!(path.starts_with(&xen) && path.is_file(), "{key}: {p}");
    }
}

#[test]
fn custom_image_config_parses() {
    let out = custom_all();
    let p = parse(&out.join("xen/custom.cfg"));
    assert_eq!(p["name"], "custom");
    assert_eq!(p["memory"], 256);
    assert_eq!(p["vcpus"], 1);
    let xen = out.canonicalize().unwrap().join("xen");
    check_disk(disk(&p, "xvda1"), &xen.join("custom.ext4"));
}

#[test]
fn pv_guest_type() {
    let (out, _) = xen_build("pv", &["--set", "xen.type=pv"]);
    let p = parse(&out.join("xen/minimal.cfg"));
    assert_eq!(p["type"], "pv");
    assert!(p["kernel"].as_str().unwrap().contains("/vmlinuz-"));
    disk(&p, "xvda1");
}

#[test]
fn pygrub_variant_boots_a_whole_disk() {
    need("debugfs", "e2fsprogs");
    let (out, manifest) = xen_build(
        "pygrub",
        &["--set", "xen.bootloader=pygrub", "--set", "xen.type=pv"],
    );
    let p = parse(&out.join("xen/minimal.cfg"));
    assert_eq!(p["bootloader"], "pygrub");
    assert_eq!(p["type"], "pv");
    assert_eq!(p["kernel"], Value::Null);
    assert_eq!(p["ramdisk"], Value::Null);
    let xen = out.canonicalize().unwrap().join("xen");
    check_disk(disk(&p, "xvda"), &xen.join("minimal.disk"));
    check_disk(disk(&p, "xvdb"), &xen.join("minimal-results.img"));
    // A whole disk whose first partition has the grub-legacy menu pygrub reads.
    let work = tempfile::tempdir().unwrap();
    let part = work.path().join("part");
    extract_first_partition(&out.join("xen/minimal.disk"), &part);
    e2fsck(&part);
    let menu = ok(Command::new("debugfs")
        .arg("-R")
        .arg("cat /boot/grub/menu.lst")
        .arg(&part));
    let menu = String::from_utf8_lossy(&menu.stdout);
    let kernel = manifest.kernel.unwrap();
    let uuid = manifest.filesystem.unwrap().uuid;
    assert!(menu.contains(&format!("/boot/vmlinuz-{kernel}")), "{menu}");
    assert!(menu.contains(&format!("root=UUID={uuid}")), "{menu}");
    assert!(menu.contains("console=hvc0"), "{menu}");
}

#[test]
fn the_parser_rejects_what_xl_rejects() {
    // The helper must be able to fail: a bad disk spec and a syntax error.
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            "disk.cfg",
            "name = \"x\"\ndisk = [ 'format=raw, vdev=xvda1, acces=rw, target=/x' ]\n",
        ),
        ("syntax.cfg", "name = \"x\nmemory = 5\n"),
    ] {
        let cfg = dir.path().join(name);
        std::fs::write(&cfg, text).unwrap();
        let out = Command::new(xl_parse()).arg(&cfg).output().unwrap();
        assert!(
            !out.status.success(),
            "{name}\n{}",
            targets_common::text(&out)
        );
    }
}
