//! The tar layer against GNU tar: archives made by GNU tar in every format and compression are
//! applied to a tree and extracted by GNU tar (as root, numeric owners, xattrs); both roots must
//! have the same rootfs digest. Hostile archives (truncated, damaged, escaping, bombs) must fail
//! with a clear error, quickly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources_common;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use imgbuild::sources::tar::{self, TarError};
use imgbuild::sources::Owner;
use imgbuild::tree::Kind;
use sources_common::*;

/// A source tree with every kind of entry GNU tar can store. `rich` adds what ustar cannot hold
/// (long names, large ids, xattrs).
fn make_source(rich: bool) -> tempfile::TempDir {
    let src = empty_root();
    let s = q(src.path());
    sh(&format!(
        "cd {s} && mkdir -p etc usr/bin usr/lib var/empty dev srv/data \
         && printf 'box\\n' > etc/hostname && chmod 644 etc/hostname \
         && seq 1 50000 > usr/lib/numbers && : > etc/empty \
         && printf '#!/bin/sh\\n' > usr/bin/tool && chmod 4755 usr/bin/tool \
         && ln usr/bin/tool usr/bin/tool-hard && ln usr/bin/tool usr/bin/tool-hard2 \
         && ln -s usr/bin bin && ln -s /etc/hostname etc/abs-link && ln -s ../nowhere dangling \
         && mkfifo var/fifo && mknod dev/null c 1 3 && mknod dev/loop5 b 7 5 \
         && mknod dev/big c 300 70000 \
         && chmod 1777 var/empty && chmod 700 srv/data && chown 1000:100 srv/data \
         && printf 'x' > srv/data/owned && chown 1001:1002 srv/data/owned \
         && truncate -s 30M usr/lib/sparse && printf head | dd of=usr/lib/sparse conv=notrunc status=none \
         && printf tail | dd of=usr/lib/sparse bs=1 seek=20971520 conv=notrunc status=none \
         && printf 'ümlaut' > 'etc/spaced ü name'"
    ));
    if rich {
        let long_dir = "d".repeat(120);
        let long_file = "f".repeat(200);
        sh(&format!(
            "cd {s} && mkdir -p {long_dir}/{long_dir} && printf long > {long_dir}/{long_dir}/{long_file} \
             && ln -s {long_dir}/{long_dir}/{long_file} long-link-{long_file} \
             && ln {long_dir}/{long_dir}/{long_file} hard-{long_file} \
             && printf big > bigid && chown 3000000000:4000000 bigid \
             && printf ping > usr/bin/ping && setcap cap_net_raw=ep usr/bin/ping \
             && python3 -c \"import os; os.setxattr('etc/hostname', 'user.note', b'a\\nb=c'); os.setxattr('usr/bin', 'user.dir', b'1')\""
        ));
    }
    src
}

/// Archives `src` with GNU tar; `flags` choose format and compression.
fn make_archive(src: &Path, out: &Path, flags: &str) {
    sh(&format!(
        "tar {flags} --xattrs --xattrs-include='*' -S --numeric-owner -cf {} -C {} .",
        q(out),
        q(src)
    ));
}

/// Applies an archive to a fresh tree and extracts it with GNU tar; the digests must match.
fn compare_with_gnu_tar(archive: &Path) -> imgbuild::tree::Tree {
    let mut tree = empty_tree();
    let report = tar::apply(&mut tree, archive, None).unwrap();
    assert!(report.entries > 5);
    let out = empty_root();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --numeric-owner -xpf {} -C {}",
        q(archive),
        q(out.path())
    ));
    let ours = tree_digest_of(&mut tree);
    if ours != dir_digest(out.path()) {
        panic!(
            "digest differs for {}\nours:\n{}\ntar:\n{}",
            archive.display(),
            describe_tree(&tree).join("\n"),
            describe_dir(out.path())
        );
    }
    assert_same_contents(&tree, out.path());
    tree
}

