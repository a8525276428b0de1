//! `files = [...]` and `remove = [...]`: inline entries written in the definition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{LayerReport, Owner};
use crate::definition::FileSpec;
use crate::tree::{Content, FileData, Inode, Kind, Meta, Tree, TreeError};

/// An inline entry that cannot be placed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The entry is not well formed.
    #[error("files entry {path:?}: {reason}")]
    Invalid {
        /// Its path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// Its `source` file cannot be read.
    #[error("files entry {path:?}: cannot read source {source_path}: {error}")]
    Source {
        /// Its path.
        path: String,
        /// The host file.
        source_path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The tree refused it.
    #[error("files entry {path:?}: {source}")]
    Tree {
        /// Its path.
        path: String,
        /// Why.
        #[source]
        source: TreeError,
    },
}

/// Places every entry of a `files` layer.
pub fn apply(tree: &mut Tree, specs: &[FileSpec], mtime: i64) -> Result<LayerReport, FilesError> {
    let mut report = LayerReport::default();
    for spec in specs {
        let inode = inode_for(spec, mtime)?;
        tree.insert(spec.path.as_bytes(), inode)
            .map_err(|source| FilesError::Tree {
                path: spec.path.clone(),
                source,
            })?;
        report.entries += 1;
    }
    Ok(report)
}

/// Deletes each path (with everything below it); a missing path is noted, not an error.
pub fn remove(tree: &mut Tree, paths: &[String]) -> Result<LayerReport, FilesError> {
    let mut report = LayerReport::default();
    for path in paths {
        let existed = tree
            .remove(path.as_bytes())
            .map_err(|source| FilesError::Tree {
                path: path.clone(),
                source,
            })?;
        if existed {
            report.entries += 1;
        } else {
            report
                .notes
                .push(format!("remove: {path} was not in the tree"));
        }
    }
    Ok(report)
}

fn inode_for(spec: &FileSpec, mtime: i64) -> Result<Inode, FilesError> {
    let invalid = |reason: String| FilesError::Invalid {
        path: spec.path.clone(),
        reason,
    };
    if !spec.path.starts_with('/') {
        return Err(invalid("the path must be absolute".into()));
    }
    let kind_name = match (&spec.kind, &spec.target) {
        (Some(k), _) => k.as_str(),
        (None, Some(_)) => "symlink",
        (None, None) => "file",
    };
    let kind = match kind_name {
        "file" => {
            let bytes: Arc<[u8]> = match (&spec.content, &spec.source) {
                (Some(_), Some(_)) => {
                    return Err(invalid("give content or source, not both".into()))
                }
                (Some(text), None) => Arc::from(text.as_bytes()),
                (None, Some(source)) => {
                    return host_file(spec, source, mtime);
                }
                (None, None) => Arc::from(&[][..]),
            };
            Kind::File(FileData {
                size: bytes.len() as u64,
                content: Content::Bytes(bytes),
                sha256: None,
            })
        }
        "dir" | "directory" => Kind::empty_dir(),
        "symlink" => Kind::Symlink(
            spec.target
                .as_deref()
                .ok_or_else(|| invalid("a symlink needs target".into()))?
                .as_bytes()
                .into(),
        ),
        "fifo" => Kind::Fifo,
        "char" | "block" => {
            let (Some(major), Some(minor)) = (spec.major, spec.minor) else {
                return Err(invalid("a device needs major and minor".into()));
            };
            if kind_name == "char" {
                Kind::CharDevice { major, minor }
            } else {
                Kind::BlockDevice { major, minor }
            }
        }
        other => {
            return Err(invalid(format!(
                "type {other:?} is not one of file, dir, symlink, fifo, char, block"
            )))
        }
    };
    let default_mode = match kind {
        Kind::Directory(_) => 0o755,
        Kind::Symlink(_) => 0o777,
        _ => 0o644,
    };
    Ok(Inode::new(meta_for(spec, default_mode, mtime)?, kind))
}

fn host_file(spec: &FileSpec, source: &std::path::Path, mtime: i64) -> Result<Inode, FilesError> {
    let meta = std::fs::metadata(source).map_err(|error| FilesError::Source {
        path: spec.path.clone(),
        source_path: source.to_path_buf(),
        error,
    })?;
    if !meta.is_file() {
        return Err(FilesError::Invalid {
            path: spec.path.clone(),
            reason: format!("source {} is not a regular file", source.display()),
        });
    }
    Ok(Inode::new(
        meta_for(spec, 0o644, mtime)?,
        Kind::File(FileData {
            size: meta.len(),
            content: Content::HostFile(Arc::from(source)),
            sha256: None,
        }),
    ))
}

fn meta_for(spec: &FileSpec, default_mode: u16, mtime: i64) -> Result<Meta, FilesError> {
    let invalid = |reason: String| FilesError::Invalid {
        path: spec.path.clone(),
        reason,
    };
    let mode = match &spec.mode {
        None => default_mode,
        Some(toml::Value::Integer(i)) => u16::try_from(*i)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| {
                invalid(format!(
                    "mode {i} is out of range (write 0o644 or \"0644\")"
                ))
            })?,
        Some(toml::Value::String(s)) => u16::from_str_radix(s.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .ok_or_else(|| invalid(format!("mode {s:?} is not an octal mode such as \"0644\"")))?,
        Some(other) => return Err(invalid(format!("mode {other} is not a mode"))),
    };
    let owner: Owner = match &spec.owner {
        Some(o) => o.parse().map_err(invalid)?,
        None => Owner { uid: 0, gid: 0 },
    };
    let mut meta = Meta {
        mode,
        uid: owner.uid,
        gid: owner.gid,
        mtime,
        xattrs: Vec::new(),
    };
    for (name, value) in &spec.xattrs {
        meta.set_xattr(
            name.as_bytes().to_vec(),
            xattr_value(value).map_err(invalid)?,
        );
    }
    Ok(meta)
}

fn xattr_value(value: &str) -> Result<Vec<u8>, String> {
    let Some(hex) = value.strip_prefix("hex:") else {
        return Ok(value.as_bytes().to_vec());
    };
    if hex.len() % 2 != 0 {
        return Err(format!("xattr value {value:?}: odd number of hex digits"));
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&hex[i..i + 2], 16)
                .map_err(|_| format!("xattr value {value:?} is not hex"))
        })
        .collect()
}

