//! Bad places to write given to the real CLI: a `--device` that is mounted (the device of `/`),
//! too small (a loop device over a 1 MiB file), a character device or a regular file; an
//! output directory on a full filesystem or a read-only one, and an output path that is a file.
//!
//! The device of `/` is safe to name: the builder refuses it after reading /proc/self/mountinfo,
//! and the kernel refuses the O_EXCL open it would need to write. Cases that need mounts or loop
//! devices are skipped, with the reason printed, where those are not permitted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input_common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use bad_input_common::*;

fn device(p: &Path) -> Vec<OsString> {
    vec!["--device".into(), p.into()]
}

/// The block device mounted on `/`, when `/` is a block device.
fn root_device() -> Option<PathBuf> {
    let out = Command::new("findmnt")
        .args(["-n", "-o", "SOURCE", "/"])
        .output()
        .ok()?;
    let src = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(&src)
        .ok()
        .filter(|m| m.file_type().is_block_device())
        .map(|_| src)
}

#[test]
fn device_that_is_mounted() {
    let Some(dev) = root_device() else {
        eprintln!("skipped: / is not mounted from a block device here");
        return;
    };
    let s = Scratch::new();
    let shown = dev.display().to_string();
    let e = bad_build(
        &s,
        &device(&dev),
        &[],
        Expect {
            code: INPUT,
            needles: &[&shown, "in use"],
        },
    );
    assert!(
        e.contains("mounted on /") || e.contains("partitions"),
        "{e}"
    );
}

#[test]
fn device_that_is_a_file_or_a_character_device() {
    let s = Scratch::new();
    let file = s.input("disk.img");
    std::fs::write(&file, vec![0u8; 4096]).unwrap();
    bad_build(
        &s,
        &device(&file),
        &[],
        Expect {
            code: INPUT,
            needles: &["disk.img", "regular file, not a block device"],
        },
    );
    bad_build(
        &s,
        &device(Path::new("/dev/null")),
        &[],
        Expect {
            code: INPUT,
            needles: &["/dev/null", "a character device, not a block device"],
        },
    );
    bad_build(
        &s,
        &device(&s.input("nonexistent")),
        &[],
        Expect {
            code: INPUT,
            needles: &["nonexistent", "No such file"],
        },
    );
}

/// A loop device over a file; detached on drop.
struct Loop(String);

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn device_that_is_too_small() {
    let s = Scratch::new();
    let backing = s.dir.path().join("small.img");
    std::fs::File::create(&backing)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    let out = Command::new("losetup")
        .arg("-f")
        .arg("--show")
        .arg(&backing)
        .output()
        .unwrap();
    if !out.status.success() {
        eprintln!(
            "skipped: cannot attach a loop device ({})",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let dev = Loop(String::from_utf8_lossy(&out.stdout).trim().to_string());
    bad_build(
        &s,
        &device(Path::new(&dev.0)),
        &[],
        Expect {
            code: INPUT,
            needles: &[&dev.0, "holds 1048576 bytes but the filesystem needs"],
        },
    );
    let untouched = std::fs::read(&backing).unwrap();
    assert!(
        untouched.iter().all(|&b| b == 0),
        "the loop device was written"
    );
}

/// A tmpfs mounted on a directory of the scratch space; unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, options: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(&at)
            .output()
            .unwrap();
        if out.status.success() {
            Ok(Tmpfs(at))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Bytes the good build takes on a filesystem (allocated blocks, not sizes: images are sparse).
fn allocated(dir: &Path) -> u64 {
    sh(&format!("du -s -B1 {} | cut -f1", q(dir)))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn output_directory_on_a_full_filesystem() {
    let mut s = Scratch::new();
    let room = allocated(&s.out) + (8 << 20);
    let fs = match Tmpfs::mount(s.dir.path().join("full"), &format!("size={room}")) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs ({e})");
            return;
        }
    };
    // The earlier good build lives on the small filesystem, then a filler takes the rest.
    let out = fs.0.join("out");
    sh(&format!("cp -a --sparse=always {} {}", q(&s.out), q(&out)));
    let _ = sh(&format!(
        "dd if=/dev/zero of={}/filler bs=64k 2>/dev/null || true",
        q(&fs.0)
    ));
    assert!(
        sh(&format!("df -B1 --output=avail {} | tail -1", q(&fs.0)))
            .trim()
            .parse::<u64>()
            .unwrap()
            < 64 << 10
    );
    s.out = out;
    bad_build(
        &s,
        &[],
        &[],
        Expect {
            code: ENVIRONMENT,
            needles: &[&fs.0.display().to_string(), "No space left on device"],
        },
    );
}

#[test]
fn output_directory_on_a_read_only_filesystem() {
    let mut s = Scratch::new();
    let room = allocated(&s.out) + (8 << 20);
    let fs = match Tmpfs::mount(s.dir.path().join("ro"), &format!("size={room}")) {
        Ok(fs) => fs,
        Err(e) => {
            eprintln!("skipped: cannot mount a tmpfs ({e})");
            return;
        }
    };
    let out = fs.0.join("out");
    sh(&format!("cp -a --sparse=always {} {}", q(&s.out), q(&out)));
    sh(&format!("mount -o remount,ro {}", q(&fs.0)));
    s.out = out;
    bad_build(
        &s,
        &[],
        &[],
        Expect {
            code: ENVIRONMENT,
            needles: &[&fs.0.display().to_string(), "Read-only file system"],
        },
    );
}

#[test]
fn output_path_that_is_a_file() {
    let mut s = Scratch::new();
    let file = s.dir.path().join("out-file");
    std::fs::write(&file, b"not a directory\n").unwrap();
    s.out = file;
    bad_build(
        &s,
        &[],
        &[],
        Expect {
            code: ENVIRONMENT,
            needles: &["out-file"],
        },
    );
}
