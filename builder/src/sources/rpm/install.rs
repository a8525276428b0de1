//! Installing packages into the tree: the payload is matched against the header's file list and
//! every non-ghost file is placed with the header's metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{caps, read_package_from, RpmError, RpmFile, RpmPackage};
use crate::sources::accounts::Accounts;
use crate::sources::compression::{self, Format};
use crate::sources::cpio::{self, mode, CpioItem, CpioReader};
use crate::sources::place::{PlaceError, Placer, Through};
use crate::sources::{LayerReport, PackageRecord};
use crate::tree::{ArchiveFile, Content, FileData, Inode, InodeId, Kind, Meta, Tree};

/// Installs `packages` in order into `tree`. Decompression of each payload is bounded by
/// [`compression::max_expanded`].
pub fn apply(tree: &mut Tree, packages: &[PathBuf]) -> Result<LayerReport, RpmError> {
    apply_with_limit(tree, packages, compression::max_expanded()?)
}

/// [`apply`] with an explicit bound on each decompressed payload.
pub fn apply_with_limit(
    tree: &mut Tree,
    packages: &[PathBuf],
    max_expanded: u64,
) -> Result<LayerReport, RpmError> {
    let mut report = LayerReport::default();
    let mut pending = Vec::new();
    for path in packages {
        install(tree, path, max_expanded, &mut report, &mut pending)?;
    }
    resolve_pending(tree, pending, &mut report).map_err(|reason| RpmError::Accounts {
        path: packages.last().cloned().unwrap_or_default(),
        reason,
    })?;
    Ok(report)
}

/// An owner name not in the tree's account files when its package was installed.
struct Unresolved {
    id: InodeId,
    user: Option<Vec<u8>>,
    group: Option<Vec<u8>>,
    nevra: String,
}

