//! Compression formats of archives, packages and kernel modules: detection by magic, streaming
//! decoders, and the spool that holds a decompressed archive for the tree to reference.
//!
//! A compressed archive is decompressed once into an unnamed temporary file (the spool), so that
//! file contents can be referenced by offset like members of a plain archive. The spool is written
//! sparse: all-zero blocks are skipped, not written, which keeps images of mostly-empty files
//! cheap. Decompression is bounded by [`max_expanded`] so that a small hostile input cannot fill
//! the disk.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use crate::tree::ArchiveFile;

/// Environment variable bounding how many bytes one decompressed input may expand to.
pub const MAX_EXPANDED_ENV: &str = "IMGBUILD_MAX_EXPANDED";

/// Default bound on the decompressed size of one input: 64 GiB.
pub const DEFAULT_MAX_EXPANDED: u64 = 64 << 30;

/// Granularity at which the spool skips zeros; holes of a filesystem are at least this fine.
const SPARSE_BLOCK: usize = 4096;

/// Memory an xz or lzma decoder may take. Their headers name the dictionary size, up to 4 GiB
/// in a legacy `.lzma` header, and the decoder allocates it up front: without a bound, a few
/// hostile bytes ask for gigabytes (found by fuzzing). `xz -9` needs 65 MiB to decode.
const DECODER_MEMORY: u64 = 256 << 20;

/// Read size while spooling.
const CHUNK: usize = 1 << 20;

/// A compression format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Not compressed.
    None,
    /// gzip (RFC 1952), possibly several members.
    Gzip,
    /// xz, possibly several streams.
    Xz,
    /// Legacy `.lzma` (LZMA alone); has no reliable magic, so only chosen by name.
    Lzma,
    /// Zstandard, possibly several frames.
    Zstd,
    /// bzip2, possibly several streams.
    Bzip2,
}

impl Format {
    /// The format whose magic starts `head`; [`Format::None`] when none matches.
    pub fn detect(head: &[u8]) -> Format {
        if head.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Format::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else if head.len() >= 4 && head.starts_with(b"BZh") && (b'1'..=b'9').contains(&head[3]) {
            Format::Bzip2
        } else {
            Format::None
        }
    }

    /// The format named by an RPM `PAYLOADCOMPRESSOR` tag or a file suffix (`gz`, `xz`, …).
    pub fn from_name(name: &str) -> Option<Format> {
        match name {
            "" | "none" | "(none)" => Some(Format::None),
            "gzip" | "gz" => Some(Format::Gzip),
            "xz" => Some(Format::Xz),
            "lzma" => Some(Format::Lzma),
            "zstd" | "zst" => Some(Format::Zstd),
            "bzip2" | "bz2" => Some(Format::Bzip2),
            _ => None,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Format::None => "uncompressed",
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Lzma => "lzma",
            Format::Zstd => "zstd",
            Format::Bzip2 => "bzip2",
        }
    }
}

/// Decompression that failed.
#[derive(Debug, thiserror::Error)]
pub enum CompressionError {
    /// The input or the spool cannot be read or written.
    #[error("cannot read or spool {label}: {source}")]
    Io {
        /// The input (a path, or a member of a package).
        label: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The compressed data is damaged or truncated.
    #[error(
        "{label}: {format} data is damaged or truncated (after {consumed} compressed bytes, \
         {produced} decompressed bytes): {source}"
    )]
    Corrupt {
        /// The input.
        label: String,
        /// Its format.
        format: &'static str,
        /// Compressed bytes consumed when the decoder failed.
        consumed: u64,
        /// Decompressed bytes produced when the decoder failed.
        produced: u64,
        /// The decoder's message.
        #[source]
        source: io::Error,
    },
    /// The data expands beyond the configured bound.
    #[error(
        "{label} expands to more than {limit} bytes ({format}); refusing to continue (a \
         decompression bomb?). Raise {MAX_EXPANDED_ENV} if the input is genuine"
    )]
    TooLarge {
        /// The input.
        label: String,
        /// Its format.
        format: &'static str,
        /// The bound in bytes.
        limit: u64,
    },
    /// The environment variable holds no size.
    #[error("{MAX_EXPANDED_ENV}={0:?} is not a size (bytes, or a number with K, M, G or T)")]
    BadLimit(String),
}

/// The bound on decompressed sizes: [`MAX_EXPANDED_ENV`] (bytes, or with a K/M/G/T suffix in
/// powers of 1024), else [`DEFAULT_MAX_EXPANDED`].
pub fn max_expanded() -> Result<u64, CompressionError> {
    match std::env::var(MAX_EXPANDED_ENV) {
        Ok(text) => parse_size(&text).ok_or(CompressionError::BadLimit(text)),
        Err(_) => Ok(DEFAULT_MAX_EXPANDED),
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'K' | 'k') => (&text[..i], 10),
        (i, 'M' | 'm') => (&text[..i], 20),
        (i, 'G' | 'g') => (&text[..i], 30),
        (i, 'T' | 't') => (&text[..i], 40),
        _ => (text, 0),
    };
    let n: u64 = digits.trim().parse().ok()?;
    n.checked_mul(1u64 << shift)
}

