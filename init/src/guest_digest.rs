//! The guest's own rootfs digest, compared with the one the builder recorded.
//!
//! The root filesystem is digested through a non-recursive bind mount of `/` on a scratch
//! directory, so /proc, /sys, /dev and other mounts do not hide the directories below them.
//! The scratch directory must not be on the root filesystem (creating it there would change
//! what is digested): it goes in /dev, /run or /tmp when those are other filesystems, or in a
//! tmpfs mounted for the purpose. Where bind mounts are not allowed (some containers) the
//! fallback walks `/` and skips mount points of other devices; the record says which method ran.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::digest::{self, RootfsDigest, WalkOptions, WalkSummary};
use crate::mounts;
use crate::results::schema::{DigestCheck, DigestMethod, DigestStatus};

/// Where scratch directories are tried, in order.
const SCRATCH_PARENTS: [&str; 4] = ["/dev", "/run", "/tmp", "/mnt"];

/// A temporary directory off the root filesystem; removed (and its tmpfs unmounted) on drop.
struct Scratch {
    dir: PathBuf,
    tmpfs: Option<PathBuf>,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.dir);
        if let Some(t) = &self.tmpfs {
            let _ = mounts::umount(t, libc::MNT_DETACH);
        }
    }
}

fn scratch_dir() -> Result<Scratch, String> {
    let root_dev = fs::metadata("/").map_err(|e| format!("stat /: {e}"))?.dev();
    let name = format!(".imgbuild-digest-{}", std::process::id());
    let mut tried = Vec::new();
    for parent in SCRATCH_PARENTS.map(Path::new) {
        let Ok(meta) = fs::metadata(parent) else {
            continue;
        };
        if !meta.is_dir() {
            continue;
        }
        let mut tmpfs = None;
        if meta.dev() == root_dev {
            // On the root itself: cover it with a tmpfs (the bind mount still shows what is
            // underneath) rather than write to the filesystem being digested.
            match mounts::mount(
                "tmpfs",
                parent,
                Some("tmpfs"),
                0,
                Some("size=64k,mode=0700"),
            ) {
                Ok(()) => tmpfs = Some(parent.to_path_buf()),
                Err(e) => {
                    tried.push(e.to_string());
                    continue;
                }
            }
        }
        let dir = parent.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => return Ok(Scratch { dir, tmpfs }),
            Err(e) => {
                tried.push(format!("mkdir {}: {e}", dir.display()));
                if let Some(t) = tmpfs {
                    let _ = mounts::umount(&t, libc::MNT_DETACH);
                }
            }
        }
    }
    Err(format!(
        "no scratch directory off the root filesystem ({})",
        tried.join("; ")
    ))
}

fn bind_and_digest() -> Result<WalkSummary, String> {
    let scratch = scratch_dir()?;
    mounts::mount("/", &scratch.dir, None, libc::MS_BIND, None).map_err(|e| e.to_string())?;
    // Read-only, so nothing done through this view can change the root. Older kernels ignore
    // the flag on bind mounts; the digest does not depend on it.
    let _ = mounts::mount(
        "none",
        &scratch.dir,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        None,
    );
    let result = digest::digest_directory_with(&scratch.dir, WalkOptions::default());
    if let Err(e) = mounts::umount(&scratch.dir, libc::MNT_DETACH) {
        crate::say!("digest: {e}");
    }
    drop(scratch);
    result.map_err(|e| e.to_string())
}

fn finish(
    method: DigestMethod,
    result: Result<WalkSummary, String>,
    expected: Option<RootfsDigest>,
    started: Instant,
    reason: Option<String>,
) -> DigestCheck {
    let seconds = Some(started.elapsed().as_secs_f64());
    match result {
        Ok(summary) => {
            let status = match expected {
                None => DigestStatus::NoExpected,
                Some(e) if e == summary.digest => DigestStatus::Match,
                Some(_) => DigestStatus::Mismatch,
            };
            DigestCheck {
                status,
                method: Some(method),
                digest: Some(summary.digest),
                expected,
                skipped_mounts: summary
                    .other_device
                    .iter()
                    .map(|p| String::from_utf8_lossy(p).into_owned())
                    .collect(),
                seconds,
                reason,
            }
        }
        Err(e) => DigestCheck {
            status: DigestStatus::Error,
            method: Some(method),
            digest: None,
            expected,
            skipped_mounts: Vec::new(),
            seconds,
            reason: Some(match reason {
                Some(r) => format!("{r}; {e}"),
                None => e,
            }),
        },
    }
}

/// Digests the running root (`/`): through a bind mount when `allow_bind`, else (or when that
/// fails) by a walk that skips other filesystems.
pub fn check_root(expected: Option<RootfsDigest>, allow_bind: bool) -> DigestCheck {
    let started = Instant::now();
    let mut reason = None;
    if allow_bind {
        match bind_and_digest() {
            Ok(summary) => {
                return finish(
                    DigestMethod::BindMount,
                    Ok(summary),
                    expected,
                    started,
                    None,
                )
            }
            Err(e) => {
                reason = Some(format!(
                    "bind mount of / not usable ({e}); walked / instead"
                ))
            }
        }
    }
    let result = digest::digest_directory_with(Path::new("/"), WalkOptions { same_device: true })
        .map_err(|e| e.to_string());
    finish(
        DigestMethod::SameDeviceWalk,
        result,
        expected,
        started,
        reason,
    )
}

/// Digests a directory standing for an image root (host mode `--root`).
pub fn check_directory(dir: &Path, expected: Option<RootfsDigest>) -> DigestCheck {
    let started = Instant::now();
    let result =
        digest::digest_directory_with(dir, WalkOptions::default()).map_err(|e| e.to_string());
    finish(DigestMethod::Directory, result, expected, started, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_check_compares_with_the_expected_digest() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("f"), b"x").unwrap();
        let real = digest::digest_directory(dir.path()).unwrap();
        let ok = check_directory(dir.path(), Some(real));
        assert_eq!(ok.status, DigestStatus::Match);
        assert_eq!(ok.method, Some(DigestMethod::Directory));
        assert!(ok.seconds.is_some());
        let bad = check_directory(dir.path(), Some(RootfsDigest([0; 32])));
        assert_eq!(bad.status, DigestStatus::Mismatch);
        assert_eq!(
            check_directory(dir.path(), None).status,
            DigestStatus::NoExpected
        );
        let missing = check_directory(&dir.path().join("nope"), Some(real));
        assert_eq!(missing.status, DigestStatus::Error);
        assert!(missing.reason.unwrap().contains("nope"));
    }
}
