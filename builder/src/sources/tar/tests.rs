//! Unit tests of the tar layer over archives assembled byte by byte, for the cases GNU tar will
//! not produce (damaged headers, hostile paths). Integration tests compare with GNU tar itself.

use std::io::Write;

use super::*;
use crate::tree::Kind;

/// A ustar header block with a valid checksum.
fn block(name: &[u8], flag: u8, size: u64, link: &[u8]) -> Vec<u8> {
    let mut h = vec![0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000755\0");
    h[108..116].copy_from_slice(b"0001750\0");
    h[116..124].copy_from_slice(b"0000144\0");
    h[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    h[136..148].copy_from_slice(b"14412345670\0");
    h[156] = flag;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    seal(&mut h);
    h
}

fn seal(h: &mut [u8]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn data(bytes: &[u8]) -> Vec<u8> {
    let mut d = bytes.to_vec();
    d.resize(bytes.len().next_multiple_of(512), 0);
    d
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

fn finish(mut archive: Vec<u8>) -> Vec<u8> {
    archive.extend([0u8; 1024]);
    archive
}

fn apply_bytes(bytes: &[u8]) -> Result<(Tree, LayerReport), TarError> {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    let mut tree = Tree::new(Meta::root(0o755, 0));
    let report = apply_with_limit(&mut tree, f.path(), None, 1 << 30)?;
    Ok((tree, report))
}

fn sample() -> Vec<u8> {
    let mut a = block(b"./", b'5', 0, b"");
    a.extend(block(b"./etc/", b'5', 0, b""));
    a.extend(block(b"./etc/hostname", b'0', 4, b""));
    a.extend(data(b"box\n"));
    a.extend(block(b"./etc/alias", b'1', 0, b"./etc/hostname"));
    a.extend(block(b"./bin", b'2', 0, b"usr/bin"));
    a.extend(block(b"./dev/fifo", b'6', 0, b""));
    let mut null = block(b"./dev/null", b'3', 0, b"");
    null[329..337].copy_from_slice(b"0000001\0");
    null[337..345].copy_from_slice(b"0000003\0");
    seal(&mut null);
    a.extend(null);
    finish(a)
}

#[test]
fn reads_every_entry_type() {
    let (tree, report) = apply_bytes(&sample()).unwrap();
    assert_eq!(report.entries, 7);
    let host = tree.lookup(b"/etc/hostname").unwrap();
    assert_eq!(tree.lookup(b"/etc/alias"), Some(host));
    let inode = tree.inode(host);
    assert_eq!(
        (inode.meta.uid, inode.meta.gid, inode.meta.mode),
        (1000, 100, 0o755)
    );
    assert_eq!(inode.meta.mtime, 0o14412345670);
    let Kind::File(f) = &inode.kind else { panic!() };
    let mut buf = [0u8; 4];
    f.content
        .open(4, "x")
        .unwrap()
        .read_exact_at(&mut buf, 0)
        .unwrap();
    assert_eq!(&buf, b"box\n");
    assert!(
        matches!(&tree.inode(tree.lookup(b"/bin").unwrap()).kind, Kind::Symlink(t) if &**t == b"usr/bin")
    );
    assert!(matches!(
        tree.inode(tree.lookup(b"/dev/null").unwrap()).kind,
        Kind::CharDevice { major: 1, minor: 3 }
    ));
    assert!(matches!(
        tree.inode(tree.lookup(b"/dev/fifo").unwrap()).kind,
        Kind::Fifo
    ));
}

#[test]
fn owner_override() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&sample()).unwrap();
    let mut tree = Tree::new(Meta::root(0o755, 0));
    apply_with_limit(&mut tree, f.path(), Some(Owner { uid: 7, gid: 8 }), 1 << 30).unwrap();
    let m = &tree.inode(tree.lookup(b"/etc").unwrap()).meta;
    assert_eq!((m.uid, m.gid), (7, 8));
}

#[test]
fn pax_overrides_and_xattrs() {
    let long = format!("./{}/{}", "d".repeat(200), "f".repeat(200));
    let mut records = pax_record("path", long.as_bytes());
    records.extend(pax_record("uid", b"3000000000"));
    records.extend(pax_record("gid", b"4000000"));
    records.extend(pax_record("mtime", b"1681068559.25"));
    records.extend(pax_record(
        "SCHILY.xattr.security.capability",
        b"\x01\0\0\x02\0\x20\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
    ));
    records.extend(pax_record("SCHILY.xattr.user.x", b"a\nb"));
    let mut a = block(b"./PaxHeaders/f", b'x', records.len() as u64, b"");
    a.extend(data(&records));
    a.extend(block(b"./truncated-name", b'0', 2, b""));
    a.extend(data(b"hi"));
    let (tree, _) = apply_bytes(&finish(a)).unwrap();
    let id = tree.lookup(long.as_bytes()).unwrap();
    let m = &tree.inode(id).meta;
    assert_eq!(
        (m.uid, m.gid, m.mtime),
        (3_000_000_000, 4_000_000, 1681068559)
    );
    assert_eq!(m.xattrs.len(), 2);
    assert_eq!(m.xattrs[0].0, b"security.capability");
    assert_eq!(m.xattrs[1].1, b"a\nb");
}

#[test]
fn gnu_long_names_and_base256() {
    let name = format!("./{}", "n".repeat(150));
    let mut a = block(b"././@LongLink", b'L', name.len() as u64 + 1, b"");
    a.extend(data(format!("{name}\0").as_bytes()));
    let mut h = block(b"./short", b'0', 0, b"");
    h[257..265].copy_from_slice(b"ustar  \0");
    h[108] = 0x80;
    h[109..116].copy_from_slice(&[0, 0, 0, 0, 0x12, 0x34, 0x56]);
    seal(&mut h);
    a.extend(h);
    let (tree, _) = apply_bytes(&finish(a)).unwrap();
    let id = tree.lookup(name.as_bytes()).unwrap();
    assert_eq!(tree.inode(id).meta.uid, 0x123456);
}

#[test]
fn every_truncation_is_an_error_naming_the_file() {
    let full = sample();
    let (reference, _) = apply_bytes(&full).unwrap();
    let mut cuts: Vec<usize> = (0..full.len()).step_by(512).collect();
    cuts.extend([100, 512 + 300, full.len() - 1]);
    for cut in cuts {
        match apply_bytes(&full[..cut]) {
            Err(e) => {
                let text = e.to_string();
                assert!(text.contains("byte"), "cut {cut}: {text}");
                assert!(
                    text.contains("/tmp") || text.contains("tmp"),
                    "cut {cut}: {text}"
                );
            }
            // Only a cut inside the end-of-archive marker leaves every entry intact.
            Ok((tree, _)) => {
                assert!(cut >= full.len() - 1024, "cut {cut} accepted");
                assert_eq!(tree.walk().count(), reference.walk().count());
            }
        }
    }
}

#[test]
fn damaged_headers_name_their_offset() {
    let full = sample();
    for bit in [0usize, 100 * 8, 124 * 8 + 3, 148 * 8, 156 * 8 + 1, 257 * 8] {
        let mut bad = full.clone();
        // Third header (./etc/hostname) starts at 1024.
        bad[1024 + bit / 8] ^= 1 << (bit % 8);
        let e = apply_bytes(&bad).unwrap_err();
        assert!(e.to_string().contains("at byte 1024"), "bit {bit}: {e}");
    }
}

#[test]
fn absurd_sizes_are_refused() {
    let mut a = block(b"big", b'0', 10_000_000, b"");
    a.extend(data(b"only a little"));
    let e = apply_bytes(&finish(a)).unwrap_err();
    assert!(e.to_string().contains("claims 10000000 bytes"), "{e}");
    let mut h = block(b"huge", b'0', 0, b"");
    h[124] = 0x80;
    h[125..136].copy_from_slice(&[0xff; 11]);
    seal(&mut h);
    let e = apply_bytes(&finish(h)).unwrap_err();
    assert!(e.to_string().contains("at byte 0"), "{e}");
}

#[test]
fn hostile_paths() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (finish(block(b"../evil", b'0', 0, b"")), "`..`"),
        (finish(block(b"./a/../../evil", b'0', 0, b"")), "`..`"),
        (finish(block(b"/abs", b'0', 0, b"")), "absolute"),
        (finish(block(b"x", b'1', 0, b"/etc/passwd")), "absolute"),
        (
            {
                let mut a = block(b"lib", b'2', 0, b"/etc");
                a.extend(block(b"lib/passwd", b'0', 0, b""));
                finish(a)
            },
            "through the symlink",
        ),
        (
            {
                let mut a = block(b"x", b'5', 0, b"");
                a.extend(block(b"x", b'0', 0, b""));
                finish(a)
            },
            "appears twice",
        ),
        (
            {
                let name = "n".repeat(256);
                let mut records = pax_record("path", name.as_bytes());
                records.truncate(records.len());
                let mut a = block(b"p", b'x', records.len() as u64, b"");
                a.extend(data(&records));
                a.extend(block(b"x", b'0', 0, b""));
                finish(a)
            },
            "255",
        ),
        (finish(block(b"h", b'1', 0, b"missing")), "does not exist"),
        (finish(block(b"weird", b'Z', 0, b"")), "not supported"),
    ];
    for (archive, expect) in cases {
        let e = apply_bytes(&archive).unwrap_err();
        assert!(e.to_string().contains(expect), "{expect}: {e}");
        assert!(e.to_string().contains("at byte"), "{e}");
    }
}

