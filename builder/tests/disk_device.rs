//! `--device` safety checks on this machine's real devices, read-only: the device holding `/`
//! must be refused as mounted, an unattached loop device as too small; regular files only when
//! allowed. Nothing here writes to a device.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use imgbuild::disk::device::{check_device, open_device, DeviceError};

/// A block device node for the filesystem mounted on `/`: the mount source if it is one,
/// else any node in /dev with the same device number.
fn root_device() -> Option<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").ok()?;
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        if left.split(' ').nth(4) != Some("/") {
            continue;
        }
        let source = right.split(' ').nth(1)?;
        if fs::metadata(source)
            .map(|m| m.file_type().is_block_device())
            .unwrap_or(false)
        {
            return Some(PathBuf::from(source));
        }
    }
    let dev = fs::metadata("/").ok()?.dev();
    fs::read_dir("/dev")
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.file_type().is_block_device() && m.rdev() == dev)
                .unwrap_or(false)
        })
}

#[test]
fn the_root_device_is_refused_as_mounted() {
    let Some(dev) = root_device() else {
        eprintln!("skipping: no block device node for / (container on overlay?)");
        return;
    };
    match check_device(&dev, 1, false) {
        Err(DeviceError::Mounted { mount_point, .. }) => {
            // `/` itself, or another mount of the same device.
            assert!(mount_point.starts_with('/'), "{mount_point}");
        }
        Err(DeviceError::Busy { .. }) => {}
        other => panic!("{} was not refused as mounted: {other:?}", dev.display()),
    }
    let e = open_device(&dev, 1, false).unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    eprintln!("refused: {e}");
}

#[test]
fn an_unattached_loop_device_is_too_small() {
    let dev = Path::new("/dev/loop7");
    let size = fs::read_to_string("/sys/block/loop7/size").unwrap_or_default();
    if !dev.exists() || size.trim() != "0" {
        eprintln!("skipping: /dev/loop7 absent or attached");
        return;
    }
    match check_device(dev, 1 << 20, false) {
        Err(DeviceError::TooSmall {
            size: 0, needed, ..
        }) => assert_eq!(needed, 1 << 20),
        other => panic!("unattached loop device: {other:?}"),
    }
}

#[test]
fn regular_files_only_when_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("part.img");
    fs::write(&p, b"").unwrap();
    let e = check_device(&p, 1 << 20, false).unwrap_err();
    assert!(matches!(e, DeviceError::RegularFileNotAllowed { .. }));
    assert!(e.to_string().contains("regular file"), "{e}");
    let (file, t) = open_device(&p, 1 << 20, true).unwrap();
    assert!(!t.is_block_device);
    assert!(file.metadata().unwrap().is_file());
    // Through a symlink, as /dev/disk/by-uuid links are.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&p, &link).unwrap();
    assert!(check_device(&link, 1, true).is_ok());
    for (path, kind) in [("/dev/null", "a character device"), ("/", "a directory")] {
        match check_device(Path::new(path), 1, true) {
            Err(DeviceError::NotBlockDevice { kind: k, .. }) => assert_eq!(k, kind),
            other => panic!("{path}: {other:?}"),
        }
    }
}
