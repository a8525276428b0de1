//! The OS template tarball: the tree as a deterministic tar stream.
//!
//! ustar headers with numeric owners (no user or group names), pax extended headers where ustar
//! falls short (long names and link targets, ids or sizes too large, xattrs as
//! `SCHILY.xattr.NAME` so file capabilities survive), hard links as links to the first name,
//! device nodes, mtimes from the tree. Entries in the tree's canonical order, `./` first. The
//! same tree always gives the same bytes.

use std::io::{self, Write};

use crate::tree::{InodeId, Kind, Tree};

const BLOCK: usize = 512;
/// GNU tar's default record: 20 blocks.
const RECORD: u64 = 20 * BLOCK as u64;

/// Writes `tree` as a tar stream into `out`; returns the bytes written.
pub fn write_tar(tree: &Tree, out: &mut impl Write) -> io::Result<u64> {
    let mut w = Counting { out, written: 0 };
    let counts = tree.link_counts();
    let mut first_names: std::collections::HashMap<InodeId, Vec<u8>> = Default::default();
    let mut buffer = vec![0u8; 1 << 20];
    for (path, id) in tree.walk() {
        let name = archive_name(&path);
        let inode = tree.inode(id);
        let is_dir = matches!(inode.kind, Kind::Directory(_));
        if !is_dir && counts[id.index()] > 1 {
            if let Some(first) = first_names.get(&id) {
                let first = first.clone();
                write_header(&mut w, &name, inode, b'1', 0, &first, &[])?;
                continue;
            }
            first_names.insert(id, name.clone());
        }
        let (typeflag, size, link): (u8, u64, &[u8]) = match &inode.kind {
            Kind::Directory(_) => (b'5', 0, b""),
            Kind::File(data) => (b'0', data.size, b""),
            Kind::Symlink(target) => (b'2', 0, target),
            Kind::CharDevice { .. } => (b'3', 0, b""),
            Kind::BlockDevice { .. } => (b'4', 0, b""),
            Kind::Fifo => (b'6', 0, b""),
            // tar has no socket type; GNU tar skips sockets too ("socket ignored").
            Kind::Socket => continue,
        };
        write_header(
            &mut w,
            &name,
            inode,
            typeflag,
            size,
            link,
            &inode.meta.xattrs,
        )?;
        if let Kind::File(data) = &inode.kind {
            let shown = String::from_utf8_lossy(&path).into_owned();
            let reader = data
                .content
                .open(data.size, &shown)
                .map_err(|e| io::Error::new(e.source.kind(), e.to_string()))?;
            let mut off = 0u64;
            while off < data.size {
                let n = buffer.len().min((data.size - off) as usize);
                reader.read_exact_at(&mut buffer[..n], off)?;
                w.write_all(&buffer[..n])?;
                off += n as u64;
            }
            pad(&mut w, data.size)?;
        }
    }
    w.write_all(&[0u8; 2 * BLOCK])?;
    let rest = (RECORD - w.written % RECORD) % RECORD;
    w.write_all(&vec![0u8; rest as usize])?;
    Ok(w.written)
}

struct Counting<'a, W: Write> {
    out: &'a mut W,
    written: u64,
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `/etc/passwd` → `./etc/passwd`; the root → `./`.
fn archive_name(path: &[u8]) -> Vec<u8> {
    let mut name = b".".to_vec();
    name.extend_from_slice(path);
    name
}

fn pad(w: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64;
    w.write_all(&[0u8; BLOCK][..rest as usize])
}

fn octal(field: &mut [u8], value: u64) -> bool {
    let digits = field.len() - 1;
    if digits < 22 && value >= 1u64 << (3 * digits) {
        return false;
    }
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
    true
}

