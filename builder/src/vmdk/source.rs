//! Reading the raw disk image for the writers: where its data lies (SEEK_DATA/SEEK_HOLE, so a
//! mostly empty 2 GiB disk costs a few reads), and the runs of non-zero grains in it, read in
//! large batches.

use std::fs::File;
use std::io;

use crate::image_io::ReadAt;

use super::VmdkError;

/// Grains read at once: 2 MiB batches keep syscalls few without a large buffer.
const BATCH_GRAINS: u64 = 32;

/// The byte ranges `(start, end)` of `file` that may hold data; holes read as zeros. Files
/// (and devices) without hole reporting give one range covering everything.
pub fn file_data_ranges(file: &File, size: u64) -> io::Result<Vec<(u64, u64)>> {
    crate::image_io::data_ranges(file, 0, size)
}

/// Sorts, clamps to `size` and merges ranges given by a caller.
pub fn normalize(ranges: &[(u64, u64)], size: u64) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = ranges
        .iter()
        .map(|&(s, e)| (s.min(size), e.min(size)))
        .filter(|&(s, e)| s < e)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Runs `[first, end)` of grain indices touched by `ranges`, merged.
fn grain_runs(ranges: &[(u64, u64)], grain: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &(s, e) in ranges {
        let (g0, g1) = (s / grain, e.div_ceil(grain));
        match out.last_mut() {
            Some(last) if g0 <= last.1 => last.1 = last.1.max(g1),
            _ => out.push((g0, g1)),
        }
    }
    out
}

/// True if every byte is zero; the OR-fold over fixed chunks vectorises, the early exit
/// keeps data grains cheap.
pub fn is_zero(b: &[u8]) -> bool {
    let mut chunks = b.chunks_exact(256);
    for c in &mut chunks {
        if c.iter().fold(0u8, |a, &x| a | x) != 0 {
            return false;
        }
    }
    chunks.remainder().iter().all(|&x| x == 0)
}

/// Calls `f(first_grain, bytes)` for every run of consecutive non-zero grains of `grain` bytes
/// within `ranges` (normalized), in ascending order, batched to at most [`BATCH_GRAINS`]. The
/// last grain is zero-padded past `size`.
pub fn for_each_data_run(
    src: &dyn ReadAt,
    size: u64,
    ranges: &[(u64, u64)],
    grain: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), VmdkError>,
) -> Result<(), VmdkError> {
    let g = grain as usize;
    let mut buf = vec![0u8; g * BATCH_GRAINS as usize];
    for (g0, g1) in grain_runs(ranges, grain) {
        let mut b0 = g0;
        while b0 < g1 {
            let b1 = (b0 + BATCH_GRAINS).min(g1);
            let n = (b1 - b0) as usize;
            let start = b0 * grain;
            let end = (b1 * grain).min(size);
            let have = (end - start) as usize;
            src.read_exact_at(&mut buf[..have], start)
                .map_err(|source| VmdkError::Source {
                    offset: start,
                    source,
                })?;
            buf[have..n * g].fill(0);
            let mut k = 0;
            while k < n {
                if is_zero(&buf[k * g..(k + 1) * g]) {
                    k += 1;
                    continue;
                }
                let run_start = k;
                while k < n && !is_zero(&buf[k * g..(k + 1) * g]) {
                    k += 1;
                }
                f(b0 + run_start as u64, &buf[run_start * g..k * g])?;
            }
            b0 = b1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn normalizes() {
        assert_eq!(
            normalize(&[(50, 60), (0, 10), (5, 20), (100, 200), (20, 25)], 150),
            vec![(0, 25), (50, 60), (100, 150)]
        );
        assert_eq!(normalize(&[(10, 5), (200, 300)], 100), vec![]);
        assert_eq!(grain_runs(&[(0, 1), (10, 11), (64, 65)], 64), vec![(0, 2)]);
        assert_eq!(grain_runs(&[(0, 1), (200, 201)], 64), vec![(0, 1), (3, 4)]);
    }

    #[test]
    fn runs_skip_zero_grains() {
        let mut img = vec![0u8; 10 * 8 + 3];
        img[0] = 1; // grain 0
        img[17] = 2; // grain 2
        img[24] = 3; // grain 3
        img[82] = 4; // grain 10, partial
        let mut seen = Vec::new();
        for_each_data_run(
            &img,
            img.len() as u64,
            &[(0, img.len() as u64)],
            8,
            |g, d| {
                seen.push((g, d.len()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, vec![(0, 8), (2, 16), (10, 8)]);
        assert!(is_zero(&[0u8; 1000]));
        let mut z = [0u8; 1000];
        z[999] = 1;
        assert!(!is_zero(&z));
    }

    #[test]
    fn holes_are_found() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"x", 32 << 20).unwrap();
        let r = file_data_ranges(&f, 64 << 20).unwrap();
        let total: u64 = r.iter().map(|(s, e)| e - s).sum();
        assert!(r.iter().any(|&(s, e)| s <= 32 << 20 && e > 32 << 20));
        assert!(total < 8 << 20, "{r:?}");
    }
}