#[test]
fn every_format_and_compression_matches_gnu_tar() {
    assert!(is_root(), "device nodes and owners need root");
    let rich = make_source(true);
    let plain = make_source(false);
    let work = tempfile::tempdir().unwrap();
    let compressions = [
        ("", "tar"),
        ("-z", "tar.gz"),
        ("-J", "tar.xz"),
        ("--zstd", "tar.zst"),
        ("-j", "tar.bz2"),
    ];
    for (format, src) in [("gnu", &rich), ("pax", &rich), ("ustar", &plain)] {
        for (flag, ext) in compressions {
            let archive = work.path().join(format!("{format}.{ext}"));
            make_archive(src.path(), &archive, &format!("--format={format} {flag}"));
            let tree = compare_with_gnu_tar(&archive);
            // Spot checks the digest also covers.
            let tool = tree.lookup(b"/usr/bin/tool").unwrap();
            assert_eq!(tree.lookup(b"/usr/bin/tool-hard2"), Some(tool));
            assert_eq!(tree.inode(tool).meta.mode, 0o4755);
            assert!(matches!(
                tree.inode(tree.lookup(b"/dev/big").unwrap()).kind,
                Kind::CharDevice {
                    major: 300,
                    minor: 70000
                }
            ));
            if format != "ustar" {
                let ping = tree.inode(tree.lookup(b"/usr/bin/ping").unwrap());
                assert_eq!(ping.meta.xattrs[0].0, b"security.capability");
                assert_eq!(
                    tree.inode(tree.lookup(b"/bigid").unwrap()).meta.uid,
                    3_000_000_000
                );
            }
        }
    }
}

#[test]
fn sparse_members_of_every_sparse_format_keep_their_holes() {
    let src = make_source(false);
    let work = tempfile::tempdir().unwrap();
    for (name, flags) in [
        ("gnu", "--format=gnu"),
        ("pax00", "--format=pax --sparse-version=0.0"),
        ("pax01", "--format=pax --sparse-version=0.1"),
        ("pax10", "--format=pax --sparse-version=1.0"),
        ("pax10xz", "--format=pax --sparse-version=1.0 -J"),
    ] {
        let archive = work.path().join(format!("{name}.tar"));
        make_archive(src.path(), &archive, flags);
        assert!(
            fs::metadata(&archive).unwrap().len() < 10 << 20,
            "{name}: not sparse"
        );
        let tree = compare_with_gnu_tar(&archive);
        let Kind::File(f) = &tree.inode(tree.lookup(b"/usr/lib/sparse").unwrap()).kind else {
            panic!()
        };
        assert_eq!(f.size, 30 << 20);
        let r = f.content.open(f.size, "sparse").unwrap();
        let data: u64 = r.data_ranges().unwrap().iter().map(|(s, e)| e - s).sum();
        assert!(
            data < 1 << 20,
            "{name}: {data} bytes of data, holes were filled"
        );
    }
}

#[test]
fn owner_override_applies_to_every_entry() {
    let src = make_source(false);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar.gz");
    make_archive(src.path(), &archive, "--format=gnu -z");
    let mut tree = empty_tree();
    tar::apply(&mut tree, &archive, Some(Owner { uid: 0, gid: 0 })).unwrap();
    for (path, id) in tree.walk() {
        let m = &tree.inode(id).meta;
        assert_eq!((m.uid, m.gid), (0, 0), "{}", String::from_utf8_lossy(&path));
    }
}

fn tar_of(dir: &Path, name: &str, script: &str) -> PathBuf {
    let archive = dir.join(name);
    sh(&format!("cd {} && {script}", q(dir)));
    archive
}

fn apply_err(archive: &Path) -> TarError {
    let mut tree = empty_tree();
    tar::apply_with_limit(&mut tree, archive, None, 1 << 30).unwrap_err()
}

