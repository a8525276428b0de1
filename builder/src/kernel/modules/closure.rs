//! The dependency closure of a driver set and its load order.
//!
//! The order is a topological order that breaks ties by name, so it depends only on the set of
//! modules, never on the order drivers were asked for. Soft `pre:` dependencies order like hard
//! ones but may be absent; a module reached only as a soft dependency is loaded unconditionally,
//! since nothing else would load it.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    default_drivers, Closure, DriverRequest, ModuleError, ModuleIndex, Reason, ResolvedModule,
    IMPLIED_SOFTDEPS, MAX_TOTAL_MODULES,
};
use crate::kernel::modinfo::{self, canonical, ModInfo};

impl ModuleIndex {
    /// Loadable modules providing `alias` exactly. Without `modules.alias`, only modules whose
    /// name contains the alias are read (crc32c → crc32c_generic, crc32c_intel): reading every
    /// module of a package kernel to answer one soft dependency would take far too long.
    fn providers(&self, alias: &str) -> Result<Vec<String>, ModuleError> {
        if let Some((_, by_alias)) = &self.aliases {
            return Ok(by_alias
                .get(alias)
                .map(|s| s.iter().filter(|m| self.has_module(m)).cloned().collect())
                .unwrap_or_default());
        }
        let needle = canonical(alias);
        let mut out = Vec::new();
        for name in self.files.keys().filter(|n| n.contains(&needle)) {
            if let Some((_, info)) = self.read_module(name)? {
                if info.aliases.iter().any(|a| a == alias) {
                    out.push(name.clone());
                }
            }
        }
        Ok(out)
    }

    /// Resolves `request` to the modules to load, in load order.
    pub fn closure(&self, request: DriverRequest<'_>) -> Result<Closure, ModuleError> {
        let requested: BTreeSet<String> = match request {
            DriverRequest::Default => default_drivers().iter().map(|n| canonical(n)).collect(),
            DriverRequest::Explicit(list) => list.iter().map(|n| canonical(n)).collect(),
        };
        let mut out = Closure {
            modules: Vec::new(),
            builtin: Vec::new(),
            missing: Vec::new(),
            notes: self.notes.clone(),
            source: self.source(),
        };
        let mut pending: Vec<(String, Reason)> = Vec::new();
        for name in &requested {
            if self.has_module(name) {
                pending.push((name.clone(), Reason::Requested));
            } else if self.is_builtin(name) {
                out.builtin.push(name.clone());
            } else if let DriverRequest::Explicit(_) = request {
                return Err(ModuleError::NotFound {
                    name: name.clone(),
                    release: self.release.clone(),
                    dir: self.dir.label(),
                });
            } else {
                out.missing.push(name.clone());
            }
        }
        // Visit in reverse so the stack pops names in sorted order: the "first dependent" named
        // in a reason is then deterministic too.
        pending.reverse();
        let mut loaded: BTreeMap<String, Loaded> = BTreeMap::new();
        let mut total = 0u64;
        while let Some((name, reason)) = pending.pop() {
            if loaded.contains_key(&name) {
                continue;
            }
            let Some((data, info)) = self.read_module(&name)? else {
                continue;
            };
            total = total.saturating_add(data.len() as u64);
            if total > MAX_TOTAL_MODULES {
                return Err(ModuleError::TooLarge(MAX_TOTAL_MODULES));
            }
            let hard = match &self.deps {
                Some(deps) => deps.get(&name).cloned().unwrap_or_default(),
                None => info.depends.clone(),
            };
            let mut next = Vec::new();
            let mut needs = BTreeSet::new();
            for dep in &hard {
                if self.has_module(dep) {
                    needs.insert(dep.clone());
                    next.push((dep.clone(), Reason::DependencyOf(name.clone())));
                } else if !self.is_builtin(dep) {
                    return Err(ModuleError::MissingDependency {
                        module: name.clone(),
                        dependency: dep.clone(),
                        dir: self.dir.label(),
                    });
                }
            }
            let mut soft = BTreeSet::new();
            for wanted in self.soft_names(&name, &info) {
                for provider in self.resolve_soft(&name, &wanted, &mut out.notes)? {
                    if provider != name && !needs.contains(&provider) {
                        soft.insert(provider.clone());
                        next.push((provider, Reason::SoftDependencyOf(name.clone())));
                    }
                }
            }
            let aliases = match &self.aliases {
                Some((by_module, _)) => by_module.get(&name).cloned().unwrap_or_default(),
                None => info.aliases.clone(),
            };
            let rel = self.files.get(&name).cloned().unwrap_or_default();
            // A requested module reached first as another's dependency is still requested.
            let reason = if requested.contains(&name) {
                Reason::Requested
            } else {
                reason
            };
            loaded.insert(
                name.clone(),
                Loaded {
                    rel,
                    needs,
                    soft,
                    aliases,
                    reason,
                    data,
                },
            );
            next.reverse();
            pending.extend(next);
        }
        out.modules = order(loaded)?;
        Ok(out)
    }

