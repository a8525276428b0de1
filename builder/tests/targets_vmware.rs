//! The VMware package: the `.vmx` has the keys VMware needs, every value quoted, devices and
//! version as chosen; the disks it names exist; the VMDK descriptors carry createType, CID,
//! adapter type, geometry and hardware version.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use targets_common::*;

/// `key = "value"` lines; panics on any other line.
fn parse_vmx(path: &Path) -> BTreeMap<String, String> {
    let text = fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("not key = value: {line:?}"));
        assert!(
            v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
            "value not quoted: {line:?}"
        );
        let inner = &v[1..v.len() - 1];
        assert!(!inner.contains('"'), "quote inside a value: {line:?}");
        assert!(
            out.insert(k.to_string(), inner.to_string()).is_none(),
            "{k} twice"
        );
    }
    out
}

#[test]
fn vmx_of_the_default_image() {
    let out = default_all();
    let vmx = parse_vmx(&out.join("vmware/minimal.vmx"));
    for (key, value) in [
        (".encoding", "UTF-8"),
        ("config.version", "8"),
        ("virtualHW.version", "13"),
        ("guestOS", "other5xlinux-64"),
        ("memsize", "512"),
        ("numvcpus", "2"),
        ("scsi0.present", "TRUE"),
        ("scsi0.virtualDev", "pvscsi"),
        ("scsi0:0.present", "TRUE"),
        ("scsi0:0.fileName", "minimal.vmdk"),
        ("scsi0:1.present", "TRUE"),
        ("scsi0:1.fileName", "minimal-results.vmdk"),
        ("ethernet0.present", "TRUE"),
        ("ethernet0.virtualDev", "vmxnet3"),
        ("serial0.present", "TRUE"),
        ("serial0.fileType", "file"),
        ("serial0.fileName", "minimal-console.log"),
        ("displayName", "minimal"),
    ] {
        assert_eq!(
            vmx.get(key).map(String::as_str),
            Some(value),
            "{key}: {vmx:?}"
        );
    }
    for disk in ["scsi0:0.fileName", "scsi0:1.fileName"] {
        assert!(out.join("vmware").join(&vmx[disk]).is_file(), "{disk}");
    }
}

#[test]
fn vmx_follows_the_definition() {
    let dir = shared_build("vmx-settings", |dir| {
        build(
            &dir.join("out"),
            &[
                "--target",
                "vmware",
                "--set",
                "vmware.adapter=lsisas1068",
                "--set",
                "vmware.nic=e1000",
                "--set",
                "vmware.hw_version=17",
                "--set",
                "vmware.guest_os=rhel6-64",
                "--set",
                "vm.memory=1024",
                "--set",
                "vm.vcpus=4",
                "--set",
                "vmware.formats=[\"monolithicFlat\"]",
            ],
        );
    });
    let out = dir.join("out");
    let vmx = parse_vmx(&out.join("vmware/minimal.vmx"));
    assert_eq!(vmx["scsi0.virtualDev"], "lsisas1068");
    assert_eq!(vmx["ethernet0.virtualDev"], "e1000");
    assert_eq!(vmx["virtualHW.version"], "17");
    assert_eq!(vmx["guestOS"], "rhel6-64");
    assert_eq!(vmx["memsize"], "1024");
    assert_eq!(vmx["numvcpus"], "4");
    // Only the ESXi form was asked for: the .vmx runs it.
    assert_eq!(vmx["scsi0:0.fileName"], "minimal-esx.vmdk");
    assert!(!out.join("vmware/minimal.vmdk").exists());
    assert!(!out.join("vmware/minimal-stream.vmdk").exists());
    let info = ok(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(out.join("vmware/minimal-esx.vmdk")));
    let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(
        info["format-specific"]["data"]["create-type"],
        "monolithicFlat"
    );
}

/// The text descriptor of a VMDK: embedded at sector 1 of sparse forms, the file of flat ones.
fn descriptor(path: &Path) -> String {
    let bytes = fs::read(path).unwrap();
    let text = if bytes.starts_with(b"KDMV") {
        &bytes[512..512 + 20 * 512]
    } else {
        &bytes[..]
    };
    let end = text.iter().position(|&b| b == 0).unwrap_or(text.len());
    String::from_utf8(text[..end].to_vec()).unwrap()
}

#[test]
fn descriptors_have_the_keys() {
    let out = default_all();
    let raw_sectors = fs::metadata(out.join("qemu/minimal.raw")).unwrap().len() / 512;
    for (file, create_type, extent) in [
        (
            "minimal.vmdk",
            "monolithicSparse",
            "SPARSE \"minimal.vmdk\"",
        ),
        (
            "minimal-stream.vmdk",
            "streamOptimized",
            "SPARSE \"minimal-stream.vmdk\"",
        ),
        (
            "minimal-esx.vmdk",
            "monolithicFlat",
            "FLAT \"minimal-esx-flat.vmdk\" 0",
        ),
    ] {
        let d = descriptor(&out.join("vmware").join(file));
        assert!(d.starts_with("# Disk DescriptorFile"), "{d}");
        assert!(d.contains(&format!("createType=\"{create_type}\"")), "{d}");
        assert!(d.contains(&format!("RW {raw_sectors} {extent}")), "{d}");
        assert!(d.contains("parentCID=ffffffff"), "{d}");
        let cid = d
            .lines()
            .find_map(|l| l.strip_prefix("CID="))
            .unwrap_or_else(|| panic!("no CID: {d}"));
        assert_eq!(cid.len(), 8, "{d}");
        assert!(u32::from_str_radix(cid, 16).is_ok(), "{d}");
        for key in [
            "ddb.adapterType = \"lsilogic\"",
            "ddb.geometry.cylinders = \"",
            "ddb.geometry.heads = \"255\"",
            "ddb.geometry.sectors = \"63\"",
            "ddb.virtualHWVersion = \"4\"",
        ] {
            assert!(d.contains(key), "{file}: {key}\n{d}");
        }
    }
}
