//! GRUB 2 embedded without loop devices: core.img is reproducible, a disk made of our MBR +
//! core.img + an ext4 (by mke2fs) boots in QEMU (TCG) to our grub.cfg, which prints on the
//! serial port; the rendered configs pass grub-script-check and Xen's pygrub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgbuild::definition::{ScsiAdapter, VmdkFormat};
use imgbuild::disk::grub::{self, GrubImages};
use imgbuild::disk::{self, mbr};
use imgbuild::vmdk::{write_vmdk, VmdkOptions};

const UUID: &str = "0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9";
const FS_BYTES: u64 = 16 << 20;

/// True if `tool` runs; otherwise skips (prints why), or fails under IMGBUILD_REQUIRE_QEMU.
fn have(tool: &str, arg: &str) -> bool {
    if Command::new(tool)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
    {
        return true;
    }
    assert!(
        std::env::var_os("IMGBUILD_REQUIRE_QEMU").is_none(),
        "{tool} is required (IMGBUILD_REQUIRE_QEMU is set) but cannot be run"
    );
    eprintln!("skipping: {tool} not available");
    false
}

fn have_grub() -> bool {
    have("grub-mkimage", "--version") && Path::new(grub::GRUB_PC_DIR).join("boot.img").exists()
}

/// A disk: our MBR and GRUB, then mke2fs's ext4 at 1 MiB holding `files` (path, content).
fn build_disk(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("root");
    for (path, content) in files {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    let layout = disk::layout(FS_BYTES);
    let img = dir.join("disk.img");
    let out = File::create(&img).unwrap();
    let images = GrubImages::from_host().unwrap();
    grub::install(&out, &layout, 0x1D15_C0DE, &images).unwrap();
    drop(out);
    let st = Command::new("mke2fs")
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-U",
            UUID,
            "-E",
            "offset=1048576",
            "-d",
        ])
        .arg(&root)
        .arg(&img)
        .arg(format!("{}k", FS_BYTES / 1024))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::metadata(&img).unwrap().len(), layout.disk_bytes);
    // mke2fs left our sectors alone.
    let f = File::open(&img).unwrap();
    let m = mbr::read_mbr(&f).unwrap();
    assert_eq!(m.signature, 0x1D15_C0DE);
    assert_eq!(m.partitions[0].start_lba, 2048);
    img
}

#[test]
fn core_img_is_reproducible_and_fits() {
    if !have_grub() {
        return;
    }
    let a = GrubImages::from_host().unwrap();
    let b = GrubImages::from_host().unwrap();
    assert_eq!(a.core_img(), b.core_img());
    assert_eq!(a.digest(), b.digest());
    assert!(a.version().contains("GRUB"), "{}", a.version());
    assert!(a.core_sectors() < 2047, "{} sectors", a.core_sectors());
    // Same bytes as grub-mkimage run by hand, except the block list we patch.
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.img");
    let st = Command::new("grub-mkimage")
        .args(["-O", "i386-pc", "-o"])
        .arg(&core)
        .args(["-p", grub::PREFIX])
        .args(grub::MODULES)
        .status()
        .unwrap();
    assert!(st.success());
    let by_hand = fs::read(&core).unwrap();
    assert_eq!(&a.core_img()[..500], &by_hand[..500]);
    assert_eq!(&a.core_img()[512..by_hand.len()], &by_hand[512..]);
}

#[test]
fn disk_boots_grub_from_mbr_and_core_img() {
    if !have_grub() || !have("qemu-system-x86_64", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = build_disk(dir.path(), &[("boot/grub/grub.cfg", &echo_cfg())]);
    boot_and_expect(
        dir.path(),
        &[
            "-drive",
            &format!("file={},format=raw,if=ide", img.display()),
        ],
    );
}

/// A grub.cfg that prints where it found its filesystem and powers off.
fn echo_cfg() -> String {
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         search --no-floppy --fs-uuid --set=found {UUID}\n\
         echo \"imgbuild-grub-ok root=$root found=$found\"\n\
         halt\n"
    )
}

#[test]
fn every_vmdk_form_boots_grub_on_pvscsi() {
    // The VMware path: the same disk as each VMDK form, on a pvscsi controller (SeaBIOS boots
    // from it), as formats.md verified for a kernel.
    if !have_grub() || !have("qemu-system-x86_64", "--version") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = build_disk(dir.path(), &[("boot/grub/grub.cfg", &echo_cfg())]);
    let opts = VmdkOptions::new(b"boot", ScsiAdapter::Pvscsi);
    for format in [
        VmdkFormat::MonolithicSparse,
        VmdkFormat::StreamOptimized,
        VmdkFormat::MonolithicFlat,
    ] {
        let dest = dir.path().join(format!("{format:?}.vmdk"));
        write_vmdk(&File::open(&img).unwrap(), format, &dest, &opts).unwrap();
        let drive = format!(
            "file={},format=vmdk,if=none,id=d0,readonly=on",
            dest.display()
        );
        boot_and_expect(
            dir.path(),
            &[
                "-drive",
                &drive,
                "-device",
                "pvscsi,id=s0",
                "-device",
                "scsi-hd,drive=d0,bus=s0.0",
            ],
        );
    }
}

