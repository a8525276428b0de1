//! The RPM layer against rpm itself: every shared fixture and packages built here with rpmbuild
//! (every payload compressor, devices, fifos, hard links, capabilities, owners known only by
//! name) are installed both by `rpm -i --root` and by our reader, and the two roots must have the
//! same rootfs digest; `rpm -qp --dump`, `rpm2cpio | cpio -idm` and `rpm2archive` check paths,
//! metadata and contents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources_common;

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use imgbuild::sources::rpm::{self, RpmError};
use imgbuild::tree::{Inode, Kind, Meta, Tree};
use sources_common::*;

/// Installs `pkg` with the real rpm into `root` (database outside the compared tree).
fn rpm_install(root: &Path, pkgs: &[PathBuf]) {
    let list: Vec<String> = pkgs.iter().map(|p| q(p)).collect();
    sh(&format!(
        "timeout -s KILL 120 rpm -i --root {} --dbpath /rpmdb --nodeps --noscripts --nosignature --nodigest \
         --ignorearch --ignoreos --replacefiles {} 2>&1",
        q(root),
        list.join(" ")
    ));
    fs::remove_dir_all(root.join("rpmdb")).unwrap();
}

fn uid_of(name: &str) -> u32 {
    match name {
        "jane" => 1001,
        "bob" => 1002,
        _ => 0,
    }
}

fn gid_of(name: &str) -> u32 {
    match name {
        "jane" => 1001,
        "bob" => 2002,
        _ => 0,
    }
}

/// Checks the tree against `rpm -qp --dump`: paths, sizes, mtimes, sha256, modes, owners, link
/// targets and device numbers. Ghost files must be absent.
fn check_dump(tree: &mut Tree, pkg: &Path) {
    imgbuild::tree::hash_contents(tree, &|_| {}).unwrap();
    let ghosts: BTreeSet<String> = sh(&format!(
        "rpm -qp --qf '[%{{FILEFLAGS:fflags}}\\t%{{FILENAMES}}\\n]' {} 2>/dev/null",
        q(pkg)
    ))
    .lines()
    .filter_map(|l| l.split_once('\t'))
    .filter(|(flags, _)| flags.contains('g'))
    .map(|(_, p)| p.to_string())
    .collect();
    let dump = sh(&format!("rpm -qp --dump {} 2>/dev/null", q(pkg)));
    let mut checked = 0;
    for line in dump.lines() {
        let mut f: Vec<&str> = line.rsplitn(11, ' ').collect();
        f.reverse();
        let [path, size, mtime, digest, mode, owner, group, _config, _doc, rdev, link] = f[..]
        else {
            panic!("unexpected dump line {line:?}")
        };
        if ghosts.contains(path) {
            assert!(
                tree.lookup(path.as_bytes()).is_none(),
                "ghost {path} was created"
            );
            continue;
        }
        let id = tree
            .lookup(path.as_bytes())
            .unwrap_or_else(|| panic!("{path} missing from the tree"));
        let inode = tree.inode(id);
        let mode = u32::from_str_radix(mode, 8).unwrap();
        assert_eq!(u32::from(inode.meta.mode), mode & 0o7777, "{path} mode");
        assert_eq!(inode.meta.uid, uid_of(owner), "{path} owner {owner}");
        assert_eq!(inode.meta.gid, gid_of(group), "{path} group {group}");
        assert_eq!(
            inode.meta.mtime,
            mtime.parse::<i64>().unwrap(),
            "{path} mtime"
        );
        match (mode & 0o170000, &inode.kind) {
            (0o100000, Kind::File(data)) => {
                assert_eq!(data.size, size.parse::<u64>().unwrap(), "{path} size");
                if digest.len() == 64 && digest.bytes().any(|b| b != b'0') {
                    let hex: String = data
                        .sha256
                        .unwrap()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    assert_eq!(hex, digest, "{path} sha256");
                }
            }
            (0o040000, Kind::Directory(_)) => {}
            (0o120000, Kind::Symlink(target)) => {
                assert_eq!(String::from_utf8_lossy(target), link, "{path} target")
            }
            (0o020000, Kind::CharDevice { major, minor })
            | (0o060000, Kind::BlockDevice { major, minor }) => {
                let rdev: u32 = rdev.parse().unwrap();
                assert_eq!((*major, *minor), (rdev >> 8, rdev & 0xff), "{path} rdev");
            }
            (0o010000, Kind::Fifo) => {}
            (t, k) => panic!("{path}: dump type {t:o} but tree has a {}", k.describe()),
        }
        checked += 1;
    }
    assert!(checked > 0);
}

