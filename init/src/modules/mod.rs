//! The initramfs module index: which kernel modules the builder put in the initramfs, what they
//! need and which devices they drive.
//!
//! The builder writes [`ModuleIndex`] as JSON to [`INDEX_PATH`] and the module files,
//! decompressed, under `/lib/modules/<kernel>/<file>`:
//!
//! ```json
//! {"kernel": "6.1.0-18-amd64",
//!  "modules": [{"name": "virtio_blk", "file": "kernel/drivers/block/virtio_blk.ko",
//!               "depends": ["virtio", "virtio_ring"], "aliases": ["virtio:d00000002v*"],
//!               "always": false}]}
//! ```
//!
//! At boot the init loads, in dependency order, every module marked `always` and every module
//! one of whose aliases matches a device's `modalias` ([`load`]).

mod glob;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use glob::glob_match;

/// Where the builder writes the index in the initramfs.
pub const INDEX_PATH: &str = "/lib/modules/imgbuild-modules.json";

/// Largest index accepted.
pub const MAX_INDEX_BYTES: u64 = 16 << 20;

/// The modules of an initramfs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleIndex {
    /// The kernel release the modules belong to (`uname -r`), which names the directory
    /// `/lib/modules/<kernel>/` holding them.
    pub kernel: String,
    /// The modules.
    pub modules: Vec<ModuleEntry>,
}

/// One module.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleEntry {
    /// Module name (`virtio_blk`; `-` and `_` are the same to the kernel).
    pub name: String,
    /// Path of the uncompressed `.ko`, relative to `/lib/modules/<kernel>/`.
    pub file: String,
    /// Names of the modules it needs loaded first (modules.dep, as names).
    #[serde(default)]
    pub depends: Vec<String>,
    /// modalias patterns of the devices it drives (modules.alias).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Load whatever the devices (filesystems such as ext4, crc32c, sd_mod).
    #[serde(default)]
    pub always: bool,
}

/// The kernel's view of a module name: dashes are underscores.
pub fn canonical_name(name: &str) -> String {
    name.replace('-', "_")
}

