//! `rpm = ["PATTERN", …]`: RPM packages, read natively (no rpm tool at build time).
//!
//! A package is a 96-byte lead, a signature header (padded to 8 bytes), the main header, and a
//! cpio payload compressed with gzip, xz, lzma, zstd, bzip2 or nothing. Everything that defines a
//! file comes from the main header, as rpm itself installs it: paths, modes, owners by name,
//! mtimes, symlink targets, device numbers, hard-link groups (FILEINODES/FILEDEVICES), %ghost
//! flags and file capabilities. The payload only supplies the bytes. Both package formats are
//! read: v4 (lead major 3, newc payload) and v6 (lead major 4, 64-bit sizes in LONGFILESIZES and a
//! "stripped" payload whose entries carry only a file index).
//!
//! Owner names become ids through the tree's own `/etc/passwd` and `/etc/group` at the moment
//! the package is applied; unknown names fall back to root and are reported. Scriptlets are
//! never run; they are listed in the layer's notes.

mod caps;
mod header;
mod install;

use std::fs::File;
use std::path::{Path, PathBuf};

pub use caps::to_xattr as capability_xattr;
use header::{At, HeaderBlock, LEAD_SIZE};
pub use install::{apply, apply_with_limit};

use super::compression::CompressionError;
use super::cpio::CpioError;
use crate::tree::TreeError;

/// Header tags used here (rpmtag.h).
mod tag {
    pub const NAME: u32 = 1000;
    pub const VERSION: u32 = 1001;
    pub const RELEASE: u32 = 1002;
    pub const EPOCH: u32 = 1003;
    pub const ARCH: u32 = 1022;
    pub const OLDFILENAMES: u32 = 1027;
    pub const FILESIZES: u32 = 1028;
    pub const FILEMODES: u32 = 1030;
    pub const FILERDEVS: u32 = 1033;
    pub const FILEMTIMES: u32 = 1034;
    pub const FILEDIGESTS: u32 = 1035;
    pub const FILELINKTOS: u32 = 1036;
    pub const FILEFLAGS: u32 = 1037;
    pub const FILEUSERNAME: u32 = 1039;
    pub const FILEGROUPNAME: u32 = 1040;
    pub const SOURCERPM: u32 = 1044;
    pub const FILEDEVICES: u32 = 1095;
    pub const FILEINODES: u32 = 1096;
    pub const DIRINDEXES: u32 = 1116;
    pub const BASENAMES: u32 = 1117;
    pub const DIRNAMES: u32 = 1118;
    pub const PAYLOADFORMAT: u32 = 1124;
    pub const PAYLOADCOMPRESSOR: u32 = 1125;
    pub const LONGFILESIZES: u32 = 5008;
    pub const FILECAPS: u32 = 5010;
}

/// Scriptlets: (script tag, interpreter tag, name, runs at install time).
const SCRIPTLETS: [(u32, u32, &str, bool); 12] = [
    (1151, 1153, "%pretrans", true),
    (1023, 1085, "%pre", true),
    (1024, 1086, "%post", true),
    (1152, 1154, "%posttrans", true),
    (1065, 1092, "%trigger", true),
    (5066, 5067, "%filetrigger", true),
    (5076, 5077, "%transfiletrigger", true),
    (1025, 1087, "%preun", false),
    (1026, 1088, "%postun", false),
    (5103, 5105, "%preuntrans", false),
    (5104, 5106, "%postuntrans", false),
    (1079, 1091, "%verifyscript", false),
];

/// `FILEFLAGS` bits.
pub mod file_flags {
    /// `%config`.
    pub const CONFIG: u32 = 1 << 0;
    /// `%doc`.
    pub const DOC: u32 = 1 << 1;
    /// `%ghost`: listed, owned, not in the payload, not created.
    pub const GHOST: u32 = 1 << 6;
}

