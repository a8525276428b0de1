//! Safety checks before writing a filesystem straight onto a real partition (`--device
//! /dev/sdX3`): the device must be a block device (or an explicitly allowed regular file), big
//! enough, not a whole disk with partitions on it, and not in use — neither it nor any of its
//! partitions or holders (LVM, RAID, dm-crypt) may be mounted or be swap.
//!
//! Mounts are matched on the device number in /proc/self/mountinfo and, for filesystems that
//! report an anonymous device (btrfs), on the mount source path. The kernel's own answer is
//! asked last: a block device opened with O_EXCL fails with EBUSY while anything holds it.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::image_io::block_device_or_file_size;

/// Bounds on the sysfs walk: a real stack is a few levels and a few dozen devices deep.
const MAX_DEPTH: usize = 8;
const MAX_DEVICES: usize = 4096;

/// Why a device may not be written.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The path cannot be examined.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// Not a block device nor an allowed regular file.
    #[error("{path} is {kind}, not a block device; refusing to write a filesystem onto it")]
    NotBlockDevice {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A regular file where a device was expected, without permission to use files.
    #[error("{path} is a regular file, not a block device (files are only accepted when explicitly allowed)")]
    RegularFileNotAllowed {
        /// The path.
        path: PathBuf,
    },
    /// The device, one of its partitions, or a device built on it, is mounted.
    #[error("{path} is in use: {device} ({dev}) is mounted on {mount_point}")]
    Mounted {
        /// The path asked for.
        path: PathBuf,
        /// The mounted device (the target itself, a partition or a holder).
        device: String,
        /// Its `major:minor`.
        dev: String,
        /// Where it is mounted.
        mount_point: String,
    },
    /// The device, a partition or a holder is active swap.
    #[error("{path} is in use: {device} is active swap ({swap})")]
    Swap {
        /// The path asked for.
        path: PathBuf,
        /// The device in use.
        device: String,
        /// The /proc/swaps entry.
        swap: String,
    },
    /// The kernel says the device is held (O_EXCL open gave EBUSY).
    #[error("{path} is in use by the kernel (mounted, swap, RAID, LVM or device-mapper member)")]
    Busy {
        /// The path.
        path: PathBuf,
    },
    /// A whole disk with partitions: writing a filesystem over it destroys them.
    #[error("{path} is a whole disk with partitions ({partitions}); name one partition instead")]
    HasPartitions {
        /// The path.
        path: PathBuf,
        /// Its partitions.
        partitions: String,
    },
    /// The device is smaller than the filesystem.
    #[error("{path} holds {size} bytes but the filesystem needs {needed}")]
    TooSmall {
        /// The path.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// Bytes needed.
        needed: u64,
    },
}

/// What [`check_device`] found acceptable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceTarget {
    /// The path as given.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// True for a block device, false for an allowed regular file.
    pub is_block_device: bool,
}

/// Checks that a filesystem of `needed` bytes may be written onto `path`, without writing or
/// claiming anything. A regular file is accepted only with `allow_regular_file` (it may be
/// smaller: files grow); anything else that is not a block device is refused.
pub fn check_device(
    path: &Path,
    needed: u64,
    allow_regular_file: bool,
) -> Result<DeviceTarget, DeviceError> {
    let io = |what| {
        move |source| DeviceError::Io {
            what,
            path: path.to_path_buf(),
            source,
        }
    };
    let meta = fs::metadata(path).map_err(io("examine"))?;
    let ft = meta.file_type();
    if ft.is_file() {
        if !allow_regular_file {
            return Err(DeviceError::RegularFileNotAllowed {
                path: path.to_path_buf(),
            });
        }
        check_swap_file(path, &meta)?;
        return Ok(DeviceTarget {
            path: path.to_path_buf(),
            size: meta.len(),
            is_block_device: false,
        });
    }
    if !ft.is_block_device() {
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_char_device() {
            "a character device"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(DeviceError::NotBlockDevice {
            path: path.to_path_buf(),
            kind,
        });
    }

    let dev = meta.rdev();
    let related = related_devices(dev);
    let partitions: Vec<&Related> = related
        .iter()
        .filter(|r| r.is_partition_of_target)
        .collect();
    check_mounts(path, &related)?;
    check_swaps(path, &related)?;
    if !partitions.is_empty() {
        let names: Vec<&str> = partitions.iter().map(|r| r.name.as_str()).collect();
        return Err(DeviceError::HasPartitions {
            path: path.to_path_buf(),
            partitions: names.join(", "),
        });
    }

    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                DeviceError::Busy {
                    path: path.to_path_buf(),
                }
            } else {
                io("open (read-only, exclusive)")(e)
            }
        })?;
    let size = block_device_or_file_size(&file).map_err(io("get the size (BLKGETSIZE64) of"))?;
    if size < needed {
        return Err(DeviceError::TooSmall {
            path: path.to_path_buf(),
            size,
            needed,
        });
    }
    Ok(DeviceTarget {
        path: path.to_path_buf(),
        size,
        is_block_device: true,
    })
}

