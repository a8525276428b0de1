//! One hosted sparse extent (`KDMV`) opened for reading: header (or a stream's footer),
//! grain directory, grain tables loaded on demand, grains plain or zlib-compressed behind
//! markers. Every number in the file is checked before it sizes an allocation or a read.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use flate2::{Decompress, FlushDecompress, Status};

use super::descriptor::MAX_DESCRIPTOR_BYTES;
use super::header::{
    decode_marker, SparseHeader, COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_ZEROED_GTE,
    GD_AT_END, MARKER_EOS, MARKER_FOOTER,
};
use super::{VmdkError, SECTOR};

/// Largest virtual disk accepted: 64 TiB (VMFS's limit is 62 TB).
pub const MAX_CAPACITY_SECTORS: u64 = 1 << 37;
/// Largest grain accepted: 1 MiB (every tool writes 64 KiB).
pub const MAX_GRAIN_SECTORS: u64 = 2048;
/// Most entries per grain table accepted (every tool writes 512).
pub const MAX_GTES_PER_GT: u32 = 4096;
/// Largest grain directory accepted (a 64 TiB disk with 64 KiB grains needs 8 MiB).
pub const MAX_GD_BYTES: u64 = 64 << 20;
/// Grain tables kept in memory at most before the cache is dropped.
const GT_CACHE: usize = 4096;

pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> VmdkError {
    VmdkError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

pub(crate) fn read_exact(
    file: &File,
    path: &Path,
    buf: &mut [u8],
    offset: u64,
) -> Result<(), VmdkError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| VmdkError::Io {
            what: "read",
            path: path.to_path_buf(),
            source,
        })
}

fn read_sector(file: &File, path: &Path, offset: u64) -> Result<[u8; 512], VmdkError> {
    let mut b = [0u8; 512];
    read_exact(file, path, &mut b, offset)?;
    Ok(b)
}

