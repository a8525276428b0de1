//! Module metadata of one kernel; the closure of a driver set is in [`closure`].
//!
//! Metadata comes from depmod's files (`modules.dep`, `modules.alias`, `modules.softdep`) when the
//! modules directory has them, as on an installed host kernel; a kernel unpacked from a package
//! has none (depmod runs in maintainer scripts), so each module's own `.modinfo` is read instead.
//! `modules.builtin` (and `modules.builtin.modinfo`) come from the kernel build itself and are in
//! packages too: they say which drivers need no loading at all.

mod closure;

use std::collections::{BTreeMap, BTreeSet};

use super::files::{FileError, ModulesDir};
use super::modinfo::{self, canonical, ModInfo, ModinfoError, MAX_MODULE_SIZE, MODULE_SUFFIXES};

/// Xen PV/PVH drivers.
pub const XEN_DRIVERS: &[&str] = &["xen-blkfront", "xen-netfront"];
/// VMware drivers (pvscsi and LSI SCSI, vmxnet3 and e1000 NICs, SCSI disks).
pub const VMWARE_DRIVERS: &[&str] = &[
    "vmw_pvscsi",
    "mptsas",
    "mptspi",
    "sd_mod",
    "vmxnet3",
    "e1000",
];
/// QEMU/KVM virtio drivers.
pub const QEMU_DRIVERS: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "virtio_scsi"];
/// Filesystems the root may use. jbd2, mbcache and crc16 follow as dependencies; crc32c as a
/// soft dependency.
pub const FILESYSTEM_DRIVERS: &[&str] = &["ext4"];

/// Soft dependencies some kernels use without declaring them (ext4 and jbd2 checksum metadata
/// with crc32c through the crypto API, which would call a modprobe the initramfs lacks).
const IMPLIED_SOFTDEPS: &[(&str, &str)] = &[("ext4", "crc32c"), ("jbd2", "crc32c")];

/// Largest depmod metadata file read (`modules.alias` of a distribution kernel is about 1 MiB).
const MAX_METADATA_SIZE: u64 = 64 << 20;
/// Largest total of module bytes in one closure.
const MAX_TOTAL_MODULES: u64 = 1 << 30;

/// The default driver set: every platform plus filesystems.
pub fn default_drivers() -> Vec<String> {
    [
        XEN_DRIVERS,
        VMWARE_DRIVERS,
        QEMU_DRIVERS,
        FILESYSTEM_DRIVERS,
    ]
    .concat()
    .into_iter()
    .map(String::from)
    .collect()
}

/// A module problem.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    /// A file of the modules directory cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// A module's content cannot be read.
    #[error(transparent)]
    Modinfo(#[from] ModinfoError),
    /// A depmod file has a line that cannot be understood.
    #[error("{file} line {line}: {reason}")]
    Metadata {
        /// The metadata file.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// An explicitly requested driver is neither a module of the kernel nor built in.
    #[error("driver {name:?} is not a module of kernel {release} ({dir}) and is not built in")]
    NotFound {
        /// The requested name.
        name: String,
        /// Kernel release.
        release: String,
        /// The modules directory.
        dir: String,
    },
    /// A module depends on one that does not exist.
    #[error("module {module} needs {dependency}, which is neither in {dir} nor built in")]
    MissingDependency {
        /// The dependent module.
        module: String,
        /// The missing module.
        dependency: String,
        /// The modules directory.
        dir: String,
    },
    /// A module was built for another kernel.
    #[error("{file} was built for {vermagic:?}, not for kernel {release}")]
    WrongKernel {
        /// The module file.
        file: String,
        /// Its vermagic.
        vermagic: String,
        /// The kernel release.
        release: String,
    },
    /// Dependencies form a cycle.
    #[error("module dependencies form a cycle among: {}", .0.join(", "))]
    Cycle(Vec<String>),
    /// The closure is implausibly large.
    #[error("the modules needed add up to more than {0} bytes")]
    TooLarge(u64),
}

/// Where dependency and alias information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MetadataSource {
    /// depmod's `modules.dep` and `modules.alias`.
    DepmodFiles,
    /// Each module's `.modinfo` section.
    Modinfo,
}

/// Which drivers to include.
#[derive(Debug, Clone, Copy)]
pub enum DriverRequest<'a> {
    /// [`default_drivers`]: an absent driver is reported as missing.
    Default,
    /// A list given by the user: an absent driver is an error.
    Explicit(&'a [String]),
}

/// Why a module is in the closure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// It was asked for.
    Requested,
    /// Another module needs it (the first one found).
    DependencyOf(String),
    /// Another module names it as a soft `pre:` dependency.
    SoftDependencyOf(String),
}

