//! Layers: each turns one kind of source into entries of the root tree.
//!
//! One module per source: [`builtin`] (the embedded minimal root), [`dir`] (a host directory),
//! [`files`] (inline entries), [`tar`], [`rpm`], [`deb`]; with [`cpio`] (RPM payloads) and
//! [`compression`] (gzip, xz, zstd, bzip2 detection) beneath them. Every reader treats its input
//! as untrusted: lengths are bounded, paths are checked by the tree, errors name file and offset.

mod accounts;
pub mod builtin;
pub mod compression;
pub mod cpio;
pub mod deb;
pub mod dir;
pub mod files;
mod place;
pub mod rpm;
pub mod tar;

use std::path::PathBuf;

/// `"UID:GID"` as given in a definition, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl std::str::FromStr for Owner {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("owner {s:?} is not UID:GID (numbers, e.g. \"0:0\")");
        let (u, g) = s.split_once(':').ok_or_else(bad)?;
        Ok(Owner {
            uid: u.trim().parse().map_err(|_| bad())?,
            gid: g.trim().parse().map_err(|_| bad())?,
        })
    }
}

/// What a layer reports for the build log and the manifest.
#[derive(Debug, Clone, Default)]
pub struct LayerReport {
    /// Entries placed.
    pub entries: u64,
    /// Packages installed (RPM, deb): `name-version-release.arch` and their files.
    pub packages: Vec<PackageRecord>,
    /// Things the log should tell: scriptlets not run, entries skipped.
    pub notes: Vec<String>,
}

/// One package installed by a layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PackageRecord {
    /// `name-version-release.arch` (RPM) or `name_version_arch` (deb).
    pub nevra: String,
    /// The package file.
    pub path: PathBuf,
    /// Number of files it placed.
    pub files: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_owner() {
        assert_eq!("0:0".parse::<Owner>().unwrap(), Owner { uid: 0, gid: 0 });
        assert_eq!(
            "70000:5".parse::<Owner>().unwrap(),
            Owner { uid: 70000, gid: 5 }
        );
        assert!("root:root".parse::<Owner>().is_err());
        assert!("1".parse::<Owner>().is_err());
    }
}
