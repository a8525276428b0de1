//! An SL6 image from a template tarball plus a set of RPMs made here with rpmbuild, built into
//! every target by the real `imgbuild` binary, then checked with real tools: `rpm -qp --dump`
//! says what each file must be, `debugfs` reads what the ext4 image holds, `e2fsck -fn` and
//! `imgbuild verify` check the whole, GNU tar reads the OpenVZ template.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sl_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use sl_common::{el_packages, el_root_tar, gnu_init, have, image, q, sh, EL_GROUP, EL_PASSWD};

/// One line of `rpm -qp --dump`: path size mtime digest mode owner group isconfig isdoc rdev
/// symlink.
#[derive(Debug)]
struct Dumped {
    path: String,
    size: u64,
    digest: String,
    mode: u32,
    owner: String,
    group: String,
    config: bool,
    rdev: u32,
    link: String,
}

fn rpm_dump(pkg: &Path) -> Vec<Dumped> {
    sh(&format!("rpm -qp --dump {}", q(pkg)))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 11, "{l}");
            Dumped {
                path: f[0].to_string(),
                size: f[1].parse().unwrap(),
                digest: f[3].to_string(),
                mode: u32::from_str_radix(f[4], 8).unwrap(),
                owner: f[5].to_string(),
                group: f[6].to_string(),
                config: f[7] == "1",
                rdev: f[9].parse().unwrap(),
                link: f[10].to_string(),
            }
        })
        .collect()
}

/// What `debugfs -R 'stat PATH'` says about an inode.
#[derive(Debug, PartialEq)]
struct Stat {
    inode: u64,
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    links: u32,
    device: Option<(u32, u32)>,
}

fn debugfs(img: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(img)
        .output()
        .unwrap();
    assert!(out.status.success(), "debugfs {request}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text.find(key)? + key.len();
    text[at..].split_whitespace().next()
}

fn stat(img: &Path, path: &str) -> Option<Stat> {
    let text = debugfs(img, &format!("stat \"{path}\""));
    let inode = field(&text, "Inode:")?.parse().ok()?;
    let device = text.find("Device major/minor number:").map(|at| {
        let nums = text[at..].split_whitespace().nth(3).unwrap();
        let (ma, mi) = nums.split_once(':').unwrap();
        (ma.parse().unwrap(), mi.parse().unwrap())
    });
    Some(Stat {
        inode,
        kind: field(&text, "Type:")?.to_string(),
        mode: u32::from_str_radix(field(&text, "Mode:")?, 8).ok()?,
        uid: field(&text, "User:")?.parse().ok()?,
        gid: field(&text, "Group:")?.parse().ok()?,
        size: field(&text, "Size:")?.parse().ok()?,
        links: field(&text, "Links:")?.parse().ok()?,
        device,
    })
}

fn ids(table: &str) -> BTreeMap<String, u32> {
    table
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f[0].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

fn cat(img: &Path, path: &str) -> Vec<u8> {
    let out = Command::new("debugfs")
        .args(["-R", &format!("cat \"{path}\"")])
        .arg(img)
        .output()
        .unwrap();
    out.stdout
}

fn text(img: &Path, path: &str) -> String {
    String::from_utf8(cat(img, path)).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The bytes of `security.capability` the kernel's setcap writes for `caps`.
fn setcap_xattr(dir: &Path, caps: &str) -> Vec<u8> {
    let f = dir.join("probe");
    std::fs::write(&f, b"x").unwrap();
    sh(&format!("setcap {caps} {}", q(&f)));
    imgbuild_init::xattr::read(&f)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == b"security.capability")
        .unwrap()
        .1
}

/// `ea_list` prints `name (len) = hex bytes`; returns the bytes of `name`.
fn ea(img: &Path, path: &str, name: &str) -> Option<Vec<u8>> {
    let listing = debugfs(img, &format!("ea_list \"{path}\""));
    let at = listing.find(&format!("{name} ("))?;
    let line = listing[at..].lines().next()?;
    let hex = line.split_once(" = ")?.1;
    if let Some(quoted) = hex.strip_prefix('"') {
        return Some(quoted.trim_end_matches('"').as_bytes().to_vec());
    }
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).ok())
        .collect()
}