/// An entry with only its path set, for entries built in code (the build's own files, tests).
pub fn spec(path: &str) -> FileSpec {
    FileSpec {
        path: path.into(),
        kind: None,
        content: None,
        source: None,
        target: None,
        mode: None,
        owner: None,
        major: None,
        minor: None,
        xattrs: BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_each_kind() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        let mut f = spec("/etc/motd");
        f.content = Some("hi\n".into());
        f.mode = Some(toml::Value::String("0600".into()));
        f.owner = Some("70000:5".into());
        f.xattrs
            .insert("security.capability".into(), "hex:0100000200200000".into());
        let mut l = spec("/bin/sh");
        l.target = Some("busybox".into());
        let mut d = spec("/dev/sda");
        d.kind = Some("block".into());
        (d.major, d.minor) = (Some(8), Some(0));
        apply(&mut t, &[f, l, d], 7).unwrap();
        let motd = t.inode(t.lookup(b"/etc/motd").unwrap());
        assert_eq!(
            (motd.meta.mode, motd.meta.uid, motd.meta.gid),
            (0o600, 70000, 5)
        );
        assert_eq!(motd.meta.xattrs[0].1, vec![1, 0, 0, 2, 0, 0x20, 0, 0]);
        assert!(matches!(
            t.inode(t.lookup(b"/bin/sh").unwrap()).kind,
            Kind::Symlink(_)
        ));
        assert!(matches!(
            t.inode(t.lookup(b"/dev/sda").unwrap()).kind,
            Kind::BlockDevice { major: 8, minor: 0 }
        ));
        assert_eq!(
            remove(&mut t, &["/bin".into(), "/nope".into()])
                .unwrap()
                .notes
                .len(),
            1
        );
        assert!(t.lookup(b"/bin/sh").is_none());
    }

    #[test]
    fn rejects_bad_entries() {
        let mut t = Tree::new(Meta::root(0o755, 0));
        let mut bad_mode = spec("/x");
        bad_mode.mode = Some(toml::Value::String("rwx".into()));
        assert!(apply(&mut t, &[bad_mode], 0).is_err());
        let mut dev = spec("/d");
        dev.kind = Some("char".into());
        assert!(apply(&mut t, &[dev], 0).is_err());
        assert!(apply(&mut t, &[spec("relative")], 0).is_err());
        let mut missing = spec("/m");
        missing.source = Some("/nonexistent/file".into());
        let e = apply(&mut t, &[missing], 0).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/file"), "{e}");
    }
}
