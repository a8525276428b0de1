//! Helpers of the Scientific Linux tests (`sl_*`, and `qemu-tests/tests/sl_ext3.rs`, which
//! includes this file by path): real RPMs made with rpmbuild, a kernel RPM laid out as an EL
//! kernel package from the host's Debian kernel, and a small EL-like root tarball.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../shell/mod.rs"]
mod shell;
pub use shell::{q, sh};

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// `images/NAME` of the repository.
pub fn image(name: &str) -> PathBuf {
    repo().join("images").join(name)
}

/// Whether a program is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The glibc init of this workspace's release build (what `scripts/test` builds first).
pub fn gnu_init() -> PathBuf {
    if let Some(p) = std::env::var_os("IMGBUILD_INIT") {
        return PathBuf::from(p);
    }
    let p = repo().join("target/x86_64-unknown-linux-gnu/release/imgbuild-init");
    assert!(
        p.is_file(),
        "{} is missing: run `cargo build --release -p imgbuild-init` first (scripts/test does)",
        p.display()
    );
    p
}

/// The musl init, when the musl target is installed and the binary built; else why not.
pub fn musl_init() -> Result<PathBuf, String> {
    let p = repo().join("target/x86_64-unknown-linux-musl/release/imgbuild-init");
    if p.is_file() {
        return Ok(p);
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let lib = Path::new(&sysroot).join("lib/rustlib/x86_64-unknown-linux-musl");
    if !lib.is_dir() {
        return Err(format!(
            "the x86_64-unknown-linux-musl target is not installed ({} is absent; \
             `rustup target add x86_64-unknown-linux-musl`)",
            lib.display()
        ));
    }
    Err(format!(
        "{} is not built: `cargo build --release -p imgbuild-init --target x86_64-unknown-linux-musl`",
        p.display()
    ))
}

/// The host's newest kernel: (release, vmlinuz path).
pub fn host_kernel() -> Option<(String, PathBuf)> {
    let mut found: Vec<(String, PathBuf)> = fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let release = name.strip_prefix("vmlinuz-")?.to_string();
            Path::new("/lib/modules")
                .join(&release)
                .join("modules.dep")
                .is_file()
                .then(|| (release, e.path()))
        })
        .collect();
    found.sort_by(|a, b| imgbuild::kernel::version_cmp(&a.0, &b.0));
    found.pop()
}

/// Builds one binary RPM from `spec` whose `%install` copies `stage` into the buildroot.
pub fn rpmbuild(work: &Path, spec: &str, stage: &Path) -> PathBuf {
    let top = work.join("rpmbuild");
    let spec_path = work.join(format!("{}.spec", fs::read_dir(work).unwrap().count()));
    let header = "AutoReqProv: no\n\
        %define __os_install_post %{nil}\n\
        %define debug_package %{nil}\n\
        %define _build_id_links none\n";
    let body = spec.replacen("%description", &format!("{header}%description"), 1);
    fs::write(&spec_path, body).unwrap();
    let before: BTreeSet<PathBuf> = rpms_under(&top);
    sh(&format!(
        "rpmbuild -bb --quiet --define '_topdir {}' --define 'stage {}' {} 2>&1",
        top.display(),
        stage.display(),
        q(&spec_path)
    ));
    let after = rpms_under(&top);
    let mut new: Vec<PathBuf> = after.difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "rpmbuild made {new:?}");
    new.pop().unwrap()
}

fn rpms_under(top: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![top.join("RPMS")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rpm") {
                out.insert(p);
            }
        }
    }
    out
}

/// Users and groups only `el-filesystem`'s `/etc/passwd` and `/etc/group` define.
pub const EL_PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
    bench:x:1234:1234:benchmark runner:/var/lib/bench:/sbin/nologin\n\
    svc:x:4321:4322:service:/var/empty:/sbin/nologin\n";
/// Groups of `el-filesystem`.
pub const EL_GROUP: &str = "root:x:0:\nbench:x:1234:\nsvc:x:4322:bench\n";