/// Counts the compressed bytes a decoder consumed, for error messages.
struct Counting<R> {
    inner: R,
    count: Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A streaming decoder for `format` over `input`. Concatenated members, streams and frames are
/// all decoded, as the command-line tools do.
pub fn decoder<'a, R: Read + 'a>(format: Format, input: R) -> io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        Format::None => Box::new(input),
        Format::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
        Format::Xz => {
            let stream =
                xz2::stream::Stream::new_stream_decoder(DECODER_MEMORY, xz2::stream::CONCATENATED)
                    .map_err(io::Error::other)?;
            Box::new(xz2::read::XzDecoder::new_stream(input, stream))
        }
        Format::Lzma => {
            let stream =
                xz2::stream::Stream::new_lzma_decoder(DECODER_MEMORY).map_err(io::Error::other)?;
            Box::new(xz2::read::XzDecoder::new_stream(input, stream))
        }
        Format::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        Format::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(input)),
    })
}

/// Runs `sink` over the decompressed bytes of `input`, chunk by chunk, failing once more than
/// `limit` bytes came out. Errors name `label`.
fn pump(
    input: impl Read,
    format: Format,
    label: &str,
    limit: u64,
    mut sink: impl FnMut(&[u8], u64) -> io::Result<()>,
) -> Result<u64, CompressionError> {
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = Counting {
        inner: input,
        count: Arc::clone(&count),
    };
    let mut reader = decoder(format, counting).map_err(|source| CompressionError::Io {
        label: label.to_string(),
        source,
    })?;
    let mut buf = vec![0u8; CHUNK];
    let mut produced = 0u64;
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match reader.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(CompressionError::Corrupt {
                        label: label.to_string(),
                        format: format.name(),
                        consumed: count.load(std::sync::atomic::Ordering::Relaxed),
                        produced: produced + filled as u64,
                        source,
                    })
                }
            }
        }
        if filled == 0 {
            return Ok(produced);
        }
        if produced + filled as u64 > limit {
            return Err(CompressionError::TooLarge {
                label: label.to_string(),
                format: format.name(),
                limit,
            });
        }
        sink(&buf[..filled], produced).map_err(|source| CompressionError::Io {
            label: label.to_string(),
            source,
        })?;
        produced += filled as u64;
    }
}

/// A decompressed input held in an unnamed temporary file.
#[derive(Debug, Clone)]
pub struct Spool {
    /// The spool file; members of the archive reference it.
    pub archive: Arc<ArchiveFile>,
    /// Decompressed length in bytes.
    pub len: u64,
}

/// Decompresses `input` into a new sparse spool file; `label` names the input in errors and in
/// the spool's [`ArchiveFile`]. At most `limit` bytes are produced.
pub fn spool(
    input: impl Read,
    format: Format,
    label: &str,
    limit: u64,
) -> Result<Spool, CompressionError> {
    let io_err = |source| CompressionError::Io {
        label: label.to_string(),
        source,
    };
    let file = tempfile::tempfile().map_err(io_err)?;
    let len = pump(input, format, label, limit, |chunk, at| {
        write_sparse(&file, chunk, at)
    })?;
    // Trailing zero blocks were skipped: the length makes them a hole at the end.
    file.set_len(len).map_err(io_err)?;
    Ok(Spool {
        archive: Arc::new(ArchiveFile::new(label, file)),
        len,
    })
}