    fn soft_names(&self, name: &str, info: &ModInfo) -> Vec<String> {
        let mut names: Vec<String> = info.softdep_pre.clone();
        if let Some(extra) = self.softdeps.get(name) {
            names.extend(extra.iter().cloned());
        }
        names.extend(
            IMPLIED_SOFTDEPS
                .iter()
                .filter(|(m, _)| *m == name)
                .map(|(_, d)| d.to_string()),
        );
        let mut seen = BTreeSet::new();
        names.retain(|n| seen.insert(n.clone()));
        names
    }

    /// Modules to load for the soft dependency `wanted` of `module`: itself when it is a module,
    /// nothing when it is built in, else the modules providing it as an alias.
    fn resolve_soft(
        &self,
        module: &str,
        wanted: &str,
        notes: &mut Vec<String>,
    ) -> Result<Vec<String>, ModuleError> {
        if self.has_module(wanted) {
            return Ok(vec![canonical(wanted)]);
        }
        if self.is_builtin(wanted) || self.builtin_aliases.contains(wanted) {
            return Ok(Vec::new());
        }
        let providers = self.providers(wanted)?;
        if providers.is_empty() {
            notes.push(format!(
                "soft dependency {wanted} of {module} is neither a module nor built in; skipped"
            ));
        }
        Ok(providers)
    }
}

struct Loaded {
    rel: String,
    needs: BTreeSet<String>,
    soft: BTreeSet<String>,
    aliases: Vec<String>,
    reason: Reason,
    data: Vec<u8>,
}