/// A sparse extent ready for reads.
pub(crate) struct SparseExtent {
    file: File,
    path: PathBuf,
    file_len: u64,
    grain_bytes: u64,
    gtes_per_gt: u64,
    gd: Vec<u32>,
    compressed: bool,
    zeroed_gte: bool,
    /// Bytes of virtual disk the extent holds.
    pub(crate) capacity: u64,
    gts: Mutex<HashMap<u64, Arc<Vec<u32>>>>,
    last_grain: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl SparseExtent {
    /// Opens the sparse extent `file` (`file_len` bytes); returns it, the header in effect and
    /// the embedded descriptor text, if any.
    pub(crate) fn open(
        file: File,
        path: &Path,
        file_len: u64,
    ) -> Result<(SparseExtent, SparseHeader, Option<String>), VmdkError> {
        let first = read_sector(&file, path, 0)?;
        let mut h =
            SparseHeader::decode(&first).ok_or_else(|| corrupt(path, 0, "no KDMV magic"))?;
        if !SparseHeader::newlines_intact(&first) {
            return Err(corrupt(
                path,
                73,
                "newline bytes mangled (copied in text mode?)",
            ));
        }
        if h.gd_offset == GD_AT_END {
            h = read_footer(&file, path, file_len)?;
        }
        let bad = |offset, reason: String| corrupt(path, offset, reason);
        if !(1..=3).contains(&h.version) {
            return Err(bad(4, format!("version {} (1 to 3 exist)", h.version)));
        }
        if !h.grain_size.is_power_of_two() || h.grain_size > MAX_GRAIN_SECTORS {
            return Err(bad(20, format!("grain of {} sectors", h.grain_size)));
        }
        if h.num_gtes_per_gt == 0 || h.num_gtes_per_gt > MAX_GTES_PER_GT {
            return Err(bad(
                44,
                format!("{} entries per grain table", h.num_gtes_per_gt),
            ));
        }
        if h.capacity > MAX_CAPACITY_SECTORS {
            return Err(bad(
                12,
                format!("capacity of {} sectors (over 64 TiB)", h.capacity),
            ));
        }
        let compressed = h.flags & FLAG_COMPRESSED != 0;
        if compressed && (h.compress_algorithm != COMPRESS_DEFLATE || h.flags & FLAG_MARKERS == 0) {
            return Err(VmdkError::Unsupported {
                path: path.to_path_buf(),
                reason: format!(
                    "compressed grains with algorithm {} and flags {:#x} (only deflate with markers)",
                    h.compress_algorithm, h.flags
                ),
            });
        }
        if !compressed && h.flags & FLAG_MARKERS != 0 {
            return Err(VmdkError::Unsupported {
                path: path.to_path_buf(),
                reason: "markers on uncompressed grains".into(),
            });
        }
        let grain_bytes = h.grain_size * SECTOR;
        let gtes_per_gt = u64::from(h.num_gtes_per_gt);
        let num_gts = h.capacity.div_ceil(h.grain_size).div_ceil(gtes_per_gt);
        let gd_bytes = num_gts * 4;
        if gd_bytes > MAX_GD_BYTES {
            return Err(bad(12, format!("a grain directory of {gd_bytes} bytes")));
        }
        let gd_at = h.gd_offset.checked_mul(SECTOR).filter(|&o| o > 0);
        let gd_at = match gd_at {
            Some(o) if o.checked_add(gd_bytes).is_some_and(|e| e <= file_len) => o,
            _ => {
                return Err(bad(
                    56,
                    format!(
                        "grain directory at sector {} ({gd_bytes} bytes) is not inside the \
                         {file_len}-byte file",
                        h.gd_offset
                    ),
                ))
            }
        };
        let mut raw = vec![0u8; gd_bytes as usize];
        read_exact(&file, path, &mut raw, gd_at)?;
        let gd = raw
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();

        let text = read_descriptor(&file, path, file_len, &h)?;
        let extent = SparseExtent {
            file,
            path: path.to_path_buf(),
            file_len,
            grain_bytes,
            gtes_per_gt,
            gd,
            compressed,
            zeroed_gte: h.flags & FLAG_ZEROED_GTE != 0,
            capacity: h.capacity * SECTOR,
            gts: Mutex::new(HashMap::new()),
            last_grain: Mutex::new(None),
        };
        Ok((extent, h, text))
    }

    /// The sector a grain's data (or marker) starts at; `None` when the grain reads as zeros.
    pub(crate) fn gte(&self, grain: u64) -> Result<Option<u64>, VmdkError> {
        let t = grain / self.gtes_per_gt;
        let Some(&gt_sector) = self.gd.get(t as usize) else {
            return Ok(None);
        };
        if gt_sector == 0 {
            return Ok(None);
        }
        let table = self.table(t, u64::from(gt_sector))?;
        let e = table[(grain % self.gtes_per_gt) as usize];
        if e == 0 || (e == 1 && self.zeroed_gte) {
            return Ok(None);
        }
        Ok(Some(u64::from(e)))
    }

    fn table(&self, t: u64, sector: u64) -> Result<Arc<Vec<u32>>, VmdkError> {
        let mut cache = self.gts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(gt) = cache.get(&t) {
            return Ok(gt.clone());
        }
        let at = sector * SECTOR;
        let len = self.gtes_per_gt * 4;
        if at + len > self.file_len {
            return Err(corrupt(
                &self.path,
                at,
                format!("grain table {t} at sector {sector} lies past the end of the file"),
            ));
        }
        let mut raw = vec![0u8; len as usize];
        read_exact(&self.file, &self.path, &mut raw, at)?;
        let gt: Arc<Vec<u32>> = Arc::new(
            raw.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
        if cache.len() >= GT_CACHE {
            cache.clear();
        }
        cache.insert(t, gt.clone());
        Ok(gt)
    }

    /// Fills `buf` from byte `offset` of the extent, up to the end of one grain; returns the
    /// bytes filled. The caller keeps `offset` inside the extent.
    pub(crate) fn read(&self, buf: &mut [u8], offset: u64) -> Result<usize, VmdkError> {
        let grain = offset / self.grain_bytes;
        let within = offset % self.grain_bytes;
        let n = (buf.len() as u64)
            .min(self.grain_bytes - within)
            .min(self.capacity.saturating_sub(offset)) as usize;
        let Some(sector) = self.gte(grain)? else {
            buf[..n].fill(0);
            return Ok(n);
        };
        if self.compressed {
            let data = self.inflate(grain, sector)?;
            buf[..n].copy_from_slice(&data[within as usize..within as usize + n]);
        } else {
            let at = sector * SECTOR + within;
            if at + n as u64 > self.file_len {
                return Err(corrupt(
                    &self.path,
                    sector * SECTOR,
                    format!("grain {grain} at sector {sector} lies past the end of the file"),
                ));
            }
            read_exact(&self.file, &self.path, &mut buf[..n], at)?;
        }
        Ok(n)
    }

    /// The inflated grain behind the marker at `sector`, `grain_bytes` long (zero-padded).
    fn inflate(&self, grain: u64, sector: u64) -> Result<Arc<Vec<u8>>, VmdkError> {
        let mut last = self
            .last_grain
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((g, data)) = last.as_ref() {
            if *g == grain {
                return Ok(data.clone());
            }
        }
        let at = sector * SECTOR;
        let bad = |reason: String| corrupt(&self.path, at, format!("grain {grain}: {reason}"));
        if at + 12 > self.file_len {
            return Err(bad(format!(
                "marker at sector {sector} lies past the end of the file"
            )));
        }
        let mut m = [0u8; 12];
        read_exact(&self.file, &self.path, &mut m, at)?;
        let lba = u64::from_le_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]);
        let size = u64::from(u32::from_le_bytes([m[8], m[9], m[10], m[11]]));
        let expected = grain * (self.grain_bytes / SECTOR);
        if lba != expected {
            return Err(bad(format!(
                "marker says sector {lba}, the table says {expected}"
            )));
        }
        // zlib never grows data by more than a few bytes per 16 KiB block.
        let max = self.grain_bytes + self.grain_bytes / 8 + 1024;
        if size == 0 || size > max {
            return Err(bad(format!("compressed length {size} (at most {max})")));
        }
        if at + 12 + size > self.file_len {
            return Err(bad(format!(
                "{size} compressed bytes run past the end of the file"
            )));
        }
        let mut input = vec![0u8; size as usize];
        read_exact(&self.file, &self.path, &mut input, at + 12)?;
        // One spare byte tells "exactly a grain" from "more than a grain".
        let mut out = vec![0u8; self.grain_bytes as usize + 1];
        let mut z = Decompress::new(true);
        let status = z
            .decompress(&input, &mut out, FlushDecompress::Finish)
            .map_err(|e| bad(format!("bad zlib data: {e}")))?;
        let got = z.total_out();
        if got > self.grain_bytes {
            return Err(bad("inflates to more than a grain".into()));
        }
        if status != Status::StreamEnd {
            return Err(bad("compressed data ends early".into()));
        }
        let needed = self
            .grain_bytes
            .min(self.capacity - grain * self.grain_bytes);
        if got < needed {
            return Err(bad(format!(
                "inflates to {got} bytes, the disk needs {needed}"
            )));
        }
        out.truncate(self.grain_bytes as usize);
        out[got as usize..].fill(0);
        let data = Arc::new(out);
        *last = Some((grain, data.clone()));
        Ok(data)
    }