/// An index that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("module index {path}: {message}")]
pub struct IndexError {
    /// Where it was read from.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ModuleIndex {
    /// Parses an index; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<ModuleIndex, IndexError> {
        let index: ModuleIndex = serde_json::from_str(text).map_err(|e| IndexError {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for m in &index.modules {
            if m.name.is_empty()
                || m.file.is_empty()
                || m.file.starts_with('/')
                || m.file.contains("..")
            {
                return Err(IndexError {
                    path: path.to_owned(),
                    message: format!(
                        "module {:?} has an empty name or an unsafe file {:?}",
                        m.name, m.file
                    ),
                });
            }
        }
        Ok(index)
    }

    /// Reads and parses the index at `path`.
    pub fn read(path: &std::path::Path) -> Result<ModuleIndex, IndexError> {
        let err = |message: String| IndexError {
            path: path.display().to_string(),
            message,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .len();
        if len > MAX_INDEX_BYTES {
            return Err(err(format!(
                "{len} bytes is more than the limit of {MAX_INDEX_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        ModuleIndex::parse(&text, &path.display().to_string())
    }

    fn position(&self) -> BTreeMap<String, usize> {
        self.modules
            .iter()
            .enumerate()
            .map(|(i, m)| (canonical_name(&m.name), i))
            .collect()
    }

    /// Names (canonical) of the modules to load for `modaliases`: those with a matching alias,
    /// and those marked `always`, in index order.
    pub fn wanted(&self, modaliases: &[String]) -> Vec<String> {
        self.modules
            .iter()
            .filter(|m| {
                m.always
                    || m.aliases
                        .iter()
                        .any(|a| modaliases.iter().any(|d| glob_match(a, d)))
            })
            .map(|m| canonical_name(&m.name))
            .collect()
    }

    /// The modules to load for `wanted`, dependencies first, each once. Dependencies missing
    /// from the index and dependency cycles are reported, not fatal: the kernel will say what
    /// it lacks when the module loads.
    pub fn load_order(&self, wanted: &[String]) -> (Vec<&ModuleEntry>, Vec<String>) {
        let position = self.position();
        let mut order = Vec::new();
        let mut problems = Vec::new();
        let mut done = BTreeSet::new();
        for name in wanted {
            // Iterative depth-first search: (module, next dependency to visit).
            let mut on_path: Vec<String> = Vec::new();
            let mut stack: Vec<(usize, usize)> = Vec::new();
            let root = canonical_name(name);
            match position.get(&root) {
                Some(&i) if !done.contains(&root) => {
                    stack.push((i, 0));
                    on_path.push(root);
                }
                Some(_) => continue,
                None => {
                    problems.push(format!("module {root} is not in the index"));
                    continue;
                }
            }
            while let Some(top) = stack.last_mut() {
                let module = &self.modules[top.0];
                if let Some(dep) = module.depends.get(top.1) {
                    top.1 += 1;
                    let dep = canonical_name(dep);
                    if done.contains(&dep) {
                        continue;
                    }
                    if on_path.contains(&dep) {
                        problems.push(format!(
                            "dependency cycle through {dep} and {}",
                            module.name
                        ));
                        continue;
                    }
                    match position.get(&dep) {
                        Some(&j) => {
                            stack.push((j, 0));
                            on_path.push(dep);
                        }
                        None => problems.push(format!(
                            "module {} depends on {dep}, which is not in the index",
                            module.name
                        )),
                    }
                } else {
                    stack.pop();
                    if let Some(n) = on_path.pop() {
                        done.insert(n);
                    }
                    order.push(module);
                }
            }
        }
        (order, problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, deps: &[&str], aliases: &[&str], always: bool) -> ModuleEntry {
        ModuleEntry {
            name: name.into(),
            file: format!("kernel/{name}.ko"),
            depends: deps.iter().map(|s| s.to_string()).collect(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            always,
        }
    }

    fn index() -> ModuleIndex {
        ModuleIndex {
            kernel: "6.1.0".into(),
            modules: vec![
                m(
                    "virtio_blk",
                    &["virtio", "virtio_ring"],
                    &["virtio:d00000002v*"],
                    false,
                ),
                m("virtio_ring", &[], &[], false),
                m("virtio", &[], &[], false),
                m(
                    "virtio_pci",
                    &["virtio", "virtio_ring", "virtio_pci_modern_dev"],
                    &["pci:v00001AF4d*sv*sd*bc*sc*i*"],
                    false,
                ),
                m("virtio_pci_modern_dev", &[], &[], false),
                m("crc32c_generic", &[], &[], true),
                m("ext4", &["mbcache", "jbd2", "crc16"], &[], true),
                m("jbd2", &["crc32c-generic"], &[], false),
                m("mbcache", &[], &[], false),
                m("crc16", &[], &[], false),
                m("xen-blkfront", &[], &["xen:vbd"], false),
            ],
        }
    }

    #[test]
    fn wanted_follows_devices_and_always() {
        let idx = index();
        let devs = vec!["pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00".to_string()];
        assert_eq!(idx.wanted(&devs), ["virtio_pci", "crc32c_generic", "ext4"]);
        let devs = vec![
            "xen:vbd".to_string(),
            "virtio:d00000002v00001AF4".to_string(),
        ];
        assert_eq!(
            idx.wanted(&devs),
            ["virtio_blk", "crc32c_generic", "ext4", "xen_blkfront"]
        );
    }

    #[test]
    fn dependencies_come_first_once() {
        let idx = index();
        let wanted: Vec<String> = ["ext4", "virtio_blk", "virtio_pci", "jbd2"]
            .map(String::from)
            .to_vec();
        let (order, problems) = idx.load_order(&wanted);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = order.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "mbcache",
                "crc32c_generic",
                "jbd2",
                "crc16",
                "ext4",
                "virtio",
                "virtio_ring",
                "virtio_blk",
                "virtio_pci_modern_dev",
                "virtio_pci"
            ]
        );
    }

    #[test]
    fn missing_and_cyclic_dependencies_are_reported() {
        let idx = ModuleIndex {
            kernel: "k".into(),
            modules: vec![
                m("a", &["b", "ghost"], &[], true),
                m("b", &["a"], &[], false),
            ],
        };
        let (order, problems) = idx.load_order(&["a".to_string(), "nope".to_string()]);
        assert_eq!(order.len(), 2);
        assert!(problems.iter().any(|p| p.contains("cycle")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("ghost")), "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("nope")), "{problems:?}");
    }

    #[test]
    fn index_json_round_trips_and_rejects_unsafe_paths() {
        let idx = index();
        let text = serde_json::to_string(&idx).unwrap();
        assert_eq!(ModuleIndex::parse(&text, "x").unwrap(), idx);
        let minimal = r#"{"kernel":"k","modules":[{"name":"a","file":"a.ko"}]}"#;
        assert!(!ModuleIndex::parse(minimal, "x").unwrap().modules[0].always);
        let evil = r#"{"kernel":"k","modules":[{"name":"a","file":"../../etc/passwd"}]}"#;
        assert!(ModuleIndex::parse(evil, "x").is_err());
        assert!(ModuleIndex::parse(r#"{"kernel":"k","modules":[],"x":1}"#, "x").is_err());
    }
}
