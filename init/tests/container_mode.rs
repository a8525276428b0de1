//! Container mode, end to end: the init as PID 1 of a new PID, mount and user namespace,
//! chrooted into a small root, started the way OpenVZ starts it (`init -z "      "`) with LXC's
//! `container=lxc`. Checks the mode, the digest (bind mount, matching the build's), the results
//! file, that the root is left as it was (so a second run digests the same tree), exit 0.
//! Skipped when unshare(1) cannot make the namespaces here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use imgbuild_init::results::read_results_file;
use imgbuild_init::results::schema::{ContainerKind, DigestMethod, DigestStatus, Mode, Status};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild-init");

fn run_container(root: &Path, mount_ns: bool) -> Option<Output> {
    let ns: &[&str] = if mount_ns {
        &["-r", "--mount", "--pid", "--fork"]
    } else {
        &["-r", "--pid", "--fork"]
    };
    let out = Command::new("unshare")
        .args(ns)
        .arg("chroot")
        .arg(root)
        .args(["/sbin/init", "-z", "      "])
        .env("container", "lxc")
        .env_remove("IMGBUILD_STAGE")
        .output()
        .ok()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.starts_with("unshare:") {
        eprintln!("SKIPPED container test: {stderr}");
        return None;
    }
    Some(out)
}

fn make_root(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("root");
    for d in [
        "sbin",
        "etc/imgbuild",
        "proc",
        "dev",
        "tmp",
        "var/lib/imgbuild",
        "var/tmp",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy(BIN, root.join("sbin/init")).unwrap();
    fs::write(
        root.join("etc/imgbuild/profile.json"),
        r#"{"name": "ct", "repetitions": 2, "workloads": [{"workload": "crypto",
            "params": {"seconds": 0.001, "algorithms": ["aes-256-gcm"], "block_sizes": [1024]}}]}"#,
    )
    .unwrap();
    let digest = imgbuild_init::digest::digest_directory(&root).unwrap();
    fs::write(
        root.join("etc/imgbuild/build.json"),
        format!(r#"{{"image": "ct-test", "rootfs_digest": "{digest}"}}"#),
    )
    .unwrap();
    root
}

#[test]
fn container_mode_in_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_root(dir.path());
    for attempt in 0..2 {
        let Some(out) = run_container(&root, true) else {
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        let run = read_results_file(&root.join("var/lib/imgbuild/results")).unwrap();
        assert!(
            run.complete && run.problems.is_empty(),
            "{:?}",
            run.problems
        );
        let start = run.run_start().unwrap();
        assert_eq!(start.mode, Mode::Container);
        assert_eq!(
            start.platform.container.as_ref().unwrap().kind,
            ContainerKind::Lxc
        );
        let check = &start.digest_check;
        assert_eq!(
            check.status,
            DigestStatus::Match,
            "run {attempt}: {check:?}"
        );
        assert_eq!(check.method, Some(DigestMethod::BindMount));
        let w: Vec<_> = run.workloads().collect();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].status, Status::Ok, "{:?}", w[0].reason);
        assert_eq!(w[0].metrics.len(), 2, "single and per_cpu");
        assert!(w[0].metrics.iter().all(|m| m.median > 0.0));
        assert!(!root.join("var/tmp/imgbuild-work").exists());
    }
}

#[test]
fn without_mount_rights_the_digest_falls_back_to_a_walk() {
    let dir = tempfile::tempdir().unwrap();
    let root = make_root(dir.path());
    // No mount namespace of its own: bind mounts (and /proc) are refused.
    let Some(out) = run_container(&root, false) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let run = read_results_file(&root.join("var/lib/imgbuild/results")).unwrap();
    let check = &run.run_start().unwrap().digest_check;
    assert_eq!(
        check.method,
        Some(DigestMethod::SameDeviceWalk),
        "{check:?}"
    );
    assert!(
        check.reason.as_deref().unwrap().contains("bind mount"),
        "{check:?}"
    );
    assert_eq!(check.status, DigestStatus::Match, "{check:?}");
    assert!(run.complete);
}
