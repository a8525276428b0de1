//! Reading a results disk that may be damaged, truncated or hostile.
//!
//! Nothing read is trusted: lengths are bounded before anything is allocated, every record's
//! checksum is verified, and damage becomes a line in [`CollectedRun::problems`] after which the
//! reader resynchronises on the next sector that starts a record. A disk that ends before a
//! `run_end` record is an incomplete run, not an error.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::format::{
    self, ResultsHeader, FRAME_HEADER_SIZE, HEADER_SIZE, MAX_PAYLOAD, RECORD_MAGIC, SECTOR,
};
use super::schema::{Record, RunEnd, RunStart, WorkloadResult};
use super::ResultsError;

/// Problems listed before the rest are only counted.
const MAX_PROBLEMS: usize = 200;
/// Payload bytes decoded at most, whatever the disk's size. Free-form JSON (`parameters`) decodes
/// into up to ~15 times its size (`[]` is 3 bytes of text, a 32-byte value plus its vector), so
/// this bounds the collector's memory to a few hundred MiB on a hostile disk; a real run writes
/// well under 1 MiB.
const MAX_TOTAL_PAYLOAD: u64 = 16 << 20;
/// Largest growing results file (header capacity 0, the container and host form) read. Its size
/// is the guest's to choose: a sparse file of terabytes would otherwise be scanned to its end. A
/// real run writes far less ([`MAX_TOTAL_PAYLOAD`] of payload at most is read anyway).
const MAX_GROWING_FILE: u64 = 256 << 20;
/// Bytes read at a time while looking for the next record.
const SCAN_CHUNK: usize = 64 * 1024;

/// One run as read back from a results disk.
#[derive(Debug, Clone)]
pub struct CollectedRun {
    /// The header the builder wrote.
    pub header: ResultsHeader,
    /// The run id of the records read.
    pub run_id: Option<u64>,
    /// Valid records in disk order.
    pub records: Vec<Record>,
    /// True when a `run_end` record was read.
    pub complete: bool,
    /// Damage found, one line each, with offsets.
    pub problems: Vec<String>,
}

impl CollectedRun {
    /// The `run_start` record.
    pub fn run_start(&self) -> Option<&RunStart> {
        self.records.iter().find_map(|r| match r {
            Record::RunStart(s) => Some(&**s),
            _ => None,
        })
    }

    /// The workload records, in run order.
    pub fn workloads(&self) -> impl Iterator<Item = &WorkloadResult> {
        self.records.iter().filter_map(|r| match r {
            Record::Workload(w) => Some(&**w),
            _ => None,
        })
    }

    /// The `run_end` record.
    pub fn run_end(&self) -> Option<&RunEnd> {
        self.records.iter().find_map(|r| match r {
            Record::RunEnd(e) => Some(e),
            _ => None,
        })
    }
}

/// Positional reads; short only at the end of the data.
trait Source {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;
}

struct SeekSource<'a, R: Read + Seek>(&'a mut R);

impl<R: Read + Seek> Source for SeekSource<'_, R> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        self.0.seek(SeekFrom::Start(offset))?;
        let mut done = 0;
        while done < buf.len() {
            match self.0.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

struct SliceSource<'a>(&'a [u8]);

impl Source for SliceSource<'_> {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }
}

/// Reads the run on a results disk or file open for reading.
pub fn read_results<R: Read + Seek>(r: &mut R) -> Result<CollectedRun, ResultsError> {
    read_named(r, "stream")
}

/// Reads the run in a results disk image or file at `path`.
pub fn read_results_file(path: &Path) -> Result<CollectedRun, ResultsError> {
    let name = path.display().to_string();
    let mut file = File::open(path).map_err(|source| ResultsError::Io {
        action: "open".into(),
        path: name.clone(),
        source,
    })?;
    read_named(&mut file, &name)
}

/// Reads the run in an in-memory copy of a results disk (what a fuzzer feeds).
pub fn read_results_bytes(bytes: &[u8]) -> Result<CollectedRun, ResultsError> {
    Collector::new(&mut SliceSource(bytes), bytes.len() as u64, "bytes").run()
}

fn read_named<R: Read + Seek>(r: &mut R, name: &str) -> Result<CollectedRun, ResultsError> {
    let len = r
        .seek(SeekFrom::End(0))
        .map_err(|source| ResultsError::Io {
            action: "find the size of".into(),
            path: name.to_owned(),
            source,
        })?;
    Collector::new(&mut SeekSource(r), len, name).run()
}

struct Collector<'a> {
    src: &'a mut dyn Source,
    len: u64,
    name: &'a str,
    problems: Vec<String>,
    dropped_problems: usize,
}

/// What lies at a position that does not start a record.
struct Scan {
    /// The next sector-aligned offset that starts with the record magic.
    next: Option<u64>,
    /// True when everything before it (or the end) was zero.
    all_zero: bool,
}

impl<'a> Collector<'a> {
    fn new(src: &'a mut dyn Source, len: u64, name: &'a str) -> Self {
        Collector {
            src,
            len,
            name,
            problems: Vec::new(),
            dropped_problems: 0,
        }
    }

