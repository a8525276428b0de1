//! The VMDK reader on broken and hostile files: truncated, pointers past the end, huge
//! capacities, bad compressed grains, extents escaping their directory, random corruption.
//! Every case must give an error (or correct data), never a panic or a huge allocation.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::definition::{ScsiAdapter, VmdkFormat};
use imgbuild::image_io::ReadAt;
use imgbuild::vmdk::{write_vmdk, VmdkError, VmdkOptions, VmdkReader};

const MIB: u64 = 1 << 20;

/// A 6 MiB raw disk with data in a few places, written as `format` into `dir`.
fn small_vmdk(dir: &Path, format: VmdkFormat) -> (PathBuf, Vec<u8>) {
    let mut raw = vec![0u8; (6 * MIB) as usize];
    for (i, b) in raw.iter_mut().enumerate() {
        let region = i < 200_000 || (3 * MIB as usize..3 * MIB as usize + 70_000).contains(&i);
        if region {
            *b = (i * 7 % 251) as u8 ^ (i >> 9) as u8;
        }
    }
    let raw_path = dir.join("src.raw");
    fs::write(&raw_path, &raw).unwrap();
    let dest = dir.join(format!("{format:?}.vmdk"));
    let opts = VmdkOptions::new(b"hostile", ScsiAdapter::Lsilogic);
    write_vmdk(&File::open(&raw_path).unwrap(), format, &dest, &opts).unwrap();
    (dest, raw)
}

/// Opens and reads up to 8 MiB; the result says whether everything worked and matched
/// `expect` (when given).
fn open_and_read(path: &Path, expect: Option<&[u8]>) -> Result<bool, VmdkError> {
    let r = VmdkReader::open(path)?;
    let n = r.capacity().min(8 * MIB) as usize;
    let mut buf = vec![0u8; n];
    let mut off = 0;
    while off < n {
        let got = r
            .read_at(&mut buf[off..], off as u64)
            .map_err(|e| VmdkError::Corrupt {
                path: path.into(),
                offset: off as u64,
                reason: e.to_string(),
            })?;
        if got == 0 {
            break;
        }
        off += got;
    }
    // Far reads must be bounded too.
    let mut b = [0u8; 16];
    for at in [
        r.capacity().saturating_sub(8),
        r.capacity() / 2,
        u64::MAX - 4,
    ] {
        if r.read_at(&mut b, at).is_err() {
            return Ok(false);
        }
    }
    Ok(expect.map_or(true, |e| e.len() >= off && buf[..off] == e[..off]))
}

fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, at).unwrap();
}

#[test]
fn truncated_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    for format in [VmdkFormat::MonolithicSparse, VmdkFormat::StreamOptimized] {
        let (path, raw) = small_vmdk(dir.path(), format);
        let full = fs::read(&path).unwrap();
        assert!(open_and_read(&path, Some(&raw)).unwrap());
        for cut in [
            0,
            3,
            511,
            512,
            600,
            21 * 512,
            64 * 1024,
            full.len() - 1000,
            full.len() - 1,
        ] {
            let t = dir.path().join("cut.vmdk");
            fs::write(&t, &full[..cut]).unwrap();
            let r = open_and_read(&t, Some(&raw));
            assert!(
                !matches!(r, Ok(true)),
                "{format:?} cut at {cut} read as if whole"
            );
        }
    }
}

#[test]
fn pointers_past_the_end_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_vmdk(dir.path(), VmdkFormat::MonolithicSparse);
    let orig = fs::read(&path).unwrap();

    // Grain directory past EOF.
    patch(&path, 56, &(1u64 << 40).to_le_bytes());
    assert!(matches!(
        VmdkReader::open(&path),
        Err(VmdkError::Corrupt { offset: 56, .. })
    ));

    // A grain table past EOF.
    let gd = u64::from_le_bytes(orig[56..64].try_into().unwrap());
    let gt = u64::from(u32::from_le_bytes(
        orig[(gd * 512) as usize..(gd * 512 + 4) as usize]
            .try_into()
            .unwrap(),
    ));
    fs::write(&path, &orig).unwrap();
    patch(&path, gd * 512, &0x00FF_FFFFu32.to_le_bytes());
    let r = VmdkReader::open(&path).unwrap();
    let mut b = [0u8; 512];
    let e = r.read_at(&mut b, 0).unwrap_err();
    assert!(e.to_string().contains("past the end"), "{e}");

    // A grain past EOF: first entry of the primary table.
    fs::write(&path, &orig).unwrap();
    patch(&path, gt * 512, &0x00FF_FFF0u32.to_le_bytes());
    let r = VmdkReader::open(&path).unwrap();
    assert!(r.read_at(&mut b, 0).is_err());
}

