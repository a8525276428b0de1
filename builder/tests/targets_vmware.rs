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

fn ova_build(key: &str, extra: &[&str]) -> std::path::PathBuf {
    let mut args = vec!["--target", "vmware", "--set", "vmware.ova=true"];
    args.extend_from_slice(extra);
    shared_build(key, |dir| {
        build(&dir.join("out"), &args);
    })
    .join("out")
}

/// `SHA256(name)= hex` lines of an `.mf`.
fn mf_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|l| {
            let rest = l.strip_prefix("SHA256(").unwrap_or_else(|| panic!("{l:?}"));
            let (name, sum) = rest.split_once(")= ").unwrap_or_else(|| panic!("{l:?}"));
            (name.to_string(), sum.to_string())
        })
        .collect()
}

#[test]
fn ova_holds_ovf_mf_and_disks_in_order() {
    need("tar", "tar");
    need("python3", "python3");
    let out = ova_build("ova", &[]);
    let ova = out.join("vmware/minimal.ova");
    // ustar members, the descriptor first, then the manifest, then the disks.
    let bytes = fs::read(&ova).unwrap();
    assert_eq!(&bytes[257..263], b"ustar\0");
    assert_eq!(bytes.len() % 10240, 0);
    let list = ok(Command::new("tar").arg("-tf").arg(&ova)).stdout;
    let list = String::from_utf8(list).unwrap();
    assert_eq!(
        list.lines().collect::<Vec<_>>(),
        [
            "minimal.ovf",
            "minimal.mf",
            "minimal-stream.vmdk",
            "minimal-results-stream.vmdk"
        ]
    );
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("tar")
        .arg("-xf")
        .arg(&ova)
        .arg("-C")
        .arg(dir.path()));
    // The manifest's sums are those of the files, computed by sha256sum.
    let mf = fs::read_to_string(dir.path().join("minimal.mf")).unwrap();
    let lines = mf_lines(&mf);
    assert_eq!(lines.len(), 3, "{mf}");
    assert_eq!(lines[0].0, "minimal.ovf");
    for (name, sum) in &lines {
        let out = ok(Command::new("sha256sum").arg(dir.path().join(name)));
        assert_eq!(&String::from_utf8_lossy(&out.stdout)[..64], sum, "{name}");
    }
    // The root disk is the package's streamOptimized VMDK, and reads as the sparse one.
    ok(Command::new("cmp")
        .arg(dir.path().join("minimal-stream.vmdk"))
        .arg(out.join("vmware/minimal-stream.vmdk")));
    let cmp = ok(Command::new("qemu-img")
        .args(["compare", "-f", "vmdk", "-F", "vmdk"])
        .arg(out.join("vmware/minimal.vmdk"))
        .arg(dir.path().join("minimal-stream.vmdk")));
    assert!(String::from_utf8_lossy(&cmp.stdout).contains("identical"));
    ok(Command::new("qemu-img")
        .args(["check", "-f", "vmdk"])
        .arg(dir.path().join("minimal-results-stream.vmdk")));

    // The OVF: well-formed XML in the OVF 1.0 namespace, read by Python's parser.
    let raw_size = {
        let info = ok(Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(out.join("vmware/minimal.vmdk")));
        let v: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        v["virtual-size"].as_u64().unwrap()
    };
    let script = r#"
import json, sys, xml.etree.ElementTree as ET
ns = {"ovf": "http://schemas.dmtf.org/ovf/envelope/1",
      "rasd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData",
      "vssd": "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"}
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{%s}Envelope" % ns["ovf"], root.tag
A = lambda e, k: e.get("{%s}%s" % (ns["ovf"], k))
files = [(A(f, "href"), int(A(f, "size")), A(f, "id")) for f in root.findall("ovf:References/ovf:File", ns)]
disks = [(A(d, "fileRef"), int(A(d, "capacity")), A(d, "format"), A(d, "diskId")) for d in root.findall("ovf:DiskSection/ovf:Disk", ns)]
items = []
for i in root.findall("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:Item", ns):
    items.append({c.tag.split("}")[1]: c.text for c in i})
