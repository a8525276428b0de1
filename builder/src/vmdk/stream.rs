//! streamOptimized writer, the order ESXi's OVF import and open-vmdk expect: header (gdOffset =
//! GD_AT_END) and descriptor; zlib-compressed grains, each behind a grain marker; after each
//! table's worth of grains, a GT marker and the table (tables with no grain are left out);
//! GD marker and directory; footer marker and a header copy with the real gdOffset; EOS.
//! Version 3, flags 0x30001 (newline test, compressed, markers).
//!
//! Grains are compressed on all cores, each independently, and written in order, so the output
//! does not depend on the number of threads.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::thread;

use flate2::{Compress, Compression, FlushCompress, Status};

use crate::image_io::ReadAt;

use super::header::{
    marker, SparseHeader, COMPRESS_DEFLATE, FLAG_COMPRESSED, FLAG_MARKERS, FLAG_NEWLINE_TEST,
    GD_AT_END, MARKER_FOOTER, MARKER_GD, MARKER_GT,
};
use super::source::for_each_data_run;
use super::sparse::embedded_descriptor;
use super::{
    VmdkError, VmdkOptions, DESCRIPTOR_SECTORS, GRAIN_BYTES, GRAIN_SECTORS, GTES_PER_GT, SECTOR,
};

/// Sectors before the first grain: header and descriptor, padded to a grain as VMware does.
const OVERHEAD: u64 = GRAIN_SECTORS;
/// Threads compressing grains at most.
const MAX_THREADS: usize = 8;

/// A sequential writer counting sectors.
struct Out<'a> {
    w: BufWriter<&'a File>,
    pos: u64,
    name: &'a str,
}

impl Out<'_> {
    fn io(&self, source: std::io::Error) -> VmdkError {
        VmdkError::Io {
            what: "write",
            path: self.name.into(),
            source,
        }
    }

    /// Writes `data` and zeros up to the next sector boundary.
    fn put(&mut self, data: &[u8]) -> Result<(), VmdkError> {
        self.w.write_all(data).map_err(|e| self.io(e))?;
        let pad = (data.len() as u64).next_multiple_of(SECTOR) - data.len() as u64;
        self.w
            .write_all(&[0u8; SECTOR as usize][..pad as usize])
            .map_err(|e| self.io(e))?;
        self.pos += (data.len() as u64 + pad) / SECTOR;
        Ok(())
    }

    /// The current sector as a table entry; tables hold 32-bit sector numbers.
    fn sector_u32(&self, size: u64) -> Result<u32, VmdkError> {
        u32::try_from(self.pos).map_err(|_| VmdkError::TooLarge {
            bytes: size,
            reason: "a streamOptimized file addresses at most 2 TiB",
        })
    }
}

/// zlib level of the grains. Level 1 (zlib-rs's quick strategy) runs several times faster than
/// the default 6, for a file about 15 % larger; an import reads the file once, a build writes
/// it every time, and any level inflates the same way.
pub const LEVEL: u32 = 1;

/// One grain as a zlib stream, with `z` (reset afterwards, so one state serves many grains:
/// setting one up costs more than compressing a 64 KiB grain at level 1).
fn compress(z: &mut Compress, grain: &[u8]) -> Result<Vec<u8>, std::io::Error> {
    // Room for incompressible data, which level 1's fixed codes grow by up to 1/8.
    let mut out = Vec::with_capacity(grain.len() + grain.len() / 8 + 256);
    let result = loop {
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let input = grain.get(consumed..).unwrap_or_default();
        match z.compress_vec(input, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) => break Ok(out),
            Ok(_) => out.reserve(4096),
            Err(e) => break Err(std::io::Error::other(e)),
        }
    };
    z.reset();
    result
}

fn compress_grains(grains: &[&[u8]]) -> Result<Vec<Vec<u8>>, std::io::Error> {
    let mut z = Compress::new(Compression::new(LEVEL), true);
    grains.iter().map(|g| compress(&mut z, g)).collect()
}

