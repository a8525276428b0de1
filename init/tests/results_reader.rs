//! The results reader against damaged input: truncation at every offset, bit flips, absurd
//! lengths, garbage, stale runs, forged frames. Whatever the damage, the reader must not panic,
//! must keep every record the damage did not touch, and must say what it skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use imgbuild_init::results::format::{
    encode_record, format_header, FRAME_HEADER_SIZE, HEADER_SIZE, MAX_PAYLOAD, RECORD_MAGIC,
};
use imgbuild_init::results::schema::{
    Metric, Record, RunEnd, RunStatus, Status, StatusCounts, WorkloadResult,
};
use imgbuild_init::results::{read_results, read_results_bytes, ResultsError};

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
            .map(|m| Metric {
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
        assert!(run.problems[0].contains("payload length") || run.problems[0].contains("cut off"));
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