/// Boots QEMU (TCG) with `drive_args` and waits up to 60 s for GRUB's line on the serial port.
fn boot_and_expect(dir: &Path, drive_args: &[&str]) {
    let log = dir.join("serial.log");
    let _ = fs::remove_file(&log);
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-machine",
            "pc,accel=tcg",
            "-m",
            "64",
            "-nographic",
            "-monitor",
            "none",
        ])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .args(drive_args)
        .arg("-no-reboot")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.join("qemu.err")).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let want = "imgbuild-grub-ok root=hd0,msdos1 found=hd0,msdos1";
    let mut seen = String::new();
    while start.elapsed() < Duration::from_secs(60) {
        seen = fs::read_to_string(&log).unwrap_or_default();
        if child.try_wait().unwrap().is_some() || seen.contains(want) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // `halt` powers the machine off; give it a moment, then make sure QEMU is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let halted = child.try_wait().unwrap().is_some();
    if !halted {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let seen = fs::read_to_string(&log).unwrap_or(seen);
    assert!(
        seen.contains(want),
        "serial output after {:?}:\n{seen}\nqemu: {}",
        start.elapsed(),
        fs::read_to_string(dir.join("qemu.err")).unwrap_or_default()
    );
    eprintln!(
        "GRUB ran grub.cfg after {:?}; halted by itself: {halted}",
        start.elapsed()
    );
}

#[test]
fn rendered_configs_pass_grub_script_check_and_pygrub() {
    let cfg = grub::grub_cfg(
        UUID,
        "/boot/vmlinuz-2.6.32",
        "/boot/initramfs-2.6.32.img",
        "quiet",
    )
    .unwrap();
    let lst = grub::menu_lst(
        UUID,
        "/boot/vmlinuz-2.6.32",
        "/boot/initramfs-2.6.32.img",
        "quiet",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    if have("grub-script-check", "--version") {
        let p = dir.path().join("grub.cfg");
        fs::write(&p, &cfg).unwrap();
        let out = Command::new("grub-script-check").arg(&p).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // The check can fail: an unclosed menuentry is refused.
        fs::write(&p, cfg.replace("}\n", "")).unwrap();
        let st = Command::new("grub-script-check")
            .arg(&p)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!st.success());
    }

    // pygrub (Xen) reads the partition table and the filesystem of the disk, grub.cfg first.
    let pygrub = Path::new("/usr/lib/xen-4.17/bin/pygrub");
    if !pygrub.exists() || !have_grub() {
        eprintln!(
            "skipping pygrub part: {} or GRUB not installed",
            pygrub.display()
        );
        return;
    }
    let kernel = ("boot/vmlinuz-2.6.32", "not a kernel");
    let initrd = ("boot/initramfs-2.6.32.img", "not an initrd");
    for (name, files) in [
        (
            "grub.cfg",
            vec![("boot/grub/grub.cfg", cfg.as_str()), kernel, initrd],
        ),
        (
            "menu.lst",
            vec![("boot/grub/menu.lst", lst.as_str()), kernel, initrd],
        ),
    ] {
        let d = dir.path().join(format!("disk-{}", name.replace('.', "-")));
        fs::create_dir_all(&d).unwrap();
        let img = build_disk(&d, &files);
        let outdir = d.join("out");
        fs::create_dir_all(&outdir).unwrap();
        let out = Command::new(pygrub)
            .args(["-q", "--output-format=simple", "--output-directory"])
            .arg(&outdir)
            .arg(&img)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "pygrub on {name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // pygrub copies kernel and initrd out of the filesystem and prints where.
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("{name}: no {key:?} in {text}"))
                .to_string()
        };
        assert_eq!(
            fs::read_to_string(field("kernel ")).unwrap(),
            "not a kernel"
        );
        assert_eq!(
            fs::read_to_string(field("ramdisk ")).unwrap(),
            "not an initrd"
        );
        assert_eq!(
            field("args "),
            format!("root=UUID={UUID} ro quiet {}", grub::DEFAULT_CONSOLES),
            "{name}"
        );
    }
}
