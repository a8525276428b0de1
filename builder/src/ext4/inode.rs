//! Inode records: 256 bytes with extra fields (ext4) or 128 bytes (ext2/ext3), timestamps with
//! epoch bits, 32-bit owners split over two fields, and the crc32c checksum.

use super::checksum::{ext4_crc, inode_seed};
use super::format::{put16, put32, EXTRA_ISIZE, GOOD_OLD_INODE_SIZE};
use super::xattr::{encode_inline, DiskXattr};

/// The fields of one inode.
#[derive(Debug, Clone)]
pub struct InodeRecord {
    /// Type and permission bits.
    pub mode: u16,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Link count.
    pub links: u16,
    /// Blocks in use, in 512-byte units.
    pub sectors: u64,
    /// Inode flags.
    pub flags: u32,
    /// The 60 bytes of i_block: extent root, block pointers, symlink target or device number.
    pub i_block: [u8; 60],
    /// The xattr block, 0 when none.
    pub file_acl: u64,
    /// Time for atime, ctime, mtime and crtime, seconds since the epoch.
    pub time: i64,
}

/// Seconds as stored: the low 32 bits and, with extra fields, the epoch bits.
pub fn encode_time(t: i64, extra: bool) -> (u32, u32) {
    if !extra {
        let t = t.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        return (t as i32 as u32, 0);
    }
    // Two epoch bits extend the signed 32-bit seconds up to the year 2446.
    let max = i64::from(i32::MAX) + (3i64 << 32);
    let t = t.clamp(i64::from(i32::MIN), max);
    let lo = t as i32;
    let epoch = ((t - i64::from(lo)) >> 32) as u32 & 3;
    (lo as u32, epoch)
}

/// Decodes seconds stored as [`encode_time`] does.
pub fn decode_time(lo: u32, extra: u32) -> i64 {
    i64::from(lo as i32) + (i64::from(extra & 3) << 32)
}

/// Writes `rec` into `out` (the inode's slot in the inode table, `inode_size` bytes). With
/// `csum` = (filesystem seed, inode number) the checksum is set; `xattrs` go after the extra
/// fields (256-byte inodes only).
pub fn encode(rec: &InodeRecord, out: &mut [u8], csum: Option<(u32, u32)>, xattrs: &[DiskXattr]) {
    let large = out.len() > GOOD_OLD_INODE_SIZE;
    out.fill(0);
    put16(out, 0x00, rec.mode);
    put16(out, 0x02, rec.uid as u16);
    put32(out, 0x04, rec.size as u32);
    let (t, epoch) = encode_time(rec.time, large);
    put32(out, 0x08, t);
    put32(out, 0x0C, t);
    put32(out, 0x10, t);
    put16(out, 0x18, rec.gid as u16);
    put16(out, 0x1A, rec.links);
    put32(out, 0x1C, rec.sectors as u32);
    put32(out, 0x20, rec.flags);
    out[0x28..0x28 + 60].copy_from_slice(&rec.i_block);
    put32(out, 0x68, rec.file_acl as u32);
    put32(out, 0x6C, (rec.size >> 32) as u32);
    put16(out, 0x74, (rec.sectors >> 32) as u16);
    put16(out, 0x76, (rec.file_acl >> 32) as u16);
    put16(out, 0x78, (rec.uid >> 16) as u16);
    put16(out, 0x7A, (rec.gid >> 16) as u16);
    if large {
        put16(out, 0x80, EXTRA_ISIZE);
        put32(out, 0x84, epoch);
        put32(out, 0x88, epoch);
        put32(out, 0x8C, epoch);
        put32(out, 0x90, t);
        put32(out, 0x94, epoch);
        let area = GOOD_OLD_INODE_SIZE + usize::from(EXTRA_ISIZE);
        encode_inline(&mut out[area..], xattrs);
    }
    if let Some((fs_seed, ino)) = csum {
        set_checksum(out, fs_seed, ino);
    }
}

/// Computes and stores the inode checksum (generation 0). With a zero i_extra_isize only the
/// low half exists, as mke2fs writes the reserved inodes.
pub fn set_checksum(out: &mut [u8], fs_seed: u32, ino: u32) {
    let large = out.len() > GOOD_OLD_INODE_SIZE;
    let has_hi = large && u16::from_le_bytes([out[0x80], out[0x81]]) >= 4;
    put16(out, 0x7C, 0);
    if has_hi {
        put16(out, 0x82, 0);
    }
    let crc = ext4_crc(inode_seed(fs_seed, ino, 0), out);
    put16(out, 0x7C, crc as u16);
    if has_hi {
        put16(out, 0x82, (crc >> 16) as u16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::format::{le16, le32};

    #[test]
    fn times_round_trip_with_epochs_and_clamp() {
        for t in [
            0i64,
            -1,
            1_700_000_000,
            i64::from(i32::MAX) + 10,
            1i64 << 33,
        ] {
            let (lo, ex) = encode_time(t, true);
            assert_eq!(decode_time(lo, ex), t);
        }
        assert_eq!(
            decode_time(encode_time(i64::MAX, true).0, encode_time(i64::MAX, true).1),
            i64::from(i32::MAX) + (3i64 << 32)
        );
        assert_eq!(encode_time(1i64 << 40, false), (i32::MAX as u32, 0));
    }

    #[test]
    fn owner_high_bits_and_checksum() {
        let rec = InodeRecord {
            mode: 0o100644,
            uid: 70000,
            gid: 65536 + 5,
            size: 5 << 32,
            links: 1,
            sectors: 8,
            flags: 0,
            i_block: [0; 60],
            file_acl: 0,
            time: 1,
        };
        let mut buf = vec![0u8; 256];
        encode(&rec, &mut buf, Some((42, 12)), &[]);
        assert_eq!(
            u32::from(le16(&buf, 2)) | u32::from(le16(&buf, 0x78)) << 16,
            70000
        );
        assert_eq!(le16(&buf, 0x7A), 1);
        assert_eq!(le32(&buf, 0x6C), 5);
        let stored = u32::from(le16(&buf, 0x7C)) | u32::from(le16(&buf, 0x82)) << 16;
        let mut copy = buf.clone();
        copy[0x7C..0x7E].fill(0);
        copy[0x82..0x84].fill(0);
        assert_eq!(stored, ext4_crc(inode_seed(42, 12, 0), &copy));
    }
}
