//! Running the packagers of a build: the checks before anything is built, then the packaging
//! itself, spread over threads where targets do not depend on each other, and the sha256 of
//! every file for the manifest.
//!
//! The VM targets share images (the filesystem, the whole disk) and take turns on the calling
//! thread; the OpenVZ template is made from the tree alone, on a thread of its own. Each
//! target's files are hashed on another thread as soon as the target is done, while the next
//! one is packaged, so on two cores the compression and hashing hide behind the disk work.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::thread;

use super::{packager, CheckContext, Output, PackageContext, Target, TargetError};
use crate::manifest::{file_sha256, Role};

/// Runs every target's [`Packager::check`](super::Packager::check), and refuses options no
/// chosen target uses.
pub fn check_all(targets: &[Target], cx: &CheckContext<'_>) -> Result<(), (Target, TargetError)> {
    for &target in targets {
        packager(target).check(cx).map_err(|e| (target, e))?;
    }
    if !targets.contains(&Target::Xen) {
        let unused = [("--device", cx.device), ("--xen-dir", cx.xen_dir)]
            .into_iter()
            .find(|(_, value)| value.is_some());
        if let Some((option, _)) = unused {
            let first = targets.first().copied().unwrap_or(Target::Xen);
            return Err((
                first,
                TargetError::Invalid(format!(
                    "{option} is for the xen target, which is not being built"
                )),
            ));
        }
    }
    Ok(())
}

/// One packaged file with its sha256, for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackagedFile {
    /// What it is for.
    pub role: Role,
    /// Path relative to the output directory.
    pub path: String,
    /// sha256 of its bytes, hex.
    pub sha256: String,
}

/// The files of one target, hashed.
pub type TargetFiles = (Target, Vec<PackagedFile>);

type Packaged = Result<TargetFiles, (Target, TargetError)>;

/// sha256 per inode: targets share kernels and initramfs through hard links.
#[derive(Default)]
struct Hashes(Mutex<HashMap<(u64, u64), String>>);

impl Hashes {
    fn sha256(&self, path: &Path) -> std::io::Result<String> {
        let meta = std::fs::metadata(path)?;
        let key = (meta.dev(), meta.ino());
        let known = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned();
        if let Some(h) = known {
            return Ok(h);
        }
        let h = file_sha256(path)?;
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, h.clone());
        Ok(h)
    }

    fn files(
        &self,
        cx: &PackageContext<'_>,
        outputs: Vec<Output>,
    ) -> Result<Vec<PackagedFile>, TargetError> {
        outputs
            .into_iter()
            .map(|o| {
                let staged: PathBuf = cx.artefacts.staged(&o.path)?;
                // A copy of a shared file has its bytes: hash the original, once.
                let read = cx.artefacts.copy_source(&staged).unwrap_or(staged.clone());
                let sha256 = self.sha256(&read).map_err(|source| TargetError::Io {
                    path: staged.clone(),
                    source,
                })?;
                Ok(PackagedFile {
                    role: o.role,
                    path: o.path,
                    sha256,
                })
            })
            .collect()
    }
}

/// Packages `targets`, each once, hashes their files, and returns them in the order given.
pub fn package_all(
    targets: &[Target],
    cx: &PackageContext<'_>,
) -> Result<Vec<TargetFiles>, (Target, TargetError)> {
    let hashes = Hashes::default();
    let hashes = &hashes;
    let package = move |target: Target| packager(target).package(cx).map_err(|e| (target, e));
    let hash = move |target: Target, outputs: Vec<Output>| -> Packaged {
        hashes
            .files(cx, outputs)
            .map(|files| (target, files))
            .map_err(|e| (target, e))
    };
    let (alone, shared): (Vec<Target>, Vec<Target>) =
        targets.iter().partition(|t| **t == Target::Openvz);

    let results: Vec<Packaged> = thread::scope(|s| {
        let mut handles = Vec::new();
        for &target in &alone {
            handles.push((
                target,
                s.spawn(move || package(target).and_then(|o| hash(target, o))),
            ));
        }
        let mut failed = None;
        for &target in &shared {
            match package(target) {
                Ok(outputs) => handles.push((target, s.spawn(move || hash(target, outputs)))),
                Err(e) => {
                    failed = Some(Err(e));
                    break;
                }
            }
        }
        let mut results: Vec<Packaged> = handles
            .into_iter()
            .map(|(target, handle)| {
                handle.join().unwrap_or_else(|_| {
                    Err((
                        target,
                        TargetError::Invalid("a packaging thread panicked".into()),
                    ))
                })
            })
            .collect();
        results.extend(failed);
        results
    });

    let mut done = Vec::with_capacity(results.len());
    for result in results {
        done.push(result?);
    }
    done.sort_by_key(|(target, _)| targets.iter().position(|t| t == target));
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_once_per_inode() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, b"abc").unwrap();
        std::fs::hard_link(&a, dir.path().join("b")).unwrap();
        let h = Hashes::default();
        let first = h.sha256(&a).unwrap();
        assert_eq!(
            first,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(h.sha256(&dir.path().join("b")).unwrap(), first);
        assert_eq!(h.0.lock().unwrap().len(), 1);
    }
}