/// Our install and rpm's install of `pkgs` into a root holding the test accounts.
fn compare_with_rpm(pkgs: &[PathBuf], prepare: impl Fn(&mut Tree, &Path)) -> Tree {
    let mut tree = tree_with_accounts();
    let root = root_with_accounts();
    prepare(&mut tree, root.path());
    let report = rpm::apply(&mut tree, pkgs).unwrap();
    assert_eq!(report.packages.len(), pkgs.len());
    rpm_install(root.path(), pkgs);
    let ours = tree_digest_of(&mut tree);
    let theirs = dir_digest(root.path());
    if ours != theirs {
        panic!(
            "digest differs for {pkgs:?}\nours:\n{}\nrpm:\n{}",
            describe_tree(&tree).join("\n"),
            describe_dir(root.path())
        );
    }
    tree
}

#[test]
fn fixtures_install_like_rpm() {
    assert!(
        is_root(),
        "these tests install device nodes and owners: run as root"
    );
    for pkg in fixtures() {
        let mut tree = compare_with_rpm(std::slice::from_ref(&pkg), |_, _| {});
        check_dump(&mut tree, &pkg);
    }
}

#[test]
fn fixture_contents_match_rpm2cpio_and_rpm2archive() {
    for pkg in fixtures() {
        let mut tree = tree_with_accounts();
        let report = rpm::apply(&mut tree, std::slice::from_ref(&pkg)).unwrap();
        let name = pkg.file_name().unwrap().to_string_lossy().into_owned();
        let nevra = &report.packages[0].nevra;
        assert!(name.ends_with(&format!("{nevra}.rpm")), "{name} vs {nevra}");
        let out = empty_root();
        sh(&format!(
            "cd {} && rpm2archive - < {} > payload.tgz && mkdir x && tar -C x -xpzf payload.tgz",
            q(out.path()),
            q(&pkg)
        ));
        assert_same_contents(&tree, &out.path().join("x"));
        // rpm2cpio only handles the classic newc payloads.
        if name.starts_with("v4-") {
            let out = empty_root();
            sh(&format!(
                "cd {} && rpm2cpio {} | cpio -idm --quiet",
                q(out.path()),
                q(&pkg)
            ));
            assert_same_contents(&tree, out.path());
        }
    }
}

#[test]
fn hard_links_and_capabilities_and_owners_from_names() {
    let dir = fixture_dir();
    let mut tree = tree_with_accounts();
    let pkgs = [
        dir.join("v6-rpm-hardlinks-1.0-1.noarch.rpm"),
        dir.join("v6-rpm-file-attrs-1.0-1.noarch.rpm"),
    ];
    let report = rpm::apply(&mut tree, &pkgs).unwrap();
    let a1 = tree.lookup(b"/opt/rpm-hardlinks/alpha-1").unwrap();
    assert_eq!(tree.lookup(b"/opt/rpm-hardlinks/alpha-3"), Some(a1));
    assert_eq!(tree.link_counts()[a1.index()], 3);
    assert_eq!(
        tree_file(&tree, b"/opt/rpm-hardlinks/beta-2"),
        b"shared-content-beta\n"
    );
    let owned = tree.inode(
        tree.lookup(b"/opt/rpm-file-attrs/different-owner-and-group")
            .unwrap(),
    );
    assert_eq!((owned.meta.uid, owned.meta.gid), (1001, 2002));
    // Capabilities: the same bytes as setcap writes for the same text.
    let caps = tree.inode(tree.lookup(b"/opt/rpm-file-attrs/with_caps").unwrap());
    let probe = empty_root();
    let f = probe.path().join("f");
    fs::write(&f, b"x").unwrap();
    sh(&format!(
        "setcap 'cap_sys_ptrace,cap_sys_admin=ep' {}",
        q(&f)
    ));
    let expected = imgbuild_init::xattr::read(&f).unwrap();
    assert_eq!(caps.meta.xattrs, expected);
    assert_eq!(
        report.entries,
        report.packages.iter().map(|p| p.files).sum::<u64>()
    );
}

