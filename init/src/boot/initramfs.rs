//! The initramfs stage: PID 1 on the kernel's rootfs. Mounts /proc, /sys, /dev, loads the
//! drivers the devices want, finds the root filesystem by UUID (or label, or path), mounts it,
//! moves the API filesystems into it, empties the initramfs as switch_root does, and execs
//! `/sbin/init` of the root, handing over what it did in `IMGBUILD_INITRAMFS`.
//!
//! None of this can run outside a real boot, so every step says on the console what it does
//! and every failure names the call and errno. A fatal failure is written to the results disk
//! when one can be found, then the machine powers off.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use super::pid1;
use crate::blockdev::{self, RootSpec};
use crate::clock::{self, PhaseLog};
use crate::cmdline::Cmdline;
use crate::console;
use crate::modules::{self, load::Loader, ModuleIndex};
use crate::mounts::{self, PROC_SUPER_MAGIC, RAMFS_MAGIC, SYSFS_MAGIC, TMPFS_MAGIC};
use crate::platform;
use crate::profile::Profile;
use crate::results::schema::{
    DigestCheck, InitramfsReport, Mode, Record, RunEnd, RunStart, RunStatus, StatusCounts,
    SCHEMA_VERSION,
};
use crate::results::ResultsWriter;
use crate::say;

/// Environment variable carrying the [`InitramfsReport`] (JSON) to the root stage.
pub const REPORT_ENV: &str = "IMGBUILD_INITRAMFS";
/// Environment variable telling the exec'd init that it is the root stage.
pub const STAGE_ENV: &str = "IMGBUILD_STAGE";
/// Where the root is mounted before the switch.
const NEW_ROOT: &str = "/newroot";
/// Default wait for the root device, seconds (`imgbuild.rootwait=` overrides).
const DEFAULT_ROOT_WAIT: f64 = 10.0;
/// Rounds of module loading before looking for the root (each may create new devices).
const MAX_MODULE_ROUNDS: usize = 8;
const API_FLAGS: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;

/// Runs the initramfs stage; never returns.
pub fn run(handoff: f64) -> ! {
    let mut phases = PhaseLog::new();
    let mut report = InitramfsReport::default();
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        stage(handoff, &mut phases, &mut report)
    }));
    let reason = match outcome {
        Ok(reason) => reason,
        Err(p) => format!(
            "initramfs stage panicked: {}",
            crate::runner::panic_message(p.as_ref())
        ),
    };
    say!("FATAL: {reason}");
    report.phases = phases.phases().to_vec();
    record_failure(&report, &reason);
    pid1::power_off()
}

fn mount_api_filesystems(report: &mut InitramfsReport) {
    for (fstype, target, magic) in [
        ("proc", "/proc", PROC_SUPER_MAGIC),
        ("sysfs", "/sys", SYSFS_MAGIC),
    ] {
        if let Err(e) = mounts::ensure_mounted(fstype, Path::new(target), Some(magic), API_FLAGS) {
            report.problems.push(e.to_string());
        }
    }
    // devtmpfs reports the tmpfs magic, as the initramfs itself may: test for a mount point.
    let dev = Path::new("/dev");
    if dev.is_dir() && mounts::is_mount_point(dev) {
        return;
    }
    let _ = std::fs::create_dir_all(dev);
    if let Err(e) = mounts::mount(
        "devtmpfs",
        dev,
        Some("devtmpfs"),
        libc::MS_NOSUID,
        Some("mode=0755"),
    ) {
        report
            .problems
            .push(format!("{e}; using a tmpfs /dev with nodes made by hand"));
        if let Err(e) = mounts::mount(
            "tmpfs",
            dev,
            Some("tmpfs"),
            libc::MS_NOSUID,
            Some("mode=0755"),
        ) {
            report.problems.push(e.to_string());
        }
        for (name, major, minor) in [
            ("console", 5, 1),
            ("null", 1, 3),
            ("kmsg", 1, 11),
            ("ttyS0", 4, 64),
            ("hvc0", 229, 0),
        ] {
            if let Ok(c) = mounts::c_path(&dev.join(name)) {
                // SAFETY: NUL-terminated path, plain integers.
                unsafe {
                    libc::mknod(
                        c.as_ptr(),
                        libc::S_IFCHR | 0o600,
                        libc::makedev(major, minor),
                    )
                };
            }
        }
    }
}