/// Runs [`check_device`], then opens the target for writing. A block device is opened with
/// O_EXCL, so nobody can mount it while the file is open.
pub fn open_device(
    path: &Path,
    needed: u64,
    allow_regular_file: bool,
) -> Result<(File, DeviceTarget), DeviceError> {
    let target = check_device(path, needed, allow_regular_file)?;
    let mut opts = OpenOptions::new();
    opts.read(true).write(true);
    if target.is_block_device {
        opts.custom_flags(libc::O_EXCL);
    }
    let file = opts.open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::EBUSY) {
            DeviceError::Busy {
                path: path.to_path_buf(),
            }
        } else {
            DeviceError::Io {
                what: "open for writing",
                path: path.to_path_buf(),
                source: e,
            }
        }
    })?;
    Ok((file, target))
}

/// A device that shares fate with the target.
#[derive(Debug, Clone)]
struct Related {
    dev: u64,
    name: String,
    is_partition_of_target: bool,
}

fn dev_string(dev: u64) -> String {
    format!("{}:{}", libc::major(dev), libc::minor(dev))
}

fn parse_dev(s: &str) -> Option<u64> {
    let (ma, mi) = s.trim().split_once(':')?;
    Some(libc::makedev(ma.parse().ok()?, mi.parse().ok()?))
}

/// The target, its partitions, and everything stacked on any of them, from sysfs. Without
/// sysfs only the target itself is known; the O_EXCL open still catches the rest.
fn related_devices(target: u64) -> Vec<Related> {
    let mut out = vec![Related {
        dev: target,
        name: dev_string(target),
        is_partition_of_target: false,
    }];
    let root = PathBuf::from(format!("/sys/dev/block/{}", dev_string(target)));
    let Ok(dir) = fs::canonicalize(&root) else {
        return out;
    };
    if let Some(n) = dir.file_name() {
        out[0].name = n.to_string_lossy().into_owned();
    }
    let mut seen: BTreeSet<u64> = BTreeSet::from([target]);
    let mut todo: Vec<(PathBuf, usize)> = vec![(dir.clone(), 0)];
    // Partitions of a whole disk are subdirectories holding a `partition` file.
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.join("partition").exists() {
                if let Some(dev) = read_dev(&p) {
                    if seen.insert(dev) {
                        out.push(Related {
                            dev,
                            name: e.file_name().to_string_lossy().into_owned(),
                            is_partition_of_target: true,
                        });
                        todo.push((p, 0));
                    }
                }
            }
        }
    }
    while let Some((d, depth)) = todo.pop() {
        if depth >= MAX_DEPTH || out.len() >= MAX_DEVICES {
            continue;
        }
        let Ok(holders) = fs::read_dir(d.join("holders")) else {
            continue;
        };
        for h in holders.flatten() {
            let Ok(hp) = fs::canonicalize(h.path()) else {
                continue;
            };
            if let Some(dev) = read_dev(&hp) {
                if seen.insert(dev) {
                    out.push(Related {
                        dev,
                        name: h.file_name().to_string_lossy().into_owned(),
                        is_partition_of_target: false,
                    });
                    todo.push((hp, depth + 1));
                }
            }
        }
    }
    out
}

fn read_dev(sysdir: &Path) -> Option<u64> {
    parse_dev(&fs::read_to_string(sysdir.join("dev")).ok()?)
}