/// A module of the closure, with its decompressed bytes.
#[derive(Debug, Clone)]
pub struct ResolvedModule {
    /// Its name, `_` spelled (`xen_blkfront`).
    pub name: String,
    /// Path of the decompressed `.ko` relative to the modules directory.
    pub file: String,
    /// The file as found (possibly `.ko.xz`), relative to the modules directory.
    pub source_file: String,
    /// Every module that must be loaded before it, transitively, in load order.
    pub depends: Vec<String>,
    /// Its aliases (device match patterns and others).
    pub aliases: Vec<String>,
    /// Load it unconditionally rather than on a device alias match.
    pub always: bool,
    /// Why it is included.
    pub reason: Reason,
    /// The decompressed module.
    pub data: Vec<u8>,
}

/// A driver set resolved against a kernel.
#[derive(Debug, Clone)]
pub struct Closure {
    /// The modules, in load order (dependencies first).
    pub modules: Vec<ResolvedModule>,
    /// Requested drivers built into the kernel.
    pub builtin: Vec<String>,
    /// Requested drivers the kernel does not have (default set only).
    pub missing: Vec<String>,
    /// Facts for the build log (duplicates, dropped soft dependencies).
    pub notes: Vec<String>,
    /// Where the metadata came from.
    pub source: MetadataSource,
}

/// `modules.alias` both ways: module → aliases, exact alias → modules.
type AliasMaps = (
    BTreeMap<String, Vec<String>>,
    BTreeMap<String, BTreeSet<String>>,
);

/// What is known about a kernel's modules before any is read.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: ModulesDir,
    release: String,
    /// Module name → relative path of its file.
    files: BTreeMap<String, String>,
    /// From `modules.dep`: module name → names it needs.
    deps: Option<BTreeMap<String, Vec<String>>>,
    /// From `modules.alias`: module name → aliases, and exact alias → module names.
    aliases: Option<AliasMaps>,
    /// From `modules.softdep`: module name → `pre:` names.
    softdeps: BTreeMap<String, Vec<String>>,
    builtin: BTreeSet<String>,
    builtin_aliases: BTreeSet<String>,
    notes: Vec<String>,
}

impl ModuleIndex {
    /// Reads the metadata of the modules directory `dir` of kernel `release`.
    pub fn load(dir: &ModulesDir, release: &str) -> Result<ModuleIndex, ModuleError> {
        let mut index = ModuleIndex {
            dir: dir.clone(),
            release: release.to_string(),
            files: BTreeMap::new(),
            deps: None,
            aliases: None,
            softdeps: BTreeMap::new(),
            builtin: BTreeSet::new(),
            builtin_aliases: BTreeSet::new(),
            notes: Vec::new(),
        };
        if let Some(text) = index.metadata("modules.dep")? {
            index.parse_dep(&text)?;
        } else {
            for rel in dir.list(&MODULE_SUFFIXES)? {
                index.add_file(rel);
            }
        }
        if let Some(text) = index.metadata("modules.alias")? {
            index.parse_alias(&text)?;
        }
        if let Some(text) = index.metadata("modules.softdep")? {
            for line in text.lines() {
                let mut words = line.split_whitespace();
                if words.next() == Some("softdep") {
                    if let Some(module) = words.next() {
                        let rest: Vec<&str> = words.collect();
                        index
                            .softdeps
                            .entry(canonical(module))
                            .or_default()
                            .extend(modinfo::softdep_pre(&rest.join(" ")));
                    }
                }
            }
        }
        if let Some(text) = index.metadata("modules.builtin")? {
            index
                .builtin
                .extend(text.lines().filter_map(modinfo::name_from_path));
        }
        if let Some(text) = index.metadata("modules.builtin.modinfo")? {
            for entry in text.split('\0') {
                if let Some((module, rest)) = entry.split_once('.') {
                    index.builtin.insert(canonical(module));
                    if let Some(alias) = rest.strip_prefix("alias=") {
                        index.builtin_aliases.insert(alias.to_string());
                    }
                }
            }
        }
        Ok(index)
    }

