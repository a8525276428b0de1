//! Bad input to `imgbuild build`: unknown targets, adapters, NICs and hardware versions, a tree
//! too big for a fixed-size filesystem, devices that must not be written, a relative Xen
//! directory. Each gets exit code 2 and a message naming the allowed values or the problem,
//! and nothing is written: a fresh output directory is not even created, and an earlier good
//! build in the same directory stays as it was (and still verifies).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::fs;
use std::path::{Path, PathBuf};

use targets_common::*;

/// Runs a build that must be refused; returns stderr.
fn refused(out: &Path, args: &[&str]) -> String {
    let mut all = vec![
        "build".to_string(),
        "--out".into(),
        out.display().to_string(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    let result = imgbuild_run(&all);
    assert_eq!(result.status.code(), Some(2), "{all:?}\n{}", text(&result));
    let stderr = String::from_utf8_lossy(&result.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    // One message, said once (causes are not repeated).
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.starts_with("imgbuild:"))
            .count(),
        1,
        "{stderr}"
    );
    stderr
}

/// Each case: arguments, and texts the message must contain.
fn cases() -> Vec<(Vec<String>, Vec<&'static str>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    vec![
        (
            s(&["--target", "all", "--set", "vmware.hw_version=12"]),
            vec![
                "hw_version 12",
                "4, 7, 8, 9, 10, 11, 13, 14, 15, 17, 18, 19, 20, 21",
            ],
        ),
        (
            s(&["--target", "vmware", "--set", "vmware.adapter=foo"]),
            vec!["foo", "pvscsi", "lsilogic", "lsisas1068"],
        ),
        (
            s(&["--target", "vmware", "--set", "vmware.nic=foo"]),
            vec!["foo", "vmxnet3", "e1000"],
        ),
        (
            s(&[
                "--target",
                "vmware",
                "--set",
                "vmware.formats=[\"streamOptimized\"]",
            ]),
            vec!["monolithicSparse", "monolithicFlat"],
        ),
        (
            s(&["--target", "esx"]),
            vec!["esx", "xen, openvz, vmware, qemu and all"],
        ),
        (
            s(&["--target", "xen,esx"]),
            vec!["esx", "xen, openvz, vmware, qemu and all"],
        ),
        (
            s(&["--target", "xen", "--set", "xen.type=hvm"]),
            vec!["hvm", "pvh", "pv"],
        ),
        (
            s(&[
                "--target",
                "openvz",
                "--set",
                "openvz.dist=scientific-linux",
            ]),
            vec!["openvz.dist", "'-'"],
        ),
        (
            s(&["--target", "all", "--set", "filesystem.size=1M"]),
            vec!["needs", "fixed at 1048576 bytes"],
        ),
        (
            s(&["--target", "xen", "--xen-dir", "relative/dir"]),
            vec!["relative/dir", "absolute"],
        ),
        (
            s(&["--target", "qemu", "--device", "/dev/null"]),
            vec!["--device", "xen target"],
        ),
        (
            s(&["--target", "xen", "--device", "/dev/null"]),
            vec!["/dev/null", "character device", "not a block device"],
        ),
        (
            s(&["--target", "xen", "--device", "/nonexistent/sdz3"]),
            vec!["/nonexistent/sdz3", "No such file"],
        ),
    ]
}

#[test]
fn bad_values_are_refused_before_anything_is_written() {
    let scratch_dir = scratch("bad-input-fresh");
    let work = scratch_dir.path();
    for (args, wanted) in cases() {
        let out = work.join("out");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stderr = refused(&out, &args);
        for w in wanted {
            assert!(stderr.contains(w), "{args:?}: {w:?} not in {stderr}");
        }
        assert!(!out.exists(), "{args:?} created {}", out.display());
    }
}

#[test]
fn an_earlier_good_build_stays_untouched() {
    let scratch_dir = scratch("bad-input-earlier");
    let work = scratch_dir.path();
    let out = work.join("out");
    build(&out, &["--target", "all"]);
    let before = listing(&out);
    assert!(before.len() > 10, "{before:?}");
    for (args, _) in cases() {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        refused(&out, &args);
        assert_eq!(listing(&out), before, "{args:?} changed the earlier build");
    }
    let v = imgbuild_run([std::ffi::OsStr::new("verify"), out.as_os_str()]);
    assert!(v.status.success(), "{}", text(&v));
}

#[test]
fn too_big_for_a_fixed_size_names_the_size_needed() {
    let scratch_dir = scratch("bad-input-size");
    let work = scratch_dir.path();
    let out = work.join("out");
    let stderr = refused(&out, &["--target", "xen", "--set", "filesystem.size=1M"]);
    // "the filesystem needs N bytes (M MiB) but its size is fixed at 1048576 bytes"
    let needed: u64 = stderr
        .split("needs ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no size in {stderr}"));
    assert!(needed > 1 << 20, "{stderr}");
    // The size named is enough: a build with it succeeds.
    let fits = work.join("fits");
    let size = format!("filesystem.size={needed}");
    build(&fits, &["--target", "xen", "--set", &size]);
    let manifest = imgbuild::manifest::Manifest::read(&fits).unwrap();
    assert_eq!(manifest.filesystem.unwrap().size, needed);
}

/// A mounted block device: the one holding `/` if it is one, else any other mount's.
fn mounted_block_device() -> PathBuf {
    use std::os::unix::fs::FileTypeExt;
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut candidates: Vec<(bool, PathBuf)> = info
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            let dash = fields.iter().position(|f| *f == "-")?;
            let source = PathBuf::from(fields.get(dash + 2)?);
            let is_root = fields.get(4) == Some(&"/");
            Some((is_root, source))
        })
        .filter(|(_, s)| {
            fs::metadata(s)
                .map(|m| m.file_type().is_block_device())
                .unwrap_or(false)
        })
        .collect();
    candidates.sort_by_key(|(root, _)| !root);
    candidates
        .first()
        .map(|(_, p)| p.clone())
        .expect("no mounted block device to test --device against")
}

#[test]
fn a_mounted_device_is_refused() {
    let device = mounted_block_device();
    let scratch_dir = scratch("bad-input-device");
    let work = scratch_dir.path();
    let out = work.join("out");
    let before = fs::metadata(&device).unwrap();
    let stderr = refused(
        &out,
        &["--target", "xen", "--device", device.to_str().unwrap()],
    );
    assert!(stderr.contains(device.to_str().unwrap()), "{stderr}");
    assert!(
        stderr.contains("is mounted on") || stderr.contains("in use"),
        "{stderr}"
    );
    assert!(!out.exists());
    use std::os::unix::fs::MetadataExt;
    let after = fs::metadata(&device).unwrap();
    assert_eq!(before.rdev(), after.rdev());
}

#[test]
fn a_regular_file_is_refused_and_left_alone() {
    let scratch_dir = scratch("bad-input-file");
    let work = scratch_dir.path();
    let file = work.join("disk.img");
    let content: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    fs::write(&file, &content).unwrap();
    let out = work.join("out");
    let stderr = refused(
        &out,
        &["--target", "xen", "--device", file.to_str().unwrap()],
    );
    assert!(stderr.contains("regular file"), "{stderr}");
    assert!(stderr.contains(file.to_str().unwrap()), "{stderr}");
    assert_eq!(fs::read(&file).unwrap(), content);
    assert!(!out.exists());
}
