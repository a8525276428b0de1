//! The MBR of our disk images: one bootable Linux partition from 1 MiB to the end of the disk,
//! and a reader for MBRs that may come from anywhere (`imgbuild verify` reads disks back).
//!
//! 1 MiB alignment is what fdisk and parted have used since 2010: it leaves room for GRUB's
//! core.img (LBA 1 to 2047) and keeps the filesystem aligned for any underlying block size.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, FileTypeExt};

use crate::image_io::ReadAt;

/// Bytes per sector: MBR addresses are in 512-byte sectors whatever the device says.
pub const SECTOR: u64 = 512;
/// Where the partition starts: 1 MiB (LBA 2048).
pub const PARTITION_START: u64 = 1 << 20;
/// Partition type of a Linux filesystem.
pub const LINUX_TYPE: u8 = 0x83;
/// Offset of the 4-byte disk signature in the MBR.
pub const SIGNATURE_OFFSET: usize = 0x1B8;
/// Offset of the first of the four partition entries.
pub const TABLE_OFFSET: usize = 0x1BE;
/// Bytes of boot code before the disk signature.
pub const BOOT_CODE_LEN: usize = 440;

const ALIGN: u64 = 1 << 20;

/// Errors of writing or reading an MBR.
#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    /// The disk is too big for 32-bit MBR sector numbers (2 TiB).
    #[error("disk of {bytes} bytes is too big for an MBR partition table (limit 2 TiB)")]
    TooBig {
        /// Disk size asked for.
        bytes: u64,
    },
    /// A partition of no sectors: the filesystem size was 0.
    #[error("the disk laid out has an empty partition")]
    EmptyPartition,
    /// The output is longer than the disk laid out: the partition would not cover it.
    #[error("output already holds {actual} bytes, more than the {expected}-byte disk laid out")]
    OutputTooLong {
        /// Disk size laid out.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// A block device smaller than the disk laid out.
    #[error("device holds {actual} bytes, less than the {expected}-byte disk laid out")]
    DeviceTooSmall {
        /// Disk size laid out.
        expected: u64,
        /// Size found.
        actual: u64,
    },
    /// I/O failure.
    #[error("cannot {what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        source: io::Error,
    },
    /// Sector 0 does not end in 0x55AA.
    #[error("no MBR: sector 0 ends in {found:#06x}, not 0xaa55")]
    NoSignature {
        /// The last two bytes of sector 0, little-endian.
        found: u16,
    },
    /// A partition entry makes no sense.
    #[error("MBR partition {index} (entry at byte {offset:#x}): {reason}")]
    BadEntry {
        /// 1-based partition number.
        index: usize,
        /// Byte offset of the entry in sector 0.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Where things go on a disk image holding one filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskLayout {
    /// Size of the whole disk in bytes (a multiple of 1 MiB).
    pub disk_bytes: u64,
    /// Byte offset of the partition (1 MiB).
    pub partition_start: u64,
    /// Size of the partition in bytes (to the end of the disk; at least the filesystem size).
    pub partition_bytes: u64,
}

impl DiskLayout {
    /// First sector of the partition.
    pub fn partition_lba(&self) -> u64 {
        self.partition_start / SECTOR
    }

    /// Sectors in the partition.
    pub fn partition_sectors(&self) -> u64 {
        self.partition_bytes / SECTOR
    }
}

/// The layout of a disk holding a filesystem of `fs_bytes`: 1 MiB, then the filesystem, the
/// total rounded up to 1 MiB. Sizes past what an MBR can address saturate here and are refused
/// by [`write_mbr`].
pub fn layout(fs_bytes: u64) -> DiskLayout {
    let disk_bytes = PARTITION_START
        .saturating_add(fs_bytes)
        .saturating_add(ALIGN - 1)
        / ALIGN
        * ALIGN;
    DiskLayout {
        disk_bytes,
        partition_start: PARTITION_START,
        partition_bytes: disk_bytes - PARTITION_START,
    }
}

/// CHS address of an LBA for the table's legacy fields, with the 255-head, 63-sector geometry
/// every partitioner assumes; addresses past cylinder 1023 get the conventional maximum.
fn chs(lba: u64) -> [u8; 3] {
    let cyl = lba / (255 * 63);
    if cyl > 1023 {
        return [0xFE, 0xFF, 0xFF];
    }
    let head = (lba / 63) % 255;
    let sector = lba % 63 + 1;
    [
        head as u8,
        (sector as u8) | (((cyl >> 8) as u8) << 6),
        cyl as u8,
    ]
}

