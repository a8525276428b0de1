//! The deb layer against dpkg: packages built with `dpkg-deb --build` (and assembled with `ar`
//! for compressors dpkg-deb does not write) are installed both by `dpkg --root` and by our
//! reader; the roots must have the same rootfs digest. Damaged ar containers must fail cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources_common;

use std::fs;
use std::path::{Path, PathBuf};

use imgbuild::sources::deb;
use imgbuild::tree::{Inode, Kind, Meta, Tree};
use sources_common::*;

/// A package directory: control, a postinst, and files of several kinds.
fn package_dir(base: &Path, with_lib: bool) -> PathBuf {
    let dir = base.join("pkg");
    let d = q(&dir);
    sh(&format!(
        "mkdir -p {d}/DEBIAN {d}/usr/bin {d}/usr/share/doc/imgtest {d}/etc/imgtest {d}/var/lib/imgtest \
         && printf 'Package: imgtest\\nVersion: 1:1.0-1\\nArchitecture: all\\nMaintainer: t <t@example.org>\\nDescription: test\\n' > {d}/DEBIAN/control \
         && printf '#!/bin/sh\\nexit 0\\n' > {d}/DEBIAN/postinst && chmod 755 {d}/DEBIAN/postinst \
         && printf '#!/bin/sh\\necho hi\\n' > {d}/usr/bin/imgtest && chmod 755 {d}/usr/bin/imgtest \
         && ln {d}/usr/bin/imgtest {d}/usr/bin/imgtest-hard \
         && ln -s imgtest {d}/usr/bin/imgtest-link \
         && seq 1 20000 > {d}/usr/share/doc/imgtest/numbers \
         && printf 'k=v\\n' > {d}/etc/imgtest/conf && chmod 640 {d}/etc/imgtest/conf \
         && chown 1001:2002 {d}/var/lib/imgtest && chmod 2770 {d}/var/lib/imgtest \
         && printf 's' > {d}/usr/bin/suid && chmod 4755 {d}/usr/bin/suid"
    ));
    if with_lib {
        sh(&format!(
            "mkdir -p {d}/lib/imgtest && printf mod > {d}/lib/imgtest/mod.ko"
        ));
    }
    dir
}

/// Installs with dpkg into `root` and drops dpkg's database, which is no part of the comparison.
fn dpkg_install(root: &Path, pkg: &Path) {
    let r = q(root);
    sh(&format!(
        "mkdir -p {r}/var/lib/dpkg/info {r}/var/lib/dpkg/updates && touch {r}/var/lib/dpkg/status \
         && dpkg --root={r} --force-all --no-triggers --force-script-chrootless -i {} >/dev/null 2>&1 \
         ; test -f {r}/usr/bin/imgtest && rm -rf {r}/var/lib/dpkg",
        q(pkg)
    ));
    // /var and /var/lib existed only for dpkg's database unless the package has them.
    for dir in ["var/lib", "var"] {
        let _ = fs::remove_dir(root.join(dir));
    }
}

fn compare_with_dpkg(pkg: &Path, prepare: impl Fn(&mut Tree, &Path)) -> Tree {
    let mut tree = empty_tree();
    let root = empty_root();
    prepare(&mut tree, root.path());
    let report = deb::apply(&mut tree, &[pkg.to_path_buf()]).unwrap();
    let fields = sh(&format!(
        "dpkg-deb -f {} Package Version Architecture",
        q(pkg)
    ));
    let get = |k: &str| {
        fields
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k}: ")))
            .unwrap()
            .to_string()
    };
    assert_eq!(
        report.packages[0].nevra,
        format!(
            "{}_{}_{}",
            get("Package"),
            get("Version"),
            get("Architecture")
        )
    );
    assert!(
        report.notes.iter().any(|n| n.contains("postinst")),
        "{:?}",
        report.notes
    );
    dpkg_install(root.path(), pkg);
    let ours = tree_digest_of(&mut tree);
    if ours != dir_digest(root.path()) {
        panic!(
            "digest differs for {}\nours:\n{}\ndpkg:\n{}",
            pkg.display(),
            describe_tree(&tree).join("\n"),
            describe_dir(root.path())
        );
    }
    tree
}

#[test]
fn dpkg_deb_packages_of_every_compressor_install_like_dpkg() {
    assert!(is_root(), "owners need root");
    for z in ["gzip", "xz", "zstd", "none"] {
        let work = tempfile::tempdir().unwrap();
        let dir = package_dir(work.path(), false);
        let pkg = work.path().join(format!("imgtest-{z}.deb"));
        sh(&format!(
            "dpkg-deb --build -Z{z} {} {} >/dev/null",
            q(&dir),
            q(&pkg)
        ));
        let tree = compare_with_dpkg(&pkg, |_, _| {});
        let tool = tree.lookup(b"/usr/bin/imgtest").unwrap();
        assert_eq!(tree.lookup(b"/usr/bin/imgtest-hard"), Some(tool));
        let state = tree.inode(tree.lookup(b"/var/lib/imgtest").unwrap());
        assert_eq!(
            (state.meta.mode, state.meta.uid, state.meta.gid),
            (0o2770, 1001, 2002)
        );
    }
}

