//! The .deb reader: the ar container (GNU and BSD names), control.tar and its control file,
//! data.tar through the tar reader, installed over the builtin root.
#![no_main]

use imgbuild::sources::deb;
use imgbuild_fuzz::{builtin_tree, limit_expansion, read_all, MemInput, FUZZ_MAX_EXPANDED};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    limit_expansion();
    let input = MemInput::new(data);
    let _ = deb::read_control(input.path());
    let mut tree = builtin_tree();
    let packages = [input.path().to_path_buf()];
    if deb::apply_with_limit(&mut tree, &packages, FUZZ_MAX_EXPANDED).is_ok() {
        read_all(&mut tree);
    }
});