/// Sector 0 of a disk with `layout`: boot code (or zeros), signature, one bootable Linux
/// partition, 0x55AA.
pub fn mbr_sector(
    layout: &DiskLayout,
    signature: u32,
    boot_code: Option<&[u8; BOOT_CODE_LEN]>,
) -> Result<[u8; 512], MbrError> {
    let start = layout.partition_lba();
    let sectors = layout.partition_sectors();
    let (Ok(start32), Ok(sectors32)) = (u32::try_from(start), u32::try_from(sectors)) else {
        return Err(MbrError::TooBig {
            bytes: layout.disk_bytes,
        });
    };
    if start32.checked_add(sectors32).is_none() {
        return Err(MbrError::TooBig {
            bytes: layout.disk_bytes,
        });
    }
    if sectors == 0 {
        return Err(MbrError::EmptyPartition);
    }
    let mut s = [0u8; 512];
    if let Some(code) = boot_code {
        s[..BOOT_CODE_LEN].copy_from_slice(code);
    }
    s[SIGNATURE_OFFSET..SIGNATURE_OFFSET + 4].copy_from_slice(&signature.to_le_bytes());
    let e = &mut s[TABLE_OFFSET..TABLE_OFFSET + 16];
    e[0] = 0x80;
    e[1..4].copy_from_slice(&chs(start));
    e[4] = LINUX_TYPE;
    e[5..8].copy_from_slice(&chs(start + sectors - 1));
    e[8..12].copy_from_slice(&start32.to_le_bytes());
    e[12..16].copy_from_slice(&sectors32.to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xAA;
    Ok(s)
}

/// Writes the MBR of `layout` into sector 0 of `out`. A regular file shorter than the disk is
/// extended (sparsely) to the disk size; a longer one is refused, as is a too-small device.
pub fn write_mbr(
    out: &File,
    layout: &DiskLayout,
    signature: u32,
    boot_code: Option<&[u8; BOOT_CODE_LEN]>,
) -> Result<(), MbrError> {
    let sector = mbr_sector(layout, signature, boot_code)?;
    let io = |what: &str| {
        let what = what.to_string();
        move |source| MbrError::Io { what, source }
    };
    let meta = out.metadata().map_err(io("stat the disk image"))?;
    if meta.file_type().is_block_device() {
        let actual = crate::image_io::block_device_or_file_size(out)
            .map_err(io("get the size of the disk device"))?;
        if actual < layout.disk_bytes {
            return Err(MbrError::DeviceTooSmall {
                expected: layout.disk_bytes,
                actual,
            });
        }
    } else if meta.len() > layout.disk_bytes {
        return Err(MbrError::OutputTooLong {
            expected: layout.disk_bytes,
            actual: meta.len(),
        });
    } else if meta.len() < layout.disk_bytes {
        out.set_len(layout.disk_bytes)
            .map_err(io("extend the disk image"))?;
    }
    out.write_all_at(&sector, 0)
        .map_err(io("write the MBR at byte 0"))
}

/// One primary partition read back from an MBR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// 1-based partition number (`sda1` is 1).
    pub index: usize,
    /// The boot flag (0x80).
    pub bootable: bool,
    /// Partition type byte.
    pub kind: u8,
    /// First sector.
    pub start_lba: u64,
    /// Length in sectors.
    pub sectors: u64,
}

impl Partition {
    /// Byte offset of the partition.
    pub fn start_bytes(&self) -> u64 {
        self.start_lba * SECTOR
    }

    /// Length in bytes.
    pub fn len_bytes(&self) -> u64 {
        self.sectors * SECTOR
    }
}

/// What sector 0 of a disk says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    /// Disk signature (bytes 0x1B8..0x1BC).
    pub signature: u32,
    /// Used primary partitions, in table order.
    pub partitions: Vec<Partition>,
}

/// Reads and checks the MBR of a disk: signature 0x55AA, status bytes 0x00/0x80, partitions
/// inside the disk and not overlapping. Extended partitions are listed as entries, not followed.
pub fn read_mbr(r: &(impl ReadAt + ?Sized)) -> Result<Mbr, MbrError> {
    let disk_bytes = r.size().map_err(|source| MbrError::Io {
        what: "get the size of the disk".into(),
        source,
    })?;
    let mut s = [0u8; 512];
    r.read_exact_at(&mut s, 0).map_err(|source| MbrError::Io {
        what: "read sector 0 of the disk".into(),
        source,
    })?;
    let tail = u16::from_le_bytes([s[510], s[511]]);
    if tail != 0xAA55 {
        return Err(MbrError::NoSignature { found: tail });
    }
    let disk_sectors = disk_bytes / SECTOR;
    let mut partitions: Vec<Partition> = Vec::new();
    for i in 0..4 {
        let offset = TABLE_OFFSET + 16 * i;
        let e = &s[offset..offset + 16];
        let bad = |reason: String| MbrError::BadEntry {
            index: i + 1,
            offset,
            reason,
        };
        if e[0] != 0 && e[0] != 0x80 {
            return Err(bad(format!(
                "status byte {:#04x} is neither 0x00 nor 0x80",
                e[0]
            )));
        }
        let kind = e[4];
        let start_lba = u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]]));
        let sectors = u64::from(u32::from_le_bytes([e[12], e[13], e[14], e[15]]));
        if kind == 0 || sectors == 0 {
            continue;
        }
        if start_lba == 0 {
            return Err(bad("starts at sector 0, over the MBR".into()));
        }
        let end = start_lba + sectors; // both below 2^32: no overflow
        if end > disk_sectors {
            return Err(bad(format!(
                "sectors {start_lba}..{end} run past the end of the {disk_sectors}-sector disk"
            )));
        }
        if let Some(o) = partitions
            .iter()
            .find(|p| start_lba < p.start_lba + p.sectors && p.start_lba < end)
        {
            return Err(bad(format!("overlaps partition {}", o.index)));
        }
        partitions.push(Partition {
            index: i + 1,
            bootable: e[0] == 0x80,
            kind,
            start_lba,
            sectors,
        });
    }
    Ok(Mbr {
        signature: u32::from_le_bytes([s[0x1B8], s[0x1B9], s[0x1BA], s[0x1BB]]),
        partitions,
    })
}

