//! Bad tarballs given to the real CLI as `--layer tar=…`: truncated and bit-flipped archives,
//! entries that leave the root (`..`, absolute paths, a file through a symlink), names over 255
//! bytes, a member claiming a huge size, and decompression bombs. Archives are made with GNU
//! tar; only the fields a tool will not write (huge sizes) are patched afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input_common;

use std::path::{Path, PathBuf};

use bad_input_common::*;

/// A small GNU tar of a few files (etc/, usr/bin/), 512-byte records.
fn good_tar(s: &Scratch, name: &str, compress: &str) -> PathBuf {
    let src = s.dir.path().join("src");
    if !src.exists() {
        sh(&format!(
            "mkdir -p {d}/etc {d}/usr/bin && printf 'hello\\n' > {d}/etc/motd && \
             head -c 20000 /dev/urandom > {d}/usr/bin/blob && ln -s blob {d}/usr/bin/link",
            d = q(&src)
        ));
    }
    let path = s.input(name);
    sh(&format!(
        "tar --format=gnu -b1 -C {} -cf - etc usr {compress} > {}",
        q(&src),
        q(&path)
    ));
    path
}

/// Sets the size field of the header at `at` to `size` (base-256, as GNU tar writes sizes past
/// 8 GiB) and fixes the header checksum.
fn patch_size(path: &Path, at: usize, size: u64) {
    let mut b = std::fs::read(path).unwrap();
    let h = &mut b[at..at + 512];
    h[124] = 0x80;
    h[125..128].fill(0);
    h[128..136].copy_from_slice(&size.to_be_bytes());
    h[148..156].fill(b' ');
    let sum: u32 = h.iter().map(|&x| u32::from(x)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    std::fs::write(path, b).unwrap();
}

fn name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn truncated_tarballs() {
    let s = Scratch::new();
    for (i, compress) in ["", "| gzip -n", "| xz"].into_iter().enumerate() {
        let path = good_tar(&s, &format!("cut{i}.tar"), compress);
        let len = std::fs::metadata(&path).unwrap().len();
        // Inside a header, inside the blob's data, and just before the end-of-archive marker.
        for cut in [700, len / 2, len - 1024] {
            let p = s.input(&format!("cut{i}-{cut}.tar"));
            std::fs::copy(&path, &p).unwrap();
            truncate(&p, cut);
            let needle = if compress.is_empty() {
                "truncated"
            } else {
                "damaged or truncated"
            };
            bad_build(
                &s,
                &layer("tar", &p),
                &[],
                Expect {
                    code: INPUT,
                    needles: &[&name_of(&p), needle],
                },
            );
        }
    }
}

#[test]
fn bit_flipped_tarballs() {
    let s = Scratch::new();
    let plain = good_tar(&s, "flip.tar", "");
    // A bit of a header's name, mode, size and checksum fields: the checksum catches each.
    for at in [3, 101, 130, 150] {
        let p = s.input(&format!("flip-{at}.tar"));
        std::fs::copy(&plain, &p).unwrap();
        flip(&p, at, 2);
        bad_build(
            &s,
            &layer("tar", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[&name_of(&p), "header at byte 0", "checksum"],
            },
        );
    }
    // In compressed data the decoder's own checks catch it.
    let gz = good_tar(&s, "flip.tar.gz", "| gzip -n");
    let len = std::fs::metadata(&gz).unwrap().len() as usize;
    for at in [len / 2, len - 6] {
        let p = s.input(&format!("flip-{at}.tar.gz"));
        std::fs::copy(&gz, &p).unwrap();
        flip(&p, at, 5);
        bad_build(
            &s,
            &layer("tar", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[&name_of(&p), "gzip data is damaged"],
            },
        );
    }
}

/// An archive whose one member `f` is stored under `name` (GNU tar's --transform, -P keeps
/// what the transform made).
fn tar_renamed(s: &Scratch, file: &str, name: &str, extra: &str) -> PathBuf {
    let src = s.dir.path().join("one");
    sh(&format!(
        "mkdir -p {d} && printf 'evil\\n' > {d}/f",
        d = q(&src)
    ));
    let path = s.input(file);
    sh(&format!(
        "tar {extra} -b1 -P -C {} --transform='s,^f$,{name},' -cf {} f",
        q(&src),
        q(&path)
    ));
    path
}

#[test]
fn entry_with_dotdot() {
    let s = Scratch::new();
    let p = tar_renamed(&s, "dotdot.tar", "../../etc/evil", "--format=gnu");
    bad_build(
        &s,
        &layer("tar", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["dotdot.tar", "../../etc/evil", ".."],
        },
    );
}

#[test]
fn entry_with_absolute_path() {
    let s = Scratch::new();
    let p = tar_renamed(&s, "absolute.tar", "/etc/evil", "--format=gnu");
    bad_build(
        &s,
        &layer("tar", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &[
                "absolute.tar",
                "/etc/evil",
                "absolute paths are not allowed",
            ],
        },
    );
}

#[test]
fn file_through_an_earlier_symlink() {
    let s = Scratch::new();
    let src = s.dir.path().join("link");
    sh(&format!(
        "mkdir -p {d} && ln -s /etc {d}/l && printf 'evil\\n' > {d}/f",
        d = q(&src)
    ));
    let p = s.input("through.tar");
    sh(&format!(
        "tar --format=gnu -b1 -C {d} -cf {t} l && \
         tar --format=gnu -b1 -C {d} --transform='s,^f$,l/passwd,' -rf {t} f",
        d = q(&src),
        t = q(&p)
    ));
    let e = bad_build(
        &s,
        &layer("tar", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["through.tar", "l/passwd"],
        },
    );
    assert!(e.contains("symlink") || e.contains("symbolic link"), "{e}");
}

#[test]
fn name_over_255_bytes() {
    let s = Scratch::new();
    let long = "x".repeat(300);
    for (file, format) in [
        ("long-gnu.tar", "--format=gnu"),
        ("long-pax.tar", "--format=pax"),
    ] {
        let p = tar_renamed(&s, file, &format!("etc/{long}"), format);
        bad_build(
            &s,
            &layer("tar", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[file, "255"],
            },
        );
    }
}

#[test]
fn member_claiming_a_huge_size() {
    let s = Scratch::new();
    for (i, size) in [(0, 10u64 << 40), (1, u64::MAX >> 1)] {
        let p = good_tar(&s, &format!("huge{i}.tar"), "");
        patch_size(&p, 0, size);
        bad_build(
            &s,
            &layer("tar", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[
                    &name_of(&p),
                    "header at byte 0",
                    &format!("claims {size} bytes"),
                ],
            },
        );
    }
}

#[test]
fn gzip_bomb_is_bounded() {
    let s = Scratch::new();
    // 256 MiB of zeros in ~250 KiB; the bound is 16 MiB.
    let p = s.input("bomb.tar.gz");
    sh(&format!("head -c 256M /dev/zero | gzip -n > {}", q(&p)));
    let e = bad_build(
        &s,
        &layer("tar", &p),
        &[("IMGBUILD_MAX_EXPANDED", "16M")],
        Expect {
            code: INPUT,
            needles: &[
                "bomb.tar.gz",
                "expands to more than 16777216 bytes",
                "IMGBUILD_MAX_EXPANDED",
            ],
        },
    );
    assert!(e.contains("bomb"), "{e}");
}

#[test]
fn sparse_member_claiming_terabytes() {
    let s = Scratch::new();
    // A 4 TiB sparse file with 4 bytes of data: GNU tar stores its map, gzip makes it tiny.
    let src = s.dir.path().join("sparse");
    let p = s.input("terabytes.tar.gz");
    sh(&format!(
        "mkdir -p {d} && printf 'data' > {d}/big && truncate -s 4T {d}/big && \
         tar --format=gnu -S -b1 -C {d} -cf - big | gzip -n > {t}",
        d = q(&src),
        t = q(&p)
    ));
    assert!(std::fs::metadata(&p).unwrap().len() < 4096);
    bad_build(
        &s,
        &layer("tar", &p),
        &[("IMGBUILD_MAX_EXPANDED", "1G")],
        Expect {
            code: INPUT,
            needles: &[
                "terabytes.tar.gz",
                "sparse file of 4398046511104 bytes",
                "IMGBUILD_MAX_EXPANDED",
            ],
        },
    );
}

#[test]
fn not_an_archive_and_missing_archive() {
    let s = Scratch::new();
    let p = s.input("text.tar");
    std::fs::write(&p, "this is not a tar archive, just some text\n".repeat(40)).unwrap();
    bad_build(
        &s,
        &layer("tar", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["text.tar", "header at byte 0"],
        },
    );
    let missing = s.input("missing.tar");
    bad_build(
        &s,
        &layer("tar", &missing),
        &[],
        Expect {
            code: INPUT,
            needles: &["missing.tar", "does not exist"],
        },
    );
}
