//! The superblock as the reader checks it: sizes, counts and features validated against the
//! image size before anything else is read.

use super::Ext4ReadError;
use crate::definition::FsType;
use crate::ext4::checksum::{ext4_crc, fs_seed};
use crate::ext4::format::*;

/// The fields of a validated superblock.
#[derive(Debug, Clone)]
pub struct Superblock {
    /// Block size in bytes.
    pub block_size: u64,
    /// Blocks.
    pub blocks_count: u64,
    /// Free blocks as recorded.
    pub free_blocks: u64,
    /// Inodes.
    pub inodes_count: u32,
    /// Free inodes as recorded.
    pub free_inodes: u32,
    /// Blocks per group.
    pub blocks_per_group: u64,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// First data block (1 for 1 KiB blocks).
    pub first_data_block: u64,
    /// Inode size.
    pub inode_size: u16,
    /// Number of groups.
    pub groups: u64,
    /// Group descriptor size.
    pub desc_size: u64,
    /// Compatible features.
    pub compat: u32,
    /// Incompatible features.
    pub incompat: u32,
    /// Read-only compatible features.
    pub ro_compat: u32,
    /// UUID.
    pub uuid: [u8; 16],
    /// Label.
    pub label: String,
    /// Seed of metadata checksums, when metadata_csum is on.
    pub csum_seed: Option<u32>,
}

const KNOWN_INCOMPAT: u32 = INCOMPAT_FILETYPE
    | INCOMPAT_RECOVER
    | INCOMPAT_EXTENTS
    | INCOMPAT_64BIT
    | 0x100 // mmp
    | INCOMPAT_FLEX_BG
    | 0x2000 // csum_seed
    | 0x4000 // largedir
    | 0x20000; // casefold
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;

fn bad(what: impl Into<String>) -> Ext4ReadError {
    Ext4ReadError::BadSuperblock(what.into())
}