/// An RPM layer or package that cannot be read or applied.
#[derive(Debug, thiserror::Error)]
pub enum RpmError {
    /// The package cannot be opened.
    #[error("cannot open RPM {path}: {source}")]
    Open {
        /// The package.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The lead or a header is invalid.
    #[error("cannot read RPM header of {path} at offset {offset}: {reason}")]
    Header {
        /// The package.
        path: PathBuf,
        /// Byte offset in the package.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The payload cannot be decompressed.
    #[error(transparent)]
    Decompress(#[from] CompressionError),
    /// The payload's cpio archive is invalid.
    #[error(transparent)]
    Cpio(#[from] CpioError),
    /// The payload disagrees with the header, or is of an unknown kind.
    #[error("bad payload of RPM {path}: {reason}")]
    Payload {
        /// The package.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The tree refused a file of the package.
    #[error("RPM {path}: cannot install {file}: {source}")]
    Tree {
        /// The package.
        path: PathBuf,
        /// The file's path in the package.
        file: String,
        /// Why.
        #[source]
        source: Box<TreeError>,
    },
    /// A file of the package cannot be installed for another reason.
    #[error("RPM {path}: cannot install {file}: {reason}")]
    File {
        /// The package.
        path: PathBuf,
        /// The file's path in the package.
        file: String,
        /// Why.
        reason: String,
    },
    /// The tree's account files cannot be read.
    #[error("RPM {path}: {reason}")]
    Accounts {
        /// The package being installed.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A glob pattern is malformed or cannot be expanded.
    #[error("package pattern {pattern:?}: {reason}")]
    Glob {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// A glob pattern matches no file.
    #[error("package pattern {0:?} matches no file")]
    NoMatch(String),
}

/// One file as the package header describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpmFile {
    /// Absolute path.
    pub path: Vec<u8>,
    /// `st_mode`: type and permission bits.
    pub mode: u16,
    /// Size in bytes (for symlinks, the target's length).
    pub size: u64,
    /// Owner name.
    pub user: Vec<u8>,
    /// Group name.
    pub group: Vec<u8>,
    /// Modification time.
    pub mtime: u32,
    /// Symlink target (empty for others).
    pub link_to: Vec<u8>,
    /// Device number of a device node, in the old 16-bit encoding.
    pub rdev: u16,
    /// Inode number within the package (hard links share it with the device).
    pub inode: u32,
    /// Device number within the package.
    pub device: u32,
    /// `FILEFLAGS` ([`file_flags`]).
    pub flags: u32,
    /// File capabilities in text form, when set.
    pub caps: Option<String>,
    /// Content digest as listed (hex), when listed.
    pub digest: Option<String>,
}

impl RpmFile {
    /// `%ghost`: not in the payload, not created.
    pub fn is_ghost(&self) -> bool {
        self.flags & file_flags::GHOST != 0
    }
}

/// What a package's header says.
#[derive(Debug, Clone)]
pub struct RpmPackage {
    /// The package file.
    pub path: PathBuf,
    /// 4 or 6.
    pub format_version: u8,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Release.
    pub release: String,
    /// Epoch, when set.
    pub epoch: Option<u32>,
    /// Architecture (`x86_64`, `noarch`; `src` for source packages).
    pub arch: String,
    /// Payload archive format (`cpio`).
    pub payload_format: String,
    /// Payload compressor as named by the header, if named.
    pub payload_compressor: Option<String>,
    /// Offset of the payload in the file.
    pub payload_offset: u64,
    /// Files in header order.
    pub files: Vec<RpmFile>,
    /// Scriptlets present (`%pre`, `%post`, …), with their interpreter when named.
    pub scriptlets: Vec<String>,
    /// Scriptlets that would run at install time.
    pub install_scriptlets: Vec<String>,
}

impl RpmPackage {
    /// `name-version-release.arch`.
    pub fn nevra(&self) -> String {
        format!(
            "{}-{}-{}.{}",
            self.name, self.version, self.release, self.arch
        )
    }
}

fn header_err(path: &Path) -> impl Fn(At) -> RpmError + '_ {
    move |e| RpmError::Header {
        path: path.to_path_buf(),
        offset: e.offset,
        reason: e.reason,
    }
}

/// Reads the lead and headers of the package at `path`.
pub fn read_package(path: &Path) -> Result<RpmPackage, RpmError> {
    let open_err = |source| RpmError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(open_err)?;
    let len = file.metadata().map_err(open_err)?.len();
    read_package_from(path, &file, len)
}

fn read_package_from(path: &Path, file: &File, len: u64) -> Result<RpmPackage, RpmError> {
    let herr = header_err(path);
    let lead = header::read_lead(file).map_err(&herr)?;
    let (_signature, signature_end) = HeaderBlock::read(file, LEAD_SIZE, len).map_err(&herr)?;
    let main_at = signature_end.next_multiple_of(8);
    let (h, payload_offset) = HeaderBlock::read(file, main_at, len).map_err(&herr)?;
    let text = |t: u32| -> Result<String, RpmError> {
        Ok(h.string(t).map_err(&herr)?.unwrap_or_default())
    };
    let name = text(tag::NAME)?;
    if name.is_empty() {
        return Err(herr(At {
            offset: main_at,
            reason: "the header has no package name".into(),
        }));
    }
    let arch = if h.has(tag::SOURCERPM) || !h.has(tag::ARCH) {
        text(tag::ARCH)?
    } else {
        "src".to_string()
    };
    let mut scriptlets = Vec::new();
    let mut install_scriptlets = Vec::new();
    for (script, prog, label, at_install) in SCRIPTLETS {
        if !h.has(script) && !h.has(prog) {
            continue;
        }
        let interpreter = h
            .strings(prog)
            .map_err(&herr)?
            .and_then(|p| p.into_iter().next())
            .map(|p| String::from_utf8_lossy(&p).into_owned());
        let shown = match interpreter {
            Some(i) => format!("{label} ({i})"),
            None => label.to_string(),
        };
        if at_install {
            install_scriptlets.push(shown.clone());
        }
        scriptlets.push(shown);
    }
    Ok(RpmPackage {
        path: path.to_path_buf(),
        format_version: if lead == 4 { 6 } else { 4 },
        name,
        version: text(tag::VERSION)?,
        release: text(tag::RELEASE)?,
        epoch: h
            .u32s(tag::EPOCH)
            .map_err(&herr)?
            .and_then(|e| e.first().copied()),
        arch,
        payload_format: text(tag::PAYLOADFORMAT)?,
        payload_compressor: h.string(tag::PAYLOADCOMPRESSOR).map_err(&herr)?,
        payload_offset,
        files: files(&h, main_at).map_err(&herr)?,
        scriptlets,
        install_scriptlets,
    })
}

/// The file list: every per-file array must have one value per file.
fn files(h: &HeaderBlock, main_at: u64) -> Result<Vec<RpmFile>, At> {
    let bad = |reason: String| At {
        offset: main_at,
        reason,
    };
    let paths: Vec<Vec<u8>> = if let Some(base) = h.strings(tag::BASENAMES)? {
        let dirs = h
            .strings(tag::DIRNAMES)?
            .ok_or_else(|| bad("BASENAMES without DIRNAMES".into()))?;
        let index = h
            .u32s(tag::DIRINDEXES)?
            .ok_or_else(|| bad("BASENAMES without DIRINDEXES".into()))?;
        if index.len() != base.len() {
            return Err(bad("DIRINDEXES and BASENAMES differ in length".into()));
        }
        base.into_iter()
            .zip(index)
            .map(|(b, i)| {
                let dir = dirs.get(i as usize).ok_or_else(|| {
                    bad(format!("DIRINDEXES names directory {i}, which is absent"))
                })?;
                let mut p = dir.clone();
                p.extend(b);
                Ok(p)
            })
            .collect::<Result<_, At>>()?
    } else {
        h.strings(tag::OLDFILENAMES)?.unwrap_or_default()
    };
    let n = paths.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    fn fit<T: Clone>(
        values: Option<Vec<T>>,
        n: usize,
        name: &str,
        default: Option<T>,
        bad: &dyn Fn(String) -> At,
    ) -> Result<Vec<T>, At> {
        match (values, default) {
            (Some(v), _) if v.len() == n => Ok(v),
            (Some(v), _) => Err(bad(format!("{name} has {} values for {n} files", v.len()))),
            (None, Some(d)) => Ok(vec![d; n]),
            (None, None) => Err(bad(format!("the header lists files but no {name}"))),
        }
    }
    let modes = fit(h.u16s(tag::FILEMODES)?, n, "FILEMODES", None, &bad)?;
    let sizes = match h.u64s(tag::LONGFILESIZES)? {
        Some(long) => fit(Some(long), n, "LONGFILESIZES", None, &bad)?,
        None => fit(
            h.u32s(tag::FILESIZES)?
                .map(|v| v.into_iter().map(u64::from).collect()),
            n,
            "FILESIZES",
            None,
            &bad,
        )?,
    };
    let root = b"root".to_vec();
    let users = fit(
        h.strings(tag::FILEUSERNAME)?,
        n,
        "FILEUSERNAME",
        Some(root.clone()),
        &bad,
    )?;
    let groups = fit(
        h.strings(tag::FILEGROUPNAME)?,
        n,
        "FILEGROUPNAME",
        Some(root),
        &bad,
    )?;
    let mtimes = fit(h.u32s(tag::FILEMTIMES)?, n, "FILEMTIMES", Some(0), &bad)?;
    let links = fit(
        h.strings(tag::FILELINKTOS)?,
        n,
        "FILELINKTOS",
        Some(Vec::new()),
        &bad,
    )?;
    let rdevs = fit(h.u16s(tag::FILERDEVS)?, n, "FILERDEVS", Some(0), &bad)?;
    let flags = fit(h.u32s(tag::FILEFLAGS)?, n, "FILEFLAGS", Some(0), &bad)?;
    let devices = fit(h.u32s(tag::FILEDEVICES)?, n, "FILEDEVICES", Some(0), &bad)?;
    // Without inode numbers no two files are links: number them apart.
    let inodes = match h.u32s(tag::FILEINODES)? {
        Some(v) => fit(Some(v), n, "FILEINODES", None, &bad)?,
        None => (1..=n as u32).collect(),
    };
    let optional = |t: u32, name: &str| -> Result<Vec<Option<Vec<u8>>>, At> {
        match h.strings(t)? {
            Some(v) if v.len() == n => Ok(v.into_iter().map(Some).collect()),
            Some(v) => Err(bad(format!("{name} has {} values for {n} files", v.len()))),
            None => Ok(vec![None; n]),
        }
    };
    let caps = optional(tag::FILECAPS, "FILECAPS")?;
    let digests = optional(tag::FILEDIGESTS, "FILEDIGESTS")?;
    let text = |v: Option<Vec<u8>>| {
        v.filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(&s).into_owned())
    };
    let mut out = Vec::with_capacity(n);
    for (i, path) in paths.into_iter().enumerate() {
        out.push(RpmFile {
            path,
            mode: modes[i],
            size: sizes[i],
            user: users[i].clone(),
            group: groups[i].clone(),
            mtime: mtimes[i],
            link_to: links[i].clone(),
            rdev: rdevs[i],
            inode: inodes[i],
            device: devices[i],
            flags: flags[i],
            caps: text(caps[i].clone()),
            digest: text(digests[i].clone()),
        });
    }
    Ok(out)
}

/// Expands glob patterns into package paths, sorted and without duplicates. A pattern that
/// matches nothing is an error (a typo must not silently drop packages).
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, RpmError> {
    let mut out = Vec::new();
    for pattern in patterns {
        let entries = glob::glob(pattern).map_err(|e| RpmError::Glob {
            pattern: pattern.clone(),
            reason: e.to_string(),
        })?;
        let before = out.len();
        for entry in entries {
            out.push(entry.map_err(|e| RpmError::Glob {
                pattern: pattern.clone(),
                reason: e.to_string(),
            })?);
        }
        if out.len() == before {
            return Err(RpmError::NoMatch(pattern.clone()));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

#[cfg(test)]
mod tests;
