//! crc32c as ext4 and JBD2 use it: the raw CRC register, without the final inversion that the
//! usual "crc32c of a buffer" applies, chained from a seed.

/// Continues the ext4 CRC `seed` over `data` (the kernel's `ext4_chksum`).
pub fn ext4_crc(seed: u32, data: &[u8]) -> u32 {
    // crc32c_append(c, d) is !raw(!c, d); so raw(s, d) is !crc32c_append(!s, d).
    !crc32c::crc32c_append(!seed, data)
}

/// The per-filesystem seed every metadata checksum starts from: crc over the UUID.
pub fn fs_seed(uuid: &[u8; 16]) -> u32 {
    ext4_crc(!0, uuid)
}

/// The per-inode seed: the filesystem seed over the inode number and generation.
pub fn inode_seed(fs_seed: u32, ino: u32, generation: u32) -> u32 {
    let crc = ext4_crc(fs_seed, &ino.to_le_bytes());
    ext4_crc(crc, &generation.to_le_bytes())
}

/// True when every byte of `data` is zero; word-wise, as it runs over every block of file data.
pub fn is_zero(data: &[u8]) -> bool {
    let mut chunks = data.chunks_exact(32);
    let mut acc = 0u64;
    for c in &mut chunks {
        for w in c.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            acc |= u64::from_ne_bytes(b);
        }
        if acc != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&b| b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_crc_chains_and_matches_the_standard_form() {
        // The standard crc32c of "123456789" is 0xe3069283; raw with seed !0 is its inverse.
        assert_eq!(!ext4_crc(!0, b"123456789"), 0xe306_9283);
        let whole = ext4_crc(7, b"hello world");
        let parts = ext4_crc(ext4_crc(7, b"hello "), b"world");
        assert_eq!(whole, parts);
    }

    #[test]
    fn zero_detection() {
        let mut b = vec![0u8; 4096];
        assert!(is_zero(&b));
        b[4095] = 1;
        assert!(!is_zero(&b));
        b[4095] = 0;
        b[17] = 1;
        assert!(!is_zero(&b));
        assert!(is_zero(&[0u8; 3]));
        assert!(!is_zero(&[0, 0, 9]));
    }
}
