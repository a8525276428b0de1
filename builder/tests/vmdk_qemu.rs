//! The VMDK writers checked by qemu-img (check, info, compare against the raw image), the
//! reader checked against the raw image for our files and for qemu-img's, and reproducibility.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::definition::{ScsiAdapter, VmdkFormat};
use imgbuild::image_io::ReadAt;
use imgbuild::vmdk::{write_vmdk, VmdkOptions, VmdkReader};

const MIB: u64 = 1 << 20;
const GRAIN: u64 = 65536;

/// qemu-img, or None (test skipped) unless IMGBUILD_REQUIRE_QEMU is set.
fn qemu_img() -> Option<&'static str> {
    let ok = Command::new("qemu-img").arg("--version").output().is_ok();
    if !ok {
        assert!(
            std::env::var_os("IMGBUILD_REQUIRE_QEMU").is_none(),
            "qemu-img is required (IMGBUILD_REQUIRE_QEMU is set) but cannot be run"
        );
        eprintln!("skipping: qemu-img not installed");
        return None;
    }
    Some("qemu-img")
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Deterministic bytes: some random, some text-like (compressible).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for (i, b) in buf.iter_mut().enumerate() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = if (i / 4096) % 3 == 0 {
            b"imgbuild vmdk test "[i % 19]
        } else {
            x as u8
        };
    }
}

/// A sparse raw disk of `size` bytes: data scattered over several grain tables, holes, an
/// all-zero region written inside the data, and data in the last (partial) grain.
fn make_raw(path: &Path, size: u64) {
    let f = File::create(path).unwrap();
    f.set_len(size).unwrap();
    let put = |off: u64, len: u64, seed: u64| {
        if off + len > size {
            return; // a small disk keeps what fits
        }
        let mut b = vec![0u8; len as usize];
        fill(&mut b, seed);
        f.write_all_at(&b, off).unwrap();
    };
    put(0, 512, 1); // an MBR-like first sector
    put(MIB, 3 * MIB + 1234, 2); // start of a filesystem, ends mid-grain
    put(10 * MIB + 100, 700, 3); // a few bytes in one grain
    put(40 * MIB - 10, 20, 4); // straddles two grains and two grain tables (32 MiB each)
    put(70 * MIB, 2 * MIB, 5); // third table; the second has a grain, the rest none
    put(size - 300, 300, 6); // the last, partial grain
                             // Zeros written over data: allocated in the file, all-zero grains.
    if size > 3 * MIB {
        f.write_all_at(&vec![0u8; (GRAIN * 4) as usize], 2 * MIB)
            .unwrap();
    }
}

fn opts() -> VmdkOptions {
    VmdkOptions::new(b"vmdk_qemu test", ScsiAdapter::Pvscsi)
}

fn assert_same_disk(reader: &dyn ReadAt, raw: &Path) {
    let raw = fs::read(raw).unwrap();
    let cap = reader.size().unwrap();
    assert_eq!(cap, (raw.len() as u64).next_multiple_of(512), "capacity");
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < cap {
        let n = buf.len().min((cap - off) as usize);
        reader.read_exact_at(&mut buf[..n], off).unwrap();
        for (i, &b) in buf[..n].iter().enumerate() {
            let want = raw.get(off as usize + i).copied().unwrap_or(0);
            assert_eq!(b, want, "byte {} differs", off as usize + i);
        }
        off += n as u64;
    }
    // Unaligned small reads across grain boundaries.
    for at in [GRAIN - 3, 40 * MIB - 12, cap - 5] {
        let mut b = [0u8; 7];
        let n = reader.read_at(&mut b, at).unwrap();
        for (i, &got) in b[..n].iter().enumerate() {
            assert_eq!(got, raw.get(at as usize + i).copied().unwrap_or(0));
        }
    }
}

fn info(qemu: &str, path: &Path) -> serde_json::Value {
    let (ok, text) = run(Command::new(qemu)
        .args(["info", "--output=json", "-f", "vmdk"])
        .arg(path));
    assert!(ok, "qemu-img info failed: {text}");
    serde_json::from_str(&text).unwrap()
}