/// Three packages with dependencies on each other's files, written into `dir`:
/// `el-filesystem` (directories, `/etc/passwd` and `/etc/group` defining `bench` and `svc`),
/// `el-tools` (a binary with `cap_net_raw=ep`, hard links, `%config`, a `%dev` node, a
/// directory owned by `bench`), `el-data` (files in `el-tools`'s directory, owned by `svc`).
/// File-name order (`el-data` first) is the reverse of dependency order on purpose.
pub fn el_packages(work: &Path) -> Vec<PathBuf> {
    let stage = |name: &str| {
        let d = work.join("stage").join(name);
        fs::create_dir_all(&d).unwrap();
        d
    };
    let fsys = stage("filesystem");
    for d in ["etc", "usr/bin", "usr/lib", "var/lib", "dev"] {
        fs::create_dir_all(fsys.join(d)).unwrap();
    }
    fs::write(fsys.join("etc/passwd"), EL_PASSWD).unwrap();
    fs::write(fsys.join("etc/group"), EL_GROUP).unwrap();
    let filesystem = rpmbuild(
        work,
        "Name: el-filesystem\nVersion: 3.2\nRelease: 21.el6\nSummary: base\nLicense: MIT\n\
         BuildArch: noarch\nProvides: /etc/passwd\n%define _binary_payload w6.gzdio\n\
         %description\nbase directories and accounts\n\
         %install\ncp -a %{stage}/. %{buildroot}/\n\
         %files\n%defattr(-,root,root,-)\n%dir /etc\n%dir /usr\n%dir /usr/bin\n%dir /usr/lib\n\
         %dir /var\n%dir /var/lib\n%dir /dev\n\
         %config(noreplace) /etc/passwd\n%config(noreplace) /etc/group\n",
        &fsys,
    );

    let tools = stage("tools");
    for d in ["usr/bin", "etc", "var/lib/bench"] {
        fs::create_dir_all(tools.join(d)).unwrap();
    }
    fs::copy("/bin/true", tools.join("usr/bin/bench-ping")).unwrap();
    fs::write(tools.join("usr/bin/bench"), "#!/bin/sh\necho bench\n").unwrap();
    fs::hard_link(tools.join("usr/bin/bench"), tools.join("usr/bin/bench-run")).unwrap();
    fs::write(tools.join("etc/bench.conf"), "threads=4\n").unwrap();
    std::os::unix::fs::symlink("bench", tools.join("usr/bin/bench-link")).unwrap();
    let tools = rpmbuild(
        work,
        "Name: el-tools\nVersion: 1.2\nRelease: 3.el6\nSummary: tools\nLicense: MIT\n\
         BuildArch: x86_64\nRequires: el-filesystem, /etc/passwd\n\
         %define _binary_payload w2.xzdio\n\
         %description\ntools\n\
         %install\ncp -a %{stage}/. %{buildroot}/\n\
         %files\n\
         %attr(0755,root,root) /usr/bin/bench\n\
         %attr(0755,root,root) /usr/bin/bench-run\n\
         /usr/bin/bench-link\n\
         %caps(cap_net_raw=ep) %attr(0755,root,root) /usr/bin/bench-ping\n\
         %config(noreplace) %attr(0640,root,bench) /etc/bench.conf\n\
         %dev(c,1,3) %attr(0666,root,root) /dev/bench-null\n\
         %dev(b,7,0) %attr(0660,root,svc) /dev/bench-loop\n\
         %dir %attr(0750,bench,bench) /var/lib/bench\n",
        &tools,
    );

    let data = stage("data");
    fs::create_dir_all(data.join("var/lib/bench/data")).unwrap();
    fs::write(data.join("var/lib/bench/data/seed"), vec![7u8; 70_000]).unwrap();
    let data = rpmbuild(
        work,
        "Name: el-data\nVersion: 0.9\nRelease: 1.el6\nSummary: data\nLicense: MIT\n\
         BuildArch: noarch\nRequires: el-tools\n%define _binary_payload w9.bzdio\n\
         %description\ndata\n\
         %install\ncp -a %{stage}/. %{buildroot}/\n\
         %files\n%dir %attr(2770,svc,bench) /var/lib/bench/data\n\
         %attr(0600,svc,svc) /var/lib/bench/data/seed\n",
        &data,
    );
    vec![filesystem, tools, data]
}

