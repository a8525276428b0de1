//! Hostile results disks given to the real `imgbuild collect`, under an address-space limit
//! (RLIMIT_AS of 1 GiB) so that any length the reader trusted before allocating shows up as a
//! failed allocation: absurd payload lengths, capacities and name lengths, a growing results
//! file of terabytes, records filling the payload budget, and records built to decode into as
//! much memory as possible. A damaged run is still printed (exit 0, `complete: false`); a disk
//! without a valid header is bad input (exit 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use imgbuild_init::results::format::{encode_record, format_header, HEADER_SIZE, MAX_PAYLOAD};
use imgbuild_init::results::schema::{Record, RunEnd, RunStatus, Status, StatusCounts};

const BIN: &str = env!("CARGO_BIN_EXE_imgbuild");
/// Address space allowed to `collect`.
const AS_LIMIT: u64 = 1 << 30;

/// Runs `imgbuild collect disk` with RLIMIT_AS set; returns the output and the wall time.
fn collect(disk: &Path) -> (Output, Duration) {
    let mut cmd = Command::new("prlimit");
    cmd.arg(format!("--as={AS_LIMIT}"))
        .arg(BIN)
        .arg("collect")
        .arg(disk);
    let t = Instant::now();
    let out = cmd.output().expect("prlimit (util-linux) runs");
    (out, t.elapsed())
}

fn check_no_panic(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        !stderr.contains("memory allocation"),
        "an allocation beyond {AS_LIMIT} bytes: {stderr}"
    );
    assert_ne!(out.status.code(), Some(101), "{stderr}");
    assert!(out.status.code().is_some(), "killed by a signal: {stderr}");
    stderr
}

/// The JSON `collect` printed.
fn printed(out: &Output) -> serde_json::Value {
    let stderr = check_no_panic(out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn end() -> Record {
    Record::RunEnd(RunEnd {
        status: RunStatus::Complete,
        reason: None,
        end_s: 1.0,
        counts: StatusCounts::default(),
    })
}

fn workload(name: String, parameters: serde_json::Value) -> Record {
    Record::Workload(Box::new(imgbuild_init::results::schema::WorkloadResult {
        name,
        workload: "w".into(),
        parameters,
        repetitions: 1,
        timeout_s: 1.0,
        status: Status::Ok,
        reason: None,
        start_s: 0.0,
        end_s: 0.0,
        duration_s: 0.0,
        tool: None,
        info: Default::default(),
        metrics: vec![],
    }))
}

fn record(seq: u64, r: &Record) -> Vec<u8> {
    encode_record(7, seq, &serde_json::to_vec(r).unwrap()).unwrap()
}

/// Rewrites the header checksum after a field was patched.
fn fix_header(disk: &mut [u8]) {
    let crc = crc32c::crc32c(&disk[..HEADER_SIZE - 4]);
    disk[HEADER_SIZE - 4..HEADER_SIZE].copy_from_slice(&crc.to_le_bytes());
}

fn problems(v: &serde_json::Value) -> String {
    v["problems"].to_string()
}

#[test]
fn absurd_payload_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = format_header(1 << 20, "img", None).unwrap();
    let mut r = record(0, &end());
    r[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    disk.extend(r);
    disk.resize(1 << 20, 0);
    let p = dir.path().join("len.img");
    std::fs::write(&p, &disk).unwrap();
    let v = printed(&collect(&p).0);
    assert_eq!(v["complete"], false);
    assert!(
        problems(&v).contains("payload length 4294967295 exceeds the limit"),
        "{v}"
    );
}

#[test]
fn absurd_capacity_and_name_length() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = format_header(1 << 20, "img", None).unwrap();
    disk[24..32].copy_from_slice(&(u64::MAX - 511).to_le_bytes());
    fix_header(&mut disk);
    disk.extend(record(0, &end()));
    disk.resize(1 << 20, 0);
    let p = dir.path().join("capacity.img");
    std::fs::write(&p, &disk).unwrap();
    let v = printed(&collect(&p).0);
    assert_eq!(v["complete"], true);
    assert!(problems(&v).contains("read as truncated"), "{v}");

    let mut disk = format_header(1 << 20, "img", None).unwrap();
    disk[80..82].copy_from_slice(&u16::MAX.to_le_bytes());
    fix_header(&mut disk);
    disk.resize(1 << 20, 0);
    let p = dir.path().join("name.img");
    std::fs::write(&p, &disk).unwrap();
    let (out, _) = collect(&p);
    let stderr = check_no_panic(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("name.img") && stderr.contains("image name length 65535"),
        "{stderr}"
    );
}

#[test]
fn growing_file_of_terabytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = format_header(0, "img", None).unwrap();
    disk.extend(record(0, &end()));
    let p = dir.path().join("results.bin");
    std::fs::write(&p, &disk).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    if f.set_len(4 << 40).is_err() {
        eprintln!("skipped: no 4 TiB sparse files on this filesystem");
        return;
    }
    let (out, took) = collect(&p);
    let v = printed(&out);
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(v["complete"], true);
    assert!(problems(&v).contains("only the first"), "{v}");
}

#[test]
fn records_beyond_the_payload_budget() {
    // 80 records of almost 1 MiB each, all valid: the reader stops at its 16 MiB budget.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("big.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    use std::io::Write;
    f.write_all(&format_header(0, "img", None).unwrap())
        .unwrap();
    let name = "n".repeat(MAX_PAYLOAD as usize - 400);
    for seq in 0..80 {
        f.write_all(&record(
            seq,
            &workload(name.clone(), serde_json::Value::Null),
        ))
        .unwrap();
    }
    drop(f);
    let v = printed(&collect(&p).0);
    assert_eq!(v["complete"], false);
    assert!(problems(&v).contains("bytes of records; stopped"), "{v}");
    let kept = v["records"].as_array().unwrap().len();
    assert!((10..20).contains(&kept), "{kept} records kept");
}

#[test]
fn records_that_decode_into_much_memory() {
    // `parameters` is free-form JSON: `[]` is 3 bytes of text and tens of bytes decoded. Fill
    // the payload budget with such records; the collector must stay within its address space.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("amplify.bin");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
    use std::io::Write;
    f.write_all(&format_header(0, "img", None).unwrap())
        .unwrap();
    let n = (MAX_PAYLOAD as usize - 400) / 3;
    let params = serde_json::Value::Array(vec![serde_json::Value::Array(vec![]); n]);
    let one = workload("a".into(), params);
    for seq in 0..80 {
        f.write_all(&record(seq, &one)).unwrap();
    }
    f.write_all(&record(80, &end())).unwrap();
    drop(f);
    let (out, took) = collect(&p);
    let stderr = check_no_panic(&out);
    eprintln!("collect took {took:?}, exit {:?}", out.status.code());
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn output_into_a_closed_pipe_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut disk = format_header(0, "img", None).unwrap();
    let name = "n".repeat(200_000);
    for seq in 0..4 {
        disk.extend(record(
            seq,
            &workload(name.clone(), serde_json::Value::Null),
        ));
    }
    let p = dir.path().join("results.bin");
    std::fs::write(&p, &disk).unwrap();
    // `collect | head -c 100`: head exits early, the rest of the output meets a closed pipe.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{BIN}' collect '{}' | head -c 100 >/dev/null",
            p.display()
        ))
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}
