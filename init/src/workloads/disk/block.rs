//! Bonnie++'s block tests: sequential block write, rewrite and block read of one file, in
//! `chunk`-byte operations, with the maximum latency of a single operation.
//!
//! With O_DIRECT the buffers are page-aligned and the page cache is bypassed; without it the
//! file must be at least twice the RAM (checked by the caller) and the write phase ends with an
//! `fsync` inside the timing, so that data still in the cache is not counted as written.

use std::alloc::Layout;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

/// Alignment of O_DIRECT buffers (covers 512- and 4096-byte logical blocks).
const ALIGN: usize = 4096;

/// A zeroed, page-aligned byte buffer.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

impl AlignedBuf {
    /// `len` bytes (a multiple of the alignment, non-zero).
    pub fn new(len: usize) -> Result<AlignedBuf, String> {
        if len == 0 || len % ALIGN != 0 {
            return Err(format!(
                "buffer size {len} is not a positive multiple of {ALIGN}"
            ));
        }
        let layout = Layout::from_size_align(len, ALIGN).map_err(|e| e.to_string())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(format!("cannot allocate {len} bytes"));
        }
        Ok(AlignedBuf { ptr, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes while self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(self.len, ALIGN) {
            // SAFETY: allocated in new with this layout.
            unsafe { std::alloc::dealloc(self.ptr, layout) };
        }
    }
}

/// One timed phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Bytes moved.
    pub bytes: u64,
    /// Seconds.
    pub seconds: f64,
    /// Longest single operation, seconds.
    pub max_latency_s: f64,
}

impl Phase {
    /// KiB per second, as bonnie++ prints it.
    pub fn kib_per_s(&self) -> f64 {
        self.bytes as f64 / 1024.0 / self.seconds
    }
}

/// Whether files in `dir` can be opened with O_DIRECT (tmpfs and some others refuse).
pub fn direct_supported(dir: &Path) -> bool {
    let probe = dir.join(".odirect-probe");
    let ok = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe)
        .and_then(|mut f| {
            let buf = AlignedBuf::new(ALIGN).map_err(std::io::Error::other)?;
            f.write_all(buf.as_slice())
        })
        .is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

fn open(path: &Path, direct: bool, create: bool) -> Result<File, String> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    if create {
        o.create(true).truncate(true);
    }
    if direct {
        o.custom_flags(libc::O_DIRECT);
    }
    o.open(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
}

/// Writes `chunks` chunks of `chunk` bytes to a new `path`.
pub fn write(
    path: &Path,
    chunk: usize,
    chunks: u64,
    direct: bool,
    fsync_each: bool,
) -> Result<Phase, String> {
    let mut f = open(path, direct, true)?;
    let mut buf = AlignedBuf::new(chunk)?;
    for (i, b) in buf.as_mut_slice().iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let err = |e: std::io::Error, i: u64| format!("write {} at chunk {i}: {e}", path.display());
    let start = Instant::now();
    let mut max = 0f64;
    for i in 0..chunks {
        let t = Instant::now();
        // Vary the data so that no layer can deduplicate it.
        buf.as_mut_slice()[0] = i as u8;
        f.write_all(buf.as_slice()).map_err(|e| err(e, i))?;
        if fsync_each {
            f.sync_data().map_err(|e| err(e, i))?;
        }
        max = max.max(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    f.sync_all().map_err(|e| err(e, chunks))?;
    max = max.max(t.elapsed().as_secs_f64());
    Ok(Phase {
        bytes: chunks * chunk as u64,
        seconds: start.elapsed().as_secs_f64(),
        max_latency_s: max,
    })
}

/// Bonnie++'s rewrite: read a chunk, change it, seek back, write it; for the whole file.
pub fn rewrite(path: &Path, chunk: usize, chunks: u64, direct: bool) -> Result<Phase, String> {
    let mut f = open(path, direct, false)?;
    let mut buf = AlignedBuf::new(chunk)?;
    let err = |e: std::io::Error, i: u64| format!("rewrite {} at chunk {i}: {e}", path.display());
    let start = Instant::now();
    let mut max = 0f64;
    for i in 0..chunks {
        let t = Instant::now();
        f.read_exact(buf.as_mut_slice()).map_err(|e| err(e, i))?;
        let b = buf.as_mut_slice();
        b[1] = b[1].wrapping_add(1);
        f.seek(SeekFrom::Current(-(chunk as i64)))
            .map_err(|e| err(e, i))?;
        f.write_all(buf.as_slice()).map_err(|e| err(e, i))?;
        max = max.max(t.elapsed().as_secs_f64());
    }
    f.sync_all().map_err(|e| err(e, chunks))?;
    Ok(Phase {
        bytes: chunks * chunk as u64,
        seconds: start.elapsed().as_secs_f64(),
        max_latency_s: max,
    })
}

/// Reads the whole file in chunks.
pub fn read(path: &Path, chunk: usize, chunks: u64, direct: bool) -> Result<Phase, String> {
    let mut f = open(path, direct, false)?;
    let mut buf = AlignedBuf::new(chunk)?;
    let start = Instant::now();
    let mut max = 0f64;
    for i in 0..chunks {
        let t = Instant::now();
        f.read_exact(buf.as_mut_slice())
            .map_err(|e| format!("read {} at chunk {i}: {e}", path.display()))?;
        max = max.max(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(buf.as_slice());
    Ok(Phase {
        bytes: chunks * chunk as u64,
        seconds: start.elapsed().as_secs_f64(),
        max_latency_s: max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_rewrite_read_move_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let direct = direct_supported(dir.path());
        let w = write(&path, 8192, 64, direct, false).unwrap();
        assert_eq!(w.bytes, 8192 * 64);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 8192 * 64);
        let r = rewrite(&path, 8192, 64, direct).unwrap();
        assert_eq!(r.bytes, w.bytes);
        let data = std::fs::read(&path).unwrap();
        // Rewrite bumped byte 1 of every chunk: (1 % 251) + 1.
        assert!(data.chunks(8192).all(|c| c[1] == 2));
        let rd = read(&path, 8192, 64, direct).unwrap();
        assert!(rd.kib_per_s() > 0.0 && rd.max_latency_s <= rd.seconds);
        assert!(read(&path, 8192, 65, direct)
            .unwrap_err()
            .contains("chunk 64"));
    }

    #[test]
    fn buffers_are_aligned_and_sizes_checked() {
        let b = AlignedBuf::new(8192).unwrap();
        assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
        assert!(AlignedBuf::new(100).is_err());
        assert!(AlignedBuf::new(0).is_err());
    }
}
