//! Finding the blocks of each file that must be stored: those inside the source's data ranges
//! that are not all zeros. Everything else becomes a hole, so a file's layout depends only on
//! its bytes. Files are scanned on all CPUs through one bounded buffer per thread.

use imgbuild_init::largest_first::map_largest_first;

use super::checksum::is_zero;
use super::format::{BLOCK, BLOCK_SIZE};
use crate::tree::{Content, ContentError};

const CHUNK: usize = 1 << 20;
/// Files up to this size are read without looking for holes first.
const SMALL: u64 = 256 << 10;

/// One file to scan.
pub struct ScanJob<'a> {
    /// Its content.
    pub content: &'a Content,
    /// Its size.
    pub size: u64,
    /// Its path, for errors.
    pub path: String,
}

/// Logical block runs `(start, len)` holding non-zero data, ascending and non-adjacent.
pub type Runs = Vec<(u64, u64)>;

/// Scans every job; results are in job order.
pub fn scan_all(jobs: &[ScanJob<'_>]) -> Result<Vec<Runs>, ContentError> {
    map_largest_first(jobs, |j| j.size, CHUNK, scan_one)
}

/// Scans one file.
pub fn scan_one(job: &ScanJob<'_>, buf: &mut [u8]) -> Result<Runs, ContentError> {
    let err = |source| ContentError {
        path: job.path.clone(),
        source,
    };
    let reader = job.content.open(job.size, &job.path)?;
    // Data ranges widened to whole blocks and merged. A small file is read whole: asking
    // for its holes costs more system calls than reading them.
    let ranges = if job.size <= SMALL {
        vec![(0, job.size)]
    } else {
        reader.data_ranges().map_err(err)?
    };
    let mut spans: Vec<(u64, u64)> = Vec::new();
    for (s, e) in ranges {
        let (bs, be) = (s / BLOCK_SIZE, e.min(job.size).div_ceil(BLOCK_SIZE));
        match spans.last_mut() {
            Some(last) if bs <= last.1 => last.1 = last.1.max(be),
            _ if bs < be => spans.push((bs, be)),
            _ => {}
        }
    }
    let mut runs: Runs = Vec::new();
    let chunk_blocks = (buf.len() / BLOCK) as u64;
    for (bs, be) in spans {
        let mut b = bs;
        while b < be {
            let n = chunk_blocks.min(be - b);
            let off = b * BLOCK_SIZE;
            let bytes = (n * BLOCK_SIZE).min(job.size - off) as usize;
            let data = &mut buf[..bytes];
            reader.read_exact_at(data, off).map_err(err)?;
            for (i, block) in data.chunks(BLOCK).enumerate() {
                if is_zero(block) {
                    continue;
                }
                let lb = b + i as u64;
                match runs.last_mut() {
                    Some(last) if last.0 + last.1 == lb => last.1 += 1,
                    _ => runs.push((lb, 1)),
                }
            }
            b += n;
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    #[test]
    fn zero_blocks_and_holes_are_skipped() {
        let mut data = vec![0u8; 10 * BLOCK + 100];
        data[0] = 1;
        data[BLOCK + 5] = 1;
        data[4 * BLOCK] = 1;
        data[10 * BLOCK + 99] = 1;
        let c = Content::Bytes(Arc::from(data.as_slice()));
        let job = ScanJob {
            content: &c,
            size: data.len() as u64,
            path: "/x".into(),
        };
        let runs = scan_one(&job, &mut vec![0u8; 2 * BLOCK]).unwrap();
        assert_eq!(runs, vec![(0, 2), (4, 1), (10, 1)]);
    }

    #[test]
    fn sparse_host_file_is_cheap_and_equal_to_dense() {
        let dir = tempfile::tempdir().unwrap();
        let sparse = dir.path().join("s");
        let f = std::fs::File::create(&sparse).unwrap();
        f.set_len(3 << 30).unwrap();
        f.write_all_at(b"start", 0).unwrap();
        f.write_all_at(b"end", (3 << 30) - 3).unwrap();
        let dense = dir.path().join("d");
        let mut g = std::fs::File::create(&dense).unwrap();
        let mut body = vec![0u8; 3 * BLOCK];
        body[..5].copy_from_slice(b"start");
        g.write_all(&body).unwrap();
        let jobs = [
            ScanJob {
                content: &Content::HostFile(Arc::from(sparse.as_path())),
                size: 3 << 30,
                path: "s".into(),
            },
            ScanJob {
                content: &Content::HostFile(Arc::from(dense.as_path())),
                size: 3 * BLOCK as u64,
                path: "d".into(),
            },
        ];
        let runs = scan_all(&jobs).unwrap();
        assert_eq!(runs[0], vec![(0, 1), ((3 << 30) / BLOCK_SIZE - 1, 1)]);
        assert_eq!(runs[1], vec![(0, 1)]);
    }
}