vst = root.find("ovf:VirtualSystem/ovf:VirtualHardwareSection/ovf:System/vssd:VirtualSystemType", ns).text
print(json.dumps({"files": files, "disks": disks, "items": items, "type": vst,
                  "name": root.find("ovf:VirtualSystem/ovf:Name", ns).text}))
"#;
    let parsed = ok(Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir.path().join("minimal.ovf")));
    let v: serde_json::Value = serde_json::from_slice(&parsed.stdout).unwrap();
    assert_eq!(v["name"], "minimal");
    assert_eq!(v["type"], "vmx-13");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    for f in files {
        let name = f[0].as_str().unwrap();
        let size = fs::metadata(dir.path().join(name)).unwrap().len();
        assert_eq!(f[1].as_u64(), Some(size), "{name}");
    }
    let disks = v["disks"].as_array().unwrap();
    assert_eq!(disks[0][0], files[0][2]);
    assert_eq!(disks[0][1].as_u64(), Some(raw_size));
    assert_eq!(
        disks[0][2],
        "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"
    );
    let item = |rtype: &str| {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["ResourceType"] == rtype)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(item("3")[0]["VirtualQuantity"], "2");
    assert_eq!(item("4")[0]["VirtualQuantity"], "512");
    assert_eq!(item("6")[0]["ResourceSubType"], "VirtualSCSI");
    assert_eq!(item("10")[0]["ResourceSubType"], "VmxNet3");
    let hard_disks = item("17");
    assert_eq!(hard_disks.len(), 2);
    assert_eq!(hard_disks[0]["HostResource"], "ovf:/disk/vmdisk1");
    assert_eq!(hard_disks[0]["Parent"], item("6")[0]["InstanceID"]);
}

#[test]
fn ova_is_deterministic_and_verified() {
    let out = ova_build("ova", &[]);
    let again = scratch("ova-again");
    build(
        &again.path().join("out"),
        &["--target", "vmware", "--set", "vmware.ova=true"],
    );
    ok(Command::new("cmp")
        .arg(out.join("vmware/minimal.ova"))
        .arg(again.path().join("out/vmware/minimal.ova")));
    let v = imgbuild_run([std::ffi::OsStr::new("verify"), out.as_os_str()]);
    assert!(v.status.success(), "{}", text(&v));

    // A changed disk inside the archive, with the manifest's sha256 updated: verify checks the
    // archive against its own .mf and names it.
    let copy = again.path().join("copy");
    copy_tree(&out, &copy);
    let ova = copy.join("vmware/minimal.ova");
    let len = fs::metadata(&ova).unwrap().len();
    flip_byte(&ova, len / 2);
    let sum = ok(Command::new("sha256sum").arg(&ova)).stdout;
    let sum = String::from_utf8_lossy(&sum)[..64].to_string();
    let manifest_path = copy.join("manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&fs::read(&manifest_path).unwrap()).unwrap();
    for f in m["targets"]["vmware"]["files"].as_array_mut().unwrap() {
        if f["path"] == "vmware/minimal.ova" {
            f["sha256"] = sum.clone().into();
        }
    }
    fs::write(&manifest_path, serde_json::to_vec(&m).unwrap()).unwrap();
    let v = imgbuild_run([std::ffi::OsStr::new("verify"), copy.as_os_str()]);
    assert_eq!(v.status.code(), Some(2), "{}", text(&v));
    let stdout = String::from_utf8_lossy(&v.stdout);
    let line = stdout
        .lines()
        .find(|l| l.contains("FAIL"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("vmware/minimal.ova") && line.contains("SHA-256"),
        "{line}"
    );
}

#[test]
fn ova_without_a_stream_form_still_carries_one() {
    let out = ova_build(
        "ova-sparse-only",
        &["--set", "vmware.formats=[\"monolithicSparse\"]"],
    );
    assert!(!out.join("vmware/minimal-stream.vmdk").exists());
    let list = ok(Command::new("tar")
        .arg("-tf")
        .arg(out.join("vmware/minimal.ova")))
    .stdout;
    assert!(String::from_utf8_lossy(&list).contains("minimal-stream.vmdk"));
    let v = imgbuild_run([std::ffi::OsStr::new("verify"), out.as_os_str()]);
    assert!(v.status.success(), "{}", text(&v));
}