#[test]
fn unknown_owner_names_fall_back_to_root_with_a_note() {
    let mut tree = empty_tree();
    let pkg = fixture_dir().join("v6-rpm-file-attrs-1.0-1.noarch.rpm");
    let report = rpm::apply(&mut tree, &[pkg]).unwrap();
    let owned = tree.inode(
        tree.lookup(b"/opt/rpm-file-attrs/different-owner-and-group")
            .unwrap(),
    );
    assert_eq!((owned.meta.uid, owned.meta.gid), (0, 0));
    let note = report.notes.join("\n");
    assert!(
        note.contains("user jane") && note.contains("group bob"),
        "{note}"
    );
}

// ---- packages built here with rpmbuild ----

const SPEC: &str = r#"
Name: imgtest
Version: 1.0
Release: 1
Summary: imgbuild test package
License: MIT
BuildArch: noarch
%global debug_package %{nil}
%global __os_install_post %{nil}

%description
Files of every kind for the imgbuild RPM reader.

%install
mkdir -p %{buildroot}/usr/bin %{buildroot}/etc/imgtest %{buildroot}/srv/data %{buildroot}/var/spool/imgtest %{buildroot}/usr/share/imgtest %{buildroot}/lib/imgtest
printf '#!/bin/sh\necho hi\n' > %{buildroot}/usr/bin/imgtest
ln %{buildroot}/usr/bin/imgtest %{buildroot}/usr/bin/imgtest-hard
ln %{buildroot}/usr/bin/imgtest %{buildroot}/usr/bin/imgtest-hard2
ln -s imgtest %{buildroot}/usr/bin/imgtest-link
printf 'ping\n' > %{buildroot}/usr/bin/ping6
printf 'root\n' > %{buildroot}/usr/bin/suid
printf 'key=value\n' > %{buildroot}/etc/imgtest/imgtest.conf
printf 'secret\n' > %{buildroot}/srv/data/secret
printf 'orphan\n' > %{buildroot}/srv/data/orphan
@MKFIFO@
seq 1 30000 > %{buildroot}/usr/share/imgtest/numbers
: > %{buildroot}/usr/share/imgtest/empty
printf 'module\n' > %{buildroot}/lib/imgtest/mod.ko

%pre
echo pre
%post -p /sbin/ldconfig
%preun
echo preun
%posttrans
echo posttrans

%files
%attr(0755,root,root) /usr/bin/imgtest
%attr(0755,root,root) /usr/bin/imgtest-hard
%attr(0755,root,root) /usr/bin/imgtest-hard2
/usr/bin/imgtest-link
%caps(cap_net_raw=ep) %attr(0755,root,root) /usr/bin/ping6
%attr(4755,root,root) /usr/bin/suid
%config(noreplace) /etc/imgtest/imgtest.conf
%dir %attr(0750,jane,bob) /srv/data
%attr(0640,jane,bob) /srv/data/secret
%attr(0644,nosuchuser,nosuchgroup) /srv/data/orphan
%dir /var/spool/imgtest
@FIFO@
%attr(0666,root,root) %dev(c,1,3) /dev/imgnull
%attr(0660,root,jane) %dev(b,7,5) /dev/imgdisk
%ghost /var/log/imgtest.log
%doc /usr/share/imgtest/numbers
/usr/share/imgtest/empty
%dir /usr/share/imgtest
/lib/imgtest
"#;

/// Gives both roots a `/dev`, as every real root has (rpm does not create it for device nodes),
/// and a `/srv/data` with other metadata than the package gives it (rpm applies the package's).
fn with_dev(tree: &mut Tree, root: &Path) {
    tree.insert(b"dev", Inode::new(Meta::root(0o755, 0), Kind::empty_dir()))
        .unwrap();
    let mut data = Inode::new(Meta::root(0o700, 0), Kind::empty_dir());
    (data.meta.uid, data.meta.gid) = (7, 7);
    tree.insert(b"srv/data", data).unwrap();
    fs::create_dir_all(root.join("srv/data")).unwrap();
    fs::create_dir(root.join("dev")).unwrap();
    sh(&format!(
        "cd {} && chmod 755 dev srv && chmod 700 srv/data && chown 7:7 srv/data",
        q(root)
    ));
}

