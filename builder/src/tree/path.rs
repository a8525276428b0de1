//! Normalized paths inside the tree: no `.` or empty components, no `..`, names of at most 255
//! bytes, always relative to the root.

use super::TreeError;

/// Longest name a directory entry can hold.
pub const NAME_MAX: usize = 255;

/// A normalized path: components joined by `/`, without leading or trailing slash. The root is
/// the empty path.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TreePath(Vec<u8>);

/// Normalizes `path`: leading `/`, `./`, repeated and trailing slashes are dropped. A `..`
/// component, a NUL byte or a name over 255 bytes is an error.
pub fn normalize(path: &[u8]) -> Result<TreePath, TreeError> {
    let shown = || String::from_utf8_lossy(path).into_owned();
    if path.contains(&0) {
        return Err(TreeError::BadPath {
            path: shown(),
            reason: "it contains a NUL byte",
        });
    }
    let mut out = Vec::with_capacity(path.len());
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" | b"." => continue,
            b".." => {
                return Err(TreeError::BadPath {
                    path: shown(),
                    reason: "it contains a `..` component",
                })
            }
            name if name.len() > NAME_MAX => {
                return Err(TreeError::NameTooLong {
                    path: shown(),
                    len: name.len(),
                })
            }
            name => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(name);
            }
        }
    }
    Ok(TreePath(out))
}

impl TreePath {
    /// The root.
    pub fn root() -> TreePath {
        TreePath(Vec::new())
    }

    /// The components, root first.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> {
        self.0.split(|&b| b == b'/').filter(|c| !c.is_empty())
    }

    /// The last component; `None` for the root.
    pub fn file_name(&self) -> Option<&[u8]> {
        self.components().last()
    }

    /// The path without its last component.
    pub fn parent(&self) -> TreePath {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => TreePath(self.0[..i].to_vec()),
            None => TreePath::root(),
        }
    }

    /// The normalized bytes, relative (no leading slash).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The absolute form, `/a/b`.
    pub fn absolute(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        out.push(b'/');
        out.extend_from_slice(&self.0);
        out
    }

    /// The first `n` components as an absolute path, for messages.
    pub fn prefix_display(&self, n: usize) -> String {
        let parts: Vec<&[u8]> = self.components().take(n).collect();
        format!("/{}", String::from_utf8_lossy(&parts.join(&b'/')))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize(b"/a//b/./c/").unwrap().as_bytes(), b"a/b/c");
        assert_eq!(normalize(b"./").unwrap(), TreePath::root());
        assert_eq!(normalize(b"a/b").unwrap().parent().as_bytes(), b"a");
        assert_eq!(normalize(b"a").unwrap().parent(), TreePath::root());
        assert_eq!(normalize(b"a/b").unwrap().absolute(), b"/a/b");
        assert_eq!(normalize(b"x/y/z").unwrap().prefix_display(2), "/x/y");
    }

    #[test]
    fn rejects() {
        assert!(normalize(b"a/../b").is_err());
        assert!(normalize(b"a\0b").is_err());
        assert!(normalize(&[b'x'; 256]).is_err());
    }
}
