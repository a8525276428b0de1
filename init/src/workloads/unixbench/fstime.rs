//! File Copy (`fstime -c -b BUF -m MAXBLOCKS`): write then read to prime, then copy.
//!
//! As in fstime.c: two files `dummy0-PID` and `dummy1-PID` (6.0 names); the write phase writes
//! `MAXBLOCKS` KiB in `BUF`-byte writes and rewinds, for 2 s; the read phase reads it back
//! rewinding at EOF, for 2 s; the copy phase reads `dummy0` and writes `dummy1`, rewinding both
//! at EOF, for the test's duration, counting 256-byte units. The result is KiB/s of the copy
//! (timebase 0: the COUNT is the rate). Each phase starts with `fsync` of both files as fstime
//! does; the settle sleeps between phases (2+2, 2+2, 2+1 s in fstime) are scaled by the
//! `settle_s` parameter (3 s in Run's terms means fstime's own sleeps), and the priming phases
//! are cut to a fifteenth of the duration (at least one pass over the file) for short runs.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use super::score::Pass;

const COUNTSIZE: u64 = 256;

/// What the copy test is given.
#[derive(Debug, Clone, Copy)]
pub struct FsParams {
    /// Buffer size in bytes (256, 1024, 4096).
    pub bufsize: usize,
    /// File size in KiB.
    pub max_blocks: u64,
    /// Copy phase duration.
    pub duration: Duration,
    /// Sleep before each phase, seconds (fstime: 4, 4, 3).
    pub settle_s: f64,
}

fn open_rw(path: &Path) -> Result<File, String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| format!("create {}: {e}", path.display()))
}

fn settle(files: &[&File], sleep_s: f64) {
    for f in files {
        let _ = f.sync_all();
    }
    if sleep_s > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(sleep_s));
    }
}

/// Runs fstime's copy test in `dir`; returns the copy pass (KiB/s) and the write and read
/// priming rates.
pub fn file_copy(dir: &Path, p: FsParams) -> Result<(Pass, f64, f64), String> {
    let pid = std::process::id();
    let name0 = dir.join(format!("dummy0-{pid}"));
    let name1 = dir.join(format!("dummy1-{pid}"));
    let result = copy_in(&name0, &name1, p);
    let _ = std::fs::remove_file(&name0);
    let _ = std::fs::remove_file(&name1);
    result
}

fn copy_in(name0: &Path, name1: &Path, p: FsParams) -> Result<(Pass, f64, f64), String> {
    let mut f = open_rw(name0)?;
    let mut g = open_rw(name1)?;
    let buf: Vec<u8> = (0..p.bufsize).map(|i| (i & 0xff) as u8).collect();
    let mut rbuf = vec![0u8; p.bufsize];
    let max_buffs = (p.max_blocks * 1024 / p.bufsize as u64).max(1);
    let count_per_buf = p.bufsize as u64 / COUNTSIZE;
    let count_per_k = 1024 / COUNTSIZE;
    let prime = (p.duration / 15).min(Duration::from_secs(2));
    let io = |what: &str, e: std::io::Error| format!("{what} {}: {e}", name0.display());

    // Write phase: at least one full pass so that the file has its size.
    settle(&[&f], p.settle_s * 4.0 / 11.0);
    let start = Instant::now();
    let mut counted = 0u64;
    loop {
        for _ in 0..max_buffs {
            f.write_all(&buf).map_err(|e| io("write", e))?;
            counted += count_per_buf;
        }
        f.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
        if start.elapsed() >= prime {
            break;
        }
    }
    let write_kbps = counted as f64 / (start.elapsed().as_secs_f64() * count_per_k as f64);

    // Read phase.
    settle(&[&f], p.settle_s * 4.0 / 11.0);
    let start = Instant::now();
    let mut counted = 0u64;
    let mut passes = 0;
    while passes == 0 || start.elapsed() < prime {
        let n = f.read(&mut rbuf).map_err(|e| io("read", e))?;
        if n < p.bufsize {
            f.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
            counted += (n as u64 + COUNTSIZE / 2) / COUNTSIZE;
            passes += 1;
            continue;
        }
        counted += count_per_buf;
    }
    let read_kbps = counted as f64 / (start.elapsed().as_secs_f64() * count_per_k as f64);

    // Copy phase.
    settle(&[&f, &g], p.settle_s * 3.0 / 11.0);
    f.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
    let start = Instant::now();
    let mut counted = 0u64;
    let mut since_check = 0u32;
    loop {
        let n = match f.read(&mut rbuf) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(io("copy read", e)),
        };
        if n < p.bufsize {
            f.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
            g.seek(SeekFrom::Start(0)).map_err(|e| io("seek", e))?;
            continue;
        }
        g.write_all(&rbuf).map_err(|e| io("copy write", e))?;
        counted += count_per_buf;
        since_check += 1;
        if since_check >= 16 {
            since_check = 0;
            if start.elapsed() >= p.duration {
                break;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let copy_kbps = counted as f64 / (secs * count_per_k as f64);
    Ok((
        Pass {
            count: copy_kbps,
            time_s: secs,
            timebase: 0.0,
        },
        write_kbps,
        read_kbps,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_reports_kib_per_second_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let (pass, w, r) = file_copy(
            dir.path(),
            FsParams {
                bufsize: 1024,
                max_blocks: 64,
                duration: Duration::from_millis(30),
                settle_s: 0.0,
            },
        )
        .unwrap();
        assert_eq!(pass.timebase, 0.0);
        assert!(
            pass.count > 100.0 && w > 100.0 && r > 100.0,
            "{pass:?} {w} {r}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_file() {
        let err = file_copy(
            Path::new("/nonexistent/dir"),
            FsParams {
                bufsize: 256,
                max_blocks: 1,
                duration: Duration::from_millis(1),
                settle_s: 0.0,
            },
        )
        .unwrap_err();
        assert!(err.contains("dummy0-"), "{err}");
    }
}
