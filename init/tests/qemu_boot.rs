//! Boots the init as PID 1 under QEMU with the host's kernel: initramfs stage (module loading
//! from the index, root found by UUID, switch root), root stage (digest check, crypto, results
//! disk), power-off. Skipped, saying why, when QEMU, a kernel with its modules, mke2fs or cpio
//! are missing; IMGBUILD_REQUIRE_QEMU=1 turns a skip into a failure. TCG by default;
//! IMGBUILD_QEMU_ACCEL=kvm uses KVM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imgbuild_init::modules::{ModuleEntry, ModuleIndex};
use imgbuild_init::results::schema::{
    DigestMethod, DigestStatus, Hypervisor, Mode, RunStatus, Status,
};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");
const ROOT_UUID: &str = "5e1f0c2a-7d3b-4c6e-9a10-b00710ad1e57";

fn skip(why: &str) {
    if std::env::var("IMGBUILD_REQUIRE_QEMU").as_deref() == Ok("1") {
        panic!("QEMU boot test required but cannot run: {why}");
    }
    eprintln!("SKIPPED qemu boot test: {why}");
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The newest /boot/vmlinuz-X with /lib/modules/X.
fn find_kernel() -> Option<(PathBuf, String)> {
    let mut found: Vec<(PathBuf, String)> = fs::read_dir("/boot")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let release = name.strip_prefix("vmlinuz-")?.to_owned();
            Path::new("/lib/modules")
                .join(&release)
                .join("modules.dep")
                .exists()
                .then(|| (e.path(), release))
        })
        .collect();
    found.sort();
    found.pop()
}

fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".ko").replace('-', "_")
}

/// Index entries for `wanted` and their dependencies, from modules.dep and modules.alias;
/// copies the files into `dest`. None when a module is compressed (not handled here).
fn build_index(release: &str, wanted: &[&str], dest: &Path) -> Option<ModuleIndex> {
    let dir = Path::new("/lib/modules").join(release);
    let dep_text = fs::read_to_string(dir.join("modules.dep")).ok()?;
    let alias_text = fs::read_to_string(dir.join("modules.alias")).unwrap_or_default();
    let mut deps: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for line in dep_text.lines() {
        let Some((file, rest)) = line.split_once(':') else {
            continue;
        };
        let names = rest.split_whitespace().map(module_name).collect();
        deps.insert(module_name(file), (file.to_owned(), names));
    }
    let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in alias_text.lines() {
        let mut parts = line.split_whitespace();
        if let (Some("alias"), Some(pattern), Some(module)) =
            (parts.next(), parts.next(), parts.next())
        {
            aliases
                .entry(module.replace('-', "_"))
                .or_default()
                .push(pattern.to_owned());
        }
    }
    let mut todo: Vec<String> = wanted.iter().map(|s| s.to_string()).collect();
    let mut seen = BTreeSet::new();
    let mut modules = Vec::new();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.clone()) {
            continue;
        }
        let Some((file, depends)) = deps.get(&name) else {
            continue; // built in
        };
        if !file.ends_with(".ko") {
            return None;
        }
        let target = dest.join(release).join(file);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(dir.join(file), &target).unwrap();
        todo.extend(depends.iter().cloned());
        modules.push(ModuleEntry {
            name: name.clone(),
            file: file.clone(),
            depends: depends.clone(),
            aliases: aliases.get(&name).cloned().unwrap_or_default(),
            always: false,
        });
    }
    Some(ModuleIndex {
        kernel: release.to_owned(),
        modules,
    })
}

fn sh(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A prepared guest: initramfs, root disk, results disk.
struct Guest {
    _work: tempfile::TempDir,
    kernel: PathBuf,
    cpio: PathBuf,
    root_img: PathBuf,
    results_img: PathBuf,
    console: PathBuf,
}

const PROFILE: &str = r#"{"name": "boot-test", "repetitions": 2, "timeout_s": 120, "workloads": [
    {"workload": "crypto", "params": {"seconds": 0.002, "block_sizes": [64, 16384]}},
    {"workload": "fault-segv"},
    {"workload": "fault-panic"},
    {"workload": "fault-hang", "timeout_s": 2},
    {"workload": "fault-fill-disk", "params": {"max_mib": 256}},
    {"workload": "crypto", "name": "crypto-after-faults",
     "params": {"seconds": 0.002, "block_sizes": [64]}}]}"#;

