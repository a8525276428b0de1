//! The bzImage payload reader behind `run`'s PVH boot: setup header, payload place, the length
//! trailer, each compression (LZ4 legacy frames by our own loop), and the ELF note check. A
//! kernel file is input like any other: an error names the problem, never a panic or a runaway
//! allocation.
#![no_main]

use imgbuild::kernel::pvh;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = pvh::vmlinux(data);
});
