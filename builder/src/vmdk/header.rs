//! The 512-byte sparse extent header (`KDMV`) shared by monolithicSparse and streamOptimized,
//! and the stream's metadata markers.

/// `KDMV` read as a little-endian u32.
pub const MAGIC: u32 = 0x564D_444B;
/// Flag: the newline-detection bytes are valid.
pub const FLAG_NEWLINE_TEST: u32 = 0x1;
/// Flag: a redundant grain directory exists.
pub const FLAG_REDUNDANT_GD: u32 = 0x2;
/// Flag: GTE 1 means an all-zero grain.
pub const FLAG_ZEROED_GTE: u32 = 0x4;
/// Flag: grains are compressed.
pub const FLAG_COMPRESSED: u32 = 0x1_0000;
/// Flag: grains and metadata carry markers.
pub const FLAG_MARKERS: u32 = 0x2_0000;
/// gdOffset of a stream whose directory is at the end (read the footer).
pub const GD_AT_END: u64 = u64::MAX;
/// compressAlgorithm: deflate (a zlib stream, in practice).
pub const COMPRESS_DEFLATE: u16 = 1;
/// The newline-detection bytes at offset 73; a text-mode transfer mangles them.
pub const NEWLINE_BYTES: [u8; 4] = [b'\n', b' ', b'\r', b'\n'];

/// Marker type: end of stream.
pub const MARKER_EOS: u32 = 0;
/// Marker type: a grain table follows.
pub const MARKER_GT: u32 = 1;
/// Marker type: the grain directory follows.
pub const MARKER_GD: u32 = 2;
/// Marker type: the footer (a copy of the header) follows.
pub const MARKER_FOOTER: u32 = 3;

/// A sparse extent header, fields as on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SparseHeader {
    /// 1, 2 or 3.
    pub version: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Virtual size in sectors.
    pub capacity: u64,
    /// Sectors per grain.
    pub grain_size: u64,
    /// Sector of the embedded descriptor (0: none).
    pub descriptor_offset: u64,
    /// Sectors reserved for it.
    pub descriptor_size: u64,
    /// Entries per grain table.
    pub num_gtes_per_gt: u32,
    /// Sector of the redundant grain directory.
    pub rgd_offset: u64,
    /// Sector of the grain directory, or [`GD_AT_END`].
    pub gd_offset: u64,
    /// Sectors before the first grain.
    pub overhead: u64,
    /// Set while a writer has the file open.
    pub unclean_shutdown: bool,
    /// 0 none, 1 deflate.
    pub compress_algorithm: u16,
}

fn u32_at(b: &[u8; 512], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8; 512], o: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(x)
}

impl SparseHeader {
    /// The header as 512 bytes.
    pub fn encode(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&self.version.to_le_bytes());
        b[8..12].copy_from_slice(&self.flags.to_le_bytes());
        b[12..20].copy_from_slice(&self.capacity.to_le_bytes());
        b[20..28].copy_from_slice(&self.grain_size.to_le_bytes());
        b[28..36].copy_from_slice(&self.descriptor_offset.to_le_bytes());
        b[36..44].copy_from_slice(&self.descriptor_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.num_gtes_per_gt.to_le_bytes());
        b[48..56].copy_from_slice(&self.rgd_offset.to_le_bytes());
        b[56..64].copy_from_slice(&self.gd_offset.to_le_bytes());
        b[64..72].copy_from_slice(&self.overhead.to_le_bytes());
        b[72] = u8::from(self.unclean_shutdown);
        b[73..77].copy_from_slice(&NEWLINE_BYTES);
        b[77..79].copy_from_slice(&self.compress_algorithm.to_le_bytes());
        b
    }

    /// Decodes a header; `None` without the `KDMV` magic. Field values are checked by the
    /// reader, which knows the file they describe.
    pub fn decode(b: &[u8; 512]) -> Option<SparseHeader> {
        if u32_at(b, 0) != MAGIC {
            return None;
        }
        Some(SparseHeader {
            version: u32_at(b, 4),
            flags: u32_at(b, 8),
            capacity: u64_at(b, 12),
            grain_size: u64_at(b, 20),
            descriptor_offset: u64_at(b, 28),
            descriptor_size: u64_at(b, 36),
            num_gtes_per_gt: u32_at(b, 44),
            rgd_offset: u64_at(b, 48),
            gd_offset: u64_at(b, 56),
            overhead: u64_at(b, 64),
            unclean_shutdown: b[72] != 0,
            compress_algorithm: u16::from_le_bytes([b[77], b[78]]),
        })
    }

    /// True if the newline-detection bytes are intact (or not claimed valid).
    pub fn newlines_intact(b: &[u8; 512]) -> bool {
        u32_at(b, 8) & FLAG_NEWLINE_TEST == 0 || b[73..77] == NEWLINE_BYTES
    }
}

/// A 512-byte metadata marker: `numSectors`, size 0, `type`.
pub fn marker(num_sectors: u64, kind: u32) -> [u8; 512] {
    let mut b = [0u8; 512];
    b[0..8].copy_from_slice(&num_sectors.to_le_bytes());
    b[12..16].copy_from_slice(&kind.to_le_bytes());
    b
}

/// Decodes a metadata marker: `(numSectors, type)`, or `None` for a grain marker (size ≠ 0).
pub fn decode_marker(b: &[u8; 512]) -> Option<(u64, u32)> {
    if u32_at(b, 8) != 0 {
        return None;
    }
    Some((u64_at(b, 0), u32_at(b, 12)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let h = SparseHeader {
            version: 3,
            flags: 0x30001,
            capacity: 12345,
            grain_size: 128,
            descriptor_offset: 1,
            descriptor_size: 20,
            num_gtes_per_gt: 512,
            rgd_offset: 0,
            gd_offset: GD_AT_END,
            overhead: 128,
            unclean_shutdown: false,
            compress_algorithm: 1,
        };
        let b = h.encode();
        assert_eq!(&b[0..4], b"KDMV");
        assert_eq!(SparseHeader::decode(&b), Some(h));
        assert!(SparseHeader::newlines_intact(&b));
        let mut mangled = b;
        mangled[75] = b'\n';
        assert!(!SparseHeader::newlines_intact(&mangled));
        assert_eq!(SparseHeader::decode(&[0u8; 512]), None);
        assert_eq!(decode_marker(&marker(4, MARKER_GT)), Some((4, MARKER_GT)));
    }
}
