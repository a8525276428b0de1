//! User and group names of the root being built, from its own `/etc/passwd` and `/etc/group`.
//!
//! Packages name owners (`jane`, `bob`); rpm and dpkg turn names into ids through the target
//! root's account databases at install time, so we read the files the tree holds at that moment,
//! never the build host's.

use std::collections::HashMap;

use crate::tree::{Kind, Tree};

/// Largest account file read; real ones are kilobytes.
const MAX_FILE: u64 = 16 << 20;

/// An account file of the tree that cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountsError {
    /// The content cannot be read.
    #[error("cannot read {path} of the tree: {source}")]
    Read {
        /// The tree path.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is implausibly large.
    #[error("{path} of the tree is {size} bytes long; refusing to parse more than {MAX_FILE}")]
    TooLarge {
        /// The tree path.
        path: &'static str,
        /// Its size.
        size: u64,
    },
}

/// Name → id maps of one moment of the tree.
#[derive(Debug, Default, Clone)]
pub(crate) struct Accounts {
    users: HashMap<Vec<u8>, u32>,
    groups: HashMap<Vec<u8>, u32>,
}

impl Accounts {
    /// Reads `/etc/passwd` and `/etc/group` from `tree`; missing files give empty maps.
    pub fn from_tree(tree: &Tree) -> Result<Accounts, AccountsError> {
        Ok(Accounts {
            users: parse(&read(tree, "/etc/passwd")?),
            groups: parse(&read(tree, "/etc/group")?),
        })
    }

    /// The uid of `name`; `root` is 0 even without a passwd file, as in rpm.
    pub fn uid(&self, name: &[u8]) -> Option<u32> {
        lookup(&self.users, name)
    }

    /// The gid of `name`; `root` is 0 even without a group file.
    pub fn gid(&self, name: &[u8]) -> Option<u32> {
        lookup(&self.groups, name)
    }
}

fn lookup(map: &HashMap<Vec<u8>, u32>, name: &[u8]) -> Option<u32> {
    map.get(name)
        .copied()
        .or_else(|| (name == b"root").then_some(0))
}

fn read(tree: &Tree, path: &'static str) -> Result<Vec<u8>, AccountsError> {
    let Some(id) = tree.lookup(path.as_bytes()) else {
        return Ok(Vec::new());
    };
    let Kind::File(data) = &tree.inode(id).kind else {
        return Ok(Vec::new());
    };
    if data.size > MAX_FILE {
        return Err(AccountsError::TooLarge {
            path,
            size: data.size,
        });
    }
    let err = |source| AccountsError::Read { path, source };
    let reader = data
        .content
        .open(data.size, path)
        .map_err(|e| err(e.source))?;
    let mut out = vec![0u8; data.size as usize];
    reader.read_exact_at(&mut out, 0).map_err(err)?;
    Ok(out)
}

/// `name:x:id:...` lines; the first entry of a name wins, as with getpwnam.
fn parse(text: &[u8]) -> HashMap<Vec<u8>, u32> {
    let mut map = HashMap::new();
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        if name.is_empty() || name.starts_with(b"+") || name.starts_with(b"-") {
            continue;
        }
        let Some(id) = std::str::from_utf8(id).ok().and_then(|s| s.parse().ok()) else {
            continue;
        };
        map.entry(name.to_vec()).or_insert(id);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{Content, FileData, Inode, Meta};
    use std::sync::Arc;

    fn file(text: &str) -> Inode {
        Inode::new(
            Meta::root(0o644, 0),
            Kind::File(FileData {
                size: text.len() as u64,
                content: Content::Bytes(Arc::from(text.as_bytes())),
                sha256: None,
            }),
        )
    }

    #[test]
    fn reads_names_from_the_tree() {
        let mut tree = Tree::new(Meta::root(0o755, 0));
        let empty = Accounts::from_tree(&tree).unwrap();
        assert_eq!(empty.uid(b"root"), Some(0));
        assert_eq!(empty.uid(b"jane"), None);
        tree.insert(
            b"etc/passwd",
            file("root:x:0:0::/root:/bin/sh\njane:x:1001:1001::/:/bin/sh\njane:x:5:5\n+nis\nbad\n"),
        )
        .unwrap();
        tree.insert(b"etc/group", file("root:x:0:\nbob:x:2002:jane\n"))
            .unwrap();
        let a = Accounts::from_tree(&tree).unwrap();
        assert_eq!(a.uid(b"jane"), Some(1001));
        assert_eq!(a.gid(b"bob"), Some(2002));
        assert_eq!(a.gid(b"jane"), None);
        assert_eq!(a.uid(b"bad"), None);
    }
}