/// Builds the guest, or says why it cannot.
fn prepare() -> Result<Guest, String> {
    for tool in ["qemu-system-x86_64", "mke2fs", "cpio", "e2fsck"] {
        if !have(tool) {
            return Err(format!("{tool} not installed"));
        }
    }
    let (kernel, release) = find_kernel().ok_or("no /boot/vmlinuz-* with matching /lib/modules")?;
    if fs::File::open(&kernel).is_err() {
        return Err("kernel image not readable".into());
    }
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // The initramfs: our binary as /init, the module index and modules, no /dev/console node
    // (the init must open a console itself).
    let initramfs = w.join("initramfs");
    fs::create_dir_all(initramfs.join("lib/modules")).unwrap();
    fs::copy(BIN, initramfs.join("init")).unwrap();
    let index = build_index(
        &release,
        &["virtio_pci", "virtio_blk"],
        &initramfs.join("lib/modules"),
    )
    .ok_or("compressed kernel modules")?;
    fs::write(
        initramfs.join("lib/modules/imgbuild-modules.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let cpio = w.join("initramfs.cpio");
    sh(Command::new("sh")
        .current_dir(&initramfs)
        .arg("-c")
        .arg(format!(
            "find . | cpio -o -H newc --quiet > {}",
            cpio.display()
        )));

    // The root: our binary as /sbin/init, a profile, build.json with the tree's digest.
    let tree = w.join("root");
    for d in [
        "sbin",
        "etc/imgbuild",
        "proc",
        "sys",
        "dev",
        "tmp",
        "var/tmp",
    ] {
        fs::create_dir_all(tree.join(d)).unwrap();
    }
    fs::copy(BIN, tree.join("sbin/init")).unwrap();
    fs::write(tree.join("etc/imgbuild/profile.json"), PROFILE).unwrap();
    let digest = imgbuild_init::digest::digest_directory(&tree).unwrap();
    fs::write(
        tree.join("etc/imgbuild/build.json"),
        format!(r#"{{"image": "boot-test", "rootfs_digest": "{digest}"}}"#),
    )
    .unwrap();
    let root_img = w.join("root.img");
    sh(Command::new("mke2fs")
        .args([
            "-q", "-F", "-t", "ext4", "-U", ROOT_UUID, "-L", "imgroot", "-d",
        ])
        .arg(&tree)
        .arg(&root_img)
        .arg("48M"));
    let results_img = w.join("results.img");
    imgbuild_init::results::create_results_image(&results_img, 1 << 20, "boot-test", digest)
        .unwrap();
    Ok(Guest {
        kernel,
        cpio,
        root_img,
        results_img,
        console: w.join("console.log"),
        _work: work,
    })
}

/// Boots the guest with `extra` on the kernel command line; returns the console log once it
/// powered off.
fn boot(guest: &Guest, extra: &str) -> String {
    // TCG unless asked: a /dev/kvm that opens is no proof that KVM runs guests (nested
    // virtualisation may hang).
    let kvm = std::env::var("IMGBUILD_QEMU_ACCEL").as_deref() == Ok("kvm");
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-m",
        "512",
        "-smp",
        "2",
        "-display",
        "none",
        "-no-reboot",
        "-nodefaults",
    ])
    .args(if kvm {
        ["-accel", "kvm", "-cpu", "host"]
    } else {
        ["-accel", "tcg", "-cpu", "Westmere"]
    })
    .arg("-kernel")
    .arg(&guest.kernel)
    .arg("-initrd")
    .arg(&guest.cpio)
    .arg("-append")
    .arg(format!("console=ttyS0 panic=-1 {extra}"))
    .arg("-drive")
    .arg(format!(
        "file={},format=raw,if=virtio",
        guest.root_img.display()
    ))
    .arg("-drive")
    .arg(format!(
        "file={},format=raw,if=virtio",
        guest.results_img.display()
    ))
    .arg("-serial")
    .arg(format!("file:{}", guest.console.display()))
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = qemu.spawn().unwrap();
    let limit = Duration::from_secs(if kvm { 120 } else { 600 });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "guest did not power off in {limit:?}:\n{}",
                fs::read_to_string(&guest.console).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = fs::read_to_string(&guest.console).unwrap_or_default();
    let ours: Vec<&str> = log.lines().filter(|l| l.starts_with("imgbuild:")).collect();
    eprintln!(
        "guest ran {:?} (kvm: {kvm}):\n{}",
        started.elapsed(),
        ours.join("\n")
    );
    assert!(status.success(), "qemu failed: {status}");
    assert!(!log.contains("Kernel panic"), "kernel panicked:\n{log}");
    assert!(!log.contains("Attempted to kill init"), "{log}");
    assert!(log.contains("imgbuild: powering off"), "{log}");
    log
}

#[test]
fn boots_through_initramfs_and_root_and_records_results() {
    let guest = match prepare() {
        Ok(g) => g,
        Err(why) => return skip(&why),
    };
    let log = boot(
        &guest,
        &format!("root=UUID={ROOT_UUID} imgbuild.rootwait=30"),
    );
    assert!(log.contains("imgbuild: phase switch_root at "));

    let run = imgbuild_init::results::read_results_file(&guest.results_img).unwrap();
    assert!(run.complete, "{:?}", run.problems);
    assert!(run.problems.is_empty(), "{:?}", run.problems);
    let start = run.run_start().unwrap();
    assert_eq!(start.mode, Mode::Root);
    assert_eq!(start.image.as_deref(), Some("boot-test"));
    assert_eq!(
        start.digest_check.status,
        DigestStatus::Match,
        "{:?}",
        start.digest_check
    );
    assert_eq!(start.digest_check.method, Some(DigestMethod::BindMount));
    if std::env::var("IMGBUILD_QEMU_ACCEL").as_deref() == Ok("kvm") {
        assert_eq!(start.platform.hypervisor, Hypervisor::Kvm);
    } else {
        assert_eq!(start.platform.hypervisor, Hypervisor::Tcg);
    }
    assert!(start.problems.is_empty(), "{:?}", start.problems);
    let initramfs = start
        .initramfs
        .as_ref()
        .expect("initramfs report handed over");
    assert_eq!(initramfs.root_fstype.as_deref(), Some("ext4"));
    assert!(
        initramfs.modules.iter().any(|m| m.name == "virtio_blk"),
        "{:?}",
        initramfs.modules
    );
    let phases: Vec<&str> = start.phases.iter().map(|p| p.name.as_str()).collect();
    for p in [
        "kernel_handoff",
        "modules_loaded",
        "root_mounted",
        "switch_root",
        "root_init",
        "digest_checked",
    ] {
        assert!(phases.contains(&p), "{phases:?}");
    }
    assert!(
        start.phases.windows(2).all(|w| w[0].at_s <= w[1].at_s),
        "{:?}",
        start.phases
    );
    let status: Vec<Status> = run.workloads().map(|w| w.status).collect();
    assert_eq!(
        status,
        [
            Status::Ok,
            Status::Failed,
            Status::Failed,
            Status::Timeout,
            Status::Ok,
            Status::Ok
        ]
    );
    let crypto = run.workloads().next().unwrap();
    assert!(crypto.metrics.iter().all(|m| m.median > 0.0));
    // The 48 MiB root filled up (less than the 256 MiB asked for fitted), and the run went on.
    let fill = run.workloads().nth(4).unwrap();
    let written = fill.metrics.iter().find(|m| m.name == "written").unwrap();
    assert!(
        written.median > 8e6 && written.median < 48e6,
        "{}",
        written.median
    );
    let after = run.workloads().nth(5).unwrap();
    assert!(after.metrics.iter().all(|m| m.median > 0.0));
    assert_eq!(run.run_end().unwrap().status, RunStatus::Complete);

    // Remounted read-only before power-off: the filesystem needs no recovery, and the work
    // directory is gone, so the next boot digests the same tree.
    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&guest.root_img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let ls = Command::new("debugfs")
        .args(["-R", "ls /var/tmp"])
        .arg(&guest.root_img)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ls.stdout).contains("imgbuild-work"));
}

