//! Writes the VMDK seeds of the fuzz corpus with the project's own writers: a 128 KiB disk with
//! a few bytes of data in its first grain as streamOptimized and monolithicFlat (whose
//! descriptor is kept; its extent is replaced by the target's `flat.img`), and the same disk
//! empty as monolithicSparse (an allocated grain would add 64 KiB to the seed). Run by
//! fuzz/make-seeds with the corpus directory as its argument.

use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use imgbuild::definition::{ScsiAdapter, VmdkFormat};
use imgbuild::vmdk::{write_vmdk, VmdkOptions};

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: make-vmdk-seeds DIR"));
    let empty = tempfile_in_memory();
    empty.set_len(128 << 10).expect("size the raw disk");
    let mut raw = tempfile_in_memory();
    raw.set_len(128 << 10).expect("size the raw disk");
    raw.write_all_at(b"vmdk seed, grain 0", 1000)
        .expect("write");
    raw.flush().expect("flush");
    let opts = VmdkOptions::new(b"fuzz seed", ScsiAdapter::Lsilogic);
    let work = dir.join(".work");
    std::fs::create_dir_all(&work).expect("create the work directory");
    for (format, name) in [
        (VmdkFormat::MonolithicSparse, "seed-sparse.vmdk"),
        (VmdkFormat::StreamOptimized, "seed-stream.vmdk"),
        (VmdkFormat::MonolithicFlat, "seed-flat.vmdk"),
    ] {
        let dest = work.join(name);
        let src = if format == VmdkFormat::MonolithicSparse {
            &empty
        } else {
            &raw
        };
        write_vmdk(src, format, &dest, &opts).expect("write the VMDK");
        let mut bytes = std::fs::read(&dest).expect("read it back");
        if format == VmdkFormat::MonolithicFlat {
            // The fuzz target provides a 128-sector extent named flat.img.
            let text = String::from_utf8(bytes).expect("a descriptor is text");
            let text = text
                .lines()
                .map(|l| {
                    if l.contains(" FLAT ") {
                        "RW 128 FLAT \"flat.img\" 0"
                    } else {
                        l
                    }
                })
                .collect::<Vec<_>>()
                .join("\n");
            bytes = format!("{text}\n").into_bytes();
        }
        std::fs::write(dir.join(name), bytes).expect("write the seed");
    }
    std::fs::remove_dir_all(&work).expect("remove the work directory");
}

fn tempfile_in_memory() -> std::fs::File {
    imgbuild_fuzz::MemInput::new(&[])
        .file()
        .try_clone()
        .expect("clone the memfd")
}
