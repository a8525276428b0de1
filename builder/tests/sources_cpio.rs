//! The cpio reader against GNU cpio: archives written by `cpio -o -H newc` and `-H crc` list the
//! same names as `cpio -t`, and applied to a tree give the same rootfs digest as `cpio -idm`
//! extracting them as root.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sources_common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use imgbuild::sources::cpio::{self, CpioItem, CpioReader};
use imgbuild::tree::ArchiveFile;
use sources_common::*;

fn make_source() -> tempfile::TempDir {
    let src = empty_root();
    sh(&format!(
        "cd {} && mkdir -p etc usr/bin dev var/empty && printf 'box\\n' > etc/hostname \
         && seq 1 3000 > etc/numbers && : > etc/empty \
         && printf '#!/bin/sh\\n' > usr/bin/tool && chmod 4755 usr/bin/tool \
         && ln usr/bin/tool usr/bin/tool-hard && ln usr/bin/tool usr/bin/tool-hard2 \
         && : > etc/e1 && ln etc/e1 etc/e2 \
         && ln -s usr/bin bin && ln -s /etc/hostname etc/abs && mkfifo var/fifo \
         && mknod dev/null c 1 3 && mknod dev/loop5 b 7 5 && chmod 1777 var/empty \
         && chown 1001:2002 etc/hostname && printf 's p' > 'etc/with space'",
        q(src.path())
    ));
    src
}

fn names_of(archive: &Path) -> Vec<String> {
    let file = fs::File::open(archive).unwrap();
    let len = file.metadata().unwrap().len();
    let mut reader = CpioReader::new(Arc::new(ArchiveFile::new("a", file)), 0, len);
    let mut names = Vec::new();
    while let Some(item) = reader.next_item(&mut |_| None).unwrap() {
        let CpioItem::Entry(e) = item else {
            panic!("stripped entry")
        };
        names.push(String::from_utf8(e.name).unwrap());
    }
    names
}

#[test]
fn newc_and_crc_archives_match_gnu_cpio() {
    assert!(is_root(), "device nodes and owners need root");
    let src = make_source();
    let work = tempfile::tempdir().unwrap();
    for (format, compress) in [
        ("newc", ""),
        ("crc", ""),
        ("newc", "| gzip"),
        ("newc", "| zstd -q"),
    ] {
        let archive = work.path().join(format!("a-{format}.cpio"));
        sh(&format!(
            "cd {} && find . | sort | cpio -o --quiet -H {format} {compress} > {}",
            q(src.path()),
            q(&archive)
        ));
        if compress.is_empty() {
            let theirs: Vec<String> = sh(&format!("cpio -t --quiet < {}", q(&archive)))
                .lines()
                .map(str::to_string)
                .collect();
            assert_eq!(names_of(&archive), theirs, "{format}");
        }
        let mut tree = empty_tree();
        let report = cpio::apply(&mut tree, &archive, None).unwrap();
        assert!(report.entries >= 15);
        let out = empty_root();
        let decompress = match compress {
            "" => "cat",
            c if c.contains("gzip") => "gzip -dc",
            _ => "zstd -dcq",
        };
        sh(&format!(
            "cd {} && {decompress} < {} | cpio -idm --quiet --no-absolute-filenames",
            q(out.path()),
            q(&archive)
        ));
        let ours = tree_digest_of(&mut tree);
        if ours != dir_digest(out.path()) {
            panic!(
                "digest differs for {format} {compress}\nours:\n{}\ncpio:\n{}",
                describe_tree(&tree).join("\n"),
                describe_dir(out.path())
            );
        }
        assert_same_contents(&tree, out.path());
        let tool = tree.lookup(b"/usr/bin/tool").unwrap();
        assert_eq!(tree.lookup(b"/usr/bin/tool-hard2"), Some(tool));
        assert_eq!(tree.lookup(b"/etc/e2"), tree.lookup(b"/etc/e1"));
    }
}

#[test]
fn truncated_gnu_cpio_archives_fail_with_offsets() {
    let src = make_source();
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("a.cpio");
    sh(&format!(
        "cd {} && find . | cpio -o --quiet -H newc > {}",
        q(src.path()),
        q(&archive)
    ));
    let bytes = fs::read(&archive).unwrap();
    // Up to the end of the trailer's name; GNU cpio pads the archive to 512 bytes after it.
    let end = bytes.windows(10).rposition(|w| w == b"TRAILER!!!").unwrap() + 10;
    let bad = work.path().join("bad.cpio");
    for cut in (0..end).step_by(3) {
        fs::write(&bad, &bytes[..cut]).unwrap();
        let e = cpio::apply(&mut empty_tree(), &bad, None).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("bad.cpio") && text.contains("at byte"),
            "cut {cut}: {text}"
        );
    }
}
