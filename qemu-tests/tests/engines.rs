//! One test per engine: the embedded default image (built once for this test binary) booted
//! with its smoke profile on qemu, vmware, xen-image, openvz and host through `imgbuild run`'s
//! library entry, asserting on the collected results: every workload present and ok with
//! positive values, the platform detected, phases in order, the guest's rootfs digest equal to
//! the manifest's. Plus `--on xen --print`, and a report over the runs rendered by Chromium.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use imgbuild::run::{print_command, EngineKind, RunOptions};
use imgbuild_init::results::schema::Mode;
use qemu_tests::{
    assert_qemu_platform, assert_smoke_run, boot, container_prerequisites, default_build, skip,
    vm_prerequisites,
};

const TIMEOUT: Duration = Duration::from_secs(300);

/// A direct kernel boot goes through the kernel's PVH entry exactly when the package's kernel
/// has one (Debian's do), and qboot replaces SeaBIOS where QEMU ships it.
fn assert_kernel_entry(r: &imgbuild::run::record::RunRecord, package: &std::path::Path) {
    let kernel = std::fs::read_dir(package)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .unwrap();
    let pvh = imgbuild::kernel::pvh::vmlinux(&std::fs::read(&kernel).unwrap());
    let note = r.notes.iter().find(|n| n.starts_with("kernel: ")).unwrap();
    match pvh {
        Ok(_) => {
            assert!(note.contains("PVH entry"), "{note}");
            assert!(r.command.contains("/vmlinux "), "{}", r.command);
        }
        Err(why) => {
            assert!(note.contains(&why.to_string()), "{note}");
            assert!(r.command.contains("/vmlinuz-"), "{}", r.command);
        }
    }
    let qboot = std::path::Path::new("/usr/share/qemu/qboot.rom");
    if r.command.starts_with("/usr/bin/") && qboot.is_file() {
        assert!(
            r.command.contains("-bios /usr/share/qemu/qboot.rom"),
            "{}",
            r.command
        );
    }
}

fn vm_test(name: &str, engine: EngineKind) {
    if let Err(why) = vm_prerequisites() {
        return skip(name, &why);
    }
    let build = default_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let r = boot(&build.out, engine, TIMEOUT);
    assert_eq!(r.engine, engine.name());
    assert!(r.accel.is_some());
    assert!(r.command.contains("qemu-system-x86_64"), "{}", r.command);
    assert!(
        r.first_record_s.is_some_and(|t| t > 0.0 && t < r.wall_s),
        "{:?} of {}",
        r.first_record_s,
        r.wall_s
    );
    assert_smoke_run(&r, &build.manifest, Mode::Root, &assert_qemu_platform(&r));
    match engine {
        EngineKind::Qemu => assert_kernel_entry(&r, &build.out.join("qemu")),
        EngineKind::XenImage => assert_kernel_entry(&r, &build.out.join("xen")),
        _ => assert!(!r.command.contains("-bios"), "{}", r.command),
    }
    // The build's own disks are untouched: verify still agrees with the manifest.
    let report = imgbuild::verify::verify(&build.out).unwrap();
    assert!(
        report.ok(),
        "{:?}",
        report.files.iter().filter(|f| !f.ok()).collect::<Vec<_>>()
    );
}

#[test]
fn qemu_engine_runs_the_smoke_profile() {
    vm_test("qemu engine", EngineKind::Qemu);
}

#[test]
fn vmware_engine_boots_the_vmdk_from_disk() {
    if vm_prerequisites().is_ok() {
        let build = default_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
        let line = print_command(
            &build.out,
            &RunOptions {
                engine: EngineKind::Vmware,
                ..RunOptions::default()
            },
        )
        .unwrap();
        assert!(
            line.contains("-device pvscsi") && line.contains("-device vmxnet3"),
            "{line}"
        );
        assert!(
            line.contains("format=vmdk") && !line.contains("-kernel"),
            "{line}"
        );
    }
    vm_test("vmware engine", EngineKind::Vmware);
}

#[test]
fn xen_image_engine_boots_the_bare_filesystem() {
    vm_test("xen-image engine", EngineKind::XenImage);
}

#[test]
fn xen_prints_the_xl_command() {
    if let Err(why) = qemu_tests::init_prerequisite() {
        return skip("xen --print", &why);
    }
    let build = default_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let options = RunOptions {
        engine: EngineKind::Xen,
        ..RunOptions::default()
    };
    let line = print_command(&build.out, &options).unwrap();
    let cfg = build.out.join("xen/minimal.cfg");
    assert_eq!(line, format!("xl create {}", cfg.display()));
    let e = imgbuild::run::run(&build.out, &options, &|_| {}).unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    let with_profile = print_command(
        &build.out,
        &RunOptions {
            profile: Some("quick".into()),
            ..options
        },
    )
    .unwrap();
    assert!(
        with_profile.contains("imgbuild.profile=quick"),
        "{with_profile}"
    );
}

#[test]
fn openvz_engine_runs_the_template_in_runc() {
    if let Err(why) = container_prerequisites() {
        return skip("openvz engine", &why);
    }
    let build = default_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let r = boot(&build.out, EngineKind::Openvz, TIMEOUT);
    assert!(
        r.command.contains("runc") && r.command.contains(" run --bundle "),
        "{}",
        r.command
    );
    assert!(r.accel.is_none() && r.cache.is_none());
    assert_smoke_run(&r, &build.manifest, Mode::Container, &|s| {
        let c = s.platform.container.as_ref().expect("container detected");
        assert_eq!(c.evidence, "container=openvz", "{c:?}");
        let phases: Vec<&str> = s.phases.iter().map(|p| p.name.as_str()).collect();
        assert!(phases.contains(&"container_init"), "{phases:?}");
        // The CPU quota is the conf sample's CPUS, the memory PHYSPAGES; the init sees the
        // host's CPUs (a quota is not an affinity).
        assert!(s.platform.online_cpus >= 1);
    });
    // The bundle is gone, and so is the container.
    let work = build
        .out
        .join("results")
        .join(format!("openvz-{}.work", r.run));
    assert!(!work.exists(), "{} left behind", work.display());
}

#[test]
fn host_engine_is_the_baseline() {
    if let Err(why) = qemu_tests::init_prerequisite() {
        return skip("host engine", &why);
    }
    let build = default_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let r = boot(&build.out, EngineKind::Host, TIMEOUT);
    assert!(r.command.contains("imgbuild-init") && r.command.contains("--host"));
    assert_smoke_run(&r, &build.manifest, Mode::Host, &|s| {
        // On the host the digest check is skipped (the host's / is no image) and there is no
        // build.json; the phases start when the init starts.
        assert_eq!(s.phases[0].name, "host_start");
        assert!(s.build_info_error.is_some());
    });
}
