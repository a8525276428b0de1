//! The kernel VM targets boot, and the initramfs that gets it to our init.
//!
//! A kernel comes from the host (`/boot/vmlinuz-X` with `/lib/modules/X`, the newest one by
//! default), from paths in the definition, or from a kernel package unpacked into a [`Tree`].
//! [`files`] hides which, so validation ([`bzimage`]), module metadata ([`modinfo`],
//! [`modules`]) and the initramfs ([`initramfs`]) work on all three alike. [`elf_check`] makes
//! sure the init put in the initramfs can run there.

pub mod bzimage;
pub mod elf_check;
pub mod files;
pub mod initramfs;
pub mod modinfo;
pub mod modules;
pub mod pvh;

use std::cmp::Ordering;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::definition::KernelSpec;
use crate::tree::{Kind, Tree};

pub use bzimage::NotAKernel;
pub use elf_check::{check_static_executable, locate_init, ElfCheckError, EM_X86_64};
pub use files::{FileError, KernelFile, ModulesDir};
pub use initramfs::{
    build_initramfs, build_initramfs_with, Compression, InitramfsOptions, InitramfsReport,
    ModuleEntry, ModulesIndexFile, INDEX_PATH,
};
pub use modules::{default_drivers, Closure, DriverRequest, ModuleError, ModuleIndex};

/// Where the host keeps kernel images.
pub const HOST_BOOT: &str = "/boot";
/// Where the host keeps module directories.
pub const HOST_MODULES: &str = "/lib/modules";

/// A kernel that cannot be found or used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No `vmlinuz-*` in the host's boot directory.
    #[error("no kernel found: {dir} holds no vmlinuz-* file; name one with [kernel] path = \"…\"")]
    NoHostKernel {
        /// The directory searched.
        dir: PathBuf,
    },
    /// The file is not a kernel image.
    #[error("{path} is not a Linux kernel image: {reason}")]
    NotAKernel {
        /// The file.
        path: String,
        /// Why.
        reason: NotAKernel,
    },
    /// A file of the kernel cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// Module metadata or the closure failed.
    #[error(transparent)]
    Module(#[from] ModuleError),
    /// The init binary is unusable.
    #[error(transparent)]
    Elf(#[from] ElfCheckError),
    /// The `[kernel]` table is contradictory.
    #[error("[kernel]: {0}")]
    Spec(String),
    /// A named modules directory does not exist.
    #[error("kernel modules directory {0} is not a directory")]
    NoModulesDir(PathBuf),
    /// A kernel package holds no kernel image.
    #[error(
        "{origin} contains no kernel image (no /boot/vmlinuz-* and no /lib/modules/*/vmlinuz)"
    )]
    NoKernelInTree {
        /// The package.
        origin: String,
    },
    /// A kernel package cannot be read.
    #[error("kernel package {path}: {reason}")]
    Package {
        /// The package.
        path: PathBuf,
        /// What the package reader said.
        reason: String,
    },
    /// Writing the initramfs failed.
    #[error("cannot write the initramfs: {0}")]
    Write(#[source] io::Error),
    /// An initramfs member is too large for the cpio format.
    #[error("{path} is {size} bytes, too large for a cpio newc member")]
    MemberTooLarge {
        /// The member.
        path: String,
        /// Its size.
        size: u64,
    },
}

/// Where a kernel came from, for the build log and the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelOrigin {
    /// The newest kernel of the host's `/boot`.
    HostDefault,
    /// Paths named in `[kernel]`.
    Paths,
    /// A package unpacked into a tree (the package path).
    Package(String),
}

/// A kernel image with its modules.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The release, as `uname -r` prints it and as `/lib/modules/` names it.
    pub version: String,
    /// The whole version string of the image ("6.1.0-… (debian-kernel@…) #1 SMP …").
    pub version_string: String,
    /// The bzImage.
    pub image: KernelFile,
    /// The modules directory; `None` for a kernel without loadable modules.
    pub modules: Option<ModulesDir>,
    /// Where it came from.
    pub origin: KernelOrigin,
}

impl Kernel {
    /// The metadata of its modules (an empty index without a modules directory).
    pub fn module_index(&self) -> Result<ModuleIndex, ModuleError> {
        let empty = ModulesDir::Tree {
            label: format!("(kernel {} has no modules directory)", self.version),
            files: Default::default(),
        };
        ModuleIndex::load(self.modules.as_ref().unwrap_or(&empty), &self.version)
    }
}