#[test]
fn ar_assembled_packages_with_bzip2_and_lzma_data() {
    assert!(is_root());
    for (ext, cmd) in [
        ("bz2", "bzip2 -c"),
        ("lzma", "xz --format=lzma -c"),
        ("", "cat"),
    ] {
        let work = tempfile::tempdir().unwrap();
        let dir = package_dir(work.path(), false);
        let w = q(work.path());
        let d = q(&dir);
        let data = if ext.is_empty() {
            "data.tar".to_string()
        } else {
            format!("data.tar.{ext}")
        };
        sh(&format!(
            "cd {w} && printf '2.0\\n' > debian-binary \
             && tar --numeric-owner -C {d}/DEBIAN -czf control.tar.gz . \
             && tar --numeric-owner -C {d} --exclude=./DEBIAN -cf - . | {cmd} > {data} \
             && ar rc imgtest.deb debian-binary control.tar.gz {data}"
        ));
        compare_with_dpkg(&work.path().join("imgtest.deb"), |_, _| {});
    }
}

#[test]
fn existing_directories_and_directory_symlinks_are_kept() {
    assert!(is_root());
    let work = tempfile::tempdir().unwrap();
    let dir = package_dir(work.path(), true);
    let pkg = work.path().join("imgtest.deb");
    sh(&format!(
        "dpkg-deb --build -Zxz {} {} >/dev/null",
        q(&dir),
        q(&pkg)
    ));
    let tree = compare_with_dpkg(&pkg, |tree, root| {
        let mut usr = Inode::new(Meta::root(0o700, 0), Kind::empty_dir());
        (usr.meta.uid, usr.meta.gid) = (7, 7);
        tree.insert(b"usr", usr).unwrap();
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
        sh(&format!(
            "cd {} && mkdir -p usr/lib && chmod 700 usr && chown 7:7 usr && chmod 755 usr/lib && ln -s usr/lib lib",
            q(root)
        ));
    });
    assert!(tree.lookup(b"/usr/lib/imgtest/mod.ko").is_some());
    assert_eq!(tree.inode(tree.lookup(b"/usr").unwrap()).meta.uid, 7);
}

#[test]
fn owner_names_map_through_the_trees_accounts() {
    let work = tempfile::tempdir().unwrap();
    let dir = package_dir(work.path(), false);
    let w = q(work.path());
    let d = q(&dir);
    // Names unknown to the build host, with other numeric ids.
    sh(&format!(
        "cd {w} && printf '2.0\\n' > debian-binary && tar -C {d}/DEBIAN -czf control.tar.gz . \
         && tar -C {d} --exclude=./DEBIAN --owner=jane:5000 --group=bob:6000 -cJf data.tar.xz . \
         && ar rc named.deb debian-binary control.tar.gz data.tar.xz"
    ));
    let pkg = work.path().join("named.deb");
    let mut tree = tree_with_accounts();
    deb::apply(&mut tree, std::slice::from_ref(&pkg)).unwrap();
    let m = &tree.inode(tree.lookup(b"/usr/bin/imgtest").unwrap()).meta;
    assert_eq!((m.uid, m.gid), (1001, 2002));
    // Without the names in the tree, the numeric ids stay.
    let mut bare = empty_tree();
    deb::apply(&mut bare, &[pkg]).unwrap();
    let m = &bare.inode(bare.lookup(b"/usr/bin/imgtest").unwrap()).meta;
    assert_eq!((m.uid, m.gid), (5000, 6000));
}

#[test]
fn damaged_packages_fail_cleanly() {
    let work = tempfile::tempdir().unwrap();
    let dir = package_dir(work.path(), false);
    let pkg = work.path().join("good.deb");
    sh(&format!(
        "dpkg-deb --build -Zxz {} {} >/dev/null",
        q(&dir),
        q(&pkg)
    ));
    let bytes = fs::read(&pkg).unwrap();
    let bad = work.path().join("bad.deb");
    for cut in (0..bytes.len() - 1).step_by(7) {
        fs::write(&bad, &bytes[..cut]).unwrap();
        let e = deb::apply(&mut empty_tree(), std::slice::from_ref(&bad)).unwrap_err();
        assert!(e.to_string().contains("bad.deb"), "cut {cut}: {e}");
    }
    // Every byte of the ar headers (magic and the first two member headers) damaged.
    for at in 0..8 + 60 + 4 + 60 {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x41;
        fs::write(&bad, &flipped).unwrap();
        if let Err(e) = deb::apply(&mut empty_tree(), std::slice::from_ref(&bad)) {
            assert!(e.to_string().contains("bad.deb"), "byte {at}: {e}");
        }
    }
    let mut wrong = bytes.clone();
    wrong[8 + 60..8 + 64].copy_from_slice(b"3.0\n");
    fs::write(&bad, &wrong).unwrap();
    let e = deb::apply(&mut empty_tree(), &[bad]).unwrap_err();
    assert!(e.to_string().contains("debian-binary"), "{e}");
}

/// Real packages named by `IMGBUILD_TEST_DEBS` (space-separated paths, e.g. from
/// `apt-get download hello coreutils`): each applied to an empty tree must equal dpkg-deb's own
/// data archive extracted by GNU tar. Run with `--ignored`.
#[test]
#[ignore = "needs IMGBUILD_TEST_DEBS"]
fn real_debs_match_their_data_archives() {
    let Ok(list) = std::env::var("IMGBUILD_TEST_DEBS") else {
        return;
    };
    for pkg in list.split_whitespace().map(PathBuf::from) {
        let mut tree = empty_tree();
        let report = deb::apply(&mut tree, std::slice::from_ref(&pkg)).unwrap();
        let out = empty_root();
        sh(&format!(
            "dpkg-deb --fsys-tarfile {} | tar -xpf - --numeric-owner -C {}",
            q(&pkg),
            q(out.path())
        ));
        assert_eq!(
            tree_digest_of(&mut tree),
            dir_digest(out.path()),
            "{}",
            pkg.display()
        );
        eprintln!(
            "{}: {} entries, notes {:?}",
            report.packages[0].nevra, report.entries, report.notes
        );
    }
}