/// A small EL6-like root as a tarball: what an OpenVZ template carries that `[el]` must fix
/// (a MAC-bound ifcfg-eth0, 70-persistent-net.rules, SELinux enforcing, an fstab naming a
/// device), owned by root, with a root account.
pub fn el_root_tar(work: &Path) -> PathBuf {
    let root = work.join("root");
    for d in [
        "etc/sysconfig/network-scripts",
        "etc/udev/rules.d",
        "etc/selinux",
        "bin",
        "sbin",
        "usr/bin",
        "lib64",
        "root",
        "tmp",
        "var/log",
    ] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let files = [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"),
        ("etc/group", "root:x:0:\n"),
        ("etc/redhat-release", "Scientific Linux release 6.4 (Carbon)\n"),
        (
            "etc/sysconfig/network",
            "NETWORKING=yes\nHOSTNAME=template.example.org\nGATEWAY=10.1.1.1\n",
        ),
        (
            "etc/sysconfig/network-scripts/ifcfg-eth0",
            "DEVICE=eth0\nHWADDR=00:16:3E:12:34:56\nBOOTPROTO=static\nIPADDR=10.1.1.5\nONBOOT=yes\n",
        ),
        (
            "etc/sysconfig/network-scripts/ifcfg-eth1",
            "DEVICE=eth1\nHWADDR=00:16:3E:12:34:57\nONBOOT=no\n",
        ),
        (
            "etc/udev/rules.d/70-persistent-net.rules",
            "SUBSYSTEM==\"net\", ACTION==\"add\", ATTR{address}==\"00:16:3e:12:34:56\", NAME=\"eth0\"\n",
        ),
        (
            "etc/selinux/config",
            "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
        ),
        (
            "etc/fstab",
            "/dev/vda1 / ext4 defaults 1 1\ntmpfs /dev/shm tmpfs defaults 0 0\n",
        ),
    ];
    for (path, text) in files {
        fs::write(root.join(path), text).unwrap();
    }
    fs::copy("/bin/true", root.join("bin/true")).unwrap();
    let tar = work.join("scientific-6-x86_64.tar.gz");
    sh(&format!(
        "tar -C {} --numeric-owner --owner=0 --group=0 -czf {} .",
        q(&root),
        q(&tar)
    ));
    tar
}

/// How the kernel package lays out its modules.
#[derive(Debug, Clone, Copy)]
pub struct KernelStyle {
    /// Compress the storage and network drivers (and some others) to `.ko.xz`, as EL7 does.
    pub xz: bool,
    /// Ship `modules.dep`/`modules.alias`/`modules.softdep` made by depmod; otherwise they are
    /// `%ghost` (listed, not shipped), as in EL kernel packages.
    pub modules_dep: bool,
}

/// A kernel package made from the host's kernel.
#[derive(Debug, Clone)]
pub struct KernelRpm {
    /// The package.
    pub path: PathBuf,
    /// The kernel release (`/lib/modules/<release>`).
    pub release: String,
    /// Module files in the package, relative to the modules directory.
    pub modules: Vec<String>,
}

/// Modules put in the kernel package: the drivers of every platform and some unrelated ones, so
/// the initramfs has to choose.
pub const PACKAGED_DRIVERS: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
    "virtio_scsi",
    "xen-blkfront",
    "xen-netfront",
    "vmw_pvscsi",
    "vmxnet3",
    "sd_mod",
    "crc32c-intel",
    "loop",
    "dm-mod",
    "isofs",
    "fuse",
];