/// Compresses each grain of `data`, spreading the grains over up to `threads` threads.
fn compress_all(data: &[u8], threads: usize) -> Result<Vec<Vec<u8>>, std::io::Error> {
    let grains: Vec<&[u8]> = data.chunks(GRAIN_BYTES as usize).collect();
    let per = grains.len().div_ceil(threads.max(1)).max(1);
    if per >= grains.len() {
        return compress_grains(&grains);
    }
    thread::scope(|s| {
        let handles: Vec<_> = grains
            .chunks(per)
            .map(|part| s.spawn(move || compress_grains(part)))
            .collect();
        let mut out = Vec::with_capacity(grains.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| std::io::Error::other("a compression thread panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

/// Writes the streamOptimized form of the `size`-byte image `src` (data only in `ranges`)
/// into `out`, whose final name is `name`.
pub fn write(
    src: &dyn ReadAt,
    size: u64,
    ranges: &[(u64, u64)],
    out: &File,
    name: &str,
    opts: &VmdkOptions,
) -> Result<(), VmdkError> {
    let capacity = size.div_ceil(SECTOR);
    let num_gts = capacity.div_ceil(GRAIN_SECTORS).div_ceil(GTES_PER_GT);
    let gd_sectors = (num_gts * 4).div_ceil(SECTOR);
    if num_gts > u64::from(u32::MAX) / GTES_PER_GT {
        return Err(VmdkError::TooLarge {
            bytes: size,
            reason: "too many grains for a streamOptimized file",
        });
    }
    let mut header = SparseHeader {
        version: 3,
        flags: FLAG_NEWLINE_TEST | FLAG_COMPRESSED | FLAG_MARKERS,
        capacity,
        grain_size: GRAIN_SECTORS,
        descriptor_offset: 1,
        descriptor_size: DESCRIPTOR_SECTORS,
        num_gtes_per_gt: GTES_PER_GT as u32,
        rgd_offset: 0,
        gd_offset: GD_AT_END,
        overhead: OVERHEAD,
        unclean_shutdown: false,
        compress_algorithm: COMPRESS_DEFLATE,
    };
    let mut w = Out {
        w: BufWriter::with_capacity(1 << 20, out),
        pos: 0,
        name,
    };
    w.put(&header.encode())?;
    w.put(&embedded_descriptor(
        "streamOptimized",
        name,
        capacity,
        opts,
    )?)?;
    w.put(&vec![0u8; ((OVERHEAD - w.pos) * SECTOR) as usize])?;

    let threads = thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let mut gd = vec![0u32; num_gts as usize];
    let mut table: Option<(u64, Vec<u32>)> = None;
    let flush_table = |w: &mut Out, table: &mut Option<(u64, Vec<u32>)>, gd: &mut Vec<u32>| {
        if let Some((index, entries)) = table.take() {
            w.put(&marker(GTES_PER_GT * 4 / SECTOR, MARKER_GT))?;
            gd[index as usize] = w.sector_u32(size)?;
            let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
            w.put(&bytes)?;
        }
        Ok::<(), VmdkError>(())
    };
    for_each_data_run(src, size, ranges, GRAIN_BYTES, |first, data| {
        let compressed = compress_all(data, threads).map_err(|source| VmdkError::Io {
            what: "compress grains for",
            path: name.into(),
            source,
        })?;
        for (k, c) in compressed.iter().enumerate() {
            let grain = first + k as u64;
            let index = grain / GTES_PER_GT;
            if table.as_ref().is_some_and(|(i, _)| *i != index) {
                flush_table(&mut w, &mut table, &mut gd)?;
            }
            let (_, entries) =
                table.get_or_insert_with(|| (index, vec![0u32; GTES_PER_GT as usize]));
            entries[(grain % GTES_PER_GT) as usize] = w.sector_u32(size)?;
            let len = u32::try_from(c.len()).map_err(|_| VmdkError::TooLarge {
                bytes: size,
                reason: "a compressed grain over 4 GiB",
            })?;
            let mut m = Vec::with_capacity(12 + c.len());
            m.extend_from_slice(&(grain * GRAIN_SECTORS).to_le_bytes());
            m.extend_from_slice(&len.to_le_bytes());
            m.extend_from_slice(c);
            w.put(&m)?;
        }
        Ok(())
    })?;
    flush_table(&mut w, &mut table, &mut gd)?;

    w.put(&marker(gd_sectors, MARKER_GD))?;
    header.gd_offset = w.pos;
    let gd_bytes: Vec<u8> = gd.iter().flat_map(|e| e.to_le_bytes()).collect();
    w.put(&gd_bytes)?;
    w.put(&marker(1, MARKER_FOOTER))?;
    w.put(&header.encode())?;
    w.put(&[0u8; SECTOR as usize])?; // end-of-stream marker
    w.w.flush().map_err(|e| w.io(e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::ZlibDecoder;
    use std::io::Read;

    #[test]
    fn compression_is_zlib_and_ordered() {
        let mut data = vec![0u8; 5 * GRAIN_BYTES as usize];
        for (i, b) in data.iter_mut().enumerate() {
            *b = (i / GRAIN_BYTES as usize) as u8 + 1;
        }
        let one = compress_all(&data, 1).unwrap();
        let many = compress_all(&data, 3).unwrap();
        assert_eq!(one, many);
        assert_eq!(one.len(), 5);
        for (i, c) in one.iter().enumerate() {
            assert_eq!(c[0], 0x78, "zlib header, not raw deflate");
            let mut out = Vec::new();
            ZlibDecoder::new(&c[..]).read_to_end(&mut out).unwrap();
            assert_eq!(out, vec![i as u8 + 1; GRAIN_BYTES as usize]);
        }
    }
}
