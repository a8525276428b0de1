//! `/etc/imgbuild/build.json`: what the builder records in the image about itself.
//!
//! ```json
//! {"image": "minimal", "rootfs_digest": "sha256:…", "…": "other fields are kept, not read"}
//! ```
//! The file is left out of the rootfs digest ([`crate::digest::EXCLUDED_PATHS`]), since it
//! holds the digest.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::digest::RootfsDigest;

/// Largest build.json read.
const MAX_BYTES: u64 = 1 << 20;

/// The fields of build.json the guest reads; the builder may add more.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Image name (the definition's `name`).
    pub image: String,
    /// Rootfs digest of the tree the builder wrote.
    pub rootfs_digest: RootfsDigest,
    /// Any other fields, kept as they are.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl BuildInfo {
    /// Reads build.json of the image whose root is `root` (`/` in the guest).
    pub fn read(root: &Path) -> Result<BuildInfo, String> {
        let path = root.join(crate::digest::BUILD_INFO_PATH.trim_start_matches('/'));
        let err = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
        let len = std::fs::metadata(&path).map_err(|e| err(&e))?.len();
        if len > MAX_BYTES {
            return Err(err(&format!(
                "{len} bytes exceeds the limit of {MAX_BYTES}"
            )));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| err(&e))?;
        serde_json::from_str(&text).map_err(|e| err(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_two_fields_and_keeps_the_rest() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc/imgbuild")).unwrap();
        let digest = RootfsDigest([3; 32]);
        std::fs::write(
            root.path().join("etc/imgbuild/build.json"),
            format!(r#"{{"image":"minimal","rootfs_digest":"{digest}","builder":"0.1"}}"#),
        )
        .unwrap();
        let info = BuildInfo::read(root.path()).unwrap();
        assert_eq!(
            (info.image.as_str(), info.rootfs_digest),
            ("minimal", digest)
        );
        assert_eq!(info.other["builder"], "0.1");
        let err = BuildInfo::read(&root.path().join("none")).unwrap_err();
        assert!(err.contains("build.json"), "{err}");
    }
}
