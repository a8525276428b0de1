//! Kernel resolution and module closures on the host's real kernel (the Debian cloud kernel on
//! the build machine), cross-checked against kmod's `modinfo` and depmod's `modules.dep`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod kernel_support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use imgbuild::definition::KernelSpec;
use imgbuild::kernel::modinfo;
use imgbuild::kernel::modules::MetadataSource;
use imgbuild::kernel::{
    from_host_paths, from_tree, resolve, Closure, DriverRequest, KernelError, KernelOrigin,
    ModuleError, ModuleIndex, ModulesDir,
};
use imgbuild::tree::{Content, FileData, Inode, Kind, Meta, Tree};
use kernel_support::host_kernel;

fn explicit(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// modules.dep parsed independently: module name → names of everything it needs.
fn depmod_deps(modules: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let text = fs::read_to_string(modules.join("modules.dep")).unwrap();
    let name = |p: &str| {
        let base = p.rsplit('/').next().unwrap();
        base.split(".ko").next().unwrap().replace('-', "_")
    };
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, deps)| (name(m), deps.split_whitespace().map(name).collect()))
        .collect()
}

fn builtin_names(modules: &Path) -> BTreeSet<String> {
    fs::read_to_string(modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let base = l.rsplit('/').next().unwrap();
            base.trim_end_matches(".ko").replace('-', "_")
        })
        .collect()
}

fn assert_load_order(c: &Closure) {
    let pos: BTreeMap<&str, usize> = c
        .modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    for (i, m) in c.modules.iter().enumerate() {
        for d in &m.depends {
            let at = pos.get(d.as_str()).copied();
            assert!(
                at.is_some_and(|p| p < i),
                "{} loads before its dependency {d}",
                m.name
            );
        }
    }
}

#[test]
fn resolves_host_kernel_by_default_and_by_paths() {
    let Some((image, modules, release)) = host_kernel() else {
        return;
    };
    let k = resolve(None).unwrap();
    assert_eq!(k.origin, KernelOrigin::HostDefault);
    assert_eq!(k.version, release);
    assert!(
        k.version_string.starts_with(&format!("{release} (")),
        "{}",
        k.version_string
    );
    assert_eq!(k.image.host_path(), Some(image.as_path()));
    assert!(matches!(&k.modules, Some(ModulesDir::Host(p)) if *p == modules));

    let spec = KernelSpec {
        path: Some(image.clone()),
        modules: Some(modules.clone()),
        ..Default::default()
    };
    let k = resolve(Some(&spec)).unwrap();
    assert_eq!(
        (k.version.as_str(), k.origin),
        (release.as_str(), KernelOrigin::Paths)
    );
    // The modules directory alone finds /boot/vmlinuz-<its name>.
    let spec = KernelSpec {
        modules: Some(modules.clone()),
        ..Default::default()
    };
    assert_eq!(
        resolve(Some(&spec)).unwrap().image.host_path(),
        Some(image.as_path())
    );
    // An explicit modules directory that does not exist is an error, not "no modules".
    let err =
        from_host_paths(&image, Some(Path::new("/nonexistent/x")), Path::new("/")).unwrap_err();
    assert!(matches!(err, KernelError::NoModulesDir(_)), "{err}");
}

#[test]
fn files_that_are_not_kernels_are_named_in_the_error() {
    let d = tempfile::tempdir().unwrap();
    let random = d.path().join("vmlinuz-random");
    // Deterministic pseudo-random bytes (xorshift).
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..65536)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    fs::write(&random, &bytes).unwrap();
    let text = d.path().join("vmlinuz-text");
    fs::write(&text, "this is not a kernel\n").unwrap();
    for path in [&random, &text] {
        let err = from_host_paths(path, None, d.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, KernelError::NotAKernel { .. }), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("is not a Linux kernel image"), "{msg}");
        eprintln!("{msg}");
    }
    // A /boot whose newest image is junk: the junk is reported, not skipped.
    let err = imgbuild::kernel::newest_host_kernel(d.path(), d.path()).unwrap_err();
    assert!(err.to_string().contains("vmlinuz-text"), "{err}");
    let err = from_host_paths(&d.path().join("vmlinuz-none"), None, d.path()).unwrap_err();
    assert!(err.to_string().contains("vmlinuz-none"), "{err}");
}

