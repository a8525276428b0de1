//! The MBR reader. The first 8 bytes of the input give the disk size (so partitions can be
//! checked against disks far larger than the input); the rest is the disk, zeros beyond it.
#![no_main]

use imgbuild::disk::mbr;
use imgbuild_fuzz::Padded;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((size, disk)) = data.split_first_chunk::<8>() else {
        return;
    };
    let disk = Padded::new(disk, u64::from_le_bytes(*size));
    if let Ok(m) = mbr::read_mbr(&disk) {
        for p in &m.partitions {
            let _ = (p.start_bytes(), p.len_bytes());
        }
    }
    let _ = mbr::read_partitions(&disk);
});