#[test]
fn init_panic_and_missing_root_are_recorded_and_power_off_cleanly() {
    let guest = match prepare() {
        Ok(g) => g,
        Err(why) => return skip(&why),
    };
    // A panic of PID 1 itself after run_start: recorded, then a clean power-off.
    boot(
        &guest,
        &format!("root=UUID={ROOT_UUID} imgbuild.test_panic=1"),
    );
    let run = imgbuild_init::results::read_results_file(&guest.results_img).unwrap();
    let end = run.run_end().expect("run_end written after the panic");
    assert_eq!(end.status, RunStatus::Failed);
    assert!(
        end.reason.as_deref().unwrap().contains("init panicked"),
        "{:?}",
        end.reason
    );

    // No such root: the initramfs gives up after rootwait and records why.
    boot(
        &guest,
        "root=UUID=00000000-0000-4000-8000-000000000000 imgbuild.rootwait=2",
    );
    let run = imgbuild_init::results::read_results_file(&guest.results_img).unwrap();
    let start = run.run_start().unwrap();
    assert_eq!(start.mode, Mode::Initramfs);
    let end = run.run_end().unwrap();
    assert_eq!(end.status, RunStatus::Failed);
    assert!(
        end.reason.as_deref().unwrap().contains("not found"),
        "{:?}",
        end.reason
    );
    assert_eq!(run.workloads().count(), 0);
}
