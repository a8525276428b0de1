//! `deb = ["PATTERN", …]`: Debian binary packages, read natively.
//!
//! A `.deb` is an ar archive (`!<arch>\n`, 60-byte member headers, GNU `name/` or BSD `#1/LEN`
//! names) holding `debian-binary` (`2.0`), `control.tar[.gz|.xz|.zst]` (the `control` file and
//! maintainer scripts) and `data.tar[.gz|.xz|.zst|.bz2|.lzma]`, the files, read by the tar reader.
//! As with dpkg, owner names in the data archive are mapped through the tree's own accounts,
//! falling back to the numeric ids, directory symlinks already in the root are followed (merged
//! /usr), and directories that already exist keep their metadata. Maintainer scripts are not run; they are listed in the layer's notes.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::accounts::Accounts;
use super::compression::{self, CompressionError, Format};
use super::place::{Placer, Through};
use super::tar::reader::{Data, EntryKind, TarReader};
use super::tar::{self, Ids, TarError};
use super::{LayerReport, PackageRecord};
use crate::tree::{ArchiveFile, Tree};

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: u64 = 60;
/// More members than any package has; bounds the work on hostile archives.
const MAX_MEMBERS: usize = 64;
/// Largest `control` file read.
const MAX_CONTROL: u64 = 1 << 20;

