//! The JBD2 superblock of an empty journal (big-endian, as JBD2 stores everything). With
//! metadata_csum the journal gets checksum v3 and a crc32c of its superblock, as the kernel
//! sets it at the first mount.

use super::checksum::ext4_crc;
use super::format::*;

/// The first block of a journal of `blocks` blocks.
pub fn superblock(blocks: u64, uuid: &[u8; 16], csum: bool, is_64bit: bool) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK];
    put32be(&mut b, 0x00, JBD2_MAGIC);
    put32be(&mut b, 0x04, JBD2_SUPERBLOCK_V2);
    put32be(&mut b, 0x08, 0);
    put32be(&mut b, 0x0C, BLOCK as u32);
    put32be(&mut b, 0x10, blocks as u32);
    put32be(&mut b, 0x14, 1); // first log block
    put32be(&mut b, 0x18, 1); // expected sequence
    put32be(&mut b, 0x1C, 0); // start 0: nothing to replay
    let mut incompat = 0;
    if csum {
        incompat |= JBD2_INCOMPAT_CSUM_V3;
    }
    if is_64bit {
        incompat |= JBD2_INCOMPAT_64BIT;
    }
    put32be(&mut b, 0x28, incompat);
    b[0x30..0x40].copy_from_slice(uuid);
    put32be(&mut b, 0x40, 1); // one user: this filesystem
    if csum {
        b[0x50] = JBD2_CRC32C;
        let crc = ext4_crc(!0, &b[..1024]);
        put32be(&mut b, 0xFC, crc);
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_checksum() {
        let sb = superblock(4096, &[7; 16], true, false);
        assert_eq!(&sb[..4], &[0xC0, 0x3B, 0x39, 0x98]);
        assert_eq!(
            u32::from_be_bytes([sb[0x10], sb[0x11], sb[0x12], sb[0x13]]),
            4096
        );
        let stored = u32::from_be_bytes([sb[0xFC], sb[0xFD], sb[0xFE], sb[0xFF]]);
        let mut copy = sb[..1024].to_vec();
        copy[0xFC..0x100].fill(0);
        assert_eq!(stored, ext4_crc(!0, &copy));
        let plain = superblock(1024, &[7; 16], false, false);
        assert_eq!(&plain[0xFC..0x100], &[0, 0, 0, 0]);
    }
}
