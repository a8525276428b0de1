//! monolithicSparse (hosted) writer: one file with header, embedded descriptor, redundant and
//! primary grain directories with all their grain tables preallocated (as qemu-img and VMware
//! lay them out, so either can keep writing to the disk), then the non-zero grains in LBA
//! order. Version 1, flags 0x3 (newline test, redundant GD), 64 KiB grains.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::image_io::ReadAt;

use super::descriptor::{self, Access, ExtentLine};
use super::header::{SparseHeader, FLAG_NEWLINE_TEST, FLAG_REDUNDANT_GD};
use super::source::for_each_data_run;
use super::{
    VmdkError, VmdkOptions, DESCRIPTOR_SECTORS, GRAIN_BYTES, GRAIN_SECTORS, GTES_PER_GT, SECTOR,
};

/// Where everything goes in a monolithicSparse file for a disk of `capacity` sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparseLayout {
    /// Grain tables.
    pub num_gts: u64,
    /// Sectors of one grain directory.
    pub gd_sectors: u64,
    /// Sector of the redundant directory; its tables follow it.
    pub rgd_offset: u64,
    /// Sector of the primary directory; its tables follow it.
    pub gd_offset: u64,
    /// First grain, aligned to a grain.
    pub overhead: u64,
}

impl SparseLayout {
    /// The layout for `capacity` sectors.
    pub fn new(capacity: u64) -> SparseLayout {
        let grains = capacity.div_ceil(GRAIN_SECTORS);
        let num_gts = grains.div_ceil(GTES_PER_GT);
        let gd_sectors = (num_gts * 4).div_ceil(SECTOR);
        let gt_sectors = num_gts * GTES_PER_GT * 4 / SECTOR;
        let rgd_offset = 1 + DESCRIPTOR_SECTORS;
        let gd_offset = rgd_offset + gd_sectors + gt_sectors;
        let overhead = (gd_offset + gd_sectors + gt_sectors).next_multiple_of(GRAIN_SECTORS);
        SparseLayout {
            num_gts,
            gd_sectors,
            rgd_offset,
            gd_offset,
            overhead,
        }
    }
}

/// The embedded descriptor, padded to its reserved sectors.
pub(crate) fn embedded_descriptor(
    create_type: &str,
    name: &str,
    capacity: u64,
    opts: &VmdkOptions,
) -> Result<Vec<u8>, VmdkError> {
    let extent = ExtentLine {
        access: Access::ReadWrite,
        sectors: capacity,
        kind: "SPARSE".into(),
        file: Some(name.to_string()),
        offset: 0,
    };
    let mut text = descriptor::render(create_type, &extent, capacity, opts).into_bytes();
    let room = (DESCRIPTOR_SECTORS * SECTOR) as usize;
    if text.len() > room {
        return Err(VmdkError::BadDestination {
            path: name.into(),
            reason: "the file name makes the descriptor longer than its 20 sectors",
        });
    }
    text.resize(room, 0);
    Ok(text)
}

/// Writes the monolithicSparse form of the `size`-byte image `src` (data only in `ranges`)
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
    let l = SparseLayout::new(capacity);
    // Grain table entries are 32-bit sector numbers: the whole file must stay below 2 TiB.
    let fits = matches!(
        capacity.checked_add(l.overhead + GRAIN_SECTORS),
        Some(s) if s <= u64::from(u32::MAX)
    );
    if !fits {
        return Err(VmdkError::TooLarge {
            bytes: size,
            reason: "monolithicSparse addresses at most 2 TiB",
        });
    }
    let io = |what| {
        move |source| VmdkError::Io {
            what,
            path: name.into(),
            source,
        }
    };

    let mut gtes = vec![0u32; (l.num_gts * GTES_PER_GT) as usize];
    let mut next = l.overhead;
    for_each_data_run(src, size, ranges, GRAIN_BYTES, |first, data| {
        out.write_all_at(data, next * SECTOR)
            .map_err(io("write grains to"))?;
        let n = data.len() as u64 / GRAIN_BYTES;
        for k in 0..n {
            // Below u32::MAX: checked against the capacity above.
            gtes[(first + k) as usize] = (next + k * GRAIN_SECTORS) as u32;
        }
        next += n * GRAIN_SECTORS;
        Ok(())
    })?;

    let header = SparseHeader {
        version: 1,
        flags: FLAG_NEWLINE_TEST | FLAG_REDUNDANT_GD,
        capacity,
        grain_size: GRAIN_SECTORS,
        descriptor_offset: 1,
        descriptor_size: DESCRIPTOR_SECTORS,
        num_gtes_per_gt: GTES_PER_GT as u32,
        rgd_offset: l.rgd_offset,
        gd_offset: l.gd_offset,
        overhead: l.overhead,
        unclean_shutdown: false,
        compress_algorithm: 0,
    };
    out.write_all_at(&header.encode(), 0)
        .map_err(io("write the header of"))?;
    let desc = embedded_descriptor("monolithicSparse", name, capacity, opts)?;
    out.write_all_at(&desc, SECTOR)
        .map_err(io("write the descriptor of"))?;
    let gt_bytes: Vec<u8> = gtes.iter().flat_map(|e| e.to_le_bytes()).collect();
    for gd_offset in [l.rgd_offset, l.gd_offset] {
        let first_gt = gd_offset + l.gd_sectors;
        let mut gd: Vec<u8> = (0..l.num_gts)
            .flat_map(|i| ((first_gt + i * 4) as u32).to_le_bytes())
            .collect();
        gd.resize((l.gd_sectors * SECTOR) as usize, 0);
        out.write_all_at(&gd, gd_offset * SECTOR)
            .map_err(io("write a grain directory of"))?;
        out.write_all_at(&gt_bytes, first_gt * SECTOR)
            .map_err(io("write grain tables of"))?;
    }
    out.set_len(next * SECTOR).map_err(io("set the length of"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_qemu_img() {
        // qemu-img, 100 MiB: RGD at 21, GD at 38, first grain at 128.
        let l = SparseLayout::new(204_800);
        assert_eq!((l.num_gts, l.gd_sectors), (4, 1));
        assert_eq!((l.rgd_offset, l.gd_offset, l.overhead), (21, 38, 128));
        let l = SparseLayout::new(1);
        assert_eq!((l.num_gts, l.overhead), (1, 128));
    }

    #[test]
    fn refuses_over_2_tib() {
        let src = crate::image_io::Window::new(&[0u8][..], 0, 3 << 40);
        let f = tempfile::tempfile().unwrap();
        let opts = VmdkOptions::new(b"", crate::definition::ScsiAdapter::Pvscsi);
        assert!(matches!(
            write(&src, 3 << 40, &[], &f, "x.vmdk", &opts),
            Err(VmdkError::TooLarge { .. })
        ));
    }
}