impl Superblock {
    /// Parses and checks the 1024-byte superblock of an image of `image_size` bytes.
    pub fn parse(raw: &[u8; 1024], image_size: u64) -> Result<Superblock, Ext4ReadError> {
        if le16(raw, 0x38) != EXT4_MAGIC {
            return Err(bad("no ext2/3/4 magic number"));
        }
        let log = le32(raw, 0x18);
        if log > 6 {
            return Err(bad(format!("block size 1024 << {log}")));
        }
        let block_size = 1024u64 << log;
        let incompat = le32(raw, 0x60);
        let ro_compat = le32(raw, 0x64);
        let is_64bit = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(le32(raw, 0x04))
            | if is_64bit {
                u64::from(le32(raw, 0x150)) << 32
            } else {
                0
            };
        let free_blocks = u64::from(le32(raw, 0x0C))
            | if is_64bit {
                u64::from(le32(raw, 0x158)) << 32
            } else {
                0
            };
        let inodes_count = le32(raw, 0x00);
        let blocks_per_group = u64::from(le32(raw, 0x20));
        let inodes_per_group = le32(raw, 0x28);
        let first_data_block = u64::from(le32(raw, 0x14));
        let rev = le32(raw, 0x4C);
        let inode_size = if rev == 0 { 128 } else { le16(raw, 0x58) };
        if blocks_per_group == 0 || blocks_per_group > 8 * block_size {
            return Err(bad(format!("{blocks_per_group} blocks per group")));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > 8 * block_size {
            return Err(bad(format!("{inodes_per_group} inodes per group")));
        }
        if inode_size < 128 || !inode_size.is_power_of_two() || u64::from(inode_size) > block_size {
            return Err(bad(format!("inode size {inode_size}")));
        }
        if first_data_block >= blocks_count || (block_size == 1024) != (first_data_block == 1) {
            return Err(bad(format!(
                "first data block {first_data_block} of {blocks_count}"
            )));
        }
        if blocks_count.saturating_mul(block_size) > image_size {
            return Err(bad(format!(
                "{blocks_count} blocks of {block_size} bytes do not fit in an image of {image_size} bytes"
            )));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if u64::from(inodes_count) > groups * u64::from(inodes_per_group) || inodes_count < 11 {
            return Err(bad(format!(
                "{inodes_count} inodes in {groups} groups of {inodes_per_group}"
            )));
        }
        let desc_size = if is_64bit {
            u64::from(le16(raw, 0xFE))
        } else {
            32
        };
        if desc_size < 32
            || !desc_size.is_power_of_two()
            || desc_size > 1024
            || (is_64bit && desc_size < 64)
        {
            return Err(bad(format!("group descriptor size {desc_size}")));
        }
        let unknown = incompat & !KNOWN_INCOMPAT;
        if unknown != 0 {
            return Err(Ext4ReadError::Unsupported(format!(
                "incompatible features {unknown:#x}"
            )));
        }
        let metadata_csum = ro_compat & RO_COMPAT_METADATA_CSUM != 0;
        if metadata_csum {
            let stored = le32(raw, 0x3FC);
            let computed = ext4_crc(!0, &raw[..0x3FC]);
            if stored != computed {
                return Err(bad(format!(
                    "checksum {stored:#010x}, computed {computed:#010x}"
                )));
            }
        }
        let mut uuid = [0u8; 16];
        uuid.copy_from_slice(&raw[0x68..0x78]);
        let label_bytes = &raw[0x78..0x88];
        let end = label_bytes.iter().position(|&b| b == 0).unwrap_or(16);
        let csum_seed = metadata_csum.then(|| {
            if incompat & INCOMPAT_CSUM_SEED != 0 {
                le32(raw, 0x270)
            } else {
                fs_seed(&uuid)
            }
        });
        let sb = Superblock {
            block_size,
            blocks_count,
            free_blocks,
            inodes_count,
            free_inodes: le32(raw, 0x10),
            blocks_per_group,
            inodes_per_group,
            first_data_block,
            inode_size,
            groups,
            desc_size,
            compat: le32(raw, 0x5C),
            incompat,
            ro_compat,
            uuid,
            label: String::from_utf8_lossy(&label_bytes[..end]).into_owned(),
            csum_seed,
        };
        if sb.gdt_offset().saturating_add(sb.gdt_bytes()) > image_size || sb.gdt_bytes() > 1 << 30 {
            return Err(bad(format!(
                "a descriptor table of {} bytes does not fit",
                sb.gdt_bytes()
            )));
        }
        Ok(sb)
    }

    /// Byte offset of the group descriptor table.
    pub fn gdt_offset(&self) -> u64 {
        (self.first_data_block + 1) * self.block_size
    }

    /// Bytes of the group descriptor table.
    pub fn gdt_bytes(&self) -> u64 {
        self.groups * self.desc_size
    }

    /// Whether block numbers have 64 bits.
    pub fn is_64bit(&self) -> bool {
        self.incompat & INCOMPAT_64BIT != 0
    }

    /// Whether i_blocks has 48 bits.
    pub fn huge_file(&self) -> bool {
        self.ro_compat & RO_COMPAT_HUGE_FILE != 0
    }

    /// First inode table block of `group` (callers pass `group < groups`).
    pub fn group_inode_table(&self, gdt: &[u8], group: u64) -> u64 {
        let at = (group * self.desc_size) as usize;
        let lo = gdt.get(at + 8..at + 12).map_or(0, |b| le32(b, 0));
        let hi = if self.is_64bit() {
            gdt.get(at + 0x28..at + 0x2C).map_or(0, |b| le32(b, 0))
        } else {
            0
        };
        u64::from(lo) | u64::from(hi) << 32
    }

    /// The type this filesystem would be created as.
    pub fn fs_type(&self) -> FsType {
        let ext4_incompat = INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG;
        let ext4_ro = RO_COMPAT_METADATA_CSUM
            | RO_COMPAT_HUGE_FILE
            | RO_COMPAT_DIR_NLINK
            | RO_COMPAT_EXTRA_ISIZE
            | RO_COMPAT_GDT_CSUM;
        if self.incompat & ext4_incompat != 0 || self.ro_compat & ext4_ro != 0 {
            FsType::Ext4
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            FsType::Ext3
        } else {
            FsType::Ext2
        }
    }
}
