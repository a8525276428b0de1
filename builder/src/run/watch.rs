//! Host-side timing of a boot: polls the results a guest writes until its first record
//! (`run_start`, written just before the first workload starts) appears, so that
//! boot-to-first-workload is measured on the host's clock from the engine's start, not only in
//! guest uptime.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use imgbuild_init::results::read_results_bytes;

/// How often the results are read.
const INTERVAL: Duration = Duration::from_millis(25);
/// The first record lies in the first bytes of a raw results disk.
const RAW_PREFIX: usize = 1 << 20;

/// What holds the results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsKind {
    /// A raw results disk.
    RawDisk,
    /// A VMDK results disk.
    Vmdk,
    /// A results file (container, host), created by the guest.
    File,
}

/// Watches one results disk or file.
#[derive(Debug)]
pub struct Watch {
    path: PathBuf,
    kind: ResultsKind,
    start: Instant,
    last: Option<Instant>,
    found: Option<Duration>,
}

impl Watch {
    /// Starts watching `path`; times count from `start` (the engine's start).
    pub fn new(path: PathBuf, kind: ResultsKind, start: Instant) -> Watch {
        Watch {
            path,
            kind,
            start,
            last: None,
            found: None,
        }
    }

    /// Looks again when the interval has passed; cheap to call often.
    pub fn poll(&mut self) {
        if self.found.is_some() || self.last.is_some_and(|t| t.elapsed() < INTERVAL) {
            return;
        }
        self.last = Some(Instant::now());
        if self.has_first_record() {
            self.found = Some(self.start.elapsed());
        }
    }

    /// Time from the start to the first record, when it was seen.
    pub fn first_record(&self) -> Option<Duration> {
        self.found
    }

    fn has_first_record(&self) -> bool {
        match self.kind {
            ResultsKind::RawDisk | ResultsKind::File => {
                let Ok(file) = File::open(&self.path) else {
                    return false;
                };
                let mut buf = vec![0u8; RAW_PREFIX];
                let mut len = 0;
                while len < buf.len() {
                    match file.read_at(&mut buf[len..], len as u64) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
                read_results_bytes(&buf[..len]).is_ok_and(|r| r.run_start().is_some())
            }
            ResultsKind::Vmdk => crate::collect::collect(&self.path).is_ok_and(|c| {
                c.records
                    .iter()
                    .any(|r| matches!(r, imgbuild_init::results::schema::Record::RunStart(_)))
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_the_first_record_only_once_written() {
        use imgbuild_init::digest::RootfsDigest;
        use imgbuild_init::results::schema::{Record, RunEnd, RunStatus, StatusCounts};
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("r.img");
        imgbuild_init::results::create_results_image(&disk, 1 << 20, "t", RootfsDigest([0; 32]))
            .unwrap();
        let mut w = Watch::new(disk.clone(), ResultsKind::RawDisk, Instant::now());
        w.poll();
        assert!(w.first_record().is_none());
        let mut w = Watch::new(dir.path().join("none"), ResultsKind::File, Instant::now());
        w.poll();
        assert!(w.first_record().is_none());

        // A run_end alone is not a run_start.
        let file = dir.path().join("results");
        let mut writer =
            imgbuild_init::results::ResultsWriter::create_file(&file, "t", None).unwrap();
        writer
            .append(&Record::RunEnd(RunEnd {
                status: RunStatus::Complete,
                reason: None,
                end_s: 1.0,
                counts: StatusCounts::default(),
            }))
            .unwrap();
        let mut w = Watch::new(file, ResultsKind::File, Instant::now());
        w.poll();
        assert!(w.first_record().is_none());
    }
}