#[test]
fn hostile_archives_made_by_gnu_tar_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path();
    sh(&format!(
        "cd {} && mkdir -p w/sub && printf evil > w/evil && ln -s /etc w/lib && printf f > w/f",
        q(p)
    ));
    let long = "n".repeat(256);
    let cases = [
        (tar_of(p, "dotdot.tar", "cd w/sub && tar -cPf ../../dotdot.tar ../evil"), "`..`"),
        (tar_of(p, "abs.tar", &format!("tar -cPf abs.tar {}/w/evil", p.display())), "absolute"),
        (
            tar_of(p, "through.tar", "cd w && tar -cf ../through.tar lib && tar -rf ../through.tar --transform 's,^f$,lib/passwd,' f"),
            "through the symlink",
        ),
        (
            tar_of(p, "twice.tar", "cd w && tar -cf ../twice.tar sub && tar -rf ../twice.tar --transform 's,^f$,sub,' f"),
            "appears twice",
        ),
        (
            tar_of(p, "long.tar", &format!("cd w && tar --format=gnu -cf ../long.tar --transform 's,^f$,{long},' f")),
            "255",
        ),
    ];
    for (archive, expect) in cases {
        let e = apply_err(&archive);
        let text = e.to_string();
        assert!(text.contains(expect), "{}: {text}", archive.display());
        assert!(text.contains(&archive.display().to_string()), "{text}");
        assert!(text.contains("at byte"), "{text}");
    }
}

