//! Writing results: the builder's empty disk image, and the guest's record appender.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{self, ResultsHeader, HEADER_SIZE};
use super::schema::Record;
use super::ResultsError;
use crate::digest::RootfsDigest;

/// Space every record but the last keeps free, so that the final `run_end` always fits.
pub const END_RESERVE: u64 = 16 * 1024;

/// Creates an empty results disk image of `size` bytes (a multiple of 512, at least 64 KiB)
/// for `image` built with `digest`. The file is sparse, written under a temporary name in the
/// same directory and renamed into place, so `path` is either absent or complete.
pub fn create_results_image(
    path: &Path,
    size: u64,
    image: &str,
    digest: RootfsDigest,
) -> io::Result<()> {
    let header = format::format_header(size, image, Some(digest))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no file name", path.display()),
        )
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = File::create(&tmp)?;
        file.set_len(size)?;
        file.write_all_at(&header, 0)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))
}

/// A random run id; falls back to clock and pid bits when the kernel has no entropy yet (early
/// boot on old kernels), which is enough to tell two runs apart.
pub fn new_run_id() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: the buffer is valid for 8 bytes; GRND_NONBLOCK never waits for entropy.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), 8, libc::GRND_NONBLOCK) };
    if got == 8 {
        return u64::from_le_bytes(bytes);
    }
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    wall ^ crate::clock::since_boot_nanos().rotate_left(32) ^ u64::from(std::process::id())
}

/// Appends records to a results disk or file, flushing each before returning.
pub struct ResultsWriter {
    file: File,
    path: PathBuf,
    header: ResultsHeader,
    next: u64,
    limit: Option<u64>,
    run_id: u64,
    seq: u64,
}

fn io_err(action: impl Into<String>, path: &Path) -> impl FnOnce(io::Error) -> ResultsError {
    let action = action.into();
    let path = path.display().to_string();
    move |source| ResultsError::Io {
        action,
        path,
        source,
    }
}

impl ResultsWriter {
    /// Opens a results disk the builder created (block device or image file); the run's records
    /// overwrite any earlier run's from the first record slot on.
    pub fn open_disk(path: &Path) -> Result<Self, ResultsError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_err("open", path))?;
        let len = file
            .seek(SeekFrom::End(0))
            .map_err(io_err("find the size of", path))?;
        let mut bytes = vec![0u8; HEADER_SIZE];
        file.seek(SeekFrom::Start(0))
            .map_err(io_err("seek in", path))?;
        file.read_exact(&mut bytes)
            .map_err(io_err("read the header of", path))?;
        let header = format::parse_header(&bytes).map_err(|source| ResultsError::Header {
            path: path.display().to_string(),
            source,
        })?;
        let limit = Some(header.capacity.map_or(len, |c| c.min(len)));
        Ok(ResultsWriter {
            file,
            path: path.to_path_buf(),
            header,
            next: HEADER_SIZE as u64,
            limit,
            run_id: new_run_id(),
            seq: 0,
        })
    }

    /// Creates (or truncates) a results file that grows as records are added: the container and
    /// host form of the results disk.
    pub fn create_file(
        path: &Path,
        image: &str,
        digest: Option<RootfsDigest>,
    ) -> Result<Self, ResultsError> {
        let bytes =
            format::format_header(0, image, digest).map_err(|source| ResultsError::Header {
                path: path.display().to_string(),
                source,
            })?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_err("create", path))?;
        file.write_all_at(&bytes, 0)
            .map_err(io_err("write the header of", path))?;
        file.sync_data().map_err(io_err("flush", path))?;
        let header = format::parse_header(&bytes).map_err(|source| ResultsError::Header {
            path: path.display().to_string(),
            source,
        })?;
        Ok(ResultsWriter {
            file,
            path: path.to_path_buf(),
            header,
            next: HEADER_SIZE as u64,
            limit: None,
            run_id: new_run_id(),
            seq: 0,
        })
    }

    /// The disk or file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its header.
    pub fn header(&self) -> &ResultsHeader {
        &self.header
    }

    /// This run's id, carried by each record.
    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Writes `record` after the previous one and flushes it to the device. Records other than
    /// `run_end` must leave [`END_RESERVE`] bytes free.
    pub fn append(&mut self, record: &Record) -> Result<(), ResultsError> {
        let payload =
            serde_json::to_vec(record).map_err(|e| ResultsError::Encode(e.to_string()))?;
        let bytes = format::encode_record(self.run_id, self.seq, &payload)
            .map_err(|e| ResultsError::Encode(e.to_string()))?;
        let len = bytes.len() as u64;
        let reserve = if matches!(record, Record::RunEnd(_)) {
            0
        } else {
            END_RESERVE
        };
        if let Some(limit) = self.limit {
            let need = len.saturating_add(reserve);
            if self.next.saturating_add(need) > limit {
                return Err(ResultsError::Full {
                    path: self.path.display().to_string(),
                    need,
                    offset: self.next,
                    capacity: limit,
                });
            }
        }
        let offset = self.next;
        self.file.write_all_at(&bytes, offset).map_err(io_err(
            format!("write record {} at offset {offset} of", self.seq),
            &self.path,
        ))?;
        self.file.sync_data().map_err(io_err("flush", &self.path))?;
        self.next += len;
        self.seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::schema::{RunEnd, RunStatus, StatusCounts};

    fn end() -> Record {
        Record::RunEnd(RunEnd {
            status: RunStatus::Complete,
            reason: None,
            end_s: 1.0,
            counts: StatusCounts::default(),
        })
    }

    #[test]
    fn image_is_sparse_atomic_and_openable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.img");
        create_results_image(&path, 8 << 20, "minimal", RootfsDigest([1; 32])).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 8 << 20);
        assert!(
            std::os::unix::fs::MetadataExt::blocks(&meta) * 512 < 1 << 20,
            "not sparse"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temporary file left behind"
        );
        let writer = ResultsWriter::open_disk(&path).unwrap();
        assert_eq!(writer.header().image, "minimal");
        assert!(create_results_image(&path, 1000, "x", RootfsDigest([0; 32])).is_err());
        assert!(create_results_image(
            &dir.path().join("no/such"),
            1 << 20,
            "x",
            RootfsDigest([0; 32])
        )
        .is_err());
    }

    fn workload_named(name: String) -> Record {
        Record::Workload(Box::new(crate::results::schema::WorkloadResult {
            name,
            workload: "w".into(),
            parameters: serde_json::Value::Null,
            repetitions: 1,
            timeout_s: 1.0,
            status: crate::results::schema::Status::Ok,
            reason: None,
            start_s: 0.0,
            end_s: 0.0,
            duration_s: 0.0,
            tool: None,
            info: Default::default(),
            metrics: vec![],
        }))
    }

    #[test]
    fn full_disk_keeps_room_for_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.img");
        create_results_image(&path, 64 * 1024, "x", RootfsDigest([0; 32])).unwrap();
        let mut w = ResultsWriter::open_disk(&path).unwrap();
        // 60 KiB follow the header: one 30 KB record plus the 16 KiB reserve fits, two do not,
        // and the final record still goes into the reserve.
        let big = workload_named("z".repeat(30_000));
        w.append(&big).unwrap();
        assert!(matches!(w.append(&big), Err(ResultsError::Full { .. })));
        w.append(&end()).unwrap();
        let run = crate::results::read_results_file(&path).unwrap();
        assert_eq!(run.records.len(), 2);
        assert!(run.complete);
    }
}
