//! Kernels from RPM packages: the host's Debian kernel repackaged with rpmbuild as an EL kernel
//! package (EL7 style: modules as `.ko.xz` with depmod's files; EL6 style: plain `.ko` with
//! depmod's files left as `%ghost`), given to a build with `--set kernel.rpm=…`. The initramfs
//! (read back with gzip and GNU cpio) must carry the Xen, VMware and virtio drivers, decompressed
//! and byte-identical to the host's modules, and the kernel must be the package's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sl_common;

use std::path::Path;
use std::process::Command;

use sl_common::{el_root_tar, gnu_init, image, kernel_rpm, q, sh, KernelStyle};

/// Drivers every initramfs must carry (when the kernel has them as modules).
const MUST: &[&str] = &[
    "virtio_blk",
    "virtio_net",
    "virtio_pci",
    "virtio_scsi",
    "xen-blkfront",
    "xen-netfront",
    "vmw_pvscsi",
    "vmxnet3",
    "sd_mod",
];
/// Modules of the package nothing asks for.
const MUST_NOT: &[&str] = &["loop", "isofs", "fuse", "dm-mod"];

fn check_style(style: KernelStyle, definition: &str) {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let Some(rpm) = kernel_rpm(work, style) else {
        eprintln!("skipped: the host has no kernel with a modules directory");
        return;
    };
    let dump = sh(&format!("rpm -qp --dump {}", q(&rpm.path)));
    assert_eq!(
        dump.contains(".ko.xz "),
        style.xz,
        "package layout:\n{dump}"
    );
    let ghosts = sh(&format!(
        "rpm -qp --qf '[%{{FILEFLAGS:fflags}} %{{FILENAMES}}\\n]' {}",
        q(&rpm.path)
    ));
    let dep_is_ghost = ghosts
        .lines()
        .any(|l| l.starts_with('g') && l.ends_with("/modules.dep"));
    assert_eq!(dep_is_ghost, !style.modules_dep, "{ghosts}");

    let tar = el_root_tar(work);
    let out = work.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["build", "--image"])
        .arg(image(definition))
        .arg("--set")
        .arg(format!("rootfs.tar={}", tar.display()))
        .arg("--set")
        .arg(format!("kernel.rpm={}", rpm.path.display()))
        .args(["--set", "init.libc=gnu", "--init"])
        .arg(gnu_init())
        .args(["--target", "xen,qemu", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    eprintln!("{log}");
    assert!(log.contains(&format!("kernel {} (", rpm.release)), "{log}");

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["kernel"], rpm.release.as_str());

    // The kernel is the package's (the host's bytes).
    let kernel = out.join(format!("qemu/vmlinuz-{}", rpm.release));
    let host = Path::new("/boot").join(format!("vmlinuz-{}", rpm.release));
    assert_eq!(
        std::fs::read(&kernel).unwrap(),
        std::fs::read(&host).unwrap()
    );

    // The initramfs, read with the real tools.
    let initrd = out.join(format!("qemu/initrd.img-{}", rpm.release));
    let listing = sh(&format!("zcat {} | cpio -t --quiet", q(&initrd)));
    let modules_dir = format!("lib/modules/{}/", rpm.release);
    let has = |name: &str| {
        listing.lines().find(|l| {
            l.starts_with(&modules_dir) && l.ends_with(&format!("/{name}.ko"))
                || l.ends_with(&format!("/{}.ko", name.replace('-', "_")))
        })
    };
    for name in MUST {
        let in_package = rpm
            .modules
            .iter()
            .any(|m| m.contains(&format!("/{name}.ko")));
        if !in_package {
            eprintln!("{name} is not a module of this kernel; not expected");
            continue;
        }
        let member = has(name).unwrap_or_else(|| panic!("{name} missing:\n{listing}"));
        // Decompressed, and byte-identical to the host's module.
        let inside = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "zcat {} | cpio -i --quiet --to-stdout {member}",
                q(&initrd)
            ))
            .output()
            .unwrap()
            .stdout;
        let rel = member.strip_prefix(&modules_dir).unwrap();
        let original =
            std::fs::read(Path::new("/lib/modules").join(&rpm.release).join(rel)).unwrap();
        assert!(
            inside == original,
            "{member} differs from the host's module"
        );
    }
    for name in MUST_NOT {
        assert!(has(name).is_none(), "{name} should not be in:\n{listing}");
    }
    assert!(!listing.contains(".ko.xz"), "{listing}");
    // Dependencies came along (from depmod's file or computed from each module's .modinfo).
    assert!(has("virtio_ring").is_some() || !rpm.modules.iter().any(|m| m.contains("virtio_ring")));
    let index = sh(&format!(
        "zcat {} | cpio -i --quiet --to-stdout lib/modules/imgbuild-modules.json",
        q(&initrd)
    ));
    let index: serde_json::Value = serde_json::from_str(&index).unwrap();
    assert_eq!(index["kernel"], rpm.release.as_str());
    let blk = index["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "virtio_blk")
        .expect("virtio_blk in the index");
    let deps: Vec<&str> = blk["depends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(
        deps.contains(&"virtio") && deps.contains(&"virtio_ring"),
        "{deps:?}"
    );

    // The kernel and initramfs under /boot of the image are the same files.
    let img = out.join(format!("xen/{}.ext4", definition.trim_end_matches(".toml")));
    let boot = sh(&format!("debugfs -R 'ls -l /boot' {} 2>/dev/null", q(&img)));
    assert!(boot.contains(&format!("vmlinuz-{}", rpm.release)), "{boot}");
    assert!(
        boot.contains(&format!("initrd.img-{}", rpm.release)),
        "{boot}"
    );
}

#[test]
fn el7_style_kernel_package_with_xz_modules_and_modules_dep() {
    check_style(
        KernelStyle {
            xz: true,
            modules_dep: true,
        },
        "sl7-bench.toml",
    );
}

#[test]
fn el6_style_kernel_package_without_modules_dep() {
    check_style(
        KernelStyle {
            xz: false,
            modules_dep: false,
        },
        "sl6-bench.toml",
    );
}

#[test]
fn kernel_package_without_a_kernel_is_refused() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let stage = work.join("stage");
    std::fs::create_dir_all(stage.join("lib/modules/3.10.0-1160.el7.x86_64")).unwrap();
    std::fs::write(
        stage.join("lib/modules/3.10.0-1160.el7.x86_64/modules.order"),
        "",
    )
    .unwrap();
    let rpm = sl_common::rpmbuild(
        work,
        "Name: kernel-modules-only\nVersion: 3.10.0\nRelease: 1160.el7\nSummary: x\n\
         License: GPLv2\nBuildArch: x86_64\n%description\nx\n\
         %install\ncp -a %{stage}/. %{buildroot}/\n%files\n/lib/modules\n",
        &stage,
    );
    let tar = el_root_tar(work);
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["build", "--image"])
        .arg(image("sl7-bench.toml"))
        .arg("--set")
        .arg(format!("rootfs.tar={}", tar.display()))
        .arg("--set")
        .arg(format!("kernel.rpm={}", rpm.display()))
        .arg("--init")
        .arg(gnu_init())
        .args(["--target", "qemu", "--out"])
        .arg(work.join("out"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{log}");
    assert!(
        log.contains("contains no kernel image") && log.contains("kernel-modules-only"),
        "{log}"
    );
}