fn tools_present() -> bool {
    for tool in [
        "rpmbuild", "rpm", "debugfs", "e2fsck", "setcap", "tar", "depmod",
    ] {
        if !have(tool) {
            // The container has them; a machine without them cannot run the test.
            panic!("{tool} is missing: apt-get install -y rpm e2fsprogs libcap2-bin tar kmod");
        }
    }
    true
}

#[test]
fn rpm_set_on_a_template_into_every_target() {
    assert!(tools_present());
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let packages = el_packages(work);
    let set = work.join("set");
    std::fs::create_dir(&set).unwrap();
    let mut in_set: Vec<PathBuf> = Vec::new();
    for p in &packages {
        let to = set.join(p.file_name().unwrap());
        std::fs::copy(p, &to).unwrap();
        in_set.push(to);
    }
    // The layer installs in file-name order: el-data, el-filesystem, el-tools.
    in_set.sort();
    let tar = el_root_tar(work);
    let out = work.join("out");
    let started = std::time::Instant::now();
    // The glibc init: the host kernel boots this image, and the musl build is the subject of
    // sl_musl.rs.
    let o = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["build", "--image"])
        .arg(image("sl6-bench.toml"))
        .arg("--set")
        .arg(format!("rootfs.tar={}", tar.display()))
        .args(["--set", "init.libc=gnu", "--init"])
        .arg(gnu_init())
        .arg("--layer")
        .arg(format!("rpm={}/*.rpm", set.display()))
        .args(["--target", "all", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{log}");
    eprintln!("build: {:.1} s\n{log}", started.elapsed().as_secs_f64());

    // The build log lists every package with its file count, in installation order.
    let dumps: Vec<Vec<Dumped>> = in_set.iter().map(|p| rpm_dump(p)).collect();
    let nevras: Vec<String> = in_set
        .iter()
        .map(|p| {
            sh(&format!(
                "rpm -qp --qf '%{{NAME}}-%{{VERSION}}-%{{RELEASE}}.%{{ARCH}}' {}",
                q(p)
            ))
        })
        .collect();
    for (nevra, dump) in nevras.iter().zip(&dumps) {
        let line = format!("installed {nevra} ({} files)", dump.len());
        assert!(log.contains(&line), "{line} not in\n{log}");
    }
    assert!(
        log.contains("got their ids at the end of the layer"),
        "{log}"
    );
    assert!(!log.contains("not in the tree's /etc/passwd"), "{log}");

    // The manifest records the same, with each package file's sha256.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let listed = manifest["packages"].as_array().unwrap();
    assert_eq!(listed.len(), 3, "{listed:?}");
    for ((entry, nevra), (dump, path)) in listed.iter().zip(&nevras).zip(dumps.iter().zip(&in_set))
    {
        assert_eq!(entry["nevra"], nevra.as_str());
        assert_eq!(entry["files"], dump.len() as u64);
        assert_eq!(entry["file"], path.file_name().unwrap().to_str().unwrap());
        let sum = sh(&format!("sha256sum {}", q(path)));
        assert_eq!(entry["sha256"], sum.split_whitespace().next().unwrap());
        assert_eq!(
            entry["layer"], 2,
            "the --layer comes after rootfs and skeleton"
        );
    }
    let uuid = manifest["filesystem"]["uuid"].as_str().unwrap().to_string();

    // imgbuild's own readers agree with the manifest for every artefact.
    let v = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .arg("verify")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        v.status.success(),
        "verify: {}{}",
        String::from_utf8_lossy(&v.stdout),
        String::from_utf8_lossy(&v.stderr)
    );

    let img = out.join("xen/sl6-bench.ext4");
    sh(&format!("e2fsck -fn {} 2>&1", q(&img)));
    let stats = debugfs(&img, "stats");
    assert!(
        stats.contains(&format!("Filesystem UUID:          {uuid}")),
        "{stats}"
    );

    // Every file of every package, as rpm describes it.
    let users = ids(EL_PASSWD);
    let groups = ids(EL_GROUP);
    let probe = tempfile::tempdir().unwrap();
    for d in dumps.iter().flatten() {
        let s = stat(&img, &d.path).unwrap_or_else(|| panic!("{} is not in the image", d.path));
        assert_eq!(s.mode, d.mode & 0o7777, "{}", d.path);
        assert_eq!(s.uid, users[&d.owner], "{} owner {}", d.path, d.owner);
        assert_eq!(s.gid, groups[&d.group], "{} group {}", d.path, d.group);
        match d.mode & 0o170000 {
            0o100000 => {
                assert_eq!(s.kind, "regular", "{}", d.path);
                assert_eq!(s.size, d.size, "{}", d.path);
                assert_eq!(sha256_hex(&cat(&img, &d.path)), d.digest, "{}", d.path);
            }
            0o040000 => assert_eq!(s.kind, "directory", "{}", d.path),
            0o120000 => {
                assert_eq!(s.kind, "symlink", "{}", d.path);
                assert!(
                    debugfs(&img, &format!("stat \"{}\"", d.path))
                        .contains(&format!("\"{}\"", d.link)),
                    "{}",
                    d.path
                );
            }
            0o020000 | 0o060000 => {
                let kind = if d.mode & 0o170000 == 0o020000 {
                    "character"
                } else {
                    "block"
                };
                assert_eq!(s.kind, kind, "{}", d.path);
                assert_eq!(s.device, Some((d.rdev >> 8, d.rdev & 0xff)), "{}", d.path);
            }
            other => panic!("{}: unexpected type {other:o}", d.path),
        }
        let caps = sh(&format!(
            "rpm -qp --qf '[%{{FILENAMES}} %{{FILECAPS}}\\n]' {}",
            q(&in_set[dumps
                .iter()
                .position(|x| x.iter().any(|y| y.path == d.path))
                .unwrap()])
        ));
        let cap_text = caps
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{} ", d.path)))
            .unwrap_or("")
            .trim();
        // rpm prints (none) when the package has no capabilities at all.
        let cap_text = if cap_text == "(none)" { "" } else { cap_text };
        let found = ea(&img, &d.path, "security.capability");
        if cap_text.is_empty() {
            assert_eq!(found, None, "{} has no capabilities", d.path);
        } else {
            assert_eq!(
                found,
                Some(setcap_xattr(probe.path(), cap_text)),
                "{} {cap_text}",
                d.path
            );
        }
        if d.config {
            assert!(d.path.starts_with("/etc/"), "{}", d.path);
        }
    }
    // The hard-link pair is one inode.
    let a = stat(&img, "/usr/bin/bench").unwrap();
    let b = stat(&img, "/usr/bin/bench-run").unwrap();
    assert_eq!((a.inode, a.links), (b.inode, 2));

    // The EL system files.
    assert_eq!(
        text(&img, "/etc/redhat-release"),
        "Scientific Linux release 6.10 (Carbon)\n"
    );
    assert_eq!(
        text(&img, "/etc/sl-release"),
        "Scientific Linux release 6.10 (Carbon)\n"
    );
    assert!(stat(&img, "/etc/os-release").is_none());
    assert_eq!(
        text(&img, "/etc/sysconfig/network"),
        "NETWORKING=yes\nHOSTNAME=sl6-bench\nGATEWAY=10.1.1.1\n"
    );
    let eth0 = text(&img, "/etc/sysconfig/network-scripts/ifcfg-eth0");
    for line in ["DEVICE=eth0\n", "BOOTPROTO=dhcp\n", "ONBOOT=yes\n"] {
        assert!(eth0.contains(line), "{eth0}");
    }
    assert!(
        !eth0.contains("HWADDR") && !eth0.contains("IPADDR"),
        "{eth0}"
    );
    assert_eq!(
        text(&img, "/etc/sysconfig/network-scripts/ifcfg-eth1"),
        "DEVICE=eth1\nONBOOT=no\n"
    );
    assert!(stat(&img, "/etc/udev/rules.d/70-persistent-net.rules").is_none());
    assert!(stat(&img, "/.autorelabel").is_none());
    assert_eq!(
        text(&img, "/etc/selinux/config"),
        "SELINUX=disabled\nSELINUXTYPE=targeted\n"
    );
    let fstab = text(&img, "/etc/fstab");
    assert_eq!(
        fstab,
        format!("UUID={uuid}\t/\text4\tdefaults\t1 1\ntmpfs /dev/shm tmpfs defaults 0 0\n")
    );

    // Boot loader configs for EL: one entry, root by UUID, read-only, PV console then serial.
    let release = manifest["kernel"].as_str().unwrap();
    let args = format!("root=UUID={uuid} ro quiet panic=-1 console=hvc0 console=ttyS0,115200");
    let legacy = text(&img, "/boot/grub/menu.lst");
    assert!(
        legacy.contains(&format!("\tkernel /boot/vmlinuz-{release} {args}\n")),
        "{legacy}"
    );
    assert!(
        legacy.contains(&format!("\tinitrd /boot/initrd.img-{release}\n")),
        "{legacy}"
    );
    assert!(legacy.contains("\troot (hd0,0)\n") && legacy.contains("timeout 0\n"));
    assert_eq!(text(&img, "/boot/grub/grub.conf"), legacy);
    let cfg = text(&img, "/boot/grub/grub.cfg");
    assert!(
        cfg.contains(&format!("\tlinux /boot/vmlinuz-{release} {args}\n")),
        "{cfg}"
    );
    assert!(cfg.contains(&format!("search --no-floppy --fs-uuid --set=root {uuid}")));
    assert_eq!(cfg.matches(" ro ").count(), 1, "{cfg}");

    // Target files say what EL6 needs.
    let xen = std::fs::read_to_string(out.join("xen/sl6-bench.cfg")).unwrap();
    assert!(xen.contains("type = \"pv\""), "{xen}");
    assert!(xen.contains("console=hvc0"), "{xen}");
    let vmx = std::fs::read_to_string(out.join("vmware/sl6-bench.vmx")).unwrap();
    for line in [
        "guestOS = \"rhel6-64\"",
        "virtualHW.version = \"8\"",
        "scsi0.virtualDev = \"pvscsi\"",
    ] {
        assert!(vmx.contains(line), "{line}\n{vmx}");
    }
    let conf = std::fs::read_to_string(out.join("openvz/ve-sl6-bench.conf-sample")).unwrap();
    assert!(
        conf.contains("OSTEMPLATE=\"scientific-6-x86_64-bench\"\nDISTRIBUTION=\"redhat\"\n"),
        "{conf}"
    );
    // The OpenVZ template, as GNU tar lists it: the root at the top, numeric owners.
    let template = out.join("openvz/scientific-6-x86_64-bench.tar.gz");
    let listing = sh(&format!("tar --numeric-owner -tvzf {}", q(&template)));
    let line_of = |p: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" ./{p}")) || l.ends_with(&format!(" {p}")))
            .unwrap_or_else(|| panic!("{p} not in the template:\n{listing}"))
            .to_string()
    };
    assert!(line_of("var/lib/bench/data/seed").contains("4321/4322"));
    assert!(line_of("var/lib/bench").contains("1234/1234"));
    assert!(line_of("dev/bench-loop").starts_with("brw-rw----"));
    let xattrs = sh(&format!(
        "tar --xattrs --xattrs-include='*' -tvvzf {} ./usr/bin/bench-ping 2>&1 || tar --xattrs --xattrs-include='*' -tvvzf {} usr/bin/bench-ping",
        q(&template),
        q(&template)
    ));
    assert!(xattrs.contains("security.capability"), "{xattrs}");
}