#[test]
fn closure_on_the_real_modules() {
    let Some((_, modules, release)) = host_kernel() else {
        return;
    };
    let index = ModuleIndex::load(&ModulesDir::Host(modules.clone()), &release).unwrap();
    assert_eq!(index.source(), MetadataSource::DepmodFiles);
    let builtin = builtin_names(&modules);
    let deps = depmod_deps(&modules);

    let c = index
        .closure(DriverRequest::Explicit(&explicit(&["virtio_blk"])))
        .unwrap();
    let names: Vec<&str> = c.modules.iter().map(|m| m.name.as_str()).collect();
    for core in ["virtio", "virtio_ring"] {
        assert!(
            names.contains(&core) || builtin.contains(core),
            "{core} is neither in {names:?} nor built in"
        );
    }
    assert_eq!(names.last(), Some(&"virtio_blk"));
    assert_load_order(&c);

    for driver in [
        "xen-blkfront",
        "vmw_pvscsi",
        "virtio_net",
        "virtio_scsi",
        "vmxnet3",
    ] {
        let c = index
            .closure(DriverRequest::Explicit(&explicit(&[driver])))
            .unwrap();
        let want = driver.replace('-', "_");
        assert!(
            c.modules.iter().any(|m| m.name == want) || c.builtin.contains(&want),
            "{driver} did not resolve"
        );
        assert_load_order(&c);
    }

    // The default set: whatever this kernel lacks is listed, not fatal.
    let c = index.closure(DriverRequest::Default).unwrap();
    assert_load_order(&c);
    for d in ["mptsas", "mptspi", "e1000"] {
        let expected_missing = !deps.contains_key(d) && !builtin.contains(d);
        assert_eq!(
            c.missing.contains(&d.to_string()),
            expected_missing,
            "{d}: {:?}",
            c.missing
        );
    }
    // Each module's dependencies are exactly depmod's.
    for m in &c.modules {
        let mine: BTreeSet<String> = m.depends.iter().cloned().collect();
        assert_eq!(mine, deps[&m.name], "depends of {}", m.name);
        let host = fs::read(modules.join(&m.source_file)).unwrap();
        assert_eq!(m.data, host, "{} content", m.name);
    }
    eprintln!(
        "default set on {release}: {} modules {:?}; builtin {:?}; missing {:?}",
        c.modules.len(),
        c.modules
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        c.builtin,
        c.missing
    );
    // Explicitly asking for a driver the kernel lacks is an error.
    if c.missing.iter().any(|m| m == "mptsas") {
        let err = index
            .closure(DriverRequest::Explicit(&explicit(&["mptsas"])))
            .unwrap_err();
        assert!(matches!(err, ModuleError::NotFound { .. }), "{err}");
    }
    // Same input, same order; request order does not matter.
    let again = index.closure(DriverRequest::Default).unwrap();
    let order = |c: &Closure| c.modules.iter().map(|m| m.name.clone()).collect::<Vec<_>>();
    assert_eq!(order(&c), order(&again));
    let mut reversed = imgbuild::kernel::default_drivers();
    reversed.reverse();
    reversed.retain(|d| !c.missing.contains(&d.replace('-', "_")));
    let r = index.closure(DriverRequest::Explicit(&reversed)).unwrap();
    assert_eq!(order(&c), order(&r));
}

#[test]
fn modinfo_parsing_matches_kmod() {
    let Some((_, modules, release)) = host_kernel() else {
        return;
    };
    if !kernel_support::have("modinfo") {
        kernel_support::require("kmod's modinfo is not installed");
        return;
    }
    let index = ModuleIndex::load(&ModulesDir::Host(modules.clone()), &release).unwrap();
    let mut checked = 0;
    for name in [
        "virtio_blk",
        "virtio_net",
        "virtio_scsi",
        "virtio_pci",
        "xen-blkfront",
        "xen-netfront",
        "vmw_pvscsi",
        "vmxnet3",
        "sd_mod",
        "scsi_mod",
        "failover",
        "net_failover",
    ] {
        let Some(rel) = index.file_of(name) else {
            continue;
        };
        let path = modules.join(rel);
        let bytes = modinfo::decompress(rel, fs::read(&path).unwrap()).unwrap();
        let mine = modinfo::parse(rel, &bytes).unwrap();
        let kmod = |field: &str| -> Vec<String> {
            let out = Command::new("modinfo")
                .args(["-F", field])
                .arg(&path)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "modinfo -F {field} {}",
                path.display()
            );
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        };
        let depends: Vec<String> = kmod("depends")
            .iter()
            .flat_map(|l| l.split(','))
            .filter(|d| !d.is_empty())
            .map(|d| d.replace('-', "_"))
            .collect();
        assert_eq!(mine.depends, depends, "depends of {name}");
        assert_eq!(mine.aliases, kmod("alias"), "aliases of {name}");
        assert_eq!(
            mine.vermagic.as_deref(),
            kmod("vermagic").first().map(String::as_str)
        );
        assert_eq!(
            mine.name.as_deref(),
            kmod("name").first().map(|n| n.replace('-', "_")).as_deref()
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} modules found to compare");
}

/// Puts a host file into `tree` at `path`, referenced in place.
fn put(tree: &mut Tree, path: &str, host: &Path) {
    let size = fs::metadata(host).unwrap().len();
    let inode = Inode::new(
        Meta::root(0o644, 0),
        Kind::File(FileData {
            size,
            content: Content::HostFile(Arc::from(host)),
            sha256: None,
        }),
    );
    tree.insert(path.as_bytes(), inode).unwrap();
}

