//! On-disk constants of ext2/ext3/ext4 and JBD2 shared by the writer and the reader, and
//! little-endian field helpers for building and parsing fixed-layout structures.

/// Block size of every filesystem we write.
pub const BLOCK_SIZE: u64 = 4096;
/// [`BLOCK_SIZE`] as usize, for buffers.
pub const BLOCK: usize = 4096;
/// Blocks per group with 4 KiB blocks: one bitmap block holds 32768 bits.
pub const BLOCKS_PER_GROUP: u64 = 32768;
/// Byte offset of the primary superblock.
pub const SUPERBLOCK_OFFSET: u64 = 1024;
/// Superblock magic.
pub const EXT4_MAGIC: u16 = 0xEF53;

/// Root directory inode.
pub const ROOT_INO: u32 = 2;
/// Journal inode.
pub const JOURNAL_INO: u32 = 8;
/// lost+found, the first non-reserved inode.
pub const LOST_FOUND_INO: u32 = 11;
/// First inode number for tree entries.
pub const FIRST_FREE_INO: u32 = 12;

// Feature bits.
/// compat: has a journal.
pub const COMPAT_HAS_JOURNAL: u32 = 0x4;
/// compat: extended attributes.
pub const COMPAT_EXT_ATTR: u32 = 0x8;
/// compat: hashed directories may exist.
pub const COMPAT_DIR_INDEX: u32 = 0x20;
/// incompat: file type in directory entries.
pub const INCOMPAT_FILETYPE: u32 = 0x2;
/// incompat: journal needs recovery.
pub const INCOMPAT_RECOVER: u32 = 0x4;
/// incompat: extents.
pub const INCOMPAT_EXTENTS: u32 = 0x40;
/// incompat: 64-bit block numbers.
pub const INCOMPAT_64BIT: u32 = 0x80;
/// incompat: flexible block groups.
pub const INCOMPAT_FLEX_BG: u32 = 0x200;
/// ro_compat: sparse superblock backups.
pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
/// ro_compat: files over 2 GiB.
pub const RO_COMPAT_LARGE_FILE: u32 = 0x2;
/// ro_compat: i_blocks beyond 32 bits.
pub const RO_COMPAT_HUGE_FILE: u32 = 0x8;
/// ro_compat: more than 65000 subdirectories.
pub const RO_COMPAT_DIR_NLINK: u32 = 0x20;
/// ro_compat: large inodes with extra fields.
pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x40;
/// ro_compat: crc32c checksums on all metadata.
pub const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

// Group descriptor flags.
/// The inode table and bitmap are not initialized.
pub const BG_INODE_UNINIT: u16 = 0x1;
/// The inode table is zeroed.
pub const BG_INODE_ZEROED: u16 = 0x4;

// Inode.
/// Inode flag: the inode uses extents.
pub const EXTENTS_FL: u32 = 0x80000;
/// Inode flag: huge file (i_blocks in filesystem blocks).
pub const HUGE_FILE_FL: u32 = 0x40000;
/// Inode flag: inline data.
pub const INLINE_DATA_FL: u32 = 0x1000_0000;
/// Extra inode bytes beyond the first 128 in our 256-byte inodes.
pub const EXTRA_ISIZE: u16 = 32;
/// The classic inode size.
pub const GOOD_OLD_INODE_SIZE: usize = 128;

/// File type bits of i_mode.
pub const S_IFMT: u16 = 0o170000;
/// Socket.
pub const S_IFSOCK: u16 = 0o140000;
/// Symlink.
pub const S_IFLNK: u16 = 0o120000;
/// Regular file.
pub const S_IFREG: u16 = 0o100000;
/// Block device.
pub const S_IFBLK: u16 = 0o060000;
/// Directory.
pub const S_IFDIR: u16 = 0o040000;
/// Character device.
pub const S_IFCHR: u16 = 0o020000;
/// Fifo.
pub const S_IFIFO: u16 = 0o010000;

// Directory entry file types.
/// Regular file.
pub const FT_REG: u8 = 1;
/// Directory.
pub const FT_DIR: u8 = 2;
/// Character device.
pub const FT_CHR: u8 = 3;
/// Block device.
pub const FT_BLK: u8 = 4;
/// Fifo.
pub const FT_FIFO: u8 = 5;
/// Socket.
pub const FT_SOCK: u8 = 6;
/// Symlink.
pub const FT_SYMLINK: u8 = 7;

/// Extent header magic.
pub const EXTENT_MAGIC: u16 = 0xF30A;
/// Longest initialized extent.
pub const MAX_EXTENT_LEN: u64 = 32768;
/// Extent entries in a 4 KiB tree block.
pub const EXTENTS_PER_BLOCK: usize = (BLOCK - 12) / 12;
/// Extent entries in the inode's i_block.
pub const EXTENTS_IN_INODE: usize = 4;
/// Deepest extent tree the kernel accepts.
pub const MAX_EXTENT_DEPTH: u16 = 5;

/// Block numbers per indirect block.
pub const ADDR_PER_BLOCK: u64 = (BLOCK / 4) as u64;
/// Direct block pointers in an inode.
pub const DIRECT_BLOCKS: u64 = 12;

/// Extended attribute magic, in blocks and after the inode's extra fields.
pub const XATTR_MAGIC: u32 = 0xEA02_0000;

/// JBD2 magic.
pub const JBD2_MAGIC: u32 = 0xC03B_3998;
/// JBD2 superblock v2 block type.
pub const JBD2_SUPERBLOCK_V2: u32 = 4;
/// JBD2 incompat: 64-bit block numbers.
pub const JBD2_INCOMPAT_64BIT: u32 = 0x2;
/// JBD2 incompat: checksums v3.
pub const JBD2_INCOMPAT_CSUM_V3: u32 = 0x10;
/// JBD2 checksum type crc32c.
pub const JBD2_CRC32C: u8 = 4;

/// Reads a little-endian u16 at `off`; callers guarantee the bounds.
pub fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian u32 at `off`; callers guarantee the bounds.
pub fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Writes a little-endian u16 at `off`.
pub fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian u32 at `off`.
pub fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a big-endian u32 at `off` (JBD2 is big-endian).
pub fn put32be(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_be_bytes());
}

/// True for groups that hold a superblock backup with sparse_super: 0, 1 and powers of 3, 5, 7.
pub fn group_has_super(group: u64) -> bool {
    if group <= 1 {
        return true;
    }
    [3u64, 5, 7].iter().any(|&base| {
        let mut n = base;
        while n < group {
            n = match n.checked_mul(base) {
                Some(v) => v,
                None => return false,
            };
        }
        n == group
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_super_groups() {
        let with: Vec<u64> = (0..100).filter(|&g| group_has_super(g)).collect();
        assert_eq!(with, [0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
        assert!(group_has_super(3u64.pow(20)));
        assert!(!group_has_super(3u64.pow(20) + 2));
    }

    #[test]
    fn field_helpers() {
        let mut b = [0u8; 8];
        put16(&mut b, 0, 0xbeef);
        put32(&mut b, 2, 0x1234_5678);
        assert_eq!(le16(&b, 0), 0xbeef);
        assert_eq!(le32(&b, 2), 0x1234_5678);
        put32be(&mut b, 4, 0xC03B_3998);
        assert_eq!(&b[4..], &[0xC0, 0x3B, 0x39, 0x98]);
    }
}
