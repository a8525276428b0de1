//! The MBR against util-linux's sfdisk (both directions), and the whole chain a verifier uses:
//! raw disk → VMDK → reader → partition table → partition window → ext4 (made by mke2fs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use imgbuild::definition::{ScsiAdapter, VmdkFormat};
use imgbuild::disk::{self, mbr};
use imgbuild::image_io::{ReadAt, Window};
use imgbuild::vmdk::{write_vmdk, VmdkOptions, VmdkReader};

fn have(tool: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !ok {
        eprintln!("skipping: {tool} not installed");
    }
    ok
}

fn sfdisk_json(img: &Path) -> serde_json::Value {
    let out = Command::new("sfdisk")
        .arg("--json")
        .arg(img)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn sfdisk_reads_our_mbr() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    let layout = disk::layout((300 << 20) + 4097);
    assert_eq!(layout.disk_bytes, 302 << 20);
    let f = File::create(&img).unwrap();
    mbr::write_mbr(&f, &layout, 0xCAFE_F00D, None).unwrap();
    assert_eq!(fs::metadata(&img).unwrap().len(), 302 << 20);
    let j = sfdisk_json(&img);
    let t = &j["partitiontable"];
    assert_eq!(t["label"], "dos");
    assert_eq!(t["id"], "0xcafef00d");
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0]["start"], 2048);
    assert_eq!(parts[0]["size"], (301u64 << 20) / 512);
    assert_eq!(parts[0]["type"], "83");
    assert_eq!(parts[0]["bootable"], true);

    // A longer file than the layout is refused rather than mislabelled.
    f.set_len(303 << 20).unwrap();
    assert!(matches!(
        mbr::write_mbr(&f, &layout, 1, None),
        Err(mbr::MbrError::OutputTooLong { .. })
    ));
}

#[test]
fn we_read_sfdisk_tables() {
    if !have("sfdisk") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    File::create(&img).unwrap().set_len(64 << 20).unwrap();
    let mut child = Command::new("sfdisk")
        .args(["-q", "--no-reread", "--no-tell-kernel"])
        .arg(&img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"label: dos\nlabel-id: 0x01020304\n2048,20000,83,*\n30000,10000,7\n,,82\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    let m = mbr::read_mbr(&File::open(&img).unwrap()).unwrap();
    assert_eq!(m.signature, 0x0102_0304);
    let got: Vec<(usize, bool, u8, u64, u64)> = m
        .partitions
        .iter()
        .map(|p| (p.index, p.bootable, p.kind, p.start_lba, p.sectors))
        .collect();
    let j = sfdisk_json(&img);
    let want: Vec<(usize, bool, u8, u64, u64)> = j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            (
                i + 1,
                p["bootable"].as_bool().unwrap_or(false),
                u8::from_str_radix(p["type"].as_str().unwrap(), 16).unwrap(),
                p["start"].as_u64().unwrap(),
                p["size"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 3);
}

/// ext4-view reading through any [`ReadAt`].
struct Reader<R>(R);

impl<R: ReadAt> ext4_view::Ext4Read for Reader<R> {
    fn read(
        &mut self,
        start: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        Ok(self.0.read_exact_at(dst, start)?)
    }
}

#[test]
fn filesystem_reads_back_through_vmdk_and_partition() {
    if !have("mke2fs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir_all(root.join("boot/grub")).unwrap();
    let cfg = "set timeout=0\n";
    fs::write(root.join("boot/grub/grub.cfg"), cfg).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(root.join("big"), &big).unwrap();

    let fs_bytes = 40 << 20;
    let layout = disk::layout(fs_bytes);
    let img = dir.path().join("disk.img");
    mbr::write_mbr(&File::create(&img).unwrap(), &layout, 7, None).unwrap();
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E", "offset=1048576", "-d"])
        .arg(&root)
        .arg(&img)
        .arg(format!("{}k", fs_bytes / 1024))
        .status()
        .unwrap();
    assert!(st.success());

    let opts = VmdkOptions::new(b"chain", ScsiAdapter::Pvscsi);
    for format in [
        VmdkFormat::MonolithicSparse,
        VmdkFormat::StreamOptimized,
        VmdkFormat::MonolithicFlat,
    ] {
        let dest = dir.path().join(format!("{format:?}.vmdk"));
        write_vmdk(&File::open(&img).unwrap(), format, &dest, &opts).unwrap();
        let r = VmdkReader::open(&dest).unwrap();
        let parts = mbr::read_partitions(&r).unwrap();
        assert_eq!(parts.len(), 1);
        let p = parts[0];
        assert!(p.bootable);
        let window = Window::new(r, p.start_bytes(), p.len_bytes());
        let fs = ext4_view::Ext4::load(Box::new(Reader(window))).unwrap();
        assert_eq!(fs.read("/boot/grub/grub.cfg").unwrap(), cfg.as_bytes());
        assert!(fs.read("/big").unwrap() == big, "{format:?}: /big differs");
    }
}
