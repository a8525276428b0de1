//! The OpenVZ template read by GNU tar and gzip: the root at the archive's top level (`./…`),
//! numeric owners (uid 70000), device nodes, hard links, a file capability and user xattrs as
//! pax records; extracted by GNU tar as root with xattrs, the directory's rootfs digest equals
//! the manifest's; the gzip header has no name and no time; the conf sample has the resources.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use imgbuild::manifest::Manifest;
use imgbuild_init::digest::digest_directory;
use targets_common::*;

const TEMPLATE: &str = "openvz/testos-7-x86_64-bench.tar.gz";

fn get_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of buf.len() bytes.
    let len =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (len >= 0).then(|| {
        buf.truncate(len as usize);
        buf
    })
}

#[test]
fn gnu_tar_lists_the_template() {
    need("tar", "tar");
    let out = custom_all();
    let listing = ok(Command::new("tar")
        .args(["--numeric-owner", "-tvzf"])
        .arg(out.join(TEMPLATE)));
    let listing = String::from_utf8(listing.stdout).unwrap();
    let lines: Vec<&str> = listing.lines().collect();
    let name_of = |l: &str| {
        // mode owner size date time name [-> target | link to target]
        l.split_whitespace().nth(5).unwrap().to_string()
    };
    assert_eq!(name_of(lines[0]), "./", "{listing}");
    assert!(lines[0].starts_with('d'), "{}", lines[0]);
    for l in &lines {
        assert!(name_of(l).starts_with("./"), "not at the top level: {l}");
    }
    let line = |name: &str| {
        *lines
            .iter()
            .find(|l| name_of(l) == name)
            .unwrap_or_else(|| panic!("{name} not listed\n{listing}"))
    };
    assert!(line("./srv/owned/file").contains(" 70000/70001 "));
    assert!(line("./srv/owned").contains(" 70000/70000 "));
    assert!(line("./opt/inline/owned").contains(" 70000/70001 "));
    assert!(line("./srv/dev/null2").starts_with("crw-rw-rw-"));
    assert!(line("./srv/dev/null2").contains(" 1,3 "));
    assert!(line("./opt/inline/ttyX").starts_with("crw--w----"));
    assert!(line("./opt/inline/ttyX").contains(" 4,64 "));
    assert!(line("./opt/inline/sdz").starts_with("brw-rw----"));
    assert!(line("./opt/inline/sdz").contains(" 8,240 "));
    assert!(line("./dev/null").starts_with("crw-rw-rw-"));
    assert!(line("./srv/fifo").starts_with('p'));
    assert!(line("./srv/link").ends_with("-> data/a.bin"));
    assert!(line("./srv/setuid").starts_with("-rwsr-xr-x"));
    // Three names of one inode: the first carries the data, the others link to it.
    let links: Vec<&&str> = lines.iter().filter(|l| l.contains(" link to ")).collect();
    assert_eq!(links.len(), 2, "{links:?}");
    for l in links {
        assert!(l.starts_with('h'), "{l}");
        assert!(l.ends_with("link to ./srv/data/a-link.bin"), "{l}");
    }
    assert!(line("./srv/data/a-link.bin").contains(" 200000 "));
    // The init is the container's /sbin/init.
    assert!(
        lines.iter().any(|l| name_of(l) == "./sbin/init"),
        "{listing}"
    );
}

#[test]
fn gnu_tar_extracts_the_same_tree() {
    need("tar", "tar");
    assert!(
        is_root(),
        "extracting device nodes, owners and capabilities needs root"
    );
    for (out, name) in [
        (custom_all(), TEMPLATE.to_string()),
        (default_all(), "openvz/imgbuild-1-x86_64.tar.gz".to_string()),
    ] {
        let manifest = Manifest::read(&out).unwrap();
        let dir = tempfile::tempdir().unwrap();
        ok(Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"])
            .arg(out.join(&name))
            .arg("-C")
            .arg(dir.path()));
        let digest = digest_directory(dir.path()).unwrap();
        assert_eq!(digest, manifest.rootfs_digest, "{name}");
        if name == TEMPLATE {
            let root = dir.path();
            assert_eq!(
                get_xattr(&root.join("srv/caps/tool"), "security.capability").as_deref(),
                Some(&CAP_NET_RAW[..])
            );
            assert_eq!(
                get_xattr(&root.join("opt/inline/ping"), "security.capability").as_deref(),
                Some(&CAP_NET_RAW[..])
            );
            assert_eq!(
                get_xattr(&root.join("opt/inline/note"), "user.note").as_deref(),
                Some(&b"hello"[..])
            );
            use std::os::unix::fs::MetadataExt;
            let a = fs::metadata(root.join("srv/data/a.bin")).unwrap();
            let c = fs::metadata(root.join("srv/other/a-third.bin")).unwrap();
            assert_eq!((a.ino(), a.nlink()), (c.ino(), 3));
            assert_eq!(
                fs::metadata(root.join("srv/owned/file")).unwrap().uid(),
                70000
            );
        }
    }
}

#[test]
fn extraction_notices_a_changed_tree() {
    // The digest comparison above must be able to fail: one xattr less, one byte more.
    assert!(is_root());
    let out = custom_all();
    let manifest = Manifest::read(&out).unwrap();
    let dir = tempfile::tempdir().unwrap();
    ok(Command::new("tar")
        .args(["--numeric-owner", "-xpzf"])
        .arg(out.join(TEMPLATE))
        .arg("-C")
        .arg(dir.path()));
    // Without --xattrs the capabilities are lost.
    assert_ne!(
        digest_directory(dir.path()).unwrap(),
        manifest.rootfs_digest
    );
}

#[test]
fn gzip_header_has_no_name_and_no_time() {
    need("gzip", "gzip");
    for (out, name) in [
        (custom_all(), TEMPLATE),
        (default_all(), "openvz/imgbuild-1-x86_64.tar.gz"),
    ] {
        let path = out.join(name);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[..3], &[0x1f, 0x8b, 8], "{name}: gzip, deflate");
        assert_eq!(bytes[3], 0, "{name}: FLG: no name, comment or extra field");
        assert_eq!(&bytes[4..8], &[0, 0, 0, 0], "{name}: MTIME");
        assert_eq!(bytes[9], 3, "{name}: OS Unix");
        ok(Command::new("gzip").arg("-t").arg(&path));
        // The trailer's length is the tar's (modulo 2^32), a whole number of 10 KiB records.
        let isize = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        let tar = ok(Command::new("gzip").arg("-dc").arg(&path)).stdout;
        assert_eq!(isize as usize, tar.len() % (1 << 32));
        assert_eq!(tar.len() % 10240, 0);
    }
}

#[test]
fn conf_sample_names_the_template_and_resources() {
    let out = custom_all();
    let conf = fs::read_to_string(out.join("openvz/ve-custom.conf-sample")).unwrap();
    for key in [
        "PHYSPAGES=\"",
        "SWAPPAGES=\"",
        "DISKSPACE=\"",
        "DISKINODES=\"",
        "CPUUNITS=\"",
        "CPUS=\"1\"",
        "OSTEMPLATE=\"testos-7-x86_64-bench\"",
    ] {
        assert!(conf.contains(key), "{key}\n{conf}");
    }
    // Every assignment is KEY="VALUE", as vzctl's parser takes them.
    for line in conf
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (k, v) = line.split_once('=').unwrap();
        assert!(
            k.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{line}"
        );
        assert!(v.starts_with('"') && v.ends_with('"'), "{line}");
    }
}
