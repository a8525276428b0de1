//! The byte layout of a results disk (or file): a 4 KiB header, then sector-aligned records.
//!
//! # Header (version 1), 4096 bytes, integers little-endian
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 16 | magic `imgbuild-results` |
//! | 16 | 4 | format version (1) |
//! | 20 | 4 | header size (4096) |
//! | 24 | 8 | capacity in bytes, header included; 0 for a file that grows |
//! | 32 | 4 | offset of the first record (4096) |
//! | 36 | 4 | record alignment (512) |
//! | 40 | 1 | 1 when a rootfs digest follows, else 0 |
//! | 48 | 32 | rootfs digest (sha256) |
//! | 80 | 2 | image name length (at most 255) |
//! | 82 | 255 | image name, UTF-8 |
//! | 4092 | 4 | crc32c of bytes 0..4092 |
//!
//! Everything else is zero.
//!
//! # Record
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `imgbrec1` |
//! | 8 | 4 | payload length (at most [`MAX_PAYLOAD`]) |
//! | 12 | 4 | crc32c of bytes 0..12, bytes 16..32 and the payload |
//! | 16 | 8 | run id (random per run; tells this run's records from an earlier run's) |
//! | 24 | 8 | sequence number within the run, from 0 |
//! | 32 | n | payload: one JSON [`Record`](super::schema::Record) |
//!
//! then zeros up to the next multiple of 512. A record is written in one write and flushed.

use crate::digest::RootfsDigest;

/// Size of the header; records start here.
pub const HEADER_SIZE: usize = 4096;
/// Records start on multiples of this.
pub const SECTOR: u64 = 512;
/// First bytes of a results disk.
pub const HEADER_MAGIC: [u8; 16] = *b"imgbuild-results";
/// The header format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// First bytes of every record.
pub const RECORD_MAGIC: [u8; 8] = *b"imgbrec1";
/// Size of a record's frame header.
pub const FRAME_HEADER_SIZE: usize = 32;
/// Largest payload accepted, so a hostile length cannot make a reader allocate much.
pub const MAX_PAYLOAD: u32 = 1 << 20;
/// Longest image name the header holds, in bytes.
pub const MAX_IMAGE_NAME: usize = 255;
/// Smallest results disk: the header and room for a few records.
pub const MIN_CAPACITY: u64 = 64 * 1024;

const CRC_OFFSET: usize = HEADER_SIZE - 4;

/// The parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsHeader {
    /// Format version.
    pub version: u32,
    /// Capacity in bytes (header included); `None` for a growing file.
    pub capacity: Option<u64>,
    /// Image name the builder wrote.
    pub image: String,
    /// Rootfs digest the builder wrote.
    pub rootfs_digest: Option<RootfsDigest>,
}

/// Why a header or record frame is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Not a results disk at all.
    #[error("no results header (magic imgbuild-results missing)")]
    NoMagic,
    /// The header checksum does not match.
    #[error("results header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    HeaderChecksum {
        /// As stored.
        stored: u32,
        /// As computed.
        computed: u32,
    },
    /// A version this code does not know.
    #[error("results format version {0} is not supported (this reader knows version 1)")]
    Version(u32),
    /// A header field out of range.
    #[error("bad results header: {0}")]
    BadHeader(String),
    /// An image name that does not fit.
    #[error("image name of {0} bytes does not fit the results header (at most 255)")]
    ImageNameTooLong(usize),
    /// A capacity that is too small or not a multiple of the sector size.
    #[error("results disk capacity {0} must be a multiple of 512 and at least 64 KiB")]
    BadCapacity(u64),
    /// A payload larger than [`MAX_PAYLOAD`].
    #[error("record payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    PayloadTooLarge(u64),
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(src) = bytes.get(offset..offset + 4) {
        word.copy_from_slice(src);
    }
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut word = [0u8; 8];
    if let Some(src) = bytes.get(offset..offset + 8) {
        word.copy_from_slice(src);
    }
    u64::from_le_bytes(word)
}