/// Kahn's algorithm over hard and soft edges, smallest name first among the ready modules.
fn order(mut loaded: BTreeMap<String, Loaded>) -> Result<Vec<ResolvedModule>, ModuleError> {
    let edges = |l: &Loaded| -> BTreeSet<String> { l.needs.union(&l.soft).cloned().collect() };
    let mut waiting: BTreeMap<String, BTreeSet<String>> =
        loaded.iter().map(|(n, l)| (n.clone(), edges(l))).collect();
    let mut sorted: Vec<String> = Vec::with_capacity(loaded.len());
    let mut ready: BTreeSet<String> = waiting
        .iter()
        .filter(|(_, deps)| deps.is_empty())
        .map(|(n, _)| n.clone())
        .collect();
    while let Some(name) = ready.pop_first() {
        waiting.remove(&name);
        for (other, deps) in waiting.iter_mut() {
            if deps.remove(&name) && deps.is_empty() {
                ready.insert(other.clone());
            }
        }
        sorted.push(name);
    }
    if !waiting.is_empty() {
        return Err(ModuleError::Cycle(waiting.into_keys().collect()));
    }
    let position: BTreeMap<String, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    // Transitive hard dependencies, computed in load order so each module's are complete when
    // its dependents ask.
    let mut transitive: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for name in &sorted {
        let mut all = BTreeSet::new();
        if let Some(l) = loaded.get(name) {
            for dep in &l.needs {
                all.insert(dep.clone());
                if let Some(deeper) = transitive.get(dep) {
                    all.extend(deeper.iter().cloned());
                }
            }
        }
        transitive.insert(name.clone(), all);
    }
    // A soft dependency is loaded unconditionally: nothing would load it otherwise, since no
    // device matches it and no dependent lists it as a dependency.
    let soft_targets: BTreeSet<String> = loaded
        .values()
        .flat_map(|l| l.soft.iter().cloned())
        .collect();
    let mut out = Vec::with_capacity(sorted.len());
    for name in sorted {
        let Some(l) = loaded.remove(&name) else {
            continue;
        };
        let mut depends: Vec<String> = transitive
            .remove(&name)
            .unwrap_or_default()
            .into_iter()
            .collect();
        depends.sort_by_key(|d| position.get(d).copied().unwrap_or(usize::MAX));
        // A driver with device aliases waits for its devices, also a disk driver such as
        // sd_mod whose devices only appear once a host adapter has scanned its bus: the init
        // keeps matching new devices while it waits for the root.
        let device_alias = l.aliases.iter().any(|a| a.contains(':'));
        let always =
            soft_targets.contains(&name) || (l.reason == Reason::Requested && !device_alias);
        out.push(ResolvedModule {
            file: modinfo::uncompressed_path(&l.rel).to_string(),
            source_file: l.rel,
            name,
            depends,
            aliases: l.aliases,
            always,
            reason: l.reason,
            data: l.data,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::files::{FileError, ModulesDir};
    use crate::kernel::modinfo::fake_module;
    use crate::kernel::modules::MetadataSource;
    use crate::tree::{Content, FileData, Inode, Kind, Meta, Tree};
    use std::io::Write;

    const REL: &str = "1.0-test";

    fn module(name: &str, depends: &str, extra: &[&str]) -> Vec<u8> {
        let mut entries = vec![
            format!("name={name}"),
            format!("depends={depends}"),
            format!("vermagic={REL} SMP mod_unload"),
        ];
        entries.extend(extra.iter().map(|e| e.to_string()));
        let refs: Vec<&str> = entries.iter().map(String::as_str).collect();
        fake_module(&refs)
    }

    fn dir_of(files: Vec<(String, Vec<u8>)>) -> ModulesDir {
        let mut t = Tree::new(Meta::root(0o755, 0));
        for (path, bytes) in files {
            let inode = Inode::new(
                Meta::root(0o644, 0),
                Kind::File(FileData {
                    size: bytes.len() as u64,
                    content: Content::Bytes(bytes.into()),
                    sha256: None,
                }),
            );
            t.insert(format!("/lib/modules/{REL}/{path}").as_bytes(), inode)
                .unwrap();
        }
        ModulesDir::from_tree(&t, &format!("/lib/modules/{REL}"), "test.deb")
            .unwrap()
            .unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// A small kernel: virtio stack, a SCSI stack, ext4 with a soft dependency, one builtin.
    fn sample(with_depmod: bool) -> Vec<(String, Vec<u8>)> {
        let mut files = vec![
            (
                "kernel/virtio/virtio_ring.ko".to_string(),
                module("virtio_ring", "", &[]),
            ),
            (
                "kernel/virtio/virtio.ko".into(),
                module("virtio", "virtio_ring", &[]),
            ),
            (
                "kernel/virtio/virtio_pci.ko.xz".into(),
                xz(&module(
                    "virtio_pci",
                    "virtio,virtio_ring",
                    &["alias=pci:v00001AF4d*"],
                )),
            ),
            (
                "kernel/block/virtio_blk.ko".into(),
                module(
                    "virtio_blk",
                    "virtio,virtio_ring",
                    &["alias=virtio:d00000002v*"],
                ),
            ),
            (
                "kernel/scsi/scsi_mod.ko".into(),
                module("scsi_mod", "", &[]),
            ),
            (
                "kernel/scsi/sd_mod.ko".into(),
                module("sd_mod", "scsi_mod", &["alias=scsi:t-0x00*"]),
            ),
            (
                "kernel/xen/xen-blkfront.ko".into(),
                module("xen_blkfront", "", &["alias=xen:vbd"]),
            ),
            (
                "kernel/fs/ext4.ko".into(),
                module("ext4", "jbd2", &["alias=fs-ext4", "softdep=pre: crc32c"]),
            ),
            ("kernel/fs/jbd2.ko".into(), module("jbd2", "", &[])),
            (
                "kernel/crypto/crc32c_generic.ko".into(),
                module(
                    "crc32c_generic",
                    "",
                    &["alias=crc32c", "alias=crypto-crc32c"],
                ),
            ),
            (
                "modules.builtin".into(),
                b"kernel/drivers/net/xen-netfront.ko\n".to_vec(),
            ),
        ];
        if with_depmod {
            let dep = "kernel/virtio/virtio_ring.ko:\n\
                kernel/virtio/virtio.ko: kernel/virtio/virtio_ring.ko\n\
                kernel/virtio/virtio_pci.ko.xz: kernel/virtio/virtio.ko kernel/virtio/virtio_ring.ko\n\
                kernel/block/virtio_blk.ko: kernel/virtio/virtio.ko kernel/virtio/virtio_ring.ko\n\
                kernel/scsi/scsi_mod.ko:\n\
                kernel/scsi/sd_mod.ko: kernel/scsi/scsi_mod.ko\n\
                kernel/xen/xen-blkfront.ko:\n\
                kernel/fs/ext4.ko: kernel/fs/jbd2.ko\n\
                kernel/fs/jbd2.ko:\n\
                kernel/crypto/crc32c_generic.ko:\n";
            let alias = "# Aliases extracted from modules themselves.\n\
                alias pci:v00001AF4d* virtio_pci\n\
                alias virtio:d00000002v* virtio_blk\n\
                alias scsi:t-0x00* sd_mod\n\
                alias xen:vbd xen_blkfront\n\
                alias fs-ext4 ext4\n\
                alias crc32c crc32c_generic\n\
                alias crypto-crc32c crc32c_generic\n";
            files.push(("modules.dep".into(), dep.as_bytes().to_vec()));
            files.push(("modules.alias".into(), alias.as_bytes().to_vec()));
        }
        files
    }

    fn names(c: &Closure) -> Vec<&str> {
        c.modules.iter().map(|m| m.name.as_str()).collect()
    }

    #[test]
    fn default_set_closure_order_and_missing() {
        for depmod in [false, true] {
            let index = ModuleIndex::load(&dir_of(sample(depmod)), REL).unwrap();
            assert_eq!(
                index.source(),
                if depmod {
                    MetadataSource::DepmodFiles
                } else {
                    MetadataSource::Modinfo
                }
            );
            let c = index.closure(DriverRequest::Default).unwrap();
            assert_eq!(
                names(&c),
                [
                    "crc32c_generic",
                    "jbd2",
                    "ext4",
                    "scsi_mod",
                    "sd_mod",
                    "virtio_ring",
                    "virtio",
                    "virtio_blk",
                    "virtio_pci",
                    "xen_blkfront"
                ],
                "depmod files: {depmod}"
            );
            assert_eq!(c.builtin, ["xen_netfront"]);
            assert_eq!(
                c.missing,
                [
                    "e1000",
                    "mptsas",
                    "mptspi",
                    "virtio_net",
                    "virtio_scsi",
                    "vmw_pvscsi",
                    "vmxnet3"
                ]
            );
            let by_name = |n: &str| c.modules.iter().find(|m| m.name == n).unwrap();
            let pci = by_name("virtio_pci");
            assert_eq!(pci.depends, ["virtio_ring", "virtio"]);
            assert_eq!(pci.file, "kernel/virtio/virtio_pci.ko");
            assert_eq!(pci.source_file, "kernel/virtio/virtio_pci.ko.xz");
            assert!(pci.data.starts_with(b"\x7fELF"));
            assert!(!pci.always);
            assert_eq!(pci.aliases, ["pci:v00001AF4d*"]);
            assert!(by_name("ext4").always);
            assert!(by_name("crc32c_generic").always);
            assert_eq!(
                by_name("crc32c_generic").reason,
                Reason::SoftDependencyOf("jbd2".into())
            );
            assert!(!by_name("sd_mod").always);
            assert!(!by_name("jbd2").always);
            assert!(!by_name("virtio").always);
            assert_eq!(
                by_name("virtio").reason,
                Reason::DependencyOf("virtio_blk".into())
            );
        }
    }

    #[test]
    fn explicit_request_is_order_independent_and_strict() {
        let index = ModuleIndex::load(&dir_of(sample(false)), REL).unwrap();
        let a: Vec<String> = ["virtio-blk", "xen_blkfront", "virtio"]
            .map(String::from)
            .to_vec();
        let b: Vec<String> = ["virtio", "xen-blkfront", "virtio_blk"]
            .map(String::from)
            .to_vec();
        let ca = index.closure(DriverRequest::Explicit(&a)).unwrap();
        let cb = index.closure(DriverRequest::Explicit(&b)).unwrap();
        assert_eq!(names(&ca), names(&cb));
        assert_eq!(
            names(&ca),
            ["virtio_ring", "virtio", "virtio_blk", "xen_blkfront"]
        );
        // virtio was asked for: it is requested even though virtio_blk also needs it.
        assert_eq!(ca.modules[1].reason, Reason::Requested);
        let missing: Vec<String> = vec!["virtio_blk".into(), "mptsas".into()];
        let err = index
            .closure(DriverRequest::Explicit(&missing))
            .unwrap_err();
        assert!(
            matches!(&err, ModuleError::NotFound { name, .. } if name == "mptsas"),
            "{err}"
        );
        assert!(
            err.to_string().contains("test.deb:/lib/modules/1.0-test"),
            "{err}"
        );
        let builtin: Vec<String> = vec!["xen-netfront".into()];
        let c = index.closure(DriverRequest::Explicit(&builtin)).unwrap();
        assert!(c.modules.is_empty());
        assert_eq!(c.builtin, ["xen_netfront"]);
    }

    #[test]
    fn broken_kernels_are_reported() {
        let mut files = sample(false);
        files.push(("kernel/a.ko".into(), module("a", "b", &[])));
        files.push(("kernel/b.ko".into(), module("b", "a", &[])));
        files.push(("kernel/c.ko".into(), module("c", "nowhere", &[])));
        files.push((
            "kernel/d.ko".into(),
            fake_module(&["name=d", "vermagic=9.9 SMP"]),
        ));
        let index = ModuleIndex::load(&dir_of(files), REL).unwrap();
        let ask = |n: &str| index.closure(DriverRequest::Explicit(&[n.to_string()]));
        assert!(matches!(ask("a"), Err(ModuleError::Cycle(v)) if v == ["a", "b"]));
        assert!(matches!(
            ask("c"),
            Err(ModuleError::MissingDependency { dependency, .. }) if dependency == "nowhere"
        ));
        let err = ask("d").unwrap_err();
        assert!(matches!(err, ModuleError::WrongKernel { .. }), "{err}");
        assert!(err.to_string().contains("9.9"), "{err}");
    }

    #[test]
    fn hostile_modules_dep_is_refused() {
        let mut files = sample(false);
        files.push((
            "modules.dep".into(),
            b"../../../../etc/shadow.ko: \n".to_vec(),
        ));
        let err = ModuleIndex::load(&dir_of(files), REL).unwrap_err();
        assert!(
            matches!(err, ModuleError::File(FileError::BadPath { .. })),
            "{err}"
        );
        let mut files = sample(false);
        files.push(("modules.dep".into(), b"kernel/x.ko kernel/y.ko\n".to_vec()));
        let err = ModuleIndex::load(&dir_of(files), REL).unwrap_err();
        assert!(
            matches!(err, ModuleError::Metadata { line: 1, .. }),
            "{err}"
        );
        let mut files = sample(false);
        files.push((
            "modules.dep".into(),
            format!("/lib/modules/{REL}/kernel/fs/jbd2.ko:\n").into_bytes(),
        ));
        let index = ModuleIndex::load(&dir_of(files), REL).unwrap();
        assert_eq!(index.file_of("jbd2"), Some("kernel/fs/jbd2.ko"));
    }
}