    fn metadata(&self, name: &str) -> Result<Option<String>, ModuleError> {
        let Some(file) = self.dir.file(name)? else {
            return Ok(None);
        };
        let bytes = file.read_all(MAX_METADATA_SIZE)?;
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// Records a module file; with two files of one name, `updates/` wins, then `extra/`, then
    /// the first by path (depmod's default search order).
    fn add_file(&mut self, rel: String) {
        let Some(name) = modinfo::name_from_path(&rel) else {
            return;
        };
        let rank = |p: &str| {
            if p.starts_with("updates/") {
                0
            } else if p.starts_with("extra/") {
                1
            } else {
                2
            }
        };
        match self.files.get(&name) {
            Some(old) => {
                let keep_new = rank(&rel) < rank(old);
                self.notes.push(format!(
                    "module {name} exists twice ({old}, {rel}); using {}",
                    if keep_new { &rel } else { old }
                ));
                if keep_new {
                    self.files.insert(name, rel);
                }
            }
            None => {
                self.files.insert(name, rel);
            }
        }
    }

    /// A path in `modules.dep`; old module-init-tools wrote absolute paths.
    fn dep_path(&self, path: &str, line: usize) -> Result<String, ModuleError> {
        let rel = if path.starts_with('/') {
            let marker = format!("/{}/", self.release);
            path.find(&marker)
                .map(|at| &path[at + marker.len()..])
                .ok_or_else(|| ModuleError::Metadata {
                    file: format!("{}/modules.dep", self.dir.label()),
                    line,
                    reason: format!("absolute path {path} is outside the modules directory"),
                })?
        } else {
            path
        };
        self.dir.check_rel(rel)?;
        Ok(rel.to_string())
    }

    fn parse_dep(&mut self, text: &str) -> Result<(), ModuleError> {
        let mut deps = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: &str| ModuleError::Metadata {
                file: format!("{}/modules.dep", self.dir.label()),
                line: i + 1,
                reason: reason.to_string(),
            };
            let (module, needs) = line
                .split_once(':')
                .ok_or_else(|| bad("no ':' after the module path"))?;
            let rel = self.dep_path(module.trim(), i + 1)?;
            let name = modinfo::name_from_path(&rel).ok_or_else(|| bad("not a module file"))?;
            let mut names = Vec::new();
            for need in needs.split_whitespace() {
                let need = self.dep_path(need, i + 1)?;
                names.push(modinfo::name_from_path(&need).ok_or_else(|| bad("not a module"))?);
            }
            self.add_file(rel);
            deps.insert(name, names);
        }
        self.deps = Some(deps);
        Ok(())
    }

    fn parse_alias(&mut self, text: &str) -> Result<(), ModuleError> {
        let mut by_module: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut by_alias: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            let [keyword, alias, module] = words.as_slice() else {
                return Err(ModuleError::Metadata {
                    file: format!("{}/modules.alias", self.dir.label()),
                    line: i + 1,
                    reason: "expected `alias PATTERN MODULE`".into(),
                });
            };
            if *keyword != "alias" {
                continue;
            }
            let module = canonical(module);
            by_module
                .entry(module.clone())
                .or_default()
                .push(alias.to_string());
            by_alias
                .entry(alias.to_string())
                .or_default()
                .insert(module);
        }
        self.aliases = Some((by_module, by_alias));
        Ok(())
    }

    /// The kernel release.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// Where dependency information comes from.
    pub fn source(&self) -> MetadataSource {
        if self.deps.is_some() {
            MetadataSource::DepmodFiles
        } else {
            MetadataSource::Modinfo
        }
    }

    /// Whether a loadable module of this name exists (`-` and `_` alike).
    pub fn has_module(&self, name: &str) -> bool {
        self.files.contains_key(&canonical(name))
    }

    /// Whether the driver is built into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&canonical(name))
    }

    /// Relative path of a module's file.
    pub fn file_of(&self, name: &str) -> Option<&str> {
        self.files.get(&canonical(name)).map(String::as_str)
    }

    /// Number of loadable modules known.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// True when the kernel has no loadable modules.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Facts found while indexing (duplicate modules).
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// Reads, decompresses and parses one module.
    pub fn read_module(&self, name: &str) -> Result<Option<(Vec<u8>, ModInfo)>, ModuleError> {
        let Some(rel) = self.files.get(&canonical(name)) else {
            return Ok(None);
        };
        let file = self.dir.file(rel)?.ok_or_else(|| FileError::Read {
            path: format!("{}/{rel}", self.dir.label()),
            source: std::io::ErrorKind::NotFound.into(),
        })?;
        let label = file.label();
        let data = modinfo::decompress(&label, file.read_all(MAX_MODULE_SIZE)?)?;
        let info = modinfo::parse(&label, &data)?;
        if let Some(vermagic) = &info.vermagic {
            if vermagic.split_whitespace().next() != Some(self.release.as_str()) {
                return Err(ModuleError::WrongKernel {
                    file: label,
                    vermagic: vermagic.clone(),
                    release: self.release.clone(),
                });
            }
        }
        Ok(Some((data, info)))
    }
}
