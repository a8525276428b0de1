//! Atomic outputs: everything a build writes goes to a staging directory inside the output
//! directory and is renamed into place only when the whole build succeeded.
//!
//! A failed build therefore leaves no half-written file and does not disturb an earlier good
//! build in the same directory; the staging directory is removed on drop. The manifest is
//! renamed last, so a manifest always describes files that are complete.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// An output directory being written.
#[derive(Debug)]
pub struct Staging {
    out_dir: PathBuf,
    stage_dir: PathBuf,
    committed: bool,
}

/// Output that cannot be written or committed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write output {path}: {source}")]
pub struct OutputError {
    /// The path concerned.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: io::Error,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> OutputError + '_ {
    move |source| OutputError {
        path: path.to_path_buf(),
        source,
    }
}

impl Staging {
    /// Creates `out_dir` if needed and a fresh staging directory inside it.
    pub fn new(out_dir: &Path) -> Result<Staging, OutputError> {
        fs::create_dir_all(out_dir).map_err(at(out_dir))?;
        let out_dir = out_dir.canonicalize().map_err(at(out_dir))?;
        let stage_dir = out_dir.join(format!(".imgbuild-staging-{}", std::process::id()));
        if stage_dir.exists() {
            fs::remove_dir_all(&stage_dir).map_err(at(&stage_dir))?;
        }
        fs::create_dir(&stage_dir).map_err(at(&stage_dir))?;
        Ok(Staging {
            out_dir,
            stage_dir,
            committed: false,
        })
    }

    /// The final output directory.
    pub fn out_dir(&self) -> &Path {
        &self.out_dir
    }

    /// The staging directory (scratch files that are not outputs may live here too).
    pub fn stage_dir(&self) -> &Path {
        &self.stage_dir
    }

    /// Where to write the output that will be `relative` in the output directory; parent
    /// directories are created.
    pub fn path(&self, relative: &str) -> Result<PathBuf, OutputError> {
        let p = self.stage_dir.join(relative);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(at(parent))?;
        }
        Ok(p)
    }

    /// Renames every staged file into the output directory, `last` (the manifest) after all
    /// others, then removes the staging directory.
    pub fn commit(mut self, last: &str) -> Result<(), OutputError> {
        let mut files = Vec::new();
        collect_files(&self.stage_dir, &mut files).map_err(at(&self.stage_dir))?;
        files.sort();
        let last_path = self.stage_dir.join(last);
        files.retain(|f| f != &last_path);
        if last_path.exists() {
            files.push(last_path);
        }
        for staged in files {
            let Ok(relative) = staged.strip_prefix(&self.stage_dir) else {
                continue;
            };
            let dest = self.out_dir.join(relative);
            if let Some(parent) = dest.parent() {
                fs::create_dir_all(parent).map_err(at(parent))?;
            }
            fs::rename(&staged, &dest).map_err(at(&dest))?;
        }
        fs::remove_dir_all(&self.stage_dir).map_err(at(&self.stage_dir))?;
        self.committed = true;
        Ok(())
    }
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: a failed build must not leave its partial files behind.
            let _ = fs::remove_dir_all(&self.stage_dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_moves_files_and_drop_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let s = Staging::new(&out).unwrap();
        fs::write(s.path("xen/a.img").unwrap(), b"a").unwrap();
        fs::write(s.path("manifest.json").unwrap(), b"{}").unwrap();
        s.commit("manifest.json").unwrap();
        assert_eq!(fs::read(out.join("xen/a.img")).unwrap(), b"a");
        assert!(out.join("manifest.json").exists());

        // A failed build: staged files vanish, the earlier output stays.
        let s = Staging::new(&out).unwrap();
        fs::write(s.path("xen/a.img").unwrap(), b"half").unwrap();
        let stage = s.stage_dir().to_path_buf();
        drop(s);
        assert!(!stage.exists());
        assert_eq!(fs::read(out.join("xen/a.img")).unwrap(), b"a");
    }
}
