//! The SL5 image (ext3) booted from its own disk under QEMU: BIOS → GRUB 2 (grub.cfg with
//! `root=UUID=`) → a kernel taken from an EL-style kernel RPM (the host's Debian kernel
//! repackaged with rpmbuild, modules as `.ko.xz`, no modules.dep) → the initramfs loads
//! virtio from the package's modules → the kernel mounts the ext3 root (the Debian kernel does
//! it with its ext4 driver, registered as ext3) → the guest init checks the rootfs digest,
//! runs the smoke profile and writes the results disk. Afterwards the partition the guest
//! mounted passes `e2fsck -fn`.
//!
//! Skipped with a printed reason when QEMU, a host kernel or rpmbuild are missing, unless
//! IMGBUILD_REQUIRE_QEMU=1, which turns the skip into a failure. TCG unless the KVM probe (or
//! IMGBUILD_ACCEL=kvm) says otherwise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../builder/tests/sl_common/mod.rs"]
mod sl_common;

use std::path::Path;
use std::time::Duration;

use imgbuild::build::{build, BuildOptions};
use imgbuild::collect::collect;
use imgbuild::definition::{load, SetArg};
use imgbuild::run::qemu::{self, Boot, CacheMode, DeviceSet, Drive, Guest};
use imgbuild::target::Target;
use imgbuild_init::results::schema::{DigestStatus, Record};
use sl_common::{have, q, sh, KernelStyle};

/// Generous: TCG on a loaded two-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

fn skip(why: &str) {
    if std::env::var("IMGBUILD_REQUIRE_QEMU").as_deref() == Ok("1") {
        panic!("SL5 ext3 boot test required but cannot run: {why}");
    }
    eprintln!("SKIPPED sl_ext3: {why}");
}

fn set(text: String) -> SetArg {
    text.parse().unwrap()
}

#[test]
fn sl5_ext3_image_boots_from_disk_with_an_rpm_kernel() {
    let Some(qemu_bin) = qemu::qemu_binary().filter(|p| p.is_file() || have("qemu-system-x86_64"))
    else {
        return skip("qemu-system-x86_64 is not installed");
    };
    for tool in ["rpmbuild", "e2fsck", "xz", "grub-mkimage", "dd"] {
        if !have(tool) {
            return skip(&format!("{tool} is not installed"));
        }
    }
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let Some(rpm) = sl_common::kernel_rpm(
        work,
        KernelStyle {
            xz: true,
            modules_dep: false,
        },
    ) else {
        return skip("the host has no /boot/vmlinuz-* with /lib/modules");
    };
    let tar = sl_common::el_root_tar(work);
    let mut sets = vec![
        set(format!("rootfs.tar={}", tar.display())),
        set(format!("kernel.rpm={}", rpm.path.display())),
    ];
    // sl5-bench asks for the musl init (an EL5 kernel needs it); the host kernel runs either.
    let init = match sl_common::musl_init() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("using the glibc init: {why}");
            sets.push(set("init.libc=gnu".into()));
            sl_common::gnu_init()
        }
    };
    let loaded = load(Some(&sl_common::image("sl5-bench.toml")), &sets).unwrap();
    let out = work.join("out");
    let started = std::time::Instant::now();
    let built = build(
        &loaded,
        &BuildOptions {
            targets: vec![Target::Xen, Target::Qemu],
            out_dir: Some(out.clone()),
            init: Some(init),
            quiet: true,
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("build: {:.1} s", started.elapsed().as_secs_f64());
    let m = &built.manifest;
    assert_eq!(m.filesystem.as_ref().unwrap().fs_type, "ext3");
    assert_eq!(m.kernel.as_deref(), Some(rpm.release.as_str()));
    let bare = out.join("xen/sl5-bench.ext4");
    sh(&format!("e2fsck -fn {} 2>&1", q(&bare)));

    let disk = out.join("qemu/sl5-bench.raw");
    let results = out.join("qemu/sl5-bench-results.img");
    let serial = work.join("serial.log");
    let kernel = out.join(format!("qemu/vmlinuz-{}", rpm.release));
    let guest = Guest {
        accel: qemu::choose_accel(&qemu_bin, &kernel),
        cpus: 1,
        memory_mb: 512,
        // O_DIRECT (cache=none) fails on tmpfs, where temporary directories often are.
        cache: CacheMode::Writeback,
        devices: DeviceSet::Virtio,
        boot: Boot::Disk,
        drives: vec![
            Drive {
                path: disk.clone(),
                format: "raw",
            },
            Drive {
                path: results.clone(),
                format: "raw",
            },
        ],
        serial_log: serial.clone(),
        forward_http: None,
        firmware: None,
    };
    let cmd = qemu::command(&qemu_bin, &guest);
    eprintln!("{cmd}");
    let outcome = qemu::run(&cmd, BOOT_TIMEOUT, &work.join("qemu.stderr"), &mut || {}).unwrap();
    let console = std::fs::read_to_string(&serial).unwrap_or_default();
    assert!(
        !outcome.timed_out,
        "the guest did not power off within {BOOT_TIMEOUT:?}:\n{console}"
    );
    eprintln!(
        "boot ({}): {:.1} s wall",
        guest.accel.name(),
        outcome.wall.as_secs_f64()
    );

    // What the guest recorded.
    let collected = collect(&results).unwrap_or_else(|e| panic!("{e}\n{console}"));
    assert!(collected.complete, "{:?}\n{console}", collected.problems);
    let start = collected
        .records
        .iter()
        .find_map(|r| match r {
            Record::RunStart(s) => Some(s),
            _ => None,
        })
        .expect("a run-start record");
    let initramfs = start.initramfs.as_ref().expect("the initramfs stage ran");
    assert_eq!(
        initramfs.root_fstype.as_deref(),
        Some("ext3"),
        "{initramfs:?}\n{console}"
    );
    assert_eq!(start.platform.kernel_release, rpm.release);
    let loaded_modules: Vec<&str> = initramfs.modules.iter().map(|l| l.name.as_str()).collect();
    assert!(loaded_modules.contains(&"virtio_blk"), "{loaded_modules:?}");
    assert_eq!(
        start.digest_check.status,
        DigestStatus::Match,
        "{:?}",
        start.digest_check
    );
    assert_eq!(start.digest_check.digest, Some(m.rootfs_digest));

    // The partition the guest mounted is still a clean ext3.
    let part = work.join("partition.ext3");
    let start_mib = 1; // imgbuild's disks put the partition at 1 MiB.
    sh(&format!(
        "dd if={} of={} bs=1M skip={start_mib} conv=sparse status=none",
        q(&disk),
        q(&part)
    ));
    let fsck = sh(&format!("e2fsck -fn {} 2>&1", q(&part)));
    eprintln!("{fsck}");
    assert!(Path::new(&part).metadata().unwrap().len() >= m.filesystem.as_ref().unwrap().size);
}
