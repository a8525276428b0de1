//! Bad RPMs and .debs given to the real CLI as `--layer rpm=…` and `--layer deb=…`: truncated
//! and bit-flipped packages, an RPM header claiming ten million index entries, a payload cpio
//! entry claiming a huge size, an ar member claiming more bytes than the file has, and a .deb
//! whose data archive leaves the root. RPMs start from the shared fixtures (read in place),
//! .debs are built with dpkg-deb and ar.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input_common;

use std::path::{Path, PathBuf};

use bad_input_common::*;

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/rpm"
    ))
    .join(name);
    assert!(p.is_file(), "missing RPM fixture {}", p.display());
    p
}

/// A copy of fixture `name` in the case's inputs, as `as_name`.
fn copy_fixture(s: &Scratch, name: &str, as_name: &str) -> PathBuf {
    let p = s.input(as_name);
    std::fs::copy(fixture(name), &p).unwrap();
    p
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// Offsets of the main header and of the payload of an RPM.
fn rpm_offsets(b: &[u8]) -> (usize, usize) {
    let sig = 96;
    let sig_end = sig + 16 + 16 * be32(b, sig + 8) + be32(b, sig + 12);
    let main = sig_end.next_multiple_of(8);
    let payload = main + 16 + 16 * be32(b, main + 8) + be32(b, main + 12);
    (main, payload)
}

const GZIP_RPM: &str = "gzip-rpm-basic-2.3.4-5.el9.noarch.rpm";

#[test]
fn truncated_rpms() {
    let s = Scratch::new();
    let bytes = std::fs::read(fixture(GZIP_RPM)).unwrap();
    let (main, payload) = rpm_offsets(&bytes);
    let cases: [(u64, &str); 4] = [
        (50, "shorter than 96 bytes"),
        ((main + 40) as u64, "file ends"),
        ((payload + 2) as u64, "payload"),
        ((bytes.len() - 100) as u64, "damaged or truncated"),
    ];
    for (cut, needle) in cases {
        let p = copy_fixture(&s, GZIP_RPM, &format!("cut-{cut}.rpm"));
        truncate(&p, cut);
        bad_build(
            &s,
            &layer("rpm", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[&format!("cut-{cut}.rpm"), needle],
            },
        );
    }
}

#[test]
fn bit_flipped_rpms() {
    let s = Scratch::new();
    let bytes = std::fs::read(fixture(GZIP_RPM)).unwrap();
    let (main, payload) = rpm_offsets(&bytes);
    let cases: [(usize, &str); 4] = [
        (1, "bad lead magic"),
        (main + 1, "bad header magic"),
        (payload + 1, "payload"),
        (
            payload + (bytes.len() - payload) / 2,
            "gzip data is damaged",
        ),
    ];
    for (at, needle) in cases {
        let p = copy_fixture(&s, GZIP_RPM, &format!("flip-{at}.rpm"));
        flip(&p, at, 3);
        bad_build(
            &s,
            &layer("rpm", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[&format!("flip-{at}.rpm"), needle],
            },
        );
    }
}

#[test]
fn rpm_header_claiming_ten_million_entries() {
    let s = Scratch::new();
    let p = copy_fixture(&s, GZIP_RPM, "entries.rpm");
    let mut b = std::fs::read(&p).unwrap();
    let (main, _) = rpm_offsets(&b);
    b[main + 8..main + 12].copy_from_slice(&10_000_000u32.to_be_bytes());
    std::fs::write(&p, &b).unwrap();
    bad_build(
        &s,
        &layer("rpm", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &[
                "entries.rpm",
                &format!("at offset {main}"),
                "10000000 index entries is out of range",
            ],
        },
    );
    // The same claim in the signature header, and a data store of 2 GiB.
    let p = copy_fixture(&s, GZIP_RPM, "store.rpm");
    let mut b = std::fs::read(&p).unwrap();
    b[96 + 8..96 + 12].copy_from_slice(&10_000_000u32.to_be_bytes());
    std::fs::write(&p, &b).unwrap();
    bad_build(
        &s,
        &layer("rpm", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["store.rpm", "at offset 96", "index entries is out of range"],
        },
    );
    let p = copy_fixture(&s, GZIP_RPM, "store2.rpm");
    let mut b = std::fs::read(&p).unwrap();
    b[main + 12..main + 16].copy_from_slice(&(2u32 << 30).to_be_bytes());
    std::fs::write(&p, &b).unwrap();
    bad_build(
        &s,
        &layer("rpm", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["store2.rpm", "data store of 2147483648 bytes is too large"],
        },
    );
}

/// A package built with rpmbuild with an uncompressed payload: a bare newc cpio (rpm 4.x
/// writes newc; the shared fixtures come from rpm 6 and carry stripped payloads).
fn rpm_with_plain_payload(s: &Scratch) -> Option<PathBuf> {
    let top = s.dir.path().join("rpmbuild");
    let spec = top.join("t.spec");
    std::fs::create_dir_all(&top).unwrap();
    std::fs::write(
        &spec,
        "Name: t\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
         %description\nt\n%install\nmkdir -p %{buildroot}/etc\n\
         printf 'hello\\n' > %{buildroot}/etc/t.conf\n%files\n/etc/t.conf\n",
    )
    .unwrap();
    let out = std::process::Command::new("rpmbuild")
        .arg("-bb")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .args(["--define", "_binary_payload w.ufdio"])
        .arg(&spec)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("rpmbuild failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let built = top.join("RPMS/noarch/t-1-1.noarch.rpm");
    let p = s.input("plain-payload.rpm");
    std::fs::copy(built, &p).unwrap();
    Some(p)
}

#[test]
fn rpm_payload_entry_claiming_a_huge_size() {
    let s = Scratch::new();
    let Some(plain) = rpm_with_plain_payload(&s) else {
        eprintln!("skipped: rpmbuild is not available");
        return;
    };
    let mut b = std::fs::read(&plain).unwrap();
    let (_, payload) = rpm_offsets(&b);
    assert!(b[payload..].starts_with(b"070701"), "a newc payload");
    // The first entry's c_filesize.
    b[payload + 54..payload + 62].copy_from_slice(b"FFFFFFFF");
    let bad = s.input("huge-cpio.rpm");
    std::fs::write(&bad, &b).unwrap();
    bad_build(
        &s,
        &layer("rpm", &bad),
        &[],
        Expect {
            code: INPUT,
            needles: &[
                "huge-cpio.rpm",
                "header at byte 0",
                "claims 4294967295 bytes",
            ],
        },
    );
    // A name size of 2^32 - 1 in the same entry.
    let mut b = std::fs::read(&plain).unwrap();
    b[payload + 94..payload + 102].copy_from_slice(b"FFFFFFFF");
    let bad = s.input("huge-name.rpm");
    std::fs::write(&bad, &b).unwrap();
    bad_build(
        &s,
        &layer("rpm", &bad),
        &[],
        Expect {
            code: INPUT,
            needles: &["huge-name.rpm", "name size 4294967295 is out of range"],
        },
    );
}

#[test]
fn not_an_rpm() {
    let s = Scratch::new();
    let p = s.input("text.rpm");
    std::fs::write(&p, "not a package\n".repeat(20)).unwrap();
    bad_build(
        &s,
        &layer("rpm", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["text.rpm", "not an RPM package"],
        },
    );
}

/// A .deb built with dpkg-deb (gzip members) holding /etc/hello.
fn good_deb(s: &Scratch, name: &str) -> PathBuf {
    let d = s.dir.path().join("debroot");
    if !d.exists() {
        sh(&format!(
            "mkdir -p {d}/DEBIAN {d}/etc && printf 'hello\\n' > {d}/etc/hello && \
             printf 'Package: hello\\nVersion: 1.0\\nArchitecture: all\\nMaintainer: x <x@y>\\n\
             Description: t\\n' > {d}/DEBIAN/control",
            d = q(&d)
        ));
    }
    let p = s.input(name);
    sh(&format!(
        "dpkg-deb --root-owner-group -Zgzip --build {} {} >/dev/null",
        q(&d),
        q(&p)
    ));
    p
}

#[test]
fn truncated_and_bit_flipped_debs() {
    let s = Scratch::new();
    let good = good_deb(&s, "good.deb");
    let len = std::fs::metadata(&good).unwrap().len();
    std::fs::remove_file(&good).unwrap();
    // In the ar magic, in a member header, in control.tar.gz, at the end of data.tar.gz.
    for (cut, needle) in [
        (5, "the file ends at byte 5"),
        (8 + 30, "the file ends at byte 38"),
        (8 + 60 + 4 + 60 + 40, "truncated"),
        (len - 10, "truncated"),
    ] {
        let p = good_deb(&s, &format!("cut-{cut}.deb"));
        truncate(&p, cut);
        bad_build(
            &s,
            &layer("deb", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[&format!("cut-{cut}.deb"), needle],
            },
        );
    }
    for (at, needle) in [
        (0, "no !<arch> magic"),
        (8 + 58, "bad member header terminator"),
        ((len - 8) as usize, "damaged"),
    ] {
        let p = good_deb(&s, &format!("flip-{at}.deb"));
        flip(&p, at, 1);
        bad_build(
            &s,
            &layer("deb", &p),
            &[],
            Expect {
                code: INPUT,
                needles: &[&format!("flip-{at}.deb"), needle],
            },
        );
    }
}

#[test]
fn deb_member_claiming_a_huge_size() {
    let s = Scratch::new();
    let p = good_deb(&s, "huge.deb");
    let mut b = std::fs::read(&p).unwrap();
    // The size field of the second member (control.tar.gz), after the 4-byte debian-binary.
    let at = 8 + 60 + 4;
    b[at + 48..at + 58].copy_from_slice(b"9999999999");
    std::fs::write(&p, &b).unwrap();
    bad_build(
        &s,
        &layer("deb", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &[
                "huge.deb",
                &format!("at byte {at}"),
                "claims 9999999999 bytes",
            ],
        },
    );
}

#[test]
fn deb_whose_data_leaves_the_root() {
    let s = Scratch::new();
    let w = s.dir.path().join("evil");
    let p = s.input("evil.deb");
    // debian-binary, control.tar.gz from dpkg-deb's layout, data.tar.gz with ../../etc/evil.
    sh(&format!(
        "mkdir -p {w}/c && cd {w} && printf '2.0\\n' > debian-binary && \
         printf 'Package: evil\\nVersion: 1\\nArchitecture: all\\n' > c/control && \
         tar --format=gnu -C c -czf control.tar.gz ./control && printf 'x\\n' > f && \
         tar --format=gnu -P --transform='s,^f$,../../etc/evil,' -czf data.tar.gz f && \
         ar qc {p} debian-binary control.tar.gz data.tar.gz",
        w = q(&w),
        p = q(&p)
    ));
    bad_build(
        &s,
        &layer("deb", &p),
        &[],
        Expect {
            code: INPUT,
            needles: &["evil.deb", "data.tar.gz", "../../etc/evil"],
        },
    );
}