/// Looks the names that were unknown at install time up again in the layer's final
/// `/etc/passwd` and `/etc/group`. rpm installs the package that ships the account files (or
/// creates the users) before the packages that use them, by dependency order; the layer
/// installs in file-name order, so names are settled once every package is in. Those still
/// unknown stay root, with a note per package.
fn resolve_pending(
    tree: &mut Tree,
    pending: Vec<Unresolved>,
    report: &mut LayerReport,
) -> Result<(), String> {
    if pending.is_empty() {
        return Ok(());
    }
    let accounts = Accounts::from_tree(tree).map_err(|e| e.to_string())?;
    let mut still: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut settled = 0u64;
    for u in pending {
        let mut missing = Vec::new();
        let meta = &mut tree.inode_mut(u.id).meta;
        if let Some(user) = &u.user {
            match accounts.uid(user) {
                Some(uid) => meta.uid = uid,
                None => missing.push(format!("user {}", String::from_utf8_lossy(user))),
            }
        }
        if let Some(group) = &u.group {
            match accounts.gid(group) {
                Some(gid) => meta.gid = gid,
                None => missing.push(format!("group {}", String::from_utf8_lossy(group))),
            }
        }
        if missing.is_empty() {
            settled += 1;
        }
        still.entry(u.nevra).or_default().extend(missing);
    }
    if settled > 0 {
        report.notes.push(format!(
            "{settled} entries owned by names that a later package of the layer added to \
             /etc/passwd or /etc/group got their ids at the end of the layer"
        ));
    }
    for (nevra, names) in still {
        if !names.is_empty() {
            report.notes.push(format!(
                "{nevra}: {} not in the tree's /etc/passwd or /etc/group; those files are owned by root",
                names.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    Ok(())
}

/// Where a file's payload entry is.
#[derive(Debug, Clone, Copy)]
struct Found {
    data: u64,
    size: u64,
    rdev: Option<(u32, u32)>,
}

/// Reads a file sequentially from an offset with positional reads.
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

fn install(
    tree: &mut Tree,
    path: &Path,
    limit: u64,
    report: &mut LayerReport,
    pending: &mut Vec<Unresolved>,
) -> Result<(), RpmError> {
    let open_err = |source| RpmError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let len = file.metadata().map_err(open_err)?.len();
    let pkg = read_package_from(path, &file, len)?;
    let payload_err = |reason: String| RpmError::Payload {
        path: path.to_path_buf(),
        reason,
    };
    if !matches!(pkg.payload_format.as_str(), "" | "cpio") {
        return Err(payload_err(format!(
            "payload format {:?} is not supported (only cpio)",
            pkg.payload_format
        )));
    }
    let (archive, start, end) = open_payload(&pkg, file, len, limit)?;

    // Hard-link groups among regular files; rpm stores the data with the highest index.
    let mut groups: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (i, f) in pkg.files.iter().enumerate() {
        if !f.is_ghost() && u32::from(f.mode) & mode::FMT == mode::REG {
            groups.entry((f.device, f.inode)).or_default().push(i);
        }
    }
    let group_of = |i: usize| -> Option<&Vec<usize>> {
        let f = &pkg.files[i];
        groups.get(&(f.device, f.inode)).filter(|g| g.len() > 1)
    };
    let stripped_size = |i: usize| -> u64 {
        let f = &pkg.files[i];
        match u32::from(f.mode) & mode::FMT {
            mode::DIR => 0,
            mode::LNK => f.link_to.len() as u64,
            mode::REG => match group_of(i) {
                Some(g) if g.last() != Some(&i) => 0,
                _ => f.size,
            },
            _ => f.size,
        }
    };

    let index: HashMap<&[u8], usize> = pkg
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.path.as_slice(), i))
        .collect();
    let mut found: Vec<Option<Found>> = vec![None; pkg.files.len()];
    let mut reader = CpioReader::new(Arc::clone(&archive), start, end);
    let mut sizes = |i: u32| {
        let i = i as usize;
        (i < pkg.files.len()).then(|| stripped_size(i))
    };
    while let Some(item) = reader.next_item(&mut sizes)? {
        match item {
            CpioItem::Entry(e) => {
                let name = payload_name(&e.name);
                let i = *index.get(name.as_slice()).ok_or_else(|| {
                    payload_err(format!(
                        "payload entry {:?} is not listed in the header",
                        String::from_utf8_lossy(&e.name)
                    ))
                })?;
                let listed = u32::from(pkg.files[i].mode) & mode::FMT;
                if e.mode & mode::FMT != listed {
                    return Err(payload_err(format!(
                        "{:?} has type {:o} in the payload but {listed:o} in the header",
                        String::from_utf8_lossy(&name),
                        e.mode & mode::FMT
                    )));
                }
                found[i] = Some(Found {
                    data: e.data_offset,
                    size: u64::from(e.file_size),
                    rdev: Some((e.rdev_major, e.rdev_minor)),
                });
            }
            CpioItem::Stripped {
                index, data_offset, ..
            } => {
                let i = index as usize;
                if let Some(slot) = found.get_mut(i) {
                    *slot = Some(Found {
                        data: data_offset,
                        size: stripped_size(i),
                        rdev: None,
                    });
                }
            }
        }
    }

    let accounts = Accounts::from_tree(tree).map_err(|e| RpmError::Accounts {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    let mut placer = Placer::new(tree, Through::Resolve);
    let mut linked: HashMap<(u32, u32), Vec<u8>> = HashMap::new();
    let mut placed = 0u64;
    for (i, f) in pkg.files.iter().enumerate() {
        if f.is_ghost() {
            continue;
        }
        let shown = String::from_utf8_lossy(&f.path).into_owned();
        let file_err = |reason: String| RpmError::File {
            path: path.to_path_buf(),
            file: shown.clone(),
            reason,
        };
        let place_err = |e: PlaceError| match e {
            PlaceError::Tree(source) => RpmError::Tree {
                path: path.to_path_buf(),
                file: shown.clone(),
                source: Box::new(source),
            },
            other => file_err(other.to_string()),
        };
        let here = found[i].ok_or_else(|| {
            payload_err(format!(
                "{shown} is listed in the header but missing from the payload"
            ))
        })?;
        let kind = match u32::from(f.mode) & mode::FMT {
            mode::REG => {
                let group = group_of(i);
                if let Some(first) = group.and_then(|_| linked.get(&(f.device, f.inode))) {
                    placer.hard_link(&f.path, first).map_err(place_err)?;
                    placed += 1;
                    continue;
                }
                let holder = match group {
                    Some(g) => content_holder(g, &found, f.size).ok_or_else(|| {
                        payload_err(format!(
                            "no member of the hard-link group of {shown} holds its {} bytes",
                            f.size
                        ))
                    })?,
                    None => here,
                };
                if holder.size != f.size {
                    return Err(payload_err(format!(
                        "{shown} has {} bytes in the payload but {} in the header",
                        holder.size, f.size
                    )));
                }
                Kind::File(FileData {
                    size: f.size,
                    content: if f.size == 0 {
                        Content::Bytes(Arc::from(&[][..]))
                    } else {
                        Content::Archive {
                            archive: Arc::clone(&archive),
                            offset: holder.data,
                        }
                    },
                    sha256: None,
                })
            }
            mode::DIR => Kind::empty_dir(),
            mode::LNK => {
                let target = if f.link_to.is_empty() {
                    cpio::read_link(&archive, here.data, here.size).map_err(file_err)?
                } else {
                    f.link_to.clone()
                };
                Kind::Symlink(target.into())
            }
            t @ (mode::CHR | mode::BLK) => {
                let (major, minor) = here
                    .rdev
                    .unwrap_or((u32::from(f.rdev >> 8), u32::from(f.rdev & 0xff)));
                if t == mode::CHR {
                    Kind::CharDevice { major, minor }
                } else {
                    Kind::BlockDevice { major, minor }
                }
            }
            mode::FIFO => Kind::Fifo,
            mode::SOCK => Kind::Socket,
            other => return Err(file_err(format!("unknown file type {other:o}"))),
        };
        let (meta, user, group) = meta_of(f, &accounts).map_err(file_err)?;
        let is_file = matches!(kind, Kind::File(_));
        let id = placer
            .insert(&f.path, Inode::new(meta, kind))
            .map_err(place_err)?;
        if user.is_some() || group.is_some() {
            pending.push(Unresolved {
                id,
                user,
                group,
                nevra: pkg.nevra(),
            });
        }
        if is_file && group_of(i).is_some() {
            linked.insert((f.device, f.inode), f.path.clone());
        }
        placed += 1;
    }
    note(report, &pkg);
    report.entries += placed;
    report.packages.push(PackageRecord {
        nevra: pkg.nevra(),
        path: path.to_path_buf(),
        files: placed,
    });
    Ok(())
}

/// Opens the payload: in place when uncompressed, else decompressed into a spool. Returns the
/// archive file and the payload's range in it.
fn open_payload(
    pkg: &RpmPackage,
    file: File,
    len: u64,
    limit: u64,
) -> Result<(Arc<ArchiveFile>, u64, u64), RpmError> {
    let path = &pkg.path;
    let mut head = [0u8; 6];
    let got = file.read_at(&mut head, pkg.payload_offset).unwrap_or(0);
    let head = &head[..got];
    let format = match Format::detect(head) {
        Format::None if head.starts_with(b"0707") => Format::None,
        Format::None if pkg.payload_compressor.as_deref() == Some("lzma") => Format::Lzma,
        Format::None => {
            return Err(RpmError::Payload {
                path: path.clone(),
                reason: format!(
                    "the payload at offset {} is neither cpio nor a known compression ({:?})",
                    pkg.payload_offset, pkg.payload_compressor
                ),
            })
        }
        detected => detected,
    };
    let label = path.display().to_string();
    if format == Format::None {
        return Ok((
            Arc::new(ArchiveFile::new(label, file)),
            pkg.payload_offset,
            len,
        ));
    }
    let input = BufReader::with_capacity(
        256 << 10,
        ReadFrom {
            file: &file,
            pos: pkg.payload_offset,
        },
    );
    let spool = compression::spool(input, format, &format!("{label} (payload)"), limit)?;
    Ok((spool.archive, 0, spool.len))
}

/// `./usr/bin/x`, `usr/bin/x` or `/usr/bin/x` as the header's `/usr/bin/x`.
fn payload_name(name: &[u8]) -> Vec<u8> {
    let rest = name.strip_prefix(b".").unwrap_or(name);
    let rest = rest.strip_prefix(b"/").unwrap_or(rest);
    let mut out = Vec::with_capacity(rest.len() + 1);
    out.push(b'/');
    out.extend_from_slice(rest);
    out
}

/// The member of a hard-link group whose payload entry carries the data: the last one (rpm's
/// rule) that has the full size.
fn content_holder(group: &[usize], found: &[Option<Found>], size: u64) -> Option<Found> {
    group
        .iter()
        .rev()
        .filter_map(|&i| found[i])
        .find(|f| f.size == size)
}

/// The entry's metadata, with the owner names the accounts do not know yet (as root for now).
type MetaWithUnknown = (Meta, Option<Vec<u8>>, Option<Vec<u8>>);

fn meta_of(f: &RpmFile, accounts: &Accounts) -> Result<MetaWithUnknown, String> {
    let uid = accounts.uid(&f.user);
    let gid = accounts.gid(&f.group);
    let mut meta = Meta {
        mode: f.mode & 0o7777,
        uid: uid.unwrap_or(0),
        gid: gid.unwrap_or(0),
        mtime: i64::from(f.mtime),
        xattrs: Vec::new(),
    };
    if let Some(text) = &f.caps {
        if u32::from(f.mode) & mode::FMT == mode::REG {
            let value =
                caps::to_xattr(text).map_err(|e| format!("file capabilities {text:?}: {e}"))?;
            meta.set_xattr(caps::XATTR_NAME.to_vec(), value);
        }
    }
    Ok((
        meta,
        uid.is_none().then(|| f.user.clone()),
        gid.is_none().then(|| f.group.clone()),
    ))
}

fn note(report: &mut LayerReport, pkg: &RpmPackage) {
    if !pkg.install_scriptlets.is_empty() {
        report.notes.push(format!(
            "{}: scriptlets not run: {}",
            pkg.nevra(),
            pkg.install_scriptlets.join(", ")
        ));
    }
}
