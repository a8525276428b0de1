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
/// Payload bytes decoded at most, whatever the disk's size.
const MAX_TOTAL_PAYLOAD: u64 = 64 << 20;
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
            expected_seq = fh.seq + 1;
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
    use super::*;
    use crate::results::format::{encode_record, format_header};
    use crate::results::schema::{RunStatus, Status, StatusCounts};

    fn workload(i: usize) -> Record {
        Record::Workload(Box::new(WorkloadResult {
            name: format!("w{i}"),
            workload: "crypto".into(),
            parameters: serde_json::json!({"i": i}),
            repetitions: 1,
            timeout_s: 1.0,
            status: Status::Ok,
            reason: None,
            start_s: i as f64,
            end_s: i as f64 + 0.5,
            duration_s: 0.5,
            tool: None,
            info: Default::default(),
            // Some records span several sectors.
            metrics: (0..i * 8)
                .map(|m| crate::results::schema::Metric {
                    name: format!("m{m}"),
                    unit: "bytes/s".into(),
                    parameters: Default::default(),
                    higher_is_better: true,
                    values: vec![1.0, 2.0],
                    median: 1.5,
                    cv: 0.4,
                })
                .collect(),
        }))
    }

    fn end() -> Record {
        Record::RunEnd(RunEnd {
            status: RunStatus::Complete,
            reason: None,
            end_s: 9.0,
            counts: StatusCounts::default(),
        })
    }

    /// A results file with `n` workload records and a run end; returns the bytes, the records
    /// and where each record ends.
    fn stream(run_id: u64, n: usize) -> (Vec<u8>, Vec<Record>, Vec<usize>) {
        let mut bytes = format_header(0, "img", None).unwrap();
        let mut records: Vec<Record> = (0..n).map(workload).collect();
        records.push(end());
        let mut ends = Vec::new();
        for (seq, r) in records.iter().enumerate() {
            let payload = serde_json::to_vec(r).unwrap();
            bytes.extend(encode_record(run_id, seq as u64, &payload).unwrap());
            ends.push(bytes.len());
        }
        (bytes, records, ends)
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

    #[test]
    fn intact_stream_reads_back_whole() {
        let (bytes, records, _) = stream(1, 4);
        let run = read_results_bytes(&bytes).unwrap();
        assert_eq!(run.records, records);
        assert!(run.complete);
        assert!(run.problems.is_empty(), "{:?}", run.problems);
        assert_eq!(run.run_id, Some(1));
        assert_eq!(run.workloads().count(), 4);
        let via_seek = read_results(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(via_seek.records, records);
    }

    #[test]
    fn truncation_at_every_offset_keeps_finished_records() {
        let (bytes, records, ends) = stream(2, 3);
        for cut in 0..bytes.len() {
            let run = match read_results_bytes(&bytes[..cut]) {
                Ok(run) => run,
                Err(ResultsError::Truncated { .. }) if cut < HEADER_SIZE => continue,
                Err(e) => panic!("cut at {cut}: {e}"),
            };
            let whole = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(run.records, records[..whole], "cut at {cut}");
            assert_eq!(run.complete, whole == records.len(), "cut at {cut}");
            assert!(
                !run.complete || run.problems.is_empty(),
                "cut at {cut}: {:?}",
                run.problems
            );
            assert!(run.complete || !run.problems.is_empty(), "cut at {cut}");
        }
    }

    #[test]
    fn bit_flips_lose_at_most_the_record_hit() {
        let (bytes, records, ends) = stream(3, 3);
        let mut starts = vec![HEADER_SIZE];
        starts.extend(&ends[..ends.len() - 1]);
        for bit in (HEADER_SIZE * 8..bytes.len() * 8).step_by(7) {
            let mut bad = bytes.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let run = read_results_bytes(&bad).unwrap();
            let hit = starts.iter().rposition(|&s| s <= bit / 8).unwrap();
            let others: Vec<_> = records
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != hit)
                .map(|(_, r)| r)
                .collect();
            let got: Vec<_> = run.records.iter().filter(|r| **r != records[hit]).collect();
            assert_eq!(got, others, "bit {bit}: {:?}", run.problems);
            if run.records.len() < records.len() {
                assert!(!run.problems.is_empty(), "bit {bit}: silent loss");
            }
        }
    }

    #[test]
    fn absurd_lengths_are_bounded_and_skipped() {
        let (mut bytes, records, _) = stream(4, 2);
        for len in [u32::MAX, MAX_PAYLOAD + 1, 1 << 30] {
            bytes[HEADER_SIZE + 8..HEADER_SIZE + 12].copy_from_slice(&len.to_le_bytes());
            let run = read_results_bytes(&bytes).unwrap();
            assert_eq!(run.records, records[1..]);
            assert!(
                run.problems[0].contains("payload length") || run.problems[0].contains("cut off")
            );
            assert!(run.complete);
        }
        // A length that fits the limit but not the disk.
        bytes[HEADER_SIZE + 8..HEADER_SIZE + 12].copy_from_slice(&(MAX_PAYLOAD - 1).to_le_bytes());
        let run = read_results_bytes(&bytes).unwrap();
        assert_eq!(run.records, records[1..]);
    }

    #[test]
    fn garbage_after_valid_records_is_reported() {
        let (bytes, records, _) = stream(5, 2);
        let mut rng = Rng(0x9e3779b97f4a7c15);
        for tail in [1usize, 100, 512, 3000] {
            let mut noisy = bytes.clone();
            noisy.extend((0..tail).map(|_| rng.next() as u8 | 1));
            let run = read_results_bytes(&noisy).unwrap();
            assert_eq!(run.records, records);
            assert!(run.complete);
            if tail >= FRAME_HEADER_SIZE {
                assert!(!run.problems.is_empty(), "tail {tail}");
            }
        }
        // Garbage that imitates a frame: magic and a plausible length, wrong checksum.
        let mut fake = bytes.clone();
        let mut frame = encode_record(5, 99, b"{}").unwrap();
        frame[12] ^= 0xff;
        fake.extend(frame);
        let run = read_results_bytes(&fake).unwrap();
        assert_eq!(run.records, records);
        assert!(
            run.problems.iter().any(|p| p.contains("checksum")),
            "{:?}",
            run.problems
        );
    }

    #[test]
    fn zero_tail_of_a_disk_is_clean_and_stale_runs_are_ignored() {
        let (mut bytes, records, _) = stream(6, 1);
        bytes.resize(bytes.len() + 64 * 1024, 0);
        let run = read_results_bytes(&bytes).unwrap();
        assert!(run.problems.is_empty(), "{:?}", run.problems);
        // An earlier run's records left after a zero gap.
        let (old, _, _) = stream(7, 2);
        bytes.extend_from_slice(&old[HEADER_SIZE..]);
        let run = read_results_bytes(&bytes).unwrap();
        assert_eq!(run.records, records);
        assert!(
            run.problems.iter().any(|p| p.contains("another run")),
            "{:?}",
            run.problems
        );
    }

    #[test]
    fn sequence_gaps_and_bad_json_are_reported() {
        let mut bytes = format_header(0, "img", None).unwrap();
        for (seq, payload) in [
            (0u64, serde_json::to_vec(&workload(0)).unwrap()),
            (2, b"{\"type\":\"nonsense\"}".to_vec()),
            (3, serde_json::to_vec(&end()).unwrap()),
        ] {
            bytes.extend(encode_record(8, seq, &payload).unwrap());
        }
        let run = read_results_bytes(&bytes).unwrap();
        assert_eq!(run.records.len(), 2);
        assert!(run.complete);
        assert!(
            run.problems.iter().any(|p| p.contains("missing")),
            "{:?}",
            run.problems
        );
        assert!(
            run.problems.iter().any(|p| p.contains("does not decode")),
            "{:?}",
            run.problems
        );
    }

    #[test]
    fn disk_capacity_bounds_the_read() {
        let (bytes, records, _) = stream(9, 1);
        let mut disk = bytes.clone();
        disk.resize(64 * 1024, 0);
        disk[..HEADER_SIZE].copy_from_slice(&format_header(64 * 1024, "img", None).unwrap());
        let run = read_results_bytes(&disk).unwrap();
        assert_eq!(run.records, records);
        let short = read_results_bytes(&disk[..HEADER_SIZE + 512]).unwrap();
        assert!(!short.complete);
        assert!(
            short.problems[0].contains("header says"),
            "{:?}",
            short.problems
        );
        assert!(read_results_bytes(&[0u8; 8192]).is_err());
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = Rng(12345);
        let header = format_header(0, "x", None).unwrap();
        for _ in 0..300 {
            let len = (rng.next() % 6000) as usize;
            let mut bytes = header.clone();
            for _ in 0..len {
                bytes.push(rng.next() as u8);
            }
            // Sprinkle record magics on sector boundaries to exercise resynchronisation.
            let mut at = HEADER_SIZE;
            while at + 32 <= bytes.len() {
                if rng.next() % 2 == 0 {
                    bytes[at..at + 8].copy_from_slice(&RECORD_MAGIC);
                    let l = (rng.next() % 2048) as u32;
                    bytes[at + 8..at + 12].copy_from_slice(&l.to_le_bytes());
                }
                at += 512;
            }
            let run = read_results_bytes(&bytes).unwrap();
            // A forged frame would need a matching crc32c: nothing random gets through.
            assert!(run.records.is_empty() && !run.complete);
        }
    }
}