/// Writes the non-zero blocks of `chunk` at `offset`, leaving holes for the zero ones.
pub(crate) fn write_sparse(file: &File, chunk: &[u8], offset: u64) -> io::Result<()> {
    let mut run_start: Option<usize> = None;
    let mut pos = 0;
    while pos < chunk.len() {
        let end = (pos + SPARSE_BLOCK).min(chunk.len());
        let zero = is_zero(&chunk[pos..end]);
        match (zero, run_start) {
            (false, None) => run_start = Some(pos),
            (true, Some(start)) => {
                file.write_all_at(&chunk[start..pos], offset + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
        pos = end;
    }
    if let Some(start) = run_start {
        file.write_all_at(&chunk[start..], offset + start as u64)?;
    }
    Ok(())
}

fn is_zero(block: &[u8]) -> bool {
    // OR-folding without early exit vectorizes well; blocks are only 4 KiB.
    block.iter().fold(0u8, |acc, &b| acc | b) == 0
}

/// Opens an archive file that may be compressed: a plain file is referenced in place, a
/// compressed one is spooled. Returns the bytes to parse, their length and the detected format.
pub fn open_archive(path: &Path, limit: u64) -> Result<(Spool, Format), CompressionError> {
    let label = path.display().to_string();
    let io_err = |source| CompressionError::Io {
        label: label.clone(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut head = [0u8; 6];
    let got = read_head(&file, &mut head).map_err(io_err)?;
    let format = Format::detect(&head[..got]);
    if format == Format::None {
        let archive = Arc::new(ArchiveFile::new(label, file));
        return Ok((Spool { archive, len }, format));
    }
    let spooled = spool(
        BufReader::with_capacity(256 << 10, file),
        format,
        &label,
        limit,
    )?;
    Ok((spooled, format))
}

fn read_head(file: &File, head: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < head.len() {
        let n = file.read_at(&mut head[got..], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}

/// Decompresses `data` (format detected by magic; uncompressed data is returned as is) into
/// memory, failing beyond `limit` bytes. For small inputs such as kernel modules and package
/// control archives.
pub fn decompress_to_vec(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressionError> {
    decompress_as(data, Format::detect(data), "in-memory data", limit)
}

/// Like [`decompress_to_vec`] with a known format and a label for errors.
pub fn decompress_as(
    data: &[u8],
    format: Format,
    label: &str,
    limit: usize,
) -> Result<Vec<u8>, CompressionError> {
    let mut out = Vec::new();
    pump(data, format, label, limit as u64, |chunk, _| {
        out.extend_from_slice(chunk);
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn compress(format: Format, data: &[u8]) -> Vec<u8> {
        match format {
            Format::None => data.to_vec(),
            Format::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Xz => {
                let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Lzma => {
                let opts = xz2::stream::LzmaOptions::new_preset(1).unwrap();
                let stream = xz2::stream::Stream::new_lzma_encoder(&opts).unwrap();
                let mut e = xz2::write::XzEncoder::new_stream(Vec::new(), stream);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Zstd => zstd::encode_all(data, 1).unwrap(),
            Format::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
        }
    }

    #[test]
    fn a_dictionary_larger_than_the_decoder_bound_is_refused_not_allocated() {
        // A legacy .lzma header asking for a 3.75 GiB dictionary, size unknown, then garbage.
        let mut data = vec![0x5d, 0x00, 0x00, 0x00, 0xf0];
        data.extend_from_slice(&[0xff; 8]);
        data.extend_from_slice(&[0x00, 0x21, 0x10, 0x40]);
        let err = decompress_as(&data, Format::Lzma, "hostile.lzma", 1 << 20).unwrap_err();
        assert!(err.to_string().contains("hostile.lzma"), "{err}");
        assert!(err.to_string().to_lowercase().contains("memory"), "{err}");
    }

    const ALL: [Format; 6] = [
        Format::None,
        Format::Gzip,
        Format::Xz,
        Format::Lzma,
        Format::Zstd,
        Format::Bzip2,
    ];

    #[test]
    fn detects_and_round_trips_every_format() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for format in ALL {
            let packed = compress(format, &data);
            if format != Format::Lzma {
                assert_eq!(Format::detect(&packed), format, "{format:?}");
            }
            let out = decompress_as(&packed, format, "t", 1 << 30).unwrap();
            assert_eq!(out, data, "{format:?}");
        }
    }

    #[test]
    fn truncated_and_flipped_inputs_fail_cleanly() {
        let data = vec![7u8; 200_000];
        for format in ALL.into_iter().filter(|f| *f != Format::None) {
            let packed = compress(format, &data);
            let cut = &packed[..packed.len() / 2];
            let e = decompress_as(cut, format, "cut", 1 << 30).unwrap_err();
            assert!(
                matches!(e, CompressionError::Corrupt { .. }),
                "{format:?}: {e}"
            );
            assert!(e.to_string().contains("cut"), "{e}");
        }
    }

    #[test]
    fn limit_stops_bombs() {
        let zeros = vec![0u8; 8 << 20];
        for format in ALL {
            let packed = compress(format, &zeros);
            let e = decompress_as(&packed, format, "bomb", 1 << 20).unwrap_err();
            assert!(
                matches!(e, CompressionError::TooLarge { limit: 1048576, .. }),
                "{e}"
            );
            assert!(e.to_string().contains(MAX_EXPANDED_ENV));
        }
    }

    #[test]
    fn multi_member_gzip_is_read_whole() {
        let mut packed = compress(Format::Gzip, b"hello ");
        packed.extend(compress(Format::Gzip, b"world"));
        assert_eq!(decompress_to_vec(&packed, 100).unwrap(), b"hello world");
    }

    #[test]
    fn spool_is_sparse_and_exact() {
        let mut data = vec![0u8; 3 << 20];
        data[5] = 1;
        data[(2 << 20) + 100] = 2;
        let packed = compress(Format::Zstd, &data);
        let s = spool(&packed[..], Format::Zstd, "s.zst", 1 << 30).unwrap();
        assert_eq!(s.len, data.len() as u64);
        let mut back = vec![0u8; data.len()];
        s.archive.file().read_exact_at(&mut back, 0).unwrap();
        assert_eq!(back, data);
        // Mostly holes: far fewer blocks allocated than the length.
        use std::os::unix::fs::MetadataExt;
        let blocks = s.archive.file().metadata().unwrap().blocks();
        assert!(blocks * 512 < 1 << 20, "{blocks} blocks allocated");
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1t"), Some(1 << 40));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }
}