/// Resolves the `[kernel]` table of a definition: paths, a package, or (absent or naming no
/// source) the newest kernel of the host.
pub fn resolve(spec: Option<&KernelSpec>) -> Result<Kernel, KernelError> {
    let Some(spec) = spec else {
        return newest_host_kernel(Path::new(HOST_BOOT), Path::new(HOST_MODULES));
    };
    let sources = [
        spec.path.is_some() || spec.modules.is_some(),
        spec.deb.is_some(),
        spec.rpm.is_some(),
    ];
    if sources.iter().filter(|&&s| s).count() > 1 {
        return Err(KernelError::Spec(
            "give one source: path/modules, deb or rpm".into(),
        ));
    }
    if let Some(package) = spec.deb.as_ref().or(spec.rpm.as_ref()) {
        // Unpack the package into a tree of its own, as the package manager would into an
        // empty root, and take the kernel and its modules from there.
        let mut tree = Tree::new(crate::tree::Meta::root(0o755, 0));
        let unpacked = if spec.deb.is_some() {
            crate::sources::deb::apply(&mut tree, std::slice::from_ref(package))
                .map(|_| ())
                .map_err(|e| e.to_string())
        } else {
            crate::sources::rpm::apply(&mut tree, std::slice::from_ref(package))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        unpacked.map_err(|reason| KernelError::Package {
            path: package.clone(),
            reason,
        })?;
        return from_tree(&tree, &package.display().to_string());
    }
    match (&spec.path, &spec.modules) {
        (Some(path), modules) => from_host_paths(path, modules.as_deref(), Path::new(HOST_MODULES)),
        (None, Some(modules)) => {
            // Fedora and EL9 keep the image inside the modules directory.
            let inside = modules.join("vmlinuz");
            let image = if inside.is_file() {
                inside
            } else {
                let name = modules.file_name().ok_or_else(|| {
                    KernelError::Spec(format!("modules = {:?} names no directory", modules))
                })?;
                let mut boot = std::ffi::OsString::from("vmlinuz-");
                boot.push(name);
                Path::new(HOST_BOOT).join(boot)
            };
            from_host_paths(&image, Some(modules), Path::new(HOST_MODULES))
        }
        (None, None) => newest_host_kernel(Path::new(HOST_BOOT), Path::new(HOST_MODULES)),
    }
}

/// Reads the header of `image` and checks it is a kernel.
pub fn identify(image: &KernelFile) -> Result<bzimage::BzImageHeader, KernelError> {
    let head = image.read_prefix(bzimage::HEADER_WINDOW)?;
    bzimage::parse(&head).map_err(|reason| KernelError::NotAKernel {
        path: image.label(),
        reason,
    })
}

/// The kernel at `image` on the host with the modules directory `modules`; without one,
/// `<modules_root>/<release>` when it exists.
pub fn from_host_paths(
    image: &Path,
    modules: Option<&Path>,
    modules_root: &Path,
) -> Result<Kernel, KernelError> {
    let file = KernelFile::Host(image.to_path_buf());
    if !image.is_file() {
        return Err(FileError::Read {
            path: image.display().to_string(),
            source: io::Error::new(io::ErrorKind::NotFound, "no such kernel image file"),
        }
        .into());
    }
    let header = identify(&file)?;
    let modules = match modules {
        Some(dir) if dir.is_dir() => Some(ModulesDir::Host(dir.to_path_buf())),
        Some(dir) => return Err(KernelError::NoModulesDir(dir.to_path_buf())),
        None => {
            let dir = modules_root.join(&header.release);
            dir.is_dir().then_some(ModulesDir::Host(dir))
        }
    };
    Ok(Kernel {
        version: header.release,
        version_string: header.version,
        image: file,
        modules,
        origin: KernelOrigin::Paths,
    })
}

/// The newest `vmlinuz-*` of `boot` (by version order of the part after `vmlinuz-`) with its
/// modules directory under `modules_root`.
pub fn newest_host_kernel(boot: &Path, modules_root: &Path) -> Result<Kernel, KernelError> {
    let read_err = |source| FileError::Read {
        path: boot.display().to_string(),
        source,
    };
    let mut candidates = Vec::new();
    for entry in fs::read_dir(boot).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            if entry.path().is_file() {
                candidates.push((version.to_string(), entry.path()));
            }
        }
    }
    let (_, newest) = candidates
        .into_iter()
        .max_by(|a, b| version_cmp(&a.0, &b.0))
        .ok_or_else(|| KernelError::NoHostKernel {
            dir: boot.to_path_buf(),
        })?;
    let mut kernel = from_host_paths(&newest, None, modules_root)?;
    kernel.origin = KernelOrigin::HostDefault;
    Ok(kernel)
}

