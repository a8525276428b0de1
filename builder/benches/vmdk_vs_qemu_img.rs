//! Benchmark (not a test): our VMDK writers against `qemu-img convert` on the same raw disk,
//! a 2 GiB MBR disk whose ext4 partition holds a copy of /usr/bin (about 300 MB), made once
//! with mke2fs and kept in the target directory. Runs are interleaved (ours, qemu-img, ours,
//! …) so page cache and machine load affect both alike; medians are reported.
//!
//! `cargo bench -p imgbuild --bench vmdk_vs_qemu_img [-- RUNS [SOURCE_DIR]]`
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use imgbuild::definition::{ScsiAdapter, VmdkFormat};
use imgbuild::disk::{self, mbr};
use imgbuild::vmdk::{write_vmdk, VmdkOptions};

const DISK_BYTES: u64 = 2 << 30;

fn build_raw(raw: &Path, source: &Path) {
    let layout = disk::layout(DISK_BYTES - (1 << 20));
    let tmp = raw.with_extension("tmp");
    mbr::write_mbr(&File::create(&tmp).unwrap(), &layout, 0xBE7C_4000, None).unwrap();
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-E", "offset=1048576", "-d"])
        .arg(source)
        .arg(&tmp)
        .arg(format!("{}k", layout.partition_bytes / 1024))
        .status()
        .unwrap();
    assert!(st.success(), "mke2fs -d {} failed", source.display());
    fs::rename(&tmp, raw).unwrap();
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn allocated_mb(p: &Path) -> f64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(p)
        .map(|m| m.blocks() as f64 * 512.0 / 1e6)
        .unwrap_or(0.0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runs: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(5);
    let source = PathBuf::from(args.get(1).map_or("/usr/bin", |s| s.as_str()));
    if Command::new("qemu-img").arg("--version").output().is_err() {
        eprintln!("qemu-img not installed: nothing to compare with");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("vmdk-bench");
    fs::create_dir_all(&dir).unwrap();
    let raw = dir.join(format!(
        "disk-{}.raw",
        source.to_string_lossy().replace('/', "_")
    ));
    if !raw.exists() {
        eprintln!("building {} from {} …", raw.display(), source.display());
        build_raw(&raw, &source);
    }
    println!(
        "source: {} ({} MB allocated of {} MB), {runs} runs each, interleaved",
        raw.display(),
        allocated_mb(&raw) as u64,
        DISK_BYTES >> 20
    );
    let opts = VmdkOptions::new(b"bench", ScsiAdapter::Pvscsi);
    let cases: [(&str, VmdkFormat, &[&str]); 2] = [
        ("monolithicSparse", VmdkFormat::MonolithicSparse, &[]),
        (
            "streamOptimized",
            VmdkFormat::StreamOptimized,
            &["-o", "subformat=streamOptimized"],
        ),
    ];
    // One untimed pass warms the page cache, so the first timed run is not the only cold one.
    let warm = dir.join("warm.vmdk");
    write_vmdk(
        &File::open(&raw).unwrap(),
        VmdkFormat::MonolithicSparse,
        &warm,
        &opts,
    )
    .unwrap();
    let _ = fs::remove_file(&warm);
    for (name, format, extra) in cases {
        let ours_out = dir.join("ours.vmdk");
        let qemu_out = dir.join("qemu.vmdk");
        let (mut ours, mut qemu) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            let _ = fs::remove_file(&ours_out);
            let t = Instant::now();
            write_vmdk(&File::open(&raw).unwrap(), format, &ours_out, &opts).unwrap();
            ours.push(t.elapsed());

            let _ = fs::remove_file(&qemu_out);
            let t = Instant::now();
            let st = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", "vmdk"])
                .args(extra)
                .arg(&raw)
                .arg(&qemu_out)
                .status()
                .unwrap();
            qemu.push(t.elapsed());
            assert!(st.success());
        }
        let (o, q) = (median(&mut ours), median(&mut qemu));
        println!(
            "{name:17} ours median {:7.3} s  (runs {:?})",
            secs(o),
            ours.iter()
                .map(|d| (secs(*d) * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
        println!(
            "{name:17} qemu median {:7.3} s  (runs {:?})",
            secs(q),
            qemu.iter()
                .map(|d| (secs(*d) * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
        println!(
            "{name:17} ours/qemu = {:.2}; output ours {:.1} MB, qemu-img {:.1} MB",
            secs(o) / secs(q),
            fs::metadata(&ours_out).unwrap().len() as f64 / 1e6,
            fs::metadata(&qemu_out).unwrap().len() as f64 / 1e6
        );
        let _ = fs::remove_file(&ours_out);
        let _ = fs::remove_file(&qemu_out);
    }
}