/// A deb layer or package that cannot be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    /// The package cannot be opened.
    #[error("cannot open .deb {path}: {source}")]
    Open {
        /// The package.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The ar container is invalid.
    #[error("bad .deb {path}: ar header at byte {offset}: {reason}")]
    Ar {
        /// The package.
        path: PathBuf,
        /// Byte offset of the member header.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A member is missing or malformed.
    #[error("bad .deb {path}: {reason}")]
    Package {
        /// The package.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A member cannot be decompressed.
    #[error(transparent)]
    Decompress(#[from] CompressionError),
    /// The control or data archive is invalid, or the tree refused an entry.
    #[error(transparent)]
    Tar(#[from] TarError),
    /// A glob pattern is malformed or matches nothing.
    #[error("{0}")]
    Glob(String),
    /// The tree's account files cannot be read.
    #[error(".deb {path}: {reason}")]
    Accounts {
        /// The package being installed.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// One ar member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArMember {
    /// Name, without GNU's trailing `/` or padding.
    pub name: String,
    /// Offset of the member's header.
    pub header_offset: u64,
    /// Offset of its data.
    pub offset: u64,
    /// Size of its data.
    pub size: u64,
}

/// Lists the members of the ar archive in `file` (`len` bytes).
pub fn ar_members(path: &Path, file: &File, len: u64) -> Result<Vec<ArMember>, DebError> {
    let bad = |offset: u64, reason: String| DebError::Ar {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    let read = |at: u64, n: u64| -> Result<Vec<u8>, DebError> {
        if at.checked_add(n).map_or(true, |e| e > len) {
            return Err(bad(
                at,
                format!("the file ends at byte {len} inside this member"),
            ));
        }
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, at)
            .map_err(|source| DebError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(buf)
    };
    if read(0, 8)? != AR_MAGIC {
        return Err(bad(0, "not an ar archive (no !<arch> magic)".into()));
    }
    let mut members = Vec::new();
    let mut long_names: Vec<u8> = Vec::new();
    let mut pos = 8u64;
    while pos < len {
        if members.len() >= MAX_MEMBERS {
            return Err(bad(pos, format!("more than {MAX_MEMBERS} members")));
        }
        let h = read(pos, AR_HEADER)?;
        if &h[58..60] != b"`\n" {
            return Err(bad(pos, "bad member header terminator".into()));
        }
        let size: u64 = std::str::from_utf8(&h[48..58])
            .ok()
            .map(str::trim)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(pos, "the size field is not a decimal number".into()))?;
        let mut offset = pos + AR_HEADER;
        let left = len - offset.min(len);
        if size > left {
            return Err(bad(
                pos,
                format!("the member claims {size} bytes but only {left} remain (truncated?)"),
            ));
        }
        let mut data_size = size;
        let raw_name = String::from_utf8_lossy(&h[..16]).trim_end().to_string();
        let name = if let Some(n) = raw_name.strip_prefix("#1/") {
            // BSD: the name is the start of the data.
            let n: u64 = n
                .parse()
                .ok()
                .filter(|n| *n <= size && *n <= 4096)
                .ok_or_else(|| bad(pos, format!("bad BSD long name length {n:?}")))?;
            let name = read(offset, n)?;
            offset += n;
            data_size -= n;
            String::from_utf8_lossy(name.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
        } else if raw_name == "//" {
            if size > 1 << 20 {
                return Err(bad(pos, "the long-name table is too large".into()));
            }
            long_names = read(offset, size)?;
            String::new()
        } else if let Some(index) = raw_name.strip_prefix('/').filter(|i| !i.is_empty()) {
            let index: usize = index
                .parse()
                .map_err(|_| bad(pos, format!("bad long-name reference {raw_name:?}")))?;
            let rest = long_names
                .get(index..)
                .ok_or_else(|| bad(pos, format!("long-name reference {index} is out of range")))?;
            let end = rest
                .iter()
                .position(|&b| b == b'\n' || b == 0)
                .unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .trim_end_matches('/')
                .to_string()
        } else {
            raw_name.trim_end_matches('/').to_string()
        };
        if !name.is_empty() && raw_name != "/" {
            members.push(ArMember {
                name,
                header_offset: pos,
                offset,
                size: data_size,
            });
        }
        pos = pos + AR_HEADER + size + (size & 1);
    }
    Ok(members)
}

/// The fields of a package's `control` file that name it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DebControl {
    /// `Package`.
    pub package: String,
    /// `Version`.
    pub version: String,
    /// `Architecture`.
    pub architecture: String,
    /// Maintainer scripts present (`preinst`, `postinst`, …).
    pub scripts: Vec<String>,
}

impl DebControl {
    /// `name_version_arch`.
    pub fn nevra(&self) -> String {
        format!("{}_{}_{}", self.package, self.version, self.architecture)
    }
}

/// Reads a sequential stream from an offset with positional reads.
struct ReadFrom<'a> {
    file: &'a File,
    pos: u64,
}

impl Read for ReadFrom<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// A tar member of the package as a reader: in place when uncompressed, else spooled.
fn tar_member(
    path: &Path,
    file: &File,
    member: &ArMember,
    limit: u64,
) -> Result<(TarReader, String), DebError> {
    let label = format!("{} ({})", path.display(), member.name);
    let mut head = [0u8; 6];
    let got = file.read_at(&mut head, member.offset).unwrap_or(0);
    let mut format = Format::detect(&head[..got.min(member.size as usize)]);
    if format == Format::None && member.name.ends_with(".lzma") {
        format = Format::Lzma;
    }
    let suffix = member.name.rsplit_once(".tar").map_or("", |(_, s)| s);
    let named = Format::from_name(suffix.trim_start_matches('.'));
    if named.is_some_and(|n| n != format && n != Format::Lzma) {
        return Err(DebError::Package {
            path: path.to_path_buf(),
            reason: format!(
                "member {} is named for {} but holds {} data",
                member.name,
                named.map_or("?", |n| n.name()),
                format.name()
            ),
        });
    }
    if format == Format::None {
        let own = file.try_clone().map_err(|source| DebError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let archive = Arc::new(ArchiveFile::new(label.clone(), own));
        let end = member.offset + member.size;
        return Ok((TarReader::new(archive, member.offset, end, limit), label));
    }
    let input = BufReader::with_capacity(
        256 << 10,
        ReadFrom {
            file,
            pos: member.offset,
        }
        .take(member.size),
    );
    let spool = compression::spool(input, format, &label, limit)?;
    Ok((TarReader::new(spool.archive, 0, spool.len, limit), label))
}

fn find<'a>(members: &'a [ArMember], prefix: &str) -> Option<&'a ArMember> {
    members
        .iter()
        .find(|m| m.name == prefix || m.name.starts_with(&format!("{prefix}.")))
}

/// Reads the `control` file and the list of maintainer scripts of the package at `path`.
pub fn read_control(path: &Path) -> Result<DebControl, DebError> {
    let open_err = |source| DebError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let len = file.metadata().map_err(open_err)?.len();
    let members = ar_members(path, &file, len)?;
    control_of(path, &file, &members, compression::max_expanded()?)
}

fn control_of(
    path: &Path,
    file: &File,
    members: &[ArMember],
    limit: u64,
) -> Result<DebControl, DebError> {
    let bad = |reason: String| DebError::Package {
        path: path.to_path_buf(),
        reason,
    };
    let first = members
        .first()
        .filter(|m| m.name == "debian-binary")
        .ok_or_else(|| bad("the first member is not debian-binary".into()))?;
    let mut version = vec![0u8; first.size.min(16) as usize];
    file.read_exact_at(&mut version, first.offset)
        .map_err(|source| DebError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if !version.starts_with(b"2.") {
        return Err(bad(format!(
            "debian-binary says {:?}; only format 2.x is supported",
            String::from_utf8_lossy(&version)
        )));
    }
    let member = find(members, "control.tar").ok_or_else(|| bad("no control.tar member".into()))?;
    let (mut reader, label) = tar_member(path, file, member, limit.min(256 << 20))?;
    let mut control = None;
    let mut scripts = Vec::new();
    while let Some(entry) = reader
        .next_entry()
        .map_err(|e| tar::read_error(&label, e))?
    {
        let name = String::from_utf8_lossy(&entry.path)
            .trim_start_matches("./")
            .to_string();
        match (&entry.kind, name.as_str()) {
            (
                EntryKind::File {
                    size,
                    data: Data::At(at),
                },
                "control",
            ) => {
                if *size > MAX_CONTROL {
                    return Err(bad(format!("the control file is {size} bytes long")));
                }
                let mut text = vec![0u8; *size as usize];
                reader
                    .archive()
                    .file()
                    .read_exact_at(&mut text, *at)
                    .map_err(|source| DebError::Open {
                        path: path.to_path_buf(),
                        source,
                    })?;
                control = Some(text);
            }
            (_, "preinst" | "postinst" | "prerm" | "postrm" | "config" | "triggers") => {
                scripts.push(name);
            }
            _ => {}
        }
    }
    let text = control.ok_or_else(|| bad("control.tar has no control file".into()))?;
    let mut out = parse_control(&text);
    if out.package.is_empty() || out.version.is_empty() || out.architecture.is_empty() {
        return Err(bad(
            "the control file lacks Package, Version or Architecture".into(),
        ));
    }
    scripts.sort();
    out.scripts = scripts;
    Ok(out)
}

/// The naming fields of a control file (first paragraph, field names case-insensitive).
fn parse_control(text: &[u8]) -> DebControl {
    let mut out = DebControl::default();
    for line in String::from_utf8_lossy(text).lines() {
        if line.trim().is_empty() {
            break;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim().to_ascii_lowercase().as_str() {
            "package" => out.package = value,
            "version" => out.version = value,
            "architecture" => out.architecture = value,
            _ => {}
        }
    }
    out
}

/// Expands glob patterns into package paths, sorted and without duplicates; a pattern matching
/// nothing is an error.
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, DebError> {
    super::rpm::expand_globs(patterns).map_err(|e| DebError::Glob(e.to_string()))
}

/// Installs `packages` in order into `tree`: the data archive of each, with owners mapped by
/// name through the tree's accounts. Decompression is bounded by [`compression::max_expanded`].
pub fn apply(tree: &mut Tree, packages: &[PathBuf]) -> Result<LayerReport, DebError> {
    apply_with_limit(tree, packages, compression::max_expanded()?)
}

/// [`apply`] with an explicit bound on each decompressed member.
pub fn apply_with_limit(
    tree: &mut Tree,
    packages: &[PathBuf],
    max_expanded: u64,
) -> Result<LayerReport, DebError> {
    let mut report = LayerReport::default();
    for path in packages {
        let open_err = |source| DebError::Open {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(open_err)?;
        let len = file.metadata().map_err(open_err)?.len();
        let members = ar_members(path, &file, len)?;
        let control = control_of(path, &file, &members, max_expanded)?;
        let data = find(&members, "data.tar").ok_or_else(|| DebError::Package {
            path: path.to_path_buf(),
            reason: "no data.tar member".into(),
        })?;
        let (reader, label) = tar_member(path, &file, data, max_expanded)?;
        let accounts = Accounts::from_tree(tree).map_err(|e| DebError::Accounts {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let mut placer = Placer::new(tree, Through::Resolve).keep_existing_dirs();
        let placed = tar::apply_entries(&mut placer, reader, &label, Ids::Names(&accounts))?;
        let installs: Vec<&str> = control
            .scripts
            .iter()
            .map(String::as_str)
            .filter(|s| matches!(*s, "preinst" | "postinst" | "config" | "triggers"))
            .collect();
        if !installs.is_empty() {
            report.notes.push(format!(
                "{}: maintainer scripts not run: {}",
                control.nevra(),
                installs.join(", ")
            ));
        }
        report.entries += placed;
        report.packages.push(PackageRecord {
            nevra: control.nevra(),
            path: path.to_path_buf(),
            files: placed,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = AR_MAGIC.to_vec();
        for (name, data) in members {
            let header = format!(
                "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                0,
                0,
                0,
                100644,
                data.len()
            );
            out.extend(header.as_bytes());
            out.extend(*data);
            if data.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    fn members_of(bytes: &[u8]) -> Result<Vec<ArMember>, DebError> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        ar_members(Path::new("t.deb"), &f, bytes.len() as u64)
    }

    #[test]
    fn reads_gnu_bsd_and_plain_names() {
        let table = b"a-very-long-member-name.tar.gz/\n";
        let mut bsd = b"bsd-name.tar".to_vec();
        bsd.extend(b"DATA");
        let bytes = ar(&[
            ("debian-binary", b"2.0\n"),
            ("//", table),
            ("/0", b"odd"),
            ("#1/12", &bsd),
            ("plain/", b"xy"),
        ]);
        let m = members_of(&bytes).unwrap();
        let names: Vec<&str> = m.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "debian-binary",
                "a-very-long-member-name.tar.gz",
                "bsd-name.tar",
                "plain"
            ]
        );
        assert_eq!(m[1].size, 3);
        assert_eq!(m[2].size, 4);
    }

    #[test]
    fn damaged_ar_headers_are_errors() {
        let good = ar(&[("debian-binary", b"2.0\n"), ("data.tar", b"abc")]);
        members_of(&good).unwrap();
        for cut in 1..good.len() - 1 {
            if cut == 8 || cut == 8 + 60 + 4 {
                continue; // clean member boundaries
            }
            assert!(members_of(&good[..cut]).is_err(), "cut {cut}");
        }
        let mut bad = good.clone();
        bad[8 + 58] = b'x';
        assert!(members_of(&bad)
            .unwrap_err()
            .to_string()
            .contains("at byte 8"));
        let mut bad = good.clone();
        bad[8 + 48..8 + 58].copy_from_slice(b"9999999999");
        assert!(members_of(&bad).unwrap_err().to_string().contains("claims"));
        let mut bad = good;
        bad[8 + 48] = b'x';
        assert!(members_of(&bad).is_err());
    }

    #[test]
    fn control_fields() {
        let c = parse_control(b"Package: hello\nversion: 1:2.10-3\n Description continued\nArchitecture: amd64\n\nPackage: other\n");
        assert_eq!(c.nevra(), "hello_1:2.10-3_amd64");
    }
}