    fn problem(&mut self, text: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(text);
        } else {
            self.dropped_problems += 1;
        }
    }

    fn read_exact_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<bool, ResultsError> {
        let n = self
            .src
            .read_at(offset, buf)
            .map_err(|source| ResultsError::Io {
                action: format!("read {} bytes at offset {offset} of", buf.len()),
                path: self.name.to_owned(),
                source,
            })?;
        Ok(n == buf.len())
    }

    fn scan(&mut self, from: u64, end: u64) -> Result<Scan, ResultsError> {
        let mut all_zero = true;
        let mut chunk = vec![0u8; SCAN_CHUNK];
        let mut offset = from;
        while offset < end {
            let n = usize::try_from(end - offset)
                .unwrap_or(SCAN_CHUNK)
                .min(SCAN_CHUNK);
            let buf = &mut chunk[..n];
            if !self.read_exact_at(offset, buf)? {
                break;
            }
            for (i, sector) in buf.chunks(SECTOR as usize).enumerate() {
                let at = offset + (i as u64) * SECTOR;
                if at != from
                    && sector.len() >= FRAME_HEADER_SIZE
                    && sector.starts_with(&RECORD_MAGIC)
                {
                    return Ok(Scan {
                        next: Some(at),
                        all_zero,
                    });
                }
                if all_zero && sector.iter().any(|&b| b != 0) {
                    all_zero = false;
                }
            }
            offset += n as u64;
        }
        Ok(Scan {
            next: None,
            all_zero,
        })
    }

    fn run(mut self) -> Result<CollectedRun, ResultsError> {
        if self.len < HEADER_SIZE as u64 {
            return Err(ResultsError::Truncated {
                path: self.name.to_owned(),
                len: self.len,
            });
        }
        let mut header_bytes = vec![0u8; HEADER_SIZE];
        if !self.read_exact_at(0, &mut header_bytes)? {
            return Err(ResultsError::Truncated {
                path: self.name.to_owned(),
                len: self.len,
            });
        }
        let header =
            format::parse_header(&header_bytes).map_err(|source| ResultsError::Header {
                path: self.name.to_owned(),
                source,
            })?;
        let end = match header.capacity {
            Some(capacity) if capacity <= self.len => capacity,
            Some(capacity) => {
                self.problem(format!(
                    "the disk holds {} bytes but its header says {capacity}: read as truncated",
                    self.len
                ));
                self.len
            }
            None if self.len > MAX_GROWING_FILE => {
                self.problem(format!(
                    "the results file holds {} bytes; only the first {MAX_GROWING_FILE} are read",
                    self.len
                ));
                MAX_GROWING_FILE
            }
            None => self.len,
        };

        let mut run_id = None;
        let mut records = Vec::new();
        let mut expected_seq = 0u64;
        let mut total_payload = 0u64;
        let mut complete = false;
        // Set after damage was reported, so that skipping its remains is not reported again.
        let mut resyncing = false;
        let mut pos = HEADER_SIZE as u64;
        while pos + FRAME_HEADER_SIZE as u64 <= end {
            let mut frame = [0u8; FRAME_HEADER_SIZE];
            if !self.read_exact_at(pos, &mut frame)? {
                break;
            }
            let Some(fh) = format::parse_frame_header(&frame) else {
                let scan = self.scan(pos, end)?;
                let Some(next) = scan.next else {
                    if !scan.all_zero && !resyncing {
                        self.problem(format!(
                            "bytes from offset {pos} to the end ({end}) are not records; ignored"
                        ));
                    }
                    break;
                };
                if !resyncing {
                    self.problem(format!(
                        "{} {} bytes at offset {pos} are not a record; resynchronised at offset \
                         {next}",
                        next - pos,
                        if scan.all_zero { "zero" } else { "garbage" },
                    ));
                }
                resyncing = true;
                pos = next;
                continue;
            };
            if fh.payload_len > MAX_PAYLOAD {
                self.problem(format!(
                    "record at offset {pos}: payload length {} exceeds the limit {MAX_PAYLOAD}; \
                     skipped",
                    fh.payload_len
                ));
                resyncing = true;
                pos += SECTOR;
                continue;
            }
            let record_end = pos + fh.padded_len();
            if record_end > end {
                self.problem(format!(
                    "record at offset {pos} (sequence {}) is cut off: it needs {} bytes, the data \
                     ends at {end}",
                    fh.seq,
                    fh.padded_len()
                ));
                resyncing = true;
                pos += SECTOR;
                continue;
            }
            total_payload += u64::from(fh.payload_len);
            if total_payload > MAX_TOTAL_PAYLOAD {
                self.problem(format!(
                    "more than {MAX_TOTAL_PAYLOAD} bytes of records; stopped at offset {pos}"
                ));
                break;
            }
            let mut payload = vec![0u8; fh.payload_len as usize];
            if !self.read_exact_at(pos + FRAME_HEADER_SIZE as u64, &mut payload)? {
                break;
            }
            if format::frame_crc(&fh, &payload) != fh.crc {
                self.problem(format!(
                    "record at offset {pos} (sequence {}): checksum mismatch; skipped",
                    fh.seq
                ));
                resyncing = true;
                pos += SECTOR;
                continue;
            }
            resyncing = false;
            match run_id {
                None => run_id = Some(fh.run_id),
                Some(id) if id != fh.run_id => {
                    self.problem(format!(
                        "records of another run (id {:016x}) from offset {pos} on; ignored",
                        fh.run_id
                    ));
                    break;
                }
                Some(_) => {}
            }
            if fh.seq < expected_seq {
                self.problem(format!(
                    "record at offset {pos} repeats sequence number {}; ignored",
                    fh.seq
                ));
                pos = record_end;
                continue;
            }
            if fh.seq > expected_seq {
                self.problem(format!(
                    "records {expected_seq} to {} are missing before offset {pos}",
                    fh.seq - 1
                ));
            }
            // A hostile seq of u64::MAX must not wrap around and admit seq 0 again.
            expected_seq = fh.seq.saturating_add(1);
            match serde_json::from_slice::<Record>(&payload) {
                Ok(record) => {
                    if complete {
                        self.problem(format!("record {} at offset {pos} follows run_end", fh.seq));
                    }
                    if matches!(record, Record::RunStart(_)) && !records.is_empty() {
                        self.problem(format!("run_start at offset {pos} is not the first record"));
                    }
                    if matches!(record, Record::RunEnd(_)) {
                        complete = true;
                    }
                    records.push(record);
                }
                Err(e) => self.problem(format!(
                    "record {} at offset {pos} has a valid checksum but does not decode: {e}",
                    fh.seq
                )),
            }
            pos = record_end;
        }
        if !complete {
            self.problem("no run_end record: the run did not finish".into());
        }
        if self.dropped_problems > 0 {
            let n = self.dropped_problems;
            self.problems.push(format!("… and {n} more problems"));
        }
        Ok(CollectedRun {
            header,
            run_id,
            records,
            complete,
            problems: self.problems,
        })
    }
}

