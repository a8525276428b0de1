//! The VMDK reader used by `verify`: sparse headers, grain directories and tables, compressed
//! grains of streamOptimized files, and text descriptors. The input is written to `disk.vmdk`
//! in a private directory on tmpfs next to `flat.img`, a 64 KiB extent a descriptor may name.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use imgbuild::image_io::ReadAt;
use imgbuild::vmdk::VmdkReader;
use libfuzzer_sys::fuzz_target;

fn workdir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("imgbuild-fuzz-vmdk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz directory");
        let flat: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(dir.join("flat.img"), flat).expect("write flat.img");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let path = workdir().join("disk.vmdk");
    std::fs::write(&path, data).expect("write the input");
    let Ok(reader) = VmdkReader::open(&path) else {
        return;
    };
    let _ = (
        reader.capacity(),
        reader.create_type(),
        reader.sparse_header().is_some(),
    );
    let mut buf = vec![0u8; 64 << 10];
    if let Ok(ranges) = reader.allocated_ranges() {
        for (start, end) in ranges.into_iter().take(16) {
            let n = (end - start).min(buf.len() as u64) as usize;
            let _ = reader.read_exact_at(&mut buf[..n], start);
        }
    }
    let _ = reader.read_at(&mut buf, 0);
    let _ = reader.read_at(&mut buf, reader.capacity().saturating_sub(4096));
});