/// The 4 KiB header of a results disk of `capacity` bytes (0 for a growing file).
pub fn format_header(
    capacity: u64,
    image: &str,
    digest: Option<RootfsDigest>,
) -> Result<Vec<u8>, FormatError> {
    if capacity != 0 && (capacity % SECTOR != 0 || capacity < MIN_CAPACITY) {
        return Err(FormatError::BadCapacity(capacity));
    }
    if image.len() > MAX_IMAGE_NAME {
        return Err(FormatError::ImageNameTooLong(image.len()));
    }
    let mut header = vec![0u8; HEADER_SIZE];
    header[0..16].copy_from_slice(&HEADER_MAGIC);
    header[16..20].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[20..24].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    header[24..32].copy_from_slice(&capacity.to_le_bytes());
    header[32..36].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    header[36..40].copy_from_slice(&(SECTOR as u32).to_le_bytes());
    if let Some(digest) = digest {
        header[40] = 1;
        header[48..80].copy_from_slice(&digest.0);
    }
    header[80..82].copy_from_slice(&(image.len() as u16).to_le_bytes());
    header[82..82 + image.len()].copy_from_slice(image.as_bytes());
    let crc = crc32c::crc32c(&header[..CRC_OFFSET]);
    header[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    Ok(header)
}

/// True when `bytes` starts with the header magic (a cheap test before [`parse_header`]).
pub fn has_header_magic(bytes: &[u8]) -> bool {
    bytes.starts_with(&HEADER_MAGIC)
}

/// Parses and checks a header; `bytes` must hold at least [`HEADER_SIZE`] bytes.
pub fn parse_header(bytes: &[u8]) -> Result<ResultsHeader, FormatError> {
    if !has_header_magic(bytes) {
        return Err(FormatError::NoMagic);
    }
    let Some(header) = bytes.get(..HEADER_SIZE) else {
        return Err(FormatError::BadHeader(format!(
            "only {} bytes, the header has {HEADER_SIZE}",
            bytes.len()
        )));
    };
    let stored = u32_at(header, CRC_OFFSET);
    let computed = crc32c::crc32c(&header[..CRC_OFFSET]);
    if stored != computed {
        return Err(FormatError::HeaderChecksum { stored, computed });
    }
    let version = u32_at(header, 16);
    if version != FORMAT_VERSION {
        return Err(FormatError::Version(version));
    }
    let bad = |what: String| Err(FormatError::BadHeader(what));
    for (offset, name, want) in [
        (20, "header size", HEADER_SIZE as u32),
        (32, "data offset", HEADER_SIZE as u32),
        (36, "record alignment", SECTOR as u32),
    ] {
        let got = u32_at(header, offset);
        if got != want {
            return bad(format!("{name} is {got}, expected {want}"));
        }
    }
    let capacity = u64_at(header, 24);
    if capacity != 0 && (capacity % SECTOR != 0 || capacity < MIN_CAPACITY) {
        return bad(format!(
            "capacity {capacity} is not a multiple of 512 of at least 64 KiB"
        ));
    }
    let rootfs_digest = match header[40] {
        0 => None,
        1 => {
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&header[48..80]);
            Some(RootfsDigest(digest))
        }
        other => return bad(format!("digest flag is {other}, expected 0 or 1")),
    };
    let name_len = usize::from(u16::from_le_bytes([header[80], header[81]]));
    if name_len > MAX_IMAGE_NAME {
        return bad(format!(
            "image name length {name_len} exceeds {MAX_IMAGE_NAME}"
        ));
    }
    let Ok(image) = std::str::from_utf8(&header[82..82 + name_len]) else {
        return bad("image name is not UTF-8".into());
    };
    Ok(ResultsHeader {
        version,
        capacity: (capacity != 0).then_some(capacity),
        image: image.to_owned(),
        rootfs_digest,
    })
}

/// The fixed part of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length in bytes.
    pub payload_len: u32,
    /// Stored checksum.
    pub crc: u32,
    /// Run id.
    pub run_id: u64,
    /// Sequence number.
    pub seq: u64,
}

impl FrameHeader {
    /// Bytes the whole record occupies: frame header, payload, padding to a sector.
    pub fn padded_len(&self) -> u64 {
        padded_len(self.payload_len)
    }
}

/// Bytes a record with a payload of `payload_len` bytes occupies.
pub fn padded_len(payload_len: u32) -> u64 {
    let raw = FRAME_HEADER_SIZE as u64 + u64::from(payload_len);
    raw.div_ceil(SECTOR) * SECTOR
}

