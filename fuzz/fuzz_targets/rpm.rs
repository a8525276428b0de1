//! The RPM reader: lead, signature and main headers, the file list, the payload (any
//! compressor, newc or stripped cpio) and its installation over the builtin root.
#![no_main]

use imgbuild::sources::rpm;
use imgbuild_fuzz::{builtin_tree, read_all, MemInput, FUZZ_MAX_EXPANDED};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = MemInput::new(data);
    if rpm::read_package(input.path()).is_err() {
        return;
    }
    let mut tree = builtin_tree();
    let packages = [input.path().to_path_buf()];
    if rpm::apply_with_limit(&mut tree, &packages, FUZZ_MAX_EXPANDED).is_ok() {
        read_all(&mut tree);
    }
});