fn pax_record(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // "LEN KEY=VALUE\n", where LEN counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + 1;
    while len.to_string().len() + body != len {
        len = len.to_string().len() + body;
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key);
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn write_header(
    w: &mut impl Write,
    name: &[u8],
    inode: &crate::tree::Inode,
    typeflag: u8,
    size: u64,
    link: &[u8],
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    let meta = &inode.meta;
    let mut header = [0u8; BLOCK];
    let mut pax = Vec::new();
    let stored_name = split_name(name, &mut header);
    if !stored_name {
        pax_record(&mut pax, b"path", name);
    }
    if link.len() > 100 {
        pax_record(&mut pax, b"linkpath", link);
    } else {
        header[157..157 + link.len()].copy_from_slice(link);
    }
    octal(&mut header[100..108], u64::from(meta.mode & 0o7777));
    if !octal(&mut header[108..116], u64::from(meta.uid)) {
        pax_record(&mut pax, b"uid", meta.uid.to_string().as_bytes());
        octal(&mut header[108..116], 0);
    }
    if !octal(&mut header[116..124], u64::from(meta.gid)) {
        pax_record(&mut pax, b"gid", meta.gid.to_string().as_bytes());
        octal(&mut header[116..124], 0);
    }
    if !octal(&mut header[124..136], size) {
        pax_record(&mut pax, b"size", size.to_string().as_bytes());
        octal(&mut header[124..136], 0);
    }
    let mtime = u64::try_from(meta.mtime).ok();
    match mtime {
        Some(m) if octal(&mut header[136..148], m) => {}
        _ => {
            pax_record(&mut pax, b"mtime", meta.mtime.to_string().as_bytes());
            octal(&mut header[136..148], 0);
        }
    }
    header[156] = typeflag;
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    if let Kind::CharDevice { major, minor } | Kind::BlockDevice { major, minor } = inode.kind {
        if !octal(&mut header[329..337], u64::from(major))
            || !octal(&mut header[337..345], u64::from(minor))
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: device number {major}:{minor} does not fit a tar header",
                    String::from_utf8_lossy(name)
                ),
            ));
        }
    } else {
        octal(&mut header[329..337], 0);
        octal(&mut header[337..345], 0);
    }
    for (key, value) in xattrs {
        let mut k = b"SCHILY.xattr.".to_vec();
        k.extend_from_slice(key);
        pax_record(&mut pax, &k, value);
    }
    if !pax.is_empty() {
        let mut pax_header = [0u8; BLOCK];
        let base = name.rsplit(|&b| b == b'/').next().unwrap_or(name);
        let mut pax_name = b"./PaxHeaders/".to_vec();
        pax_name.extend_from_slice(&base[..base.len().min(80)]);
        pax_header[..pax_name.len()].copy_from_slice(&pax_name);
        octal(&mut pax_header[100..108], 0o644);
        octal(&mut pax_header[108..116], 0);
        octal(&mut pax_header[116..124], 0);
        octal(&mut pax_header[124..136], pax.len() as u64);
        octal(
            &mut pax_header[136..148],
            mtime.unwrap_or(0).min(0o77777777777),
        );
        pax_header[156] = b'x';
        pax_header[257..263].copy_from_slice(b"ustar\0");
        pax_header[263..265].copy_from_slice(b"00");
        checksum(&mut pax_header);
        w.write_all(&pax_header)?;
        w.write_all(&pax)?;
        pad(w, pax.len() as u64)?;
    }
    checksum(&mut header);
    w.write_all(&header)
}

/// Stores `name` in the name (100) and prefix (155) fields; false when it does not fit.
fn split_name(name: &[u8], header: &mut [u8; BLOCK]) -> bool {
    if name.len() <= 100 {
        header[..name.len()].copy_from_slice(name);
        return true;
    }
    // Split at a slash so that the prefix has at most 155 bytes and the rest at most 100.
    for (i, &b) in name.iter().enumerate() {
        if b == b'/' && i <= 155 && name.len() - i - 1 <= 100 && i > 0 {
            header[345..345 + i].copy_from_slice(&name[..i]);
            let rest = &name[i + 1..];
            header[..rest.len()].copy_from_slice(rest);
            return true;
        }
    }
    let fallback = &name[..100];
    header[..100].copy_from_slice(fallback);
    false
}

fn checksum(header: &mut [u8; BLOCK]) {
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let mut out = Vec::new();
        pax_record(&mut out, b"path", &[b'a'; 93]);
        let text = String::from_utf8(out.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, out.len());
        let mut out = Vec::new();
        pax_record(&mut out, b"k", b"v");
        assert_eq!(out, b"6 k=v\n");
    }

    #[test]
    fn octal_fields_and_overflow() {
        let mut f = [0u8; 8];
        assert!(octal(&mut f, 0o755));
        assert_eq!(&f, b"0000755\0");
        assert!(!octal(&mut f, 1 << 21));
    }

    #[test]
    fn long_names_split_or_fall_back_to_pax() {
        let mut h = [0u8; BLOCK];
        let name = format!("./{}/{}", "d".repeat(120), "f".repeat(50));
        assert!(split_name(name.as_bytes(), &mut h));
        let mut h = [0u8; BLOCK];
        assert!(!split_name("x".repeat(300).as_bytes(), &mut h));
    }
}