#[test]
fn truncated_and_damaged_archives_fail_with_offsets() {
    let src = make_source(false);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.tar");
    make_archive(src.path(), &archive, "--format=pax");
    let bytes = fs::read(&archive).unwrap();
    // Everything up to the last member block; after it come the zero blocks of the end marker.
    let last = bytes.iter().rposition(|&b| b != 0).unwrap();
    let end = (last + 1).next_multiple_of(512);
    let bad = work.path().join("bad.tar");
    let started = Instant::now();
    let mut cuts: Vec<usize> = (0..=end).step_by(512).collect();
    cuts.extend((0..end).step_by(512).map(|c| c + 100));
    for cut in cuts {
        fs::write(&bad, &bytes[..cut]).unwrap();
        let text = apply_err(&bad).to_string();
        assert!(
            text.contains("bad.tar") && text.contains("at byte"),
            "cut {cut}: {text}"
        );
    }
    // Flip one bit in every header-ish position of the first blocks: an error or a tree.
    for at in (0..end.min(64 * 512)).step_by(37) {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x10;
        fs::write(&bad, &flipped).unwrap();
        let _ = tar::apply_with_limit(&mut empty_tree(), &bad, None, 1 << 30);
    }
    assert!(
        started.elapsed().as_secs() < 60,
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn claimed_sizes_beyond_the_end_are_refused() {
    let d = tempfile::tempdir().unwrap();
    sh(&format!(
        "cd {} && printf small > f && tar --format=ustar -cf a.tar f",
        q(d.path())
    ));
    let mut bytes = fs::read(d.path().join("a.tar")).unwrap();
    bytes[124..136].copy_from_slice(format!("{:011o}\0", 10_000_000).as_bytes());
    bytes[148..156].copy_from_slice(b"        ");
    let sum: u32 = bytes[..512].iter().map(|&b| u32::from(b)).sum();
    bytes[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let bad = d.path().join("big.tar");
    fs::write(&bad, &bytes).unwrap();
    let text = apply_err(&bad).to_string();
    assert!(
        text.contains("claims 10000000 bytes") && text.contains("at byte 0"),
        "{text}"
    );
}

#[test]
fn decompression_bombs_stop_at_the_limit_quickly() {
    use std::io::Write;
    let d = tempfile::tempdir().unwrap();
    // One bzip2 stream of 64 MiB of zeros, repeated: about a terabyte behind a small file.
    let zeros = vec![0u8; 64 << 20];
    let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
    e.write_all(&zeros).unwrap();
    let member = e.finish().unwrap();
    let bomb = d.path().join("bomb.tar.bz2");
    let mut f = fs::File::create(&bomb).unwrap();
    for _ in 0..16384 {
        f.write_all(&member).unwrap();
    }
    drop(f);
    assert!(fs::metadata(&bomb).unwrap().len() < 16 << 20);
    // And a gzip one of a few GiB, multi-member.
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    g.write_all(&zeros).unwrap();
    let gz_member = g.finish().unwrap();
    let gz = d.path().join("bomb.tar.gz");
    fs::write(&gz, gz_member.repeat(64)).unwrap();
    for archive in [bomb, gz] {
        let started = Instant::now();
        let e = tar::apply_with_limit(&mut empty_tree(), &archive, None, 1 << 30).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("IMGBUILD_MAX_EXPANDED") && text.contains("bomb"),
            "{text}"
        );
        assert!(
            started.elapsed().as_secs() < 60,
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn libarchive_xattr_records_match_bsdtar() {
    assert!(is_root());
    let src = make_source(true);
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("bsd.tar");
    sh(&format!(
        "bsdtar --format=pax --xattrs --numeric-owner -cf {} -C {} .",
        q(&archive),
        q(src.path())
    ));
    // bsdtar writes each xattr twice; hide the SCHILY copies (same length, unknown key) so that
    // only the base64 LIBARCHIVE records are left to decode.
    let bytes = fs::read(&archive).unwrap();
    let hidden = bytes.windows(13).filter(|w| *w == b"SCHILY.xattr.").count();
    assert!(hidden >= 3, "bsdtar stored {hidden} SCHILY xattrs");
    let mut patched = bytes.clone();
    let mut i = 0;
    while i + 13 <= patched.len() {
        if &patched[i..i + 13] == b"SCHILY.xattr." {
            patched[i..i + 13].copy_from_slice(b"SCHILY.xattX.");
        }
        i += 1;
    }
    let only_libarchive = work.path().join("libarchive-only.tar");
    fs::write(&only_libarchive, &patched).unwrap();
    let mut tree = empty_tree();
    tar::apply(&mut tree, &only_libarchive, None).unwrap();
    let ping = tree.inode(tree.lookup(b"/usr/bin/ping").unwrap());
    assert_eq!(ping.meta.xattrs[0].0, b"security.capability");
    let out = empty_root();
    sh(&format!(
        "bsdtar --xattrs --numeric-owner -xpf {} -C {}",
        q(&archive),
        q(out.path())
    ));
    let ours = tree_digest_of(&mut tree);
    if ours != dir_digest(out.path()) {
        panic!(
            "digest differs\nours:\n{}\nbsdtar:\n{}",
            describe_tree(&tree).join("\n"),
            describe_dir(out.path())
        );
    }
}

/// A real tarball given by `IMGBUILD_TEST_TARBALL` (an OpenVZ template, say): applied and timed,
/// then compared with GNU tar's extraction. Run with `--ignored`.
#[test]
#[ignore = "needs IMGBUILD_TEST_TARBALL"]
fn real_tarball_matches_gnu_tar() {
    let Some(path) = std::env::var_os("IMGBUILD_TEST_TARBALL") else {
        return;
    };
    let path = PathBuf::from(path);
    let started = Instant::now();
    let mut tree = empty_tree();
    let report = tar::apply(&mut tree, &path, None).unwrap();
    let applied = started.elapsed();
    let ours = tree_digest_of(&mut tree);
    let hashed = started.elapsed() - applied;
    eprintln!(
        "{}: {} entries applied in {applied:?}, contents hashed in {hashed:?}",
        path.display(),
        report.entries
    );
    let out = empty_root();
    sh(&format!(
        "tar --xattrs --xattrs-include='*' --numeric-owner -xpf {} -C {}",
        q(&path),
        q(out.path())
    ));
    assert_eq!(ours, dir_digest(out.path()));
}