/// Undoes the octal escapes (`\040` for a space) of /proc/self/mountinfo and /proc/swaps.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        let value = octal.then(|| {
            b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'))
        });
        if let Some(v) = value.and_then(|v| u8::try_from(v).ok()) {
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of mountinfo: `(major:minor, mount point, mount source)`.
fn parse_mountinfo_line(line: &str) -> Option<(u64, String, String)> {
    let (left, right) = line.split_once(" - ")?;
    let fields: Vec<&str> = left.split(' ').collect();
    let dev = parse_dev(fields.get(2)?)?;
    let mount_point = unescape(fields.get(4)?);
    let source = unescape(right.split(' ').nth(1)?);
    Some((dev, mount_point, source))
}

fn check_mounts(path: &Path, related: &[Related]) -> Result<(), DeviceError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(|source| DeviceError::Io {
        what: "read",
        path: "/proc/self/mountinfo".into(),
        source,
    })?;
    for line in text.lines() {
        let Some((dev, mount_point, source)) = parse_mountinfo_line(line) else {
            continue;
        };
        let source_dev = if source.starts_with("/dev/") {
            fs::metadata(&source)
                .ok()
                .filter(|m| m.file_type().is_block_device())
                .map(|m| m.rdev())
        } else {
            None
        };
        if let Some(r) = related
            .iter()
            .find(|r| r.dev == dev || Some(r.dev) == source_dev)
        {
            return Err(DeviceError::Mounted {
                path: path.to_path_buf(),
                device: r.name.clone(),
                dev: dev_string(r.dev),
                mount_point,
            });
        }
    }
    Ok(())
}

/// Active swap areas: the device number of a swap partition, or (dev, inode) of a swap file.
fn swaps() -> Vec<(String, fs::Metadata)> {
    let Ok(text) = fs::read_to_string("/proc/swaps") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let name = unescape(l.split_whitespace().next()?);
            let meta = fs::metadata(&name).ok()?;
            Some((name, meta))
        })
        .collect()
}

fn check_swaps(path: &Path, related: &[Related]) -> Result<(), DeviceError> {
    for (swap, meta) in swaps() {
        if !meta.file_type().is_block_device() {
            continue;
        }
        if let Some(r) = related.iter().find(|r| r.dev == meta.rdev()) {
            return Err(DeviceError::Swap {
                path: path.to_path_buf(),
                device: r.name.clone(),
                swap,
            });
        }
    }
    Ok(())
}

fn check_swap_file(path: &Path, meta: &fs::Metadata) -> Result<(), DeviceError> {
    for (swap, m) in swaps() {
        if m.dev() == meta.dev() && m.ino() == meta.ino() {
            return Err(DeviceError::Swap {
                path: path.to_path_buf(),
                device: path.display().to_string(),
                swap,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines() {
        let l = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard";
        let (dev, mp, src) = parse_mountinfo_line(l).unwrap();
        assert_eq!(dev, libc::makedev(254, 0));
        assert_eq!(mp, "/");
        assert_eq!(src, "/dev/vda");
        let l = r"40 27 8:3 / /mnt/my\040disk rw shared:1 - btrfs /dev/sda3 rw";
        let (_, mp, _) = parse_mountinfo_line(l).unwrap();
        assert_eq!(mp, "/mnt/my disk");
        assert!(parse_mountinfo_line("garbage").is_none());
        assert!(parse_mountinfo_line("1 2 x:y / / - a b").is_none());
        assert_eq!(unescape(r"a\134b\0"), r"a\b\0");
    }

    #[test]
    fn files_need_permission() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            check_device(f.path(), 1 << 30, false),
            Err(DeviceError::RegularFileNotAllowed { .. })
        ));
        let t = check_device(f.path(), 1 << 30, true).unwrap();
        assert!(!t.is_block_device);
        let d = tempfile::tempdir().unwrap();
        assert!(matches!(
            check_device(d.path(), 1, true),
            Err(DeviceError::NotBlockDevice {
                kind: "a directory",
                ..
            })
        ));
        assert!(matches!(
            check_device(Path::new("/dev/null"), 1, true),
            Err(DeviceError::NotBlockDevice {
                kind: "a character device",
                ..
            })
        ));
        assert!(matches!(
            check_device(&d.path().join("missing"), 1, true),
            Err(DeviceError::Io { .. })
        ));
    }
}