#[cfg(test)]
mod tests {
    // The damage cases are in tests/results_reader.rs; here the plain path and the sources.
    use super::*;
    use crate::results::format::{encode_record, format_header};
    use crate::results::schema::{RunStatus, StatusCounts};

    #[test]
    fn slice_and_seek_sources_agree() {
        let mut bytes = format_header(0, "img", None).unwrap();
        let end = Record::RunEnd(RunEnd {
            status: RunStatus::Complete,
            reason: None,
            end_s: 1.0,
            counts: StatusCounts::default(),
        });
        bytes.extend(encode_record(1, 0, &serde_json::to_vec(&end).unwrap()).unwrap());
        let a = read_results_bytes(&bytes).unwrap();
        let b = read_results(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(a.records, vec![end]);
        assert_eq!(a.records, b.records);
        assert!(a.complete && b.complete && a.run_end().is_some() && a.run_start().is_none());
        let mut buf = [0u8; 8];
        assert_eq!(SliceSource(&bytes).read_at(u64::MAX, &mut buf).unwrap(), 0);
    }

    #[test]
    fn the_largest_sequence_number_does_not_wrap() {
        // Found by the results fuzz target: seq + 1 overflowed on u64::MAX.
        let end = Record::RunEnd(RunEnd {
            status: RunStatus::Complete,
            reason: None,
            end_s: 1.0,
            counts: StatusCounts::default(),
        });
        let payload = serde_json::to_vec(&end).unwrap();
        let mut bytes = format_header(0, "img", None).unwrap();
        bytes.extend(encode_record(1, u64::MAX, &payload).unwrap());
        bytes.extend(encode_record(1, 0, &payload).unwrap());
        let run = read_results_bytes(&bytes).unwrap();
        assert_eq!(run.records, vec![end]);
        assert!(
            run.problems
                .iter()
                .any(|p| p.contains("repeats sequence number 0")),
            "{:?}",
            run.problems
        );
    }

    #[test]
    fn huge_sparse_results_file_is_read_up_to_a_bound() {
        // A guest-written growing file of 4 TiB (sparse): one record, then holes to the end.
        let end = Record::RunEnd(RunEnd {
            status: RunStatus::Complete,
            reason: None,
            end_s: 1.0,
            counts: StatusCounts::default(),
        });
        let mut bytes = format_header(0, "img", None).unwrap();
        bytes.extend(encode_record(1, 0, &serde_json::to_vec(&end).unwrap()).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.bin");
        std::fs::write(&path, &bytes).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        if f.set_len(4 << 40).is_err() {
            return; // a filesystem without files this large
        }
        let t = std::time::Instant::now();
        let run = read_results_file(&path).unwrap();
        assert!(t.elapsed().as_secs() < 60, "took {:?}", t.elapsed());
        assert!(run.complete);
        assert_eq!(run.records, vec![end]);
        assert!(
            run.problems[0].contains("only the first 268435456 are read"),
            "{:?}",
            run.problems
        );
    }
}
