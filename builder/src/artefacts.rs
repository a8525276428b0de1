//! The images several targets share, each made at most once per build: the bare filesystem
//! image, the partitioned whole-disk image, kernel and initramfs copies, results disks.
//!
//! The filesystem is written once; the whole-disk image copies its data ranges in the kernel
//! (copy_file_range) behind the MBR and GRUB; targets take hard links of the shared files into
//! their own folders of the staging directory, so `--target all` costs one filesystem write.
//! A disk a guest writes to is linked into one target only: a second target gets its own copy,
//! so booting one platform never changes another platform's disk.
//!
//! Targets may be packaged on several threads at once (the OpenVZ template needs none of these
//! images), so each artefact is made under its own lock, at most once.
//!
//! Images are not flushed to the disk one by one: the staging directory and the final renames
//! already make a build appear whole or not at all, and flushing each image of `--target all`
//! (a gigabyte and more) in turn would make the build wait on the disk for most of its time.
//! Only a real device (`--device`) is flushed, since nothing renames it into place.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::disk::{self, grub::GrubImages, mbr};
use crate::ext4::{self, Ext4Plan};
use crate::finish::{BootFiles, Finished};
use crate::output::Staging;
use crate::progress::Progress;

/// A shared artefact that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ArtefactError {
    /// Writing the filesystem failed.
    #[error(transparent)]
    Ext4(#[from] ext4::Ext4Error),
    /// The boot loader cannot be installed.
    #[error(transparent)]
    Grub(#[from] disk::grub::GrubError),
    /// The partition table cannot be written.
    #[error(transparent)]
    Mbr(#[from] disk::mbr::MbrError),
    /// The target device is not usable.
    #[error(transparent)]
    Device(#[from] disk::device::DeviceError),
    /// A kernel is needed and the build has none.
    #[error("this target boots a kernel, and the build has none (set [kernel] in the definition or install a kernel under /boot)")]
    NoKernel,
    /// File I/O.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> ArtefactError + '_ {
    move |source| ArtefactError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Shared images of one build.
pub struct Artefacts<'a> {
    finished: &'a Finished,
    plan: &'a Ext4Plan,
    boot: Option<&'a BootFiles>,
    staging: &'a Staging,
    progress: &'a Progress,
    name: &'a str,
    rootfs: Mutex<Option<PathBuf>>,
    disk: Mutex<Option<PathBuf>>,
    kernel: Mutex<Option<PathBuf>>,
    initrd: Mutex<Option<PathBuf>>,
    /// Shared writable disks already linked into a target.
    placed_disks: Mutex<HashSet<PathBuf>>,
    /// Staged copies of shared files, and what they are copies of.
    copies: Mutex<HashMap<PathBuf, PathBuf>>,
}

/// The artefact in `cell`, made by `make` the first time.
fn once(
    cell: &Mutex<Option<PathBuf>>,
    make: impl FnOnce() -> Result<PathBuf, ArtefactError>,
) -> Result<PathBuf, ArtefactError> {
    let mut slot = cell.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(p) = slot.as_ref() {
        return Ok(p.clone());
    }
    let p = make()?;
    *slot = Some(p.clone());
    Ok(p)
}

impl<'a> Artefacts<'a> {
    /// Artefacts for the finished tree and its filesystem plan.
    pub fn new(
        name: &'a str,
        finished: &'a Finished,
        plan: &'a Ext4Plan,
        boot: Option<&'a BootFiles>,
        staging: &'a Staging,
        progress: &'a Progress,
    ) -> Artefacts<'a> {
        Artefacts {
            finished,
            plan,
            boot,
            staging,
            progress,
            name,
            rootfs: Mutex::default(),
            disk: Mutex::default(),
            kernel: Mutex::default(),
            initrd: Mutex::default(),
            placed_disks: Mutex::default(),
            copies: Mutex::default(),
        }
    }

    fn shared(&self, file: &str) -> Result<PathBuf, ArtefactError> {
        self.staging
            .path(&format!(".shared/{file}"))
            .map_err(|e| ArtefactError::Io {
                path: e.path,
                source: e.source,
            })
    }

    /// The filesystem plan.
    pub fn plan(&self) -> &Ext4Plan {
        self.plan
    }

    /// The bare filesystem image (the Xen "loopback" disk).
    pub fn rootfs(&self) -> Result<PathBuf, ArtefactError> {
        once(&self.rootfs, || {
            let path = self.shared(&format!("{}.ext4", self.name))?;
            let file = File::create(&path).map_err(io_at(&path))?;
            self.write_fs(&file, 0, true)?;
            Ok(path)
        })
    }

    fn write_fs(&self, file: &File, offset: u64, zeroed: bool) -> Result<(), ArtefactError> {
        let bar = self
            .progress
            .bytes("filesystem", self.plan.used_blocks * 4096);
        ext4::write(&self.finished.tree, self.plan, file, offset, zeroed, &|n| {
            bar.inc(n)
        })?;
        bar.finish_and_clear();
        Ok(())
    }

    /// Writes the filesystem straight onto a block device (after the safety checks).
    pub fn write_to_device(&self, device: &Path) -> Result<(), ArtefactError> {
        let (file, _) = disk::device::open_device(device, self.plan.size_bytes, false)?;
        self.write_fs(&file, 0, false)?;
        file.sync_all().map_err(io_at(device))
    }

    /// The whole-disk image: MBR with one partition at 1 MiB holding the filesystem, and GRUB
    /// in the gap when the build has a kernel (so the disk boots on its own).
    pub fn disk(&self) -> Result<PathBuf, ArtefactError> {
        once(&self.disk, || self.make_disk())
    }

    fn make_disk(&self) -> Result<PathBuf, ArtefactError> {
        let path = self.shared(&format!("{}.raw", self.name))?;
        let layout = mbr::layout(self.plan.size_bytes);
        let file = File::create(&path).map_err(io_at(&path))?;
        file.set_len(layout.disk_bytes).map_err(io_at(&path))?;
        let signature = u32::from_le_bytes([
            self.finished.uuid[0],
            self.finished.uuid[1],
            self.finished.uuid[2],
            self.finished.uuid[3],
        ]);
        if self.boot.is_some() {
            let grub = GrubImages::from_host()?;
            disk::grub::install(&file, &layout, signature, &grub)?;
        } else {
            mbr::write_mbr(&file, &layout, signature, None)?;
        }
        let rootfs = self
            .rootfs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match rootfs {
            Some(rootfs) => {
                copy_data(&rootfs, &file, layout.partition_start).map_err(io_at(&path))?
            }
            None => self.write_fs(&file, layout.partition_start, true)?,
        }
        Ok(path)
    }

    /// The kernel image, copied out of the tree's source.
    pub fn kernel(&self) -> Result<PathBuf, ArtefactError> {
        once(&self.kernel, || {
            let boot = self.boot.ok_or(ArtefactError::NoKernel)?;
            let path = self.shared(&format!("vmlinuz-{}", boot.version))?;
            let reader = boot
                .kernel
                .content
                .open(boot.kernel.size, &boot.kernel_path())
                .map_err(|e| ArtefactError::Io {
                    path: path.clone(),
                    source: e.source,
                })?;
            let mut bytes = vec![0u8; boot.kernel.size as usize];
            reader.read_exact_at(&mut bytes, 0).map_err(io_at(&path))?;
            fs::write(&path, bytes).map_err(io_at(&path))?;
            Ok(path)
        })
    }

    /// The initramfs.
    pub fn initrd(&self) -> Result<PathBuf, ArtefactError> {
        once(&self.initrd, || {
            let boot = self.boot.ok_or(ArtefactError::NoKernel)?;
            let path = self.shared(&format!("initrd.img-{}", boot.version))?;
            fs::write(&path, &boot.initrd).map_err(io_at(&path))?;
            Ok(path)
        })
    }

    /// The staging path for the output `relative` (parents created).
    pub fn staged(&self, relative: &str) -> Result<PathBuf, ArtefactError> {
        self.staging.path(relative).map_err(|e| ArtefactError::Io {
            path: e.path,
            source: e.source,
        })
    }

    /// The image name.
    pub fn name(&self) -> &str {
        self.name
    }

    /// A fresh, empty results disk at `relative` in the staging directory.
    pub fn results_disk(&self, relative: &str, size: u64) -> Result<PathBuf, ArtefactError> {
        let path = self.staging.path(relative).map_err(|e| ArtefactError::Io {
            path: e.path,
            source: e.source,
        })?;
        imgbuild_init::results::create_results_image(&path, size, self.name, self.finished.digest)
            .map_err(io_at(&path))?;
        Ok(path)
    }

    /// Puts a shared read-only file (kernel, initramfs) at `relative` in the staging directory
    /// (a hard link; a copy where links are impossible).
    pub fn place(&self, shared: &Path, relative: &str) -> Result<PathBuf, ArtefactError> {
        self.link_or_copy(shared, relative, true)
    }

    /// Puts a shared disk image at `relative`: the first target gets the shared file itself
    /// (a hard link), every later one a copy, since guests write to their disks.
    pub fn place_disk(&self, shared: &Path, relative: &str) -> Result<PathBuf, ArtefactError> {
        let first = self
            .placed_disks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(shared.to_path_buf());
        self.link_or_copy(shared, relative, first)
    }

    fn link_or_copy(
        &self,
        shared: &Path,
        relative: &str,
        link: bool,
    ) -> Result<PathBuf, ArtefactError> {
        let dest = self.staging.path(relative).map_err(|e| ArtefactError::Io {
            path: e.path,
            source: e.source,
        })?;
        if !link || fs::hard_link(shared, &dest).is_err() {
            let src = File::open(shared).map_err(io_at(shared))?;
            let out = File::create(&dest).map_err(io_at(&dest))?;
            out.set_len(src.metadata().map_err(io_at(shared))?.len())
                .map_err(io_at(&dest))?;
            copy_data(shared, &out, 0).map_err(io_at(&dest))?;
            self.copies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(dest.clone(), shared.to_path_buf());
        }
        Ok(dest)
    }

    /// The shared file that the staged file `staged` is a byte-for-byte copy of, if it is one
    /// (so its sha256 need not be computed twice).
    pub fn copy_source(&self, staged: &Path) -> Option<PathBuf> {
        self.copies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(staged)
            .cloned()
    }
}

/// Copies the data ranges of `src` into `dest` at `offset`, in the kernel; holes stay holes.
fn copy_data(src: &Path, dest: &File, offset: u64) -> io::Result<()> {
    let input = File::open(src)?;
    let len = input.metadata()?.len();
    for (start, end) in crate::image_io::data_ranges(&input, 0, len)? {
        let mut at = start;
        while at < end {
            let n = crate::image_io::copy_file_range(&input, at, dest, offset + at, end - at)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended early", src.display()),
                ));
            }
            at += n;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_keeps_holes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"head", 0).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"tail", (8 << 20) - 4).unwrap();
        let dest_path = dir.path().join("dest");
        let dest = File::create(&dest_path).unwrap();
        dest.set_len((8 << 20) + 4096).unwrap();
        copy_data(&src, &dest, 4096).unwrap();
        let bytes = fs::read(&dest_path).unwrap();
        assert_eq!(&bytes[4096..4100], b"head");
        assert_eq!(&bytes[bytes.len() - 4..], b"tail");
        use std::os::unix::fs::MetadataExt;
        assert!(fs::metadata(&dest_path).unwrap().blocks() * 512 < 1 << 20);
    }
}