/// The kernel in `tree` (a kernel package unpacked by a package reader): the newest
/// `/boot/vmlinuz-*`, or `/lib/modules/*/vmlinuz` (Fedora, EL9), with `/lib/modules/<release>`
/// or `/usr/lib/modules/<release>`. `origin` names the package in messages.
pub fn from_tree(tree: &Tree, origin: &str) -> Result<Kernel, KernelError> {
    let mut candidates: Vec<(String, String)> = Vec::new();
    for name in dir_files(tree, "/boot") {
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            candidates.push((version.to_string(), format!("/boot/{name}")));
        }
    }
    for root in ["/lib/modules", "/usr/lib/modules"] {
        for (name, is_dir) in dir_entries(tree, root) {
            if is_dir && regular_file(tree, &format!("{root}/{name}/vmlinuz")).is_some() {
                candidates.push((name.clone(), format!("{root}/{name}/vmlinuz")));
            }
        }
    }
    let (_, path) = candidates
        .into_iter()
        .max_by(|a, b| version_cmp(&a.0, &b.0).then_with(|| b.1.cmp(&a.1)))
        .ok_or_else(|| KernelError::NoKernelInTree {
            origin: origin.to_string(),
        })?;
    let Some((size, content)) = regular_file(tree, &path) else {
        return Err(KernelError::NoKernelInTree {
            origin: origin.to_string(),
        });
    };
    let image = KernelFile::Tree {
        label: format!("{origin}:{path}"),
        size,
        content,
    };
    let header = identify(&image)?;
    let mut modules = None;
    for root in ["/lib/modules", "/usr/lib/modules"] {
        let dir = format!("{root}/{}", header.release);
        if let Some(found) = ModulesDir::from_tree(tree, &dir, origin)? {
            modules = Some(found);
            break;
        }
    }
    Ok(Kernel {
        version: header.release,
        version_string: header.version,
        image,
        modules,
        origin: KernelOrigin::Package(origin.to_string()),
    })
}

fn dir_entries(tree: &Tree, dir: &str) -> Vec<(String, bool)> {
    let Some(id) = tree.lookup(dir.as_bytes()) else {
        return Vec::new();
    };
    let Kind::Directory(entries) = &tree.inode(id).kind else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|(name, &child)| {
            let name = std::str::from_utf8(name).ok()?.to_string();
            let is_dir = matches!(tree.inode(child).kind, Kind::Directory(_));
            Some((name, is_dir))
        })
        .collect()
}

fn dir_files(tree: &Tree, dir: &str) -> Vec<String> {
    dir_entries(tree, dir)
        .into_iter()
        .map(|(name, _)| name)
        .filter(|name| regular_file(tree, &format!("{dir}/{name}")).is_some())
        .collect()
}

fn regular_file(tree: &Tree, path: &str) -> Option<(u64, crate::tree::Content)> {
    match &tree.inode(tree.lookup(path.as_bytes())?).kind {
        Kind::File(data) => Some((data.size, data.content.clone())),
        _ => None,
    }
}

/// Compares version strings as `sort -V` does for kernel releases: runs of digits by value,
/// everything else byte by byte.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let (na, ra) = split_run(a, true);
                let (nb, rb) = split_run(b, true);
                let (na, nb) = (trim_zeros(na), trim_zeros(nb));
                let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
            (Some(_), Some(_)) => {
                let (sa, ra) = split_run(a, false);
                let (sb, rb) = split_run(b, false);
                let ord = sa.cmp(sb);
                if ord != Ordering::Equal {
                    return ord;
                }
                (a, b) = (ra, rb);
            }
        }
    }
}

fn split_run(s: &[u8], digits: bool) -> (&[u8], &[u8]) {
    let end = s
        .iter()
        .position(|c| c.is_ascii_digit() != digits)
        .unwrap_or(s.len());
    s.split_at(end)
}

fn trim_zeros(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&c| c != b'0').unwrap_or(s.len());
    &s[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order_is_numeric() {
        let mut v = vec![
            "6.1.0-9-cloud-amd64",
            "6.1.0-56-cloud-amd64",
            "5.10.0-28-amd64",
            "6.1.0-10-cloud-amd64",
            "2.6.32-754.el6.x86_64",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(
            v,
            [
                "2.6.32-754.el6.x86_64",
                "5.10.0-28-amd64",
                "6.1.0-9-cloud-amd64",
                "6.1.0-10-cloud-amd64",
                "6.1.0-56-cloud-amd64"
            ]
        );
        assert_eq!(version_cmp("1.01", "1.1"), Ordering::Equal);
        assert_eq!(version_cmp("1.1a", "1.1"), Ordering::Greater);
    }

    #[test]
    fn spec_with_two_sources_is_refused() {
        let spec = KernelSpec {
            path: Some("/boot/vmlinuz-x".into()),
            deb: Some("k.deb".into()),
            ..Default::default()
        };
        assert!(matches!(resolve(Some(&spec)), Err(KernelError::Spec(_))));
        let spec = KernelSpec {
            rpm: Some("kernel.rpm".into()),
            ..Default::default()
        };
        let err = resolve(Some(&spec)).unwrap_err();
        assert!(err.to_string().contains("kernel.rpm"), "{err}");
    }

    #[test]
    fn empty_boot_dir_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("config-1.0"), b"x").unwrap();
        let err = newest_host_kernel(d.path(), d.path()).unwrap_err();
        assert!(matches!(err, KernelError::NoHostKernel { .. }));
        assert!(err.to_string().contains("vmlinuz-*"));
    }
}