/// Parses a frame header when `bytes` starts with the record magic; `None` otherwise.
pub fn parse_frame_header(bytes: &[u8]) -> Option<FrameHeader> {
    if bytes.len() < FRAME_HEADER_SIZE || !bytes.starts_with(&RECORD_MAGIC) {
        return None;
    }
    Some(FrameHeader {
        payload_len: u32_at(bytes, 8),
        crc: u32_at(bytes, 12),
        run_id: u64_at(bytes, 16),
        seq: u64_at(bytes, 24),
    })
}

/// The checksum a frame with this header and payload must carry.
pub fn frame_crc(header: &FrameHeader, payload: &[u8]) -> u32 {
    let mut fixed = [0u8; 28];
    fixed[0..8].copy_from_slice(&RECORD_MAGIC);
    fixed[8..12].copy_from_slice(&header.payload_len.to_le_bytes());
    fixed[12..20].copy_from_slice(&header.run_id.to_le_bytes());
    fixed[20..28].copy_from_slice(&header.seq.to_le_bytes());
    crc32c::crc32c_append(crc32c::crc32c(&fixed), payload)
}

/// A whole record, padded to a sector multiple.
pub fn encode_record(run_id: u64, seq: u64, payload: &[u8]) -> Result<Vec<u8>, FormatError> {
    let payload_len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n <= MAX_PAYLOAD)
        .ok_or(FormatError::PayloadTooLarge(payload.len() as u64))?;
    let mut header = FrameHeader {
        payload_len,
        crc: 0,
        run_id,
        seq,
    };
    header.crc = frame_crc(&header, payload);
    let total = usize::try_from(header.padded_len())
        .map_err(|_| FormatError::PayloadTooLarge(payload.len() as u64))?;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&RECORD_MAGIC);
    out.extend_from_slice(&header.payload_len.to_le_bytes());
    out.extend_from_slice(&header.crc.to_le_bytes());
    out.extend_from_slice(&run_id.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(total, 0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let digest = RootfsDigest([0x5a; 32]);
        let bytes = format_header(8 << 20, "minimal", Some(digest)).unwrap();
        assert_eq!(bytes.len(), HEADER_SIZE);
        let header = parse_header(&bytes).unwrap();
        assert_eq!(header.capacity, Some(8 << 20));
        assert_eq!(header.image, "minimal");
        assert_eq!(header.rootfs_digest, Some(digest));
        let file = parse_header(&format_header(0, "", None).unwrap()).unwrap();
        assert_eq!((file.capacity, file.rootfs_digest), (None, None));
    }

    #[test]
    fn header_checksum_catches_every_bit_flip() {
        let bytes = format_header(1 << 20, "img", None).unwrap();
        for bit in (16 * 8..HEADER_SIZE * 8).step_by(97) {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_header(&bad).is_err(), "bit {bit}");
        }
        let mut no_magic = bytes.clone();
        no_magic[0] ^= 1;
        assert_eq!(parse_header(&no_magic), Err(FormatError::NoMagic));
        assert!(parse_header(&bytes[..100]).is_err());
    }

    #[test]
    fn header_rejects_bad_inputs() {
        assert!(matches!(
            format_header(1000, "x", None),
            Err(FormatError::BadCapacity(1000))
        ));
        assert!(format_header(4096, "x", None).is_err());
        let long = "x".repeat(256);
        assert!(matches!(
            format_header(0, &long, None),
            Err(FormatError::ImageNameTooLong(256))
        ));
        assert!(format_header(0, &"y".repeat(255), None).is_ok());
    }

    #[test]
    fn record_frame_round_trip() {
        let payload = br#"{"type":"x"}"#;
        let bytes = encode_record(42, 7, payload).unwrap();
        assert_eq!(bytes.len(), 512);
        let header = parse_frame_header(&bytes).unwrap();
        assert_eq!((header.run_id, header.seq), (42, 7));
        let body = &bytes[FRAME_HEADER_SIZE..FRAME_HEADER_SIZE + payload.len()];
        assert_eq!(frame_crc(&header, body), header.crc);
        assert_eq!(padded_len(480), 512);
        assert_eq!(padded_len(481), 1024);
        assert!(encode_record(0, 0, &vec![0; MAX_PAYLOAD as usize + 1]).is_err());
    }
}