/// A tree as a kernel package would leave it: image and modules, but no depmod output.
fn package_tree(image: &Path, modules: &Path, release: &str, fedora: bool) -> Tree {
    let mut tree = Tree::new(Meta::root(0o755, 0));
    let base = if fedora {
        "/usr/lib/modules"
    } else {
        "/lib/modules"
    };
    if fedora {
        put(&mut tree, &format!("{base}/{release}/vmlinuz"), image);
    } else {
        put(&mut tree, &format!("/boot/vmlinuz-{release}"), image);
    }
    let mut stack = vec![modules.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let ft = e.file_type().unwrap();
            let rel = e
                .path()
                .strip_prefix(modules)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let depmod_output = [
                "modules.dep",
                "modules.alias",
                "modules.softdep",
                "modules.symbols",
                "modules.devname",
            ]
            .iter()
            .any(|p| rel.starts_with(p));
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && !depmod_output {
                put(&mut tree, &format!("{base}/{release}/{rel}"), &e.path());
            }
        }
    }
    tree
}

#[test]
fn package_tree_without_depmod_files_gives_the_same_closure() {
    let Some((image, modules, release)) = host_kernel() else {
        return;
    };
    let host = ModuleIndex::load(&ModulesDir::Host(modules.clone()), &release)
        .unwrap()
        .closure(DriverRequest::Default)
        .unwrap();
    for fedora in [false, true] {
        let tree = package_tree(&image, &modules, &release, fedora);
        let k = from_tree(&tree, "linux-image.deb").unwrap();
        assert_eq!(k.version, release);
        assert_eq!(k.origin, KernelOrigin::Package("linux-image.deb".into()));
        assert!(
            k.image.label().starts_with("linux-image.deb:/"),
            "{}",
            k.image.label()
        );
        let index = k.module_index().unwrap();
        assert_eq!(index.source(), MetadataSource::Modinfo);
        let c = index.closure(DriverRequest::Default).unwrap();
        assert_eq!(c.missing, host.missing);
        assert_eq!(c.builtin, host.builtin);
        assert_eq!(c.modules.len(), host.modules.len());
        for (a, b) in c.modules.iter().zip(&host.modules) {
            assert_eq!(
                (&a.name, &a.file, &a.depends, a.always),
                (&b.name, &b.file, &b.depends, b.always)
            );
            let set = |v: &Vec<String>| v.iter().cloned().collect::<BTreeSet<_>>();
            assert_eq!(set(&a.aliases), set(&b.aliases), "aliases of {}", a.name);
            assert_eq!(a.data, b.data);
        }
    }
    let empty = Tree::new(Meta::root(0o755, 0));
    let err = from_tree(&empty, "empty.deb").unwrap_err();
    assert!(err.to_string().contains("empty.deb"), "{err}");
}

#[test]
fn compressed_modules_are_read_through_each_compressor() {
    let Some((_, modules, release)) = host_kernel() else {
        return;
    };
    for tool in ["xz", "zstd", "gzip"] {
        if !kernel_support::have(tool) {
            kernel_support::require(&format!("{tool} is not installed"));
            return;
        }
    }
    let host = ModuleIndex::load(&ModulesDir::Host(modules.clone()), &release)
        .unwrap()
        .closure(DriverRequest::Default)
        .unwrap();
    // A modules directory like Fedora's: compressed modules, modules.builtin, no depmod files.
    let d = tempfile::tempdir().unwrap();
    fs::copy(
        modules.join("modules.builtin"),
        d.path().join("modules.builtin"),
    )
    .unwrap();
    let tools: [(&str, &[&str], &str); 3] = [
        ("xz", &["--check=crc32", "-q"], ".xz"),
        ("zstd", &["-q", "--rm"], ".zst"),
        ("gzip", &["-n"], ".gz"),
    ];
    for (i, m) in host.modules.iter().enumerate() {
        let target = d.path().join(&m.file);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, &m.data).unwrap();
        let (tool, args, _) = tools[i % 3];
        let status = Command::new(tool).args(args).arg(&target).status().unwrap();
        assert!(status.success(), "{tool} {}", target.display());
    }
    let index = ModuleIndex::load(&ModulesDir::Host(d.path().to_path_buf()), &release).unwrap();
    assert_eq!(index.source(), MetadataSource::Modinfo);
    let c = index.closure(DriverRequest::Default).unwrap();
    assert_eq!(c.modules.len(), host.modules.len());
    for (i, (a, b)) in c.modules.iter().zip(&host.modules).enumerate() {
        assert_eq!(a.name, b.name);
        assert_eq!(a.file, b.file);
        assert_eq!(a.source_file, format!("{}{}", b.file, tools[i % 3].2));
        assert_eq!(a.data, b.data, "{} decompressed differs", a.name);
    }
}
