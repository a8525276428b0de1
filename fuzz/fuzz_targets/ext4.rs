//! The ext2/3/4 reader used by `verify`: superblock, group descriptors, inodes, extent trees
//! and block maps, directories, xattrs, the listing and the rootfs digest, with small limits.
//! The input is the image with its zero tail trimmed: it is padded to at least 4 MiB.
#![no_main]

use imgbuild::ext4::reader::{Ext4Image, Limits};
use imgbuild_fuzz::Padded;
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits {
    max_file_size: 1 << 20,
    max_dir_entries: 1000,
    max_depth: 64,
    max_runs: 1000,
    max_entries: 10_000,
};

fuzz_target!(|data: &[u8]| {
    let size = (data.len() as u64).max(4 << 20);
    let Ok(image) = Ext4Image::open_with_limits(Padded::new(data, size), LIMITS) else {
        return;
    };
    let _ = (image.uuid(), image.label(), image.fs_type());
    let _ = image.list();
    let _ = image.digest();
    let _ = image.read_file(b"/etc/hostname");
    for ino in [2, 11, 12, 13, 14] {
        let mut total = 0usize;
        let _ = image.read_inode_content(ino, &mut |chunk| {
            total += chunk.len();
            Ok(())
        });
    }
});
