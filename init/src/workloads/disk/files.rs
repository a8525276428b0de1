//! Bonnie++'s file tests (`-n`): create, stat and delete of many small files, once in
//! sequential (name) order and once in random order, as operations per second with the
//! longest single operation.
//!
//! Sequential: files named by an increasing number are created in that order, then the
//! directory is read and each entry stat'ed, then they are deleted in readdir order. Random:
//! the same names are created, stat'ed and deleted in shuffled orders. Files get
//! `min..=max` bytes of data when `max > 0`, as `-n N:max:min`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Operations per second and the longest operation of one file test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpsPhase {
    /// Operations done.
    pub ops: u64,
    /// Seconds.
    pub seconds: f64,
    /// Longest operation, seconds.
    pub max_latency_s: f64,
}

impl OpsPhase {
    /// Operations per second.
    pub fn per_s(&self) -> f64 {
        self.ops as f64 / self.seconds
    }
}

/// The six phases, in bonnie++'s column order.
#[derive(Debug, Clone, PartialEq)]
pub struct FileResults {
    /// Sequential create.
    pub seq_create: OpsPhase,
    /// Sequential stat (readdir order).
    pub seq_stat: OpsPhase,
    /// Sequential delete.
    pub seq_delete: OpsPhase,
    /// Random create.
    pub random_create: OpsPhase,
    /// Random stat.
    pub random_stat: OpsPhase,
    /// Random delete.
    pub random_delete: OpsPhase,
}

/// Shape of the file set.
#[derive(Debug, Clone, Copy)]
pub struct FileSet {
    /// Number of files.
    pub files: u64,
    /// Largest file size, bytes (0: empty files).
    pub max_bytes: u64,
    /// Smallest file size, bytes.
    pub min_bytes: u64,
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

fn timed<F: FnMut(&Path) -> Result<(), String>>(
    paths: &[PathBuf],
    mut op: F,
) -> Result<OpsPhase, String> {
    let start = Instant::now();
    let mut max = 0f64;
    for p in paths {
        let t = Instant::now();
        op(p)?;
        max = max.max(t.elapsed().as_secs_f64());
    }
    Ok(OpsPhase {
        ops: paths.len() as u64,
        seconds: start.elapsed().as_secs_f64().max(1e-9),
        max_latency_s: max,
    })
}

fn create(path: &Path, size: u64, data: &[u8]) -> Result<(), String> {
    let mut f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    let mut left = size;
    while left > 0 {
        let n = left.min(data.len() as u64) as usize;
        f.write_all(&data[..n])
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        left -= n as u64;
    }
    Ok(())
}

fn stat(path: &Path) -> Result<(), String> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| format!("stat {}: {e}", path.display()))
}

fn delete(path: &Path) -> Result<(), String> {
    std::fs::remove_file(path).map_err(|e| format!("unlink {}: {e}", path.display()))
}

fn readdir_order(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("readdir {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in entries {
        out.push(
            e.map_err(|e| format!("readdir {}: {e}", dir.display()))?
                .path(),
        );
    }
    Ok(out)
}

/// Runs the six file tests in `dir` (created, and removed afterwards).
pub fn run(dir: &Path, set: FileSet, seed: u64) -> Result<FileResults, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let result = run_in(dir, set, seed);
    let _ = std::fs::remove_dir_all(dir);
    result
}

fn run_in(dir: &Path, set: FileSet, seed: u64) -> Result<FileResults, String> {
    let mut rng = Rng(seed | 1);
    let data = vec![b'x'; set.max_bytes.min(1 << 20) as usize];
    let size = |rng: &mut Rng| {
        if set.max_bytes == 0 {
            0
        } else {
            set.min_bytes + rng.next() % (set.max_bytes - set.min_bytes + 1)
        }
    };
    let names: Vec<PathBuf> = (0..set.files)
        .map(|i| dir.join(format!("{i:010}")))
        .collect();

    let sizes: Vec<u64> = names.iter().map(|_| size(&mut rng)).collect();
    let mut k = 0;
    let seq_create = timed(&names, |p| {
        let r = create(p, sizes[k], &data);
        k += 1;
        r
    })?;
    let listed = readdir_order(dir)?;
    if listed.len() as u64 != set.files {
        return Err(format!(
            "{} lists {} files after creating {}",
            dir.display(),
            listed.len(),
            set.files
        ));
    }
    let seq_stat = timed(&listed, stat)?;
    let seq_delete = timed(&listed, delete)?;

    let mut order = names.clone();
    shuffle(&mut order, &mut rng);
    let sizes: Vec<u64> = order.iter().map(|_| size(&mut rng)).collect();
    let mut k = 0;
    let random_create = timed(&order, |p| {
        let r = create(p, sizes[k], &data);
        k += 1;
        r
    })?;
    shuffle(&mut order, &mut rng);
    let random_stat = timed(&order, stat)?;
    shuffle(&mut order, &mut rng);
    let random_delete = timed(&order, delete)?;
    Ok(FileResults {
        seq_create,
        seq_stat,
        seq_delete,
        random_create,
        random_stat,
        random_delete,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_touches_every_file_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("files");
        let r = run(
            &sub,
            FileSet {
                files: 200,
                max_bytes: 100,
                min_bytes: 10,
            },
            7,
        )
        .unwrap();
        for p in [
            r.seq_create,
            r.seq_stat,
            r.seq_delete,
            r.random_create,
            r.random_stat,
            r.random_delete,
        ] {
            assert_eq!(p.ops, 200);
            assert!(p.per_s() > 0.0);
        }
        assert!(!sub.exists());
    }

    #[test]
    fn shuffle_is_a_permutation() {
        let mut v: Vec<u32> = (0..100).collect();
        shuffle(&mut v, &mut Rng(3));
        assert_ne!(v, (0..100).collect::<Vec<_>>());
        v.sort();
        assert_eq!(v, (0..100).collect::<Vec<_>>());
    }
}