    /// Byte ranges of the extent's `len` bytes that hold allocated grains.
    pub(crate) fn allocated(&self, len: u64) -> Result<Vec<(u64, u64)>, VmdkError> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        let grains = len.div_ceil(self.grain_bytes);
        let mut g = 0;
        while g < grains {
            let t = g / self.gtes_per_gt;
            if self.gd.get(t as usize).map_or(true, |&s| s == 0) {
                g = (t + 1) * self.gtes_per_gt;
                continue;
            }
            if self.gte(g)?.is_some() {
                let s = g * self.grain_bytes;
                let e = (s + self.grain_bytes).min(len);
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => out.push((s, e)),
                }
            }
            g += 1;
        }
        Ok(out)
    }
}

/// A stream's footer: marker at EOF−1536, header copy at EOF−1024, EOS at EOF−512.
fn read_footer(file: &File, path: &Path, file_len: u64) -> Result<SparseHeader, VmdkError> {
    if file_len < 4 * SECTOR {
        return Err(corrupt(
            path,
            0,
            "gdOffset is at the end, but the file has no footer",
        ));
    }
    let marker_at = file_len - 3 * SECTOR;
    let m = read_sector(file, path, marker_at)?;
    if decode_marker(&m).map(|(_, t)| t) != Some(MARKER_FOOTER) {
        return Err(corrupt(
            path,
            marker_at,
            "no footer marker 1536 bytes before the end",
        ));
    }
    let eos = read_sector(file, path, file_len - SECTOR)?;
    if decode_marker(&eos) != Some((0, MARKER_EOS)) {
        return Err(corrupt(path, file_len - SECTOR, "no end-of-stream marker"));
    }
    let f = read_sector(file, path, file_len - 2 * SECTOR)?;
    let h = SparseHeader::decode(&f)
        .ok_or_else(|| corrupt(path, file_len - 2 * SECTOR, "footer without KDMV magic"))?;
    if h.gd_offset == GD_AT_END {
        return Err(corrupt(
            path,
            file_len - 2 * SECTOR,
            "footer without a gdOffset",
        ));
    }
    Ok(h)
}

/// The embedded descriptor's text, up to its first NUL.
fn read_descriptor(
    file: &File,
    path: &Path,
    file_len: u64,
    h: &SparseHeader,
) -> Result<Option<String>, VmdkError> {
    if h.descriptor_offset == 0 || h.descriptor_size == 0 {
        return Ok(None);
    }
    let at = h.descriptor_offset.checked_mul(SECTOR);
    let len = h
        .descriptor_size
        .checked_mul(SECTOR)
        .filter(|&l| l <= MAX_DESCRIPTOR_BYTES as u64);
    let (Some(at), Some(len)) = (at, len) else {
        return Err(corrupt(
            path,
            28,
            "embedded descriptor offset or size out of range",
        ));
    };
    if at.checked_add(len).map_or(true, |e| e > file_len) {
        return Err(corrupt(
            path,
            28,
            "embedded descriptor lies past the end of the file",
        ));
    }
    let mut raw = vec![0u8; len as usize];
    read_exact(file, path, &mut raw, at)?;
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8(raw[..end].to_vec())
        .map(Some)
        .map_err(|_| corrupt(path, at, "embedded descriptor is not UTF-8"))
}