/// Builds `kernel-<version>-<n>.el7.x86_64.rpm` from the host kernel: `/boot/vmlinuz-<release>`,
/// `System.map`, `config`, `/lib/modules/<release>/kernel/…` with [`PACKAGED_DRIVERS`] and
/// their dependencies, `modules.order`, `modules.builtin(.modinfo)`, and `%ghost` entries for
/// the files an EL kernel package leaves to `%posttrans` (the initramfs, and depmod's files
/// unless `style.modules_dep`). `None` when the host has no kernel with modules.
pub fn kernel_rpm(work: &Path, style: KernelStyle) -> Option<KernelRpm> {
    let (release, vmlinuz) = host_kernel()?;
    let host_mods = Path::new("/lib/modules").join(&release);
    let dep_text = fs::read_to_string(host_mods.join("modules.dep")).ok()?;
    let deps: BTreeMap<String, Vec<String>> = dep_text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(m, d)| {
            (
                m.trim().to_string(),
                d.split_whitespace().map(String::from).collect(),
            )
        })
        .collect();
    let name_of = |rel: &str| {
        let base = rel.rsplit('/').next().unwrap_or(rel);
        base.split(".ko").next().unwrap_or(base).replace('-', "_")
    };
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let mut stack: Vec<String> = deps
        .keys()
        .filter(|rel| {
            PACKAGED_DRIVERS
                .iter()
                .any(|d| name_of(rel) == d.replace('-', "_"))
        })
        .cloned()
        .collect();
    while let Some(rel) = stack.pop() {
        if wanted.insert(rel.clone()) {
            stack.extend(deps.get(&rel).cloned().unwrap_or_default());
        }
    }

    let stage = work.join(format!(
        "kernel-stage-{}-{}",
        u8::from(style.xz),
        u8::from(style.modules_dep)
    ));
    let mods = stage.join("lib/modules").join(&release);
    fs::create_dir_all(stage.join("boot")).unwrap();
    fs::copy(&vmlinuz, stage.join(format!("boot/vmlinuz-{release}"))).unwrap();
    for extra in ["System.map", "config"] {
        let from = Path::new("/boot").join(format!("{extra}-{release}"));
        let to = stage.join(format!("boot/{extra}-{release}"));
        if fs::copy(&from, &to).is_err() {
            fs::write(&to, b"").unwrap();
        }
    }
    let mut modules = Vec::new();
    for rel in &wanted {
        let to = mods.join(rel);
        fs::create_dir_all(to.parent().unwrap()).unwrap();
        fs::copy(host_mods.join(rel), &to).unwrap();
        // EL7 compresses every module; here the storage and network drivers and every other
        // module but one are, so both suffixes are in one package.
        if style.xz && !rel.ends_with("/loop.ko") {
            sh(&format!("xz --check=crc32 -T1 -1 {}", q(&to)));
            modules.push(format!("{rel}.xz"));
        } else {
            modules.push(rel.clone());
        }
    }
    let order: String = modules.iter().map(|m| format!("{m}\n")).collect();
    fs::write(mods.join("modules.order"), order).unwrap();
    for f in ["modules.builtin", "modules.builtin.modinfo"] {
        let _ = fs::copy(host_mods.join(f), mods.join(f));
    }
    let ghosts = [
        "modules.dep",
        "modules.alias",
        "modules.softdep",
        "modules.symbols",
        "modules.dep.bin",
        "modules.alias.bin",
    ];
    if style.modules_dep {
        sh(&format!("depmod -b {} {release}", q(&stage)));
        // Keep the text files the builder reads; the .bin ones stay ghosts.
        for f in fs::read_dir(&mods).unwrap().flatten() {
            let name = f.file_name().into_string().unwrap();
            if name.ends_with(".bin") || name == "modules.devname" {
                fs::remove_file(f.path()).unwrap();
            }
        }
    }
    let mut files = format!(
        "%files\n%defattr(-,root,root,-)\n/boot/vmlinuz-{release}\n/boot/System.map-{release}\n\
         /boot/config-{release}\n%ghost %attr(0600,root,root) /boot/initramfs-{release}.img\n\
         %dir /lib/modules/{release}\n/lib/modules/{release}/kernel\n\
         /lib/modules/{release}/modules.order\n"
    );
    for f in ["modules.builtin", "modules.builtin.modinfo"] {
        if mods.join(f).is_file() {
            files.push_str(&format!("/lib/modules/{release}/{f}\n"));
        }
    }
    for g in ghosts {
        let shipped = mods.join(g).is_file();
        files.push_str(&format!(
            "{}/lib/modules/{release}/{g}\n",
            if shipped { "" } else { "%ghost " }
        ));
    }
    let n = release.split('-').nth(1).unwrap_or("1");
    let version = release.split('-').next().unwrap_or("1");
    let spec = format!(
        "Name: kernel\nVersion: {version}\nRelease: {n}.el7\nSummary: The Linux kernel\n\
         License: GPLv2\nBuildArch: x86_64\n%define _binary_payload w1.xzdio\n\
         %description\nThe host kernel laid out as an EL kernel package.\n\
         %install\ncp -a %{{stage}}/. %{{buildroot}}/\n{files}"
    );
    let path = rpmbuild(work, &spec, &stage);
    Some(KernelRpm {
        path,
        release,
        modules,
    })
}