/// Builds the test package with the given `_binary_payload` (e.g. `w9.gzdio`), with a fifo or
/// without (rpm 4.18 hangs opening a fifo it installs, so install comparisons leave it out).
fn build_rpm(dir: &Path, payload: &str, fifo: bool) -> PathBuf {
    let spec = dir.join("imgtest.spec");
    let (mk, listed) = if fifo {
        (
            "mkfifo %{buildroot}/var/spool/imgtest/fifo",
            "/var/spool/imgtest/fifo",
        )
    } else {
        ("", "")
    };
    fs::write(
        &spec,
        SPEC.replace("@MKFIFO@", mk).replace("@FIFO@", listed),
    )
    .unwrap();
    sh(&format!(
        "rpmbuild -bb --quiet --nodeps --define '_topdir {}' --define '_binary_payload {payload}' \
         --define '_build_id_links none' {} 2>&1",
        dir.display(),
        q(&spec)
    ));
    let rpm = dir.join("RPMS/noarch/imgtest-1.0-1.noarch.rpm");
    assert!(rpm.exists(), "rpmbuild made no package");
    rpm
}

#[test]
fn rpmbuild_packages_of_every_compressor_install_like_rpm() {
    assert!(is_root(), "device nodes need root");
    for (payload, compressor) in [
        ("w9.gzdio", "gzip"),
        ("w6.xzdio", "xz"),
        ("w3.zstdio", "zstd"),
        ("w9.bzdio", "bzip2"),
        ("w2.lzdio", "lzma"),
        ("w.ufdio", ""),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let pkg = build_rpm(dir.path(), payload, false);
        let info = rpm::read_package(&pkg).unwrap();
        assert_eq!(
            info.payload_compressor.as_deref().unwrap_or(""),
            compressor.trim()
        );
        let mut tree = compare_with_rpm(std::slice::from_ref(&pkg), with_dev);
        check_dump(&mut tree, &pkg);
        // Spot checks beyond the digest.
        let hard = tree.lookup(b"/usr/bin/imgtest").unwrap();
        assert_eq!(tree.lookup(b"/usr/bin/imgtest-hard2"), Some(hard));
        let data = tree.inode(tree.lookup(b"/srv/data").unwrap());
        assert_eq!(
            (data.meta.mode, data.meta.uid, data.meta.gid),
            (0o750, 1001, 2002)
        );
        assert!(matches!(
            tree.inode(tree.lookup(b"/dev/imgdisk").unwrap()).kind,
            Kind::BlockDevice { major: 7, minor: 5 }
        ));
        assert!(tree.lookup(b"/var/log/imgtest.log").is_none());
        let ping = tree.inode(tree.lookup(b"/usr/bin/ping6").unwrap());
        assert_eq!(ping.meta.xattrs[0].0, b"security.capability");
    }
}

#[test]
fn scriptlets_are_listed_as_rpm_lists_them_and_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = build_rpm(dir.path(), "w9.gzdio", false);
    let info = rpm::read_package(&pkg).unwrap();
    let mut theirs: Vec<&str> = sh(&format!("rpm -qp --scripts {} 2>/dev/null", q(&pkg)))
        .lines()
        .filter(|l| l.contains(" scriptlet") || l.contains(" program:"))
        .map(|l| match l.split_whitespace().next().unwrap() {
            "preinstall" => "%pre",
            "postinstall" => "%post",
            "preuninstall" => "%preun",
            "postuninstall" => "%postun",
            "pretrans" => "%pretrans",
            "posttrans" => "%posttrans",
            other => panic!("unexpected rpm output {other}"),
        })
        .collect();
    let mut ours: Vec<&str> = info
        .scriptlets
        .iter()
        .map(|s| s.split_whitespace().next().unwrap())
        .collect();
    ours.sort_unstable();
    theirs.sort_unstable();
    assert_eq!(ours, theirs);
    assert!(
        info.scriptlets
            .contains(&"%post (/sbin/ldconfig)".to_string()),
        "{:?}",
        info.scriptlets
    );
    let report = rpm::apply(&mut tree_with_accounts(), &[pkg]).unwrap();
    let note = report.notes.join("\n");
    assert!(
        note.contains("scriptlets not run: %pre (/bin/sh), %post (/sbin/ldconfig), %posttrans"),
        "{note}"
    );
    assert!(!note.contains("%preun"), "{note}");
}

