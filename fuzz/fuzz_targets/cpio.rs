//! The cpio reader (newc, crc; stripped entries are refused outside a package), as a layer:
//! hard-link groups, symlink targets, placement, then a read of every file.
#![no_main]

use imgbuild::sources::cpio;
use imgbuild_fuzz::{empty_tree, limit_expansion, read_all, MemInput};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    limit_expansion();
    let input = MemInput::new(data);
    let mut tree = empty_tree();
    if cpio::apply(&mut tree, input.path(), None).is_ok() {
        read_all(&mut tree);
    }
});
