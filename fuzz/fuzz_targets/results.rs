//! The results-disk reader, on bytes a guest wrote. The first input byte is a mode: bit 0
//! recomputes the header checksum and bit 1 the checksum of every record frame found on a
//! sector boundary, so that mutations get past the CRCs into the parsing behind them.
#![no_main]

use imgbuild_init::results::format::{
    frame_crc, parse_frame_header, FRAME_HEADER_SIZE, HEADER_SIZE, MAX_PAYLOAD, SECTOR,
};
use imgbuild_init::results::read_results_bytes;
use libfuzzer_sys::fuzz_target;

fn fix_header(disk: &mut [u8]) {
    if disk.len() >= HEADER_SIZE {
        let crc = crc32c::crc32c(&disk[..HEADER_SIZE - 4]);
        disk[HEADER_SIZE - 4..HEADER_SIZE].copy_from_slice(&crc.to_le_bytes());
    }
}

fn fix_records(disk: &mut [u8]) {
    let mut pos = HEADER_SIZE;
    while pos + FRAME_HEADER_SIZE <= disk.len() {
        if let Some(fh) = parse_frame_header(&disk[pos..pos + FRAME_HEADER_SIZE]) {
            let end = pos + FRAME_HEADER_SIZE + fh.payload_len.min(MAX_PAYLOAD) as usize;
            if end <= disk.len() {
                let crc = frame_crc(&fh, &disk[pos + FRAME_HEADER_SIZE..end]);
                disk[pos + 12..pos + 16].copy_from_slice(&crc.to_le_bytes());
            }
        }
        pos += SECTOR as usize;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut disk = rest.to_vec();
    if mode & 1 != 0 {
        fix_header(&mut disk);
    }
    if mode & 2 != 0 {
        fix_records(&mut disk);
    }
    if let Ok(run) = read_results_bytes(&disk) {
        let _ = (run.run_start(), run.run_end(), run.workloads().count());
    }
});
