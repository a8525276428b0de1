//! The tar layer: decompression, headers, GNU long names, pax records, sparse maps and the
//! placement of every member in the tree, then a read of every file's bytes.
#![no_main]

use imgbuild::sources::tar;
use imgbuild_fuzz::{empty_tree, read_all, MemInput, FUZZ_MAX_EXPANDED};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = MemInput::new(data);
    let mut tree = empty_tree();
    if tar::apply_with_limit(&mut tree, input.path(), None, FUZZ_MAX_EXPANDED).is_ok() {
        read_all(&mut tree);
    }
});