#[test]
fn old_gnu_sparse_member() {
    // 1 MiB file: "head" at 0, "tail" at 1 MiB - 4, holes between.
    let mut h = block(b"sparse", b'S', 8, b"");
    h[257..265].copy_from_slice(b"ustar  \0");
    h[386..398].copy_from_slice(b"00000000000\0");
    h[398..410].copy_from_slice(b"00000000004\0");
    h[410..422].copy_from_slice(format!("{:011o}\0", (1 << 20) - 4).as_bytes());
    h[422..434].copy_from_slice(b"00000000004\0");
    h[483..495].copy_from_slice(format!("{:011o}\0", 1 << 20).as_bytes());
    seal(&mut h);
    let mut a = h;
    a.extend(data(b"headtail"));
    let (tree, _) = apply_bytes(&finish(a)).unwrap();
    let Kind::File(f) = &tree.inode(tree.lookup(b"sparse").unwrap()).kind else {
        panic!()
    };
    assert_eq!(f.size, 1 << 20);
    let r = f.content.open(f.size, "sparse").unwrap();
    let mut buf = [0u8; 4];
    r.read_exact_at(&mut buf, (1 << 20) - 4).unwrap();
    assert_eq!(&buf, b"tail");
    r.read_exact_at(&mut buf, 4).unwrap();
    assert_eq!(buf, [0; 4]);
    let ranges = r.data_ranges().unwrap();
    let data: u64 = ranges.iter().map(|(s, e)| e - s).sum();
    assert!(data < 1 << 20, "holes kept: {ranges:?}");
}

#[test]
fn metadata_without_member_and_bad_pax() {
    let mut a = block(b"././@LongLink", b'L', 4, b"");
    a.extend(data(b"abc\0"));
    let e = apply_bytes(&finish(a)).unwrap_err();
    assert!(e.to_string().contains("not followed"), "{e}");
    let mut a = block(b"p", b'x', 12, b"");
    a.extend(data(b"99 path=abc\n"));
    let e = apply_bytes(&finish(a)).unwrap_err();
    assert!(e.to_string().contains("pax record"), "{e}");
}