fn load_modules(report: &mut InitramfsReport) -> Option<Loader> {
    let index_path = Path::new(modules::INDEX_PATH);
    if !index_path.exists() {
        say!("no {}: relying on built-in drivers", modules::INDEX_PATH);
        return None;
    }
    let index = match ModuleIndex::read(index_path) {
        Ok(i) => i,
        Err(e) => {
            say!("{e}");
            report.problems.push(e.to_string());
            return None;
        }
    };
    let running = platform::kernel_release();
    if index.kernel != running {
        report.problems.push(format!(
            "module index is for kernel {} but {running} is running",
            index.kernel
        ));
    }
    let mut loader = Loader::new(index, Path::new("/lib/modules"));
    for _ in 0..MAX_MODULE_ROUNDS {
        if loader.round(Path::new("/sys")) == 0 {
            break;
        }
    }
    Some(loader)
}

fn stage(handoff: f64, phases: &mut PhaseLog, report: &mut InitramfsReport) -> String {
    mount_api_filesystems(report);
    if let Err(e) = console::attach_console() {
        report.problems.push(format!("no console device: {e}"));
    }
    say!(
        "imgbuild-init {}: initramfs stage",
        env!("CARGO_PKG_VERSION")
    );
    phases.mark_at("kernel_handoff", handoff);
    for p in &report.problems {
        say!("problem: {p}");
    }
    let cmdline = Cmdline::read().unwrap_or_default();
    let mut loader = load_modules(report);
    phases.mark("modules_loaded");

    let Some(root_arg) = cmdline.get("root") else {
        return "no root= on the kernel command line".into();
    };
    let Some(spec) = RootSpec::parse(root_arg) else {
        return format!("root={root_arg} is not UUID=…, LABEL=… or a /dev path");
    };
    let wait = cmdline
        .seconds("imgbuild.rootwait")
        .unwrap_or(DEFAULT_ROOT_WAIT);
    let started = Instant::now();
    let found = loop {
        let mut problems = Vec::new();
        let nodes = all_block_nodes(&mut problems);
        if let Some(found) = blockdev::find_root(&nodes, &spec) {
            break found;
        }
        if started.elapsed().as_secs_f64() >= wait {
            return format!(
                "root {root_arg} not found after {wait} s; block devices: {:?}; {}",
                nodes,
                problems.join("; ")
            );
        }
        // Devices may still be probing, or a driver's new devices want more drivers (the SCSI
        // disk driver once a host adapter has found its disks). A short pause: the root is
        // usually there within a few rounds, and each round is a few sysfs reads.
        if let Some(l) = loader.as_mut() {
            l.round(Path::new("/sys"));
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    if let Some(l) = &loader {
        report.modules = l.loads.clone();
        report.problems.extend(l.problems.iter().cloned());
    }
    say!("root {root_arg} is {}", found.device.display());
    report.root_device = Some(found.device.display().to_string());
    phases.mark("root_found");

    let mut types: Vec<String> = Vec::new();
    if let Some(t) = cmdline.get("rootfstype") {
        types.push(t.to_owned());
    }
    if let Some(sb) = &found.superblock {
        types.push(sb.fstype.to_owned());
    }
    // The ext4 driver mounts ext3 and ext2 too, on kernels built without the separate ones.
    for t in ["ext4", "ext3", "ext2"] {
        if !types.iter().any(|x| x == t) {
            types.push(t.to_owned());
        }
    }
    let flags = if cmdline.has("rw") {
        0
    } else {
        libc::MS_RDONLY
    };
    let data = cmdline.get("rootflags");
    let new_root = Path::new(NEW_ROOT);
    if let Err(e) = std::fs::create_dir_all(new_root) {
        return format!("cannot create {NEW_ROOT}: {e}");
    }
    let device = found.device.display().to_string();
    let mut errors = Vec::new();
    for t in &types {
        match mounts::mount(&device, new_root, Some(t), flags, data) {
            Ok(()) => {
                report.root_fstype = Some(t.clone());
                break;
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    if report.root_fstype.is_none() {
        return format!("cannot mount the root: {}", errors.join("; "));
    }
    say!(
        "mounted {device} on {NEW_ROOT} as {}",
        report.root_fstype.as_deref().unwrap_or("?")
    );
    phases.mark("root_mounted");
    switch_root(new_root, phases, report)
}

fn all_block_nodes(problems: &mut Vec<String>) -> Vec<std::path::PathBuf> {
    blockdev::list_block_devices(Path::new("/sys/class/block"))
        .iter()
        .filter_map(|d| match blockdev::ensure_node(Path::new("/dev"), d) {
            Ok(p) => Some(p),
            Err(e) => {
                problems.push(format!("{}: {e}", d.name));
                None
            }
        })
        .collect()
}

/// Deletes everything of the initramfs below `dir` (same device as `/`), as switch_root does,
/// so its memory is given back. Never crosses into another filesystem.
fn delete_initramfs(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            delete_initramfs(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn switch_root(new_root: &Path, phases: &mut PhaseLog, report: &mut InitramfsReport) -> String {
    for api in ["/proc", "/sys", "/dev"] {
        let target = new_root.join(api.trim_start_matches('/'));
        let moved = target.is_dir()
            && match mounts::mount(api, &target, None, libc::MS_MOVE, None) {
                Ok(()) => true,
                Err(e) => {
                    report.problems.push(e.to_string());
                    false
                }
            };
        if !moved {
            report.problems.push(format!(
                "{api} not moved into the root; the root init mounts its own"
            ));
            let _ = mounts::umount(Path::new(api), libc::MNT_DETACH);
        }
    }
    // Only ever on the kernel's rootfs: never delete a real root.
    let root = Path::new("/");
    if mounts::is_fs(root, RAMFS_MAGIC) || mounts::is_fs(root, TMPFS_MAGIC) {
        if let Ok(meta) = std::fs::metadata(root) {
            delete_initramfs(root, meta.dev());
        }
    } else {
        report
            .problems
            .push("/ is not ramfs or tmpfs: initramfs files left in place".into());
    }
    if let Err(e) = std::env::set_current_dir(new_root) {
        return format!("cannot enter {}: {e}", new_root.display());
    }
    if let Err(e) = mounts::mount(".", root, None, libc::MS_MOVE, None) {
        return e.to_string();
    }
    // SAFETY: NUL-terminated literal.
    if unsafe { libc::chroot(c".".as_ptr()) } != 0 {
        return format!(
            "chroot into the root failed: {}",
            std::io::Error::last_os_error()
        );
    }
    if let Err(e) = std::env::set_current_dir("/") {
        return format!("cannot chdir / in the root: {e}");
    }
    phases.mark("switch_root");
    report.phases = phases.phases().to_vec();
    let json = serde_json::to_string(report).unwrap_or_default();
    let init = "/sbin/init";
    say!("exec {init}");
    let err = std::process::Command::new(init)
        .arg0(init)
        .env(REPORT_ENV, json)
        .env(STAGE_ENV, "root")
        .exec();
    format!("cannot exec {init} in the root: {err}")
}

/// Writes a failed run to the results disk, if one can be found, so that `collect` sees why
/// the boot stopped.
fn record_failure(report: &InitramfsReport, reason: &str) {
    let mut problems = Vec::new();
    let nodes = all_block_nodes(&mut problems);
    let Some(disk) = blockdev::find_results_disks(&nodes).into_iter().next() else {
        say!("no results disk to record the failure on");
        return;
    };
    let mut writer = match ResultsWriter::open_disk(&disk) {
        Ok(w) => w,
        Err(e) => {
            say!("{e}");
            return;
        }
    };
    problems.push(reason.to_owned());
    let cmdline = Cmdline::read();
    let start = Record::RunStart(Box::new(RunStart {
        schema: SCHEMA_VERSION,
        init_version: env!("CARGO_PKG_VERSION").into(),
        mode: Mode::Initramfs,
        wall_clock_unix_s: clock::wall_clock_unix(),
        image: None,
        build_digest: None,
        build_info_error: Some("the root was not mounted".into()),
        platform: platform::collect(cmdline.as_ref(), None),
        phases: report.phases.clone(),
        initramfs: Some(report.clone()),
        digest_check: DigestCheck::skipped("the root was not mounted", None),
        profile: Profile {
            name: "none".into(),
            description: "the boot failed before a profile was read".into(),
            verify_digest: false,
            repetitions: 1,
            timeout_s: 1.0,
            workloads: Vec::new(),
        },
        profile_source: "none".into(),
        problems,
    }));
    let end = Record::RunEnd(RunEnd {
        status: RunStatus::Failed,
        reason: Some(reason.to_owned()),
        end_s: clock::since_boot(),
        counts: StatusCounts::default(),
    });
    for record in [start, end] {
        if let Err(e) = writer.append(&record) {
            say!("{e}");
            return;
        }
    }
    say!("failure recorded on {}", disk.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_the_initramfs_stays_on_its_device() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("link")).unwrap();
        let dev = std::fs::metadata(dir.path()).unwrap().dev();
        delete_initramfs(dir.path(), dev);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(
            Path::new("/etc/passwd").exists(),
            "symlink target untouched"
        );
        // A directory on "another device" (a dev number nothing has) is left alone.
        std::fs::create_dir(dir.path().join("keep")).unwrap();
        delete_initramfs(dir.path(), dev ^ 0xffff);
        assert!(dir.path().join("keep").exists());
    }
}