#[test]
fn huge_claims_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_vmdk(dir.path(), VmdkFormat::MonolithicSparse);
    let orig = fs::read(&path).unwrap();
    for (at, value) in [
        (12u64, u64::MAX),  // capacity
        (12, 1u64 << 40),   // 512 TiB
        (12, 1u64 << 36),   // 32 TiB: allowed, but its directory is not in the file
        (20, 1u64 << 20),   // grain of 512 MiB
        (20, 100),          // grain not a power of two
        (44, 1u64 << 31),   // entries per table (u32 field, low half)
        (28, u64::MAX / 2), // descriptor offset
        (36, 1u64 << 30),   // descriptor size
    ] {
        fs::write(&path, &orig).unwrap();
        if at == 44 {
            patch(&path, at, &(value as u32).to_le_bytes());
        } else {
            patch(&path, at, &value.to_le_bytes());
        }
        assert!(VmdkReader::open(&path).is_err(), "field at {at} = {value}");
    }

    // A stream footer claiming a huge disk.
    let (spath, _) = small_vmdk(dir.path(), VmdkFormat::StreamOptimized);
    let len = fs::metadata(&spath).unwrap().len();
    patch(&spath, len - 1024 + 12, &(1u64 << 50).to_le_bytes());
    assert!(VmdkReader::open(&spath).is_err());
}

#[test]
fn bad_compressed_grains_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = small_vmdk(dir.path(), VmdkFormat::StreamOptimized);
    let orig = fs::read(&path).unwrap();
    // The first grain marker is at sector 128: LBA, then the compressed length.
    let mut b = [0u8; 4096];
    for (at, bytes) in [
        (128 * 512 + 8, &u32::MAX.to_le_bytes()[..]), // length far too big
        (128 * 512 + 8, &0u32.to_le_bytes()[..]),     // zero length
        (128 * 512 + 8, &3u32.to_le_bytes()[..]),     // cut short
        (128 * 512, &7u64.to_le_bytes()[..]),         // wrong LBA
        (128 * 512 + 12, &[0x78, 0x01, 0xff, 0xff][..]), // not a deflate stream
        (128 * 512 + 200, &[0x55; 16][..]),           // damaged data (checksum)
    ] {
        fs::write(&path, &orig).unwrap();
        patch(&path, at, bytes);
        let r = VmdkReader::open(&path).unwrap();
        assert!(r.read_at(&mut b, 0).is_err(), "patch at {at}");
    }
}

#[test]
fn extents_must_stay_beside_the_descriptor() {
    let dir = tempfile::tempdir().unwrap();
    let (path, raw) = small_vmdk(dir.path(), VmdkFormat::MonolithicFlat);
    assert!(open_and_read(&path, Some(&raw)).unwrap());
    let text = fs::read_to_string(&path).unwrap();
    let flat = dir.path().join("MonolithicFlat-flat.vmdk");
    for (from, to) in [
        (
            "\"MonolithicFlat-flat.vmdk\"",
            format!("\"{}\"", flat.display()),
        ),
        (
            "\"MonolithicFlat-flat.vmdk\"",
            "\"../MonolithicFlat-flat.vmdk\"".into(),
        ),
        ("\"MonolithicFlat-flat.vmdk\"", "\"\"".into()),
        ("RW 12288 FLAT", "RW 12289 FLAT".into()), // more than the extent holds
        ("RW 12288 FLAT", "RW 12288 VMFSSPARSE".into()),
        (
            "FLAT \"MonolithicFlat-flat.vmdk\" 0",
            "FLAT \"MonolithicFlat-flat.vmdk\" 1".into(),
        ),
        ("RW 12288", "RW 99999999999999999999".into()),
    ] {
        assert!(text.contains(from), "{from}");
        let bad = dir.path().join("bad.vmdk");
        fs::write(&bad, text.replace(from, &to)).unwrap();
        assert!(VmdkReader::open(&bad).is_err(), "{to}");
    }
    // An extent that is a FIFO (opening it would block) or a directory.
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    fs::create_dir(dir.path().join("sub")).unwrap();
    for name in ["fifo", "sub"] {
        let bad = dir.path().join("bad.vmdk");
        fs::write(&bad, text.replace("MonolithicFlat-flat.vmdk", name)).unwrap();
        assert!(VmdkReader::open(&bad).is_err(), "{name}");
    }
    assert!(VmdkReader::open(&fifo).is_err());
    // Garbage that is neither KDMV nor a descriptor.
    let bad = dir.path().join("garbage.vmdk");
    fs::write(&bad, [0xC3u8; 4096]).unwrap();
    assert!(VmdkReader::open(&bad).is_err());
    fs::write(&bad, vec![b'x'; 2 << 20]).unwrap();
    assert!(VmdkReader::open(&bad).is_err());
}

#[test]
fn random_corruption_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for format in [VmdkFormat::MonolithicSparse, VmdkFormat::StreamOptimized] {
        let (path, raw) = small_vmdk(dir.path(), format);
        let orig = fs::read(&path).unwrap();
        let t = dir.path().join("fuzz.vmdk");
        let mut errors = 0;
        for round in 0..300 {
            let mut data = orig.clone();
            let flips = 1 + next() % 8;
            for _ in 0..flips {
                // Mostly metadata: the head (header, descriptor, tables) and the tail (footer).
                let at = match next() % 3 {
                    0 => next() % (64 * 512),
                    1 => data.len() as u64 - 1 - next() % 2048,
                    _ => next() % data.len() as u64,
                } as usize;
                data[at] = next() as u8;
            }
            if round % 10 == 0 {
                data.truncate(next() as usize % data.len());
            }
            fs::write(&t, &data).unwrap();
            if !matches!(open_and_read(&t, Some(&raw)), Ok(true)) {
                errors += 1;
            }
        }
        assert!(errors > 0, "{format:?}: no corruption was ever noticed");
    }
}