#[test]
fn fifos_match_rpm_dump_and_rpm2cpio() {
    let dir = tempfile::tempdir().unwrap();
    let pkg = build_rpm(dir.path(), "w6.xzdio", true);
    let mut tree = tree_with_accounts();
    rpm::apply(&mut tree, std::slice::from_ref(&pkg)).unwrap();
    assert!(matches!(
        tree.inode(tree.lookup(b"/var/spool/imgtest/fifo").unwrap())
            .kind,
        Kind::Fifo
    ));
    check_dump(&mut tree, &pkg);
    let out = empty_root();
    sh(&format!(
        "cd {} && rpm2cpio {} | cpio -idm --quiet && test -p var/spool/imgtest/fifo",
        q(out.path()),
        q(&pkg)
    ));
    assert_same_contents(&tree, out.path());
}

#[test]
fn packages_write_through_directory_symlinks_of_the_root() {
    assert!(is_root());
    let dir = tempfile::tempdir().unwrap();
    let pkg = build_rpm(dir.path(), "w9.gzdio", false);
    // A merged-/usr root: /lib -> usr/lib. rpm installs /lib/imgtest into /usr/lib/imgtest.
    let tree = compare_with_rpm(std::slice::from_ref(&pkg), |tree, root| {
        with_dev(tree, root);
        tree.insert(
            b"usr/lib",
            Inode::new(Meta::root(0o755, 0), Kind::empty_dir()),
        )
        .unwrap();
        tree.insert(
            b"lib",
            Inode::new(Meta::root(0o777, 0), Kind::Symlink((*b"usr/lib").into())),
        )
        .unwrap();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        sh(&format!("chmod 755 {0}/usr {0}/usr/lib", q(root)));
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    });
    assert!(matches!(
        tree.inode(tree.lookup(b"/lib").unwrap()).kind,
        Kind::Symlink(_)
    ));
    assert!(tree.lookup(b"/usr/lib/imgtest/mod.ko").is_some());
}

#[test]
fn damaged_packages_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut sizes = HashMap::new();
    for pkg in fixtures() {
        let bytes = fs::read(&pkg).unwrap();
        sizes.insert(pkg.clone(), bytes.len());
        let bad = dir.path().join("bad.rpm");
        let step = (bytes.len() / 97).max(1);
        for cut in (0..bytes.len().saturating_sub(4)).step_by(step) {
            fs::write(&bad, &bytes[..cut]).unwrap();
            let mut tree = empty_tree();
            let e = rpm::apply(&mut tree, std::slice::from_ref(&bad)).unwrap_err();
            assert!(
                e.to_string().contains("bad.rpm"),
                "{}: cut {cut}: {e}",
                pkg.display()
            );
        }
        // Flipped bytes anywhere: an error or a tree, never a panic.
        for at in (0..bytes.len()).step_by(step) {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x55;
            fs::write(&bad, &flipped).unwrap();
            let _ = rpm::apply(&mut empty_tree(), std::slice::from_ref(&bad));
        }
    }
    assert!(!sizes.is_empty());
}

#[test]
fn payload_bombs_are_bounded() {
    let pkg = fixture_dir().join("xz-rpm-basic-2.3.4-5.el9.noarch.rpm");
    let e = rpm::apply_with_limit(&mut empty_tree(), &[pkg], 100).unwrap_err();
    assert!(matches!(e, RpmError::Decompress(_)), "{e}");
    assert!(e.to_string().contains("IMGBUILD_MAX_EXPANDED"), "{e}");
}
