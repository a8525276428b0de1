//! The superblock (primary and backups), with the feature set of each filesystem type.

use super::checksum::ext4_crc;
use super::format::*;
use super::layout::{Geometry, FLEX_LOG};
use crate::definition::FsType;

/// Feature words (compat, incompat, ro_compat) for a filesystem type.
pub fn features(fs: FsType, is_64bit: bool) -> (u32, u32, u32) {
    let base_ro = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE;
    match fs {
        FsType::Ext4 => (
            COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
            INCOMPAT_FILETYPE
                | INCOMPAT_EXTENTS
                | INCOMPAT_FLEX_BG
                | if is_64bit { INCOMPAT_64BIT } else { 0 },
            base_ro
                | RO_COMPAT_HUGE_FILE
                | RO_COMPAT_DIR_NLINK
                | RO_COMPAT_EXTRA_ISIZE
                | RO_COMPAT_METADATA_CSUM,
        ),
        FsType::Ext3 => (
            COMPAT_HAS_JOURNAL | COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
            INCOMPAT_FILETYPE,
            base_ro,
        ),
        FsType::Ext2 => (
            COMPAT_EXT_ATTR | COMPAT_DIR_INDEX,
            INCOMPAT_FILETYPE,
            base_ro,
        ),
    }
}

/// Everything the superblock records.
pub struct SuperInfo<'a> {
    /// Geometry.
    pub geo: &'a Geometry,
    /// Type.
    pub fs: FsType,
    /// Free blocks.
    pub free_blocks: u64,
    /// Free inodes.
    pub free_inodes: u64,
    /// Blocks reserved for root.
    pub reserved_blocks: u64,
    /// UUID.
    pub uuid: [u8; 16],
    /// Label bytes (≤ 16).
    pub label: &'a [u8],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// Creation / write / check time.
    pub timestamp: i64,
    /// Journal inode's i_block words and size, for the backup copy; `None` without journal.
    pub journal: Option<([u8; 60], u64)>,
}

/// The 1024-byte superblock copy stored in `group`.
pub fn encode(info: &SuperInfo<'_>, group: u64) -> Vec<u8> {
    let geo = info.geo;
    let mut sb = vec![0u8; 1024];
    let (compat, incompat, ro) = features(info.fs, geo.is_64bit);
    put32(&mut sb, 0x00, geo.inodes() as u32);
    put32(&mut sb, 0x04, geo.blocks as u32);
    put32(&mut sb, 0x08, info.reserved_blocks as u32);
    put32(&mut sb, 0x0C, info.free_blocks as u32);
    put32(&mut sb, 0x10, info.free_inodes as u32);
    put32(&mut sb, 0x14, 0); // first data block
    put32(&mut sb, 0x18, 2); // log block size: 1024 << 2
    put32(&mut sb, 0x1C, 2);
    put32(&mut sb, 0x20, BLOCKS_PER_GROUP as u32);
    put32(&mut sb, 0x24, BLOCKS_PER_GROUP as u32);
    put32(&mut sb, 0x28, geo.inodes_per_group);
    let t = info.timestamp.clamp(0, (1i64 << 40) - 1);
    put32(&mut sb, 0x30, t as u32); // wtime
    put16(&mut sb, 0x34, 0); // mount count
    put16(&mut sb, 0x36, 0xFFFF); // max mount count: -1
    put16(&mut sb, 0x38, EXT4_MAGIC);
    put16(&mut sb, 0x3A, 1); // clean
    put16(&mut sb, 0x3C, 1); // errors: continue
    put32(&mut sb, 0x40, t as u32); // lastcheck
    put32(&mut sb, 0x4C, 1); // dynamic revision
    put32(&mut sb, 0x54, LOST_FOUND_INO);
    put16(&mut sb, 0x58, geo.inode_size);
    put16(&mut sb, 0x5A, group as u16);
    put32(&mut sb, 0x5C, compat);
    put32(&mut sb, 0x60, incompat);
    put32(&mut sb, 0x64, ro);
    sb[0x68..0x78].copy_from_slice(&info.uuid);
    sb[0x78..0x78 + info.label.len()].copy_from_slice(info.label);
    if let Some((i_block, size)) = &info.journal {
        put32(&mut sb, 0xE0, JOURNAL_INO);
        sb[0x10C..0x10C + 60].copy_from_slice(i_block);
        put32(&mut sb, 0x10C + 60, (size >> 32) as u32);
        put32(&mut sb, 0x10C + 64, *size as u32);
        sb[0xFD] = 1; // s_jnl_backup_type: inode blocks
    }
    sb[0xEC..0xFC].copy_from_slice(&info.hash_seed);
    sb[0xFC] = 1; // half_md4
    put32(&mut sb, 0x100, 0x000C); // default mount options: user_xattr, acl
    put32(&mut sb, 0x108, t as u32); // mkfs time
    put32(&mut sb, 0x150, (geo.blocks >> 32) as u32);
    put32(&mut sb, 0x154, (info.reserved_blocks >> 32) as u32);
    put32(&mut sb, 0x158, (info.free_blocks >> 32) as u32);
    put32(&mut sb, 0x160, 1); // signed directory hash
    sb[0x274] = (t >> 32) as u8; // wtime_hi
    sb[0x276] = (t >> 32) as u8; // mkfs_time_hi
    sb[0x277] = (t >> 32) as u8; // lastcheck_hi
    if info.fs == FsType::Ext4 {
        put16(&mut sb, 0xFE, if geo.is_64bit { geo.desc_size } else { 0 });
        put16(&mut sb, 0x15C, EXTRA_ISIZE);
        put16(&mut sb, 0x15E, EXTRA_ISIZE);
        sb[0x174] = FLEX_LOG;
        sb[0x175] = 1; // crc32c
        let crc = ext4_crc(!0, &sb[..0x3FC]);
        put32(&mut sb, 0x3FC, crc);
    }
    sb
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ext3_has_only_old_kernel_features() {
        let (c, i, r) = features(FsType::Ext3, false);
        assert_eq!(c, 0x2C);
        assert_eq!(i, 0x2);
        assert_eq!(r, 0x3);
        let (_, i4, r4) = features(FsType::Ext4, false);
        assert_eq!(i4 & INCOMPAT_64BIT, 0);
        assert_ne!(r4 & RO_COMPAT_METADATA_CSUM, 0);
    }

    #[test]
    fn checksum_and_backup_group_number() {
        let geo = Geometry::new(true, 100_000, 1000).unwrap();
        let info = SuperInfo {
            geo: &geo,
            fs: FsType::Ext4,
            free_blocks: 5,
            free_inodes: 6,
            reserved_blocks: 0,
            uuid: [9; 16],
            label: b"root",
            hash_seed: [3; 16],
            timestamp: 1_700_000_000,
            journal: None,
        };
        let a = encode(&info, 0);
        let b = encode(&info, 1);
        assert_eq!(le16(&a, 0x38), EXT4_MAGIC);
        assert_eq!(le16(&b, 0x5A), 1);
        assert_eq!(le32(&a, 0x3FC), ext4_crc(!0, &a[..0x3FC]));
        assert_ne!(le32(&a, 0x3FC), le32(&b, 0x3FC));
        assert_eq!(&a[0x78..0x7D], b"root\0");
    }
}