/// The used primary partitions of a disk (see [`read_mbr`]).
pub fn read_partitions(r: &(impl ReadAt + ?Sized)) -> Result<Vec<Partition>, MbrError> {
    Ok(read_mbr(r)?.partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_rounds_to_mib() {
        let l = layout(100 << 20);
        assert_eq!(l.disk_bytes, 101 << 20);
        assert_eq!(l.partition_lba(), 2048);
        assert_eq!(l.partition_bytes, 100 << 20);
        let l = layout((100 << 20) + 1);
        assert_eq!(l.disk_bytes, 102 << 20);
        assert!(l.partition_bytes > (100 << 20));
        assert_eq!(layout(0).disk_bytes, 1 << 20);
        assert!(matches!(
            mbr_sector(&layout(0), 0, None),
            Err(MbrError::EmptyPartition)
        ));
        assert!(mbr_sector(&layout(u64::MAX), 0, None).is_err());
        assert!(mbr_sector(&layout(3 << 40), 0, None).is_err());
    }

    #[test]
    fn chs_matches_fdisk() {
        // fdisk writes 00 20 21 00 for LBA 2048.
        assert_eq!(chs(2048), [0x20, 0x21, 0x00]);
        assert_eq!(chs(16_450_559), [0xFE, 0xFF, 0xFF]);
        assert_eq!(chs(u64::from(u32::MAX)), [0xFE, 0xFF, 0xFF]);
    }

    #[test]
    fn sector_round_trips() {
        let l = layout(64 << 20);
        let s = mbr_sector(&l, 0x1234_5678, None).unwrap().to_vec();
        let mut disk = s.clone();
        disk.resize(l.disk_bytes as usize, 0);
        let mbr = read_mbr(&disk).unwrap();
        assert_eq!(mbr.signature, 0x1234_5678);
        assert_eq!(
            mbr.partitions,
            vec![Partition {
                index: 1,
                bootable: true,
                kind: 0x83,
                start_lba: 2048,
                sectors: (64 << 20) / 512,
            }]
        );
        // The disk cut short: the partition runs past its end.
        assert!(matches!(
            read_partitions(&disk[..1 << 20]),
            Err(MbrError::BadEntry { index: 1, .. })
        ));
    }

    #[test]
    fn hostile_tables() {
        let mut s = vec![0u8; 4096];
        assert!(matches!(
            read_partitions(&s),
            Err(MbrError::NoSignature { .. })
        ));
        s[510] = 0x55;
        s[511] = 0xAA;
        assert_eq!(read_partitions(&s).unwrap(), vec![]);
        let entry = |s: &mut Vec<u8>, i: usize, status: u8, start: u32, len: u32| {
            let o = TABLE_OFFSET + 16 * i;
            s[o] = status;
            s[o + 4] = 0x83;
            s[o + 8..o + 12].copy_from_slice(&start.to_le_bytes());
            s[o + 12..o + 16].copy_from_slice(&len.to_le_bytes());
        };
        entry(&mut s, 0, 0x80, 1, 4);
        entry(&mut s, 1, 0x00, 4, 2);
        assert!(read_partitions(&s).is_err(), "overlap");
        entry(&mut s, 1, 0x00, 5, 3);
        assert_eq!(read_partitions(&s).unwrap().len(), 2);
        entry(&mut s, 2, 0x7F, 1, 1);
        assert!(read_partitions(&s).is_err(), "status");
        entry(&mut s, 2, 0, u32::MAX, u32::MAX);
        assert!(read_partitions(&s).is_err(), "past the end");
        entry(&mut s, 2, 0, 0, 1);
        assert!(read_partitions(&s).is_err(), "over the MBR");
        assert!(read_partitions(&s[..100]).is_err(), "short");
    }
}