fn check_form(format: VmdkFormat, create_type: &str, size: u64) {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    make_raw(&raw, size);
    let dest = dir.path().join("disk.vmdk");
    let files = write_vmdk(&File::open(&raw).unwrap(), format, &dest, &opts()).unwrap();
    assert_eq!(files[0], dest);
    // Nothing but the outputs and the source: temporary files are gone.
    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .chain(["disk.raw".to_string()])
        .collect();
    expected.sort();
    assert_eq!(names, expected);

    let (ok, text) = run(Command::new(qemu).args(["check", "-f", "vmdk"]).arg(&dest));
    assert!(ok, "qemu-img check failed: {text}");
    let j = info(qemu, &dest);
    assert_eq!(j["format"], "vmdk");
    assert_eq!(j["virtual-size"], size.next_multiple_of(512));
    assert_eq!(
        j["format-specific"]["data"]["create-type"], create_type,
        "{j}"
    );
    let (ok, text) = run(Command::new(qemu)
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(&raw)
        .arg(&dest));
    assert!(ok, "qemu-img compare: {text}");
    assert!(text.contains("identical"), "{text}");

    let r = VmdkReader::open(&dest).unwrap();
    assert_eq!(r.create_type(), create_type);
    assert_same_disk(&r, &raw);

    // The same input gives the same bytes.
    let dir2 = tempfile::tempdir().unwrap();
    let dest2 = dir2.path().join("disk.vmdk");
    let files2 = write_vmdk(&File::open(&raw).unwrap(), format, &dest2, &opts()).unwrap();
    for (a, b) in files.iter().zip(&files2) {
        assert!(
            fs::read(a).unwrap() == fs::read(b).unwrap(),
            "{a:?} differs between runs"
        );
    }
}

// 100 MiB + 3 sectors: 1601 grains (not a whole number), 4 grain tables.
const SIZE: u64 = 100 * MIB + 3 * 512;

#[test]
fn monolithic_sparse_passes_qemu_img() {
    check_form(VmdkFormat::MonolithicSparse, "monolithicSparse", SIZE);
}

#[test]
fn stream_optimized_passes_qemu_img() {
    check_form(VmdkFormat::StreamOptimized, "streamOptimized", SIZE);
}

#[test]
fn monolithic_flat_passes_qemu_img() {
    check_form(VmdkFormat::MonolithicFlat, "monolithicFlat", SIZE);
}

#[test]
fn outputs_skip_holes_and_zero_grains() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    make_raw(&raw, SIZE);
    let src = File::open(&raw).unwrap();
    let sparse = dir.path().join("s.vmdk");
    write_vmdk(&src, VmdkFormat::MonolithicSparse, &sparse, &opts()).unwrap();
    let r = VmdkReader::open(&sparse).unwrap();
    let alloc: u64 = r
        .allocated_ranges()
        .unwrap()
        .iter()
        .map(|(s, e)| e - s)
        .sum();
    // Data grains: 1 + 49 (MIB..4MIB+1234, minus the 4 zeroed) + 1 + 2 + 32 + 1 = 82.
    let data_grains = 1 + (3 * MIB + 1234).div_ceil(GRAIN) - 4 + 1 + 2 + 32 + 1;
    assert_eq!(alloc, data_grains * GRAIN - (GRAIN - (SIZE % GRAIN)));
    let len = fs::metadata(&sparse).unwrap().len();
    assert_eq!(len, 128 * 512 + data_grains * GRAIN);

    let flat = dir.path().join("f.vmdk");
    let files = write_vmdk(&src, VmdkFormat::MonolithicFlat, &flat, &opts()).unwrap();
    assert_eq!(files[1], dir.path().join("f-flat.vmdk"));
    use std::os::unix::fs::MetadataExt;
    let m = fs::metadata(&files[1]).unwrap();
    assert_eq!(m.len(), SIZE);
    assert!(
        m.blocks() * 512 <= data_grains * GRAIN + MIB,
        "flat extent is not sparse"
    );
    let desc = fs::read_to_string(&flat).unwrap();
    assert!(
        desc.contains(&format!("RW {} FLAT \"f-flat.vmdk\" 0\n", SIZE / 512)),
        "{desc}"
    );
}

