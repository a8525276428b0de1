//! Block devices without udev or blkid: list them from sysfs, make their nodes, and recognise
//! the root filesystem (ext2/3/4 superblock UUID or label) and the results disk (its header).

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::results::format::{self as results_format, HEADER_SIZE};

/// A block device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name (`vda`, `xvdb1`; `!` in sysfs stands for `/`).
    pub name: String,
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
    /// True for a partition.
    pub partition: bool,
    /// Size in 512-byte sectors.
    pub sectors: u64,
}

impl BlockDevice {
    /// Its path under `dev_dir` (`/dev/vda`, `/dev/cciss/c0d0`).
    pub fn node_path(&self, dev_dir: &Path) -> PathBuf {
        dev_dir.join(self.name.replace('!', "/"))
    }
}

fn read_trimmed(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|t| t.trim().to_owned())
}

/// The non-empty block devices under `class_block` (normally `/sys/class/block`), by name.
pub fn list_block_devices(class_block: &Path) -> Vec<BlockDevice> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(class_block) else {
        return out;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(dev) = read_trimmed(&dir.join("dev")) else {
            continue;
        };
        let Some((major, minor)) = dev.split_once(':') else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        let sectors = read_trimmed(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if sectors == 0 {
            continue;
        }
        out.push(BlockDevice {
            name,
            major,
            minor,
            partition: dir.join("partition").exists(),
            sectors,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The device's node under `dev_dir`, created with mknod when devtmpfs did not make it.
pub fn ensure_node(dev_dir: &Path, device: &BlockDevice) -> io::Result<PathBuf> {
    let path = device.node_path(dev_dir);
    let want = libc::makedev(device.major, device.minor);
    if let Ok(meta) = fs::symlink_metadata(&path) {
        if meta.file_type().is_block_device() && meta.rdev() == want {
            return Ok(path);
        }
        return Err(io::Error::other(format!(
            "{} exists but is not block device {}:{}",
            path.display(),
            device.major,
            device.minor
        )));
    }
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let c = crate::mounts::c_path(&path)?;
    // SAFETY: NUL-terminated path; mode and device number are plain integers.
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFBLK | 0o600, want) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(path)
}

/// What an ext2/3/4 superblock says about the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtSuperblock {
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Volume label.
    pub label: String,
    /// `ext4`, `ext3` or `ext2`, from the feature flags.
    pub fstype: &'static str,
}

const EXT_MAGIC: u16 = 0xEF53;
const COMPAT_HAS_JOURNAL: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
/// Incompat features only ext4 has: extents, 64bit, MMP, flex_bg, csum_seed, largedir,
/// inline_data, encrypt.
const INCOMPAT_EXT4: u32 = 0x40 | 0x80 | 0x100 | 0x200 | 0x2000 | 0x4000 | 0x8000 | 0x10000;
/// Read-only-compat features only ext4 has: huge_file, gdt_csum, dir_nlink, extra_isize,
/// metadata_csum.
const RO_COMPAT_EXT4: u32 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;

/// Parses the 1024-byte superblock found at byte 1024 of a device.
pub fn parse_ext_superblock(sb: &[u8]) -> Option<ExtSuperblock> {
    let sb = sb.get(..1024)?;
    let le32 = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    if u16::from_le_bytes([sb[56], sb[57]]) != EXT_MAGIC {
        return None;
    }
    let (compat, incompat, ro_compat) = (le32(0x5C), le32(0x60), le32(0x64));
    if incompat & INCOMPAT_JOURNAL_DEV != 0 {
        return None; // an external journal, not a filesystem
    }
    let fstype = if incompat & INCOMPAT_EXT4 != 0 || ro_compat & RO_COMPAT_EXT4 != 0 {
        "ext4"
    } else if compat & COMPAT_HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&sb[0x68..0x78]);
    let label_bytes = &sb[0x78..0x88];
    let end = label_bytes.iter().position(|&b| b == 0).unwrap_or(16);
    Some(ExtSuperblock {
        uuid,
        label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
        fstype,
    })
}

/// Reads the ext superblock of a device or image; `Ok(None)` when it has none.
pub fn read_ext_superblock(path: &Path) -> io::Result<Option<ExtSuperblock>> {
    let file = File::open(path)?;
    let mut sb = [0u8; 1024];
    match file.read_exact_at(&mut sb, 1024) {
        Ok(()) => Ok(parse_ext_superblock(&sb)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// Parses `0a1b2c3d-…` (with or without dashes, any case).
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let hex: Vec<u8> = text.bytes().filter(|&b| b != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Formats a UUID the usual 8-4-4-4-12 way.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let h: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The `root=` of the kernel command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootSpec {
    /// `root=UUID=…`.
    Uuid([u8; 16]),
    /// `root=LABEL=…`.
    Label(String),
    /// `root=/dev/vda`.
    Path(PathBuf),
}

impl RootSpec {
    /// Parses the value of `root=`.
    pub fn parse(text: &str) -> Option<RootSpec> {
        if let Some(u) = text.strip_prefix("UUID=") {
            return parse_uuid(u).map(RootSpec::Uuid);
        }
        if let Some(l) = text.strip_prefix("LABEL=") {
            return Some(RootSpec::Label(l.to_owned()));
        }
        text.starts_with('/')
            .then(|| RootSpec::Path(PathBuf::from(text)))
    }
}

/// The root device found among candidates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundRoot {
    /// Device node.
    pub device: PathBuf,
    /// Its superblock, when it is ext2/3/4.
    pub superblock: Option<ExtSuperblock>,
}

/// Finds the device `spec` names among `candidates` (device nodes or image files).
pub fn find_root(candidates: &[PathBuf], spec: &RootSpec) -> Option<FoundRoot> {
    if let RootSpec::Path(p) = spec {
        let meta = fs::metadata(p).ok()?;
        let wanted = meta.rdev();
        // The named node itself, or a candidate for the same device number.
        let device = candidates
            .iter()
            .find(|c| {
                fs::metadata(c).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == wanted)
            })
            .cloned()
            .unwrap_or_else(|| p.clone());
        let superblock = read_ext_superblock(&device).ok().flatten();
        return Some(FoundRoot { device, superblock });
    }
    for candidate in candidates {
        let Ok(Some(sb)) = read_ext_superblock(candidate) else {
            continue;
        };
        let hit = match spec {
            RootSpec::Uuid(u) => sb.uuid == *u,
            RootSpec::Label(l) => sb.label == *l,
            RootSpec::Path(_) => false,
        };
        if hit {
            return Some(FoundRoot {
                device: candidate.clone(),
                superblock: Some(sb),
            });
        }
    }
    None
}

/// The candidates whose first 4 KiB are a valid results header.
pub fn find_results_disks(candidates: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for candidate in candidates {
        let Ok(file) = File::open(candidate) else {
            continue;
        };
        let mut header = vec![0u8; HEADER_SIZE];
        if file.read_exact_at(&mut header, 0).is_ok()
            && results_format::parse_header(&header).is_ok()
        {
            out.push(candidate.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mkfs(dir: &Path, name: &str, fstype: &str, uuid: &str, label: &str) -> Option<PathBuf> {
        let path = dir.join(name);
        File::create(&path).unwrap().set_len(4 << 20).unwrap();
        let ok = Command::new("mke2fs")
            .args(["-q", "-F", "-t", fstype, "-U", uuid, "-L", label])
            .arg(&path)
            .status()
            .ok()?
            .success();
        ok.then_some(path)
    }

    #[test]
    fn finds_the_root_by_uuid_and_label_among_real_filesystems() {
        let dir = tempfile::tempdir().unwrap();
        let u4 = "0a1b2c3d-0000-4000-8000-0000000000e4";
        let Some(e4) = mkfs(dir.path(), "e4", "ext4", u4, "root4") else {
            eprintln!("mke2fs missing: skipped");
            return;
        };
        let e3 = mkfs(
            dir.path(),
            "e3",
            "ext3",
            "0a1b2c3d-0000-4000-8000-0000000000e3",
            "root3",
        )
        .unwrap();
        let e2 = mkfs(
            dir.path(),
            "e2",
            "ext2",
            "0a1b2c3d-0000-4000-8000-0000000000e2",
            "root2",
        )
        .unwrap();
        let junk = dir.path().join("junk");
        fs::write(&junk, vec![0xffu8; 8192]).unwrap();
        let tiny = dir.path().join("tiny");
        fs::write(&tiny, b"x").unwrap();
        let candidates = vec![junk, tiny, e2.clone(), e3.clone(), e4.clone()];

        let found = find_root(
            &candidates,
            &RootSpec::parse(&format!("UUID={u4}")).unwrap(),
        )
        .unwrap();
        assert_eq!(found.device, e4);
        let sb = found.superblock.unwrap();
        assert_eq!((sb.fstype, sb.label.as_str()), ("ext4", "root4"));
        assert_eq!(format_uuid(&sb.uuid), u4);

        let found = find_root(&candidates, &RootSpec::Label("root3".into())).unwrap();
        assert_eq!(
            (found.device, found.superblock.unwrap().fstype),
            (e3, "ext3")
        );
        let uuid2 = RootSpec::parse("UUID=0A1B2C3D-0000-4000-8000-0000000000E2").unwrap();
        assert_eq!(
            find_root(&candidates, &uuid2)
                .unwrap()
                .superblock
                .unwrap()
                .fstype,
            "ext2"
        );
        let absent = RootSpec::parse("UUID=ffffffff-0000-4000-8000-0000000000e4").unwrap();
        assert!(find_root(&candidates, &absent).is_none());
        let _ = e2;
    }

    #[test]
    fn root_spec_parsing() {
        assert!(matches!(
            RootSpec::parse("/dev/vda"),
            Some(RootSpec::Path(_))
        ));
        assert!(RootSpec::parse("UUID=nope").is_none());
        assert!(RootSpec::parse("vda").is_none());
        assert_eq!(
            parse_uuid("000102030405060708090a0b0c0d0e0f").unwrap()[15],
            15
        );
    }

    #[test]
    fn superblock_checks() {
        let mut sb = vec![0u8; 1024];
        assert!(parse_ext_superblock(&sb).is_none());
        sb[56..58].copy_from_slice(&EXT_MAGIC.to_le_bytes());
        assert_eq!(parse_ext_superblock(&sb).unwrap().fstype, "ext2");
        sb[0x60] = INCOMPAT_JOURNAL_DEV as u8;
        assert!(parse_ext_superblock(&sb).is_none(), "journal device");
        assert!(parse_ext_superblock(&sb[..100]).is_none());
    }

    #[test]
    fn results_disk_found_by_its_header() {
        let dir = tempfile::tempdir().unwrap();
        let results = dir.path().join("results.img");
        crate::results::create_results_image(
            &results,
            1 << 20,
            "img",
            crate::digest::RootfsDigest([0; 32]),
        )
        .unwrap();
        let other = dir.path().join("other.img");
        fs::write(&other, vec![0u8; 8192]).unwrap();
        assert_eq!(find_results_disks(&[other, results.clone()]), vec![results]);
    }

    #[test]
    fn sysfs_listing() {
        let sys = tempfile::tempdir().unwrap();
        for (name, dev, size, part) in [
            ("vda", "254:0", "2048", false),
            ("vda1", "254:1", "1024", true),
            ("sr0", "11:0", "0", false),
        ] {
            let d = sys.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("dev"), format!("{dev}\n")).unwrap();
            fs::write(d.join("size"), size).unwrap();
            if part {
                fs::write(d.join("partition"), "1").unwrap();
            }
        }
        let devs = list_block_devices(sys.path());
        assert_eq!(devs.len(), 2, "empty sr0 skipped");
        assert_eq!(
            (devs[0].name.as_str(), devs[0].major, devs[0].partition),
            ("vda", 254, false)
        );
        assert!(devs[1].partition);
        assert_eq!(
            BlockDevice {
                name: "cciss!c0d0".into(),
                major: 1,
                minor: 1,
                partition: false,
                sectors: 1
            }
            .node_path(Path::new("/dev")),
            Path::new("/dev/cciss/c0d0")
        );
    }
}