fn qemu_convert(qemu: &str, raw: &Path, dest: &Path, extra: &[&str]) {
    let (ok, text) = run(Command::new(qemu)
        .args(["convert", "-f", "raw", "-O", "vmdk"])
        .args(extra)
        .arg(raw)
        .arg(dest));
    assert!(ok, "qemu-img convert: {text}");
}

#[test]
fn reader_reads_qemu_img_output() {
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    make_raw(&raw, SIZE);
    let forms: [(&str, &[&str], &str); 3] = [
        ("sparse.vmdk", &[], "monolithicSparse"),
        (
            "stream.vmdk",
            &["-o", "subformat=streamOptimized"],
            "streamOptimized",
        ),
        (
            "flat.vmdk",
            &["-o", "subformat=monolithicFlat"],
            "monolithicFlat",
        ),
    ];
    for (name, extra, create_type) in forms {
        let dest = dir.path().join(name);
        qemu_convert(qemu, &raw, &dest, extra);
        let r = VmdkReader::open(&dest).unwrap();
        assert_eq!(r.create_type(), create_type);
        assert_same_disk(&r, &raw);
    }
}

#[test]
fn reader_matches_raw_for_unaligned_size() {
    // A raw image that is not a whole number of sectors reads back zero-padded.
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("odd.raw");
    let size = 5 * MIB + 777;
    make_raw(&raw, size);
    for format in [
        VmdkFormat::MonolithicSparse,
        VmdkFormat::StreamOptimized,
        VmdkFormat::MonolithicFlat,
    ] {
        let dest: PathBuf = dir.path().join(format!("{format:?}.vmdk"));
        write_vmdk(&File::open(&raw).unwrap(), format, &dest, &opts()).unwrap();
        let r = VmdkReader::open(&dest).unwrap();
        assert_same_disk(&r, &raw);
    }
}

#[test]
fn qemu_img_notices_a_changed_grain() {
    // The checks above can fail: one changed byte in a grain makes compare report a difference.
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    make_raw(&raw, 8 * MIB);
    let dest = dir.path().join("disk.vmdk");
    write_vmdk(
        &File::open(&raw).unwrap(),
        VmdkFormat::MonolithicSparse,
        &dest,
        &opts(),
    )
    .unwrap();
    // The first grain (LBA 0) is the first one stored, at sector 128.
    let f = fs::OpenOptions::new().write(true).open(&dest).unwrap();
    f.write_all_at(b"!", 128 * 512 + 5).unwrap();
    let (ok, text) = run(Command::new(qemu)
        .args(["compare", "-f", "raw", "-F", "vmdk"])
        .arg(&raw)
        .arg(&dest));
    assert!(!ok, "compare missed the change: {text}");
    assert!(text.contains("Content mismatch at offset 0"), "{text}");
}

#[test]
fn mostly_empty_2_gib_disk_is_cheap() {
    // Only the data ranges are read: a 2 GiB disk with 1 MiB of data converts in moments and
    // its outputs stay small.
    let Some(qemu) = qemu_img() else { return };
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("big.raw");
    let f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&raw)
        .unwrap();
    f.set_len(2 << 30).unwrap();
    let mut b = vec![0u8; MIB as usize];
    fill(&mut b, 9);
    f.write_all_at(&b, 1536 * MIB).unwrap();
    for format in [
        VmdkFormat::MonolithicSparse,
        VmdkFormat::StreamOptimized,
        VmdkFormat::MonolithicFlat,
    ] {
        let dest = dir.path().join(format!("{format:?}.vmdk"));
        let files = write_vmdk(&f, format, &dest, &opts()).unwrap();
        let on_disk: u64 = files
            .iter()
            .map(|p| {
                use std::os::unix::fs::MetadataExt;
                fs::metadata(p).unwrap().blocks() * 512
            })
            .sum();
        assert!(on_disk < 4 * MIB, "{format:?} takes {on_disk} bytes");
        let (ok, text) = run(Command::new(qemu)
            .args(["compare", "-f", "raw", "-F", "vmdk"])
            .arg(&raw)
            .arg(&dest));
        assert!(ok, "{format:?}: {text}");
        let r = VmdkReader::open(&dest).unwrap();
        assert_eq!(
            r.allocated_ranges().unwrap(),
            vec![(1536 * MIB, 1537 * MIB)],
            "{format:?}"
        );
    }
}
