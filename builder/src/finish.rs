//! The finishing step: what the build itself adds to the assembled tree, then the digest.
//!
//! Added to every image, so every target carries the same tree: the identity files from the
//! definition, the benchmark init at `/sbin/imgbuild-init` with `/sbin/init` pointing at it, the
//! workload profile, the kernel and initramfs under `/boot` when there is one, and the files that
//! name the root filesystem by UUID (fstab, boot loader configs).
//!
//! The UUID is derived from the image name and the digest of the tree as it is before the UUID
//! is written into it (those files rendered with the nil UUID); then the UUID-bearing files are
//! rendered for real and the final rootfs digest is taken. `/etc/imgbuild/build.json` records
//! that digest and is itself left out of it.

use std::path::Path;
use std::sync::Arc;

use imgbuild_init::digest::{RootfsDigest, BUILD_INFO_PATH};
use imgbuild_init::profile::Profile;
use sha2::{Digest as _, Sha256};

use crate::definition::Definition;
use crate::sources::builtin::text_file;
use crate::tree::{
    hash_contents, tree_digest, Content, ContentError, FileData, Inode, Kind, Meta, Tree,
    TreeError, UnhashedFile,
};

/// A failure while finishing the tree.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// A generated entry could not be placed.
    #[error("cannot place {path}: {source}")]
    Place {
        /// The tree path.
        path: String,
        /// Why.
        #[source]
        source: TreeError,
    },
    /// The init binary cannot be read.
    #[error("cannot read the init binary {path}: {source}")]
    Init {
        /// Its host path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file's content cannot be read while hashing.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Internal: a file was not hashed.
    #[error(transparent)]
    Unhashed(#[from] UnhashedFile),
    /// The workload profile is unknown or invalid.
    #[error("workloads: {0}")]
    Profile(#[from] imgbuild_init::profile::ProfileError),
    /// A file of the `[el]` table.
    #[error(transparent)]
    El(#[from] crate::el::ElError),
    /// A UUID in the definition is malformed.
    #[error("filesystem.{key} {value:?} is not a UUID (8-4-4-4-12 hex digits)")]
    BadUuid {
        /// `uuid` or `hash_seed`.
        key: &'static str,
        /// The text given.
        value: String,
    },
}

/// Files that name the root filesystem by UUID, rendered for a given UUID string.
pub type UuidFiles<'a> = &'a dyn Fn(&str) -> Vec<(String, Vec<u8>)>;

/// What finishing needs besides the tree.
pub struct FinishInputs<'a> {
    /// The definition.
    pub definition: &'a Definition,
    /// The static init binary (checked by the caller).
    pub init_binary: &'a Path,
    /// Kernel and initramfs to place under /boot.
    pub boot: Option<&'a BootFiles>,
    /// UUID-bearing files beyond fstab (boot loader configs).
    pub uuid_files: UuidFiles<'a>,
    /// Time for generated entries.
    pub mtime: i64,
    /// SOURCE_DATE_EPOCH: every later mtime is clamped to it.
    pub clamp: Option<i64>,
}

/// Kernel and initramfs for the VM targets.
#[derive(Debug, Clone)]
pub struct BootFiles {
    /// Kernel release (`6.1.0-28-cloud-amd64`).
    pub version: String,
    /// The kernel image.
    pub kernel: FileData,
    /// The initramfs bytes.
    pub initrd: Arc<[u8]>,
}

impl BootFiles {
    /// Path of the kernel inside the tree.
    pub fn kernel_path(&self) -> String {
        format!("/boot/vmlinuz-{}", self.version)
    }

    /// Path of the initramfs inside the tree.
    pub fn initrd_path(&self) -> String {
        format!("/boot/initrd.img-{}", self.version)
    }
}

/// The finished tree and the identity derived from it.
pub struct Finished {
    /// The tree, every file hashed.
    pub tree: Tree,
    /// The rootfs digest.
    pub digest: RootfsDigest,
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// What the finishing step changed beyond the always-added files, for the build log.
    pub notes: Vec<String>,
}

/// Where the init binary goes, and the profile file.
pub const INIT_PATH: &str = "/sbin/imgbuild-init";
/// The workload profile the guest reads.
pub const PROFILE_PATH: &str = imgbuild_init::profile::PROFILE_PATH;

/// Adds the build's own entries, hashes everything and derives UUID and digest.
pub fn finish(mut tree: Tree, inputs: &FinishInputs<'_>) -> Result<Finished, FinishError> {
    let def = inputs.definition;
    tree.begin_layer();
    for (path, bytes) in identity_files(def) {
        place(&mut tree, &path, text_file(&bytes, 0o644, inputs.mtime))?;
    }
    let notes = crate::el::apply(&mut tree, def, inputs.mtime)?;
    place_init(&mut tree, inputs)?;
    let profile = serde_json::to_vec_pretty(&chosen_profile(def)?).unwrap_or_default();
    place(
        &mut tree,
        PROFILE_PATH,
        text_file(&profile, 0o644, inputs.mtime),
    )?;
    if let Some(boot) = inputs.boot {
        let mut kernel = Inode::new(
            Meta::root(0o644, inputs.mtime),
            Kind::File(boot.kernel.clone()),
        );
        kernel.meta.mtime = inputs.mtime;
        place(&mut tree, &boot.kernel_path(), kernel)?;
        let initrd = Inode::new(
            Meta::root(0o644, inputs.mtime),
            Kind::File(FileData {
                size: boot.initrd.len() as u64,
                content: Content::Bytes(boot.initrd.clone()),
                sha256: None,
            }),
        );
        place(&mut tree, &boot.initrd_path(), initrd)?;
    }
    if let Some(epoch) = inputs.clamp {
        clamp_mtimes(&mut tree, epoch);
    }

    let render = |tree: &mut Tree, uuid: &str| -> Result<(), FinishError> {
        let mut files = (inputs.uuid_files)(uuid);
        if def.filesystem.fstab {
            files.push((
                "/etc/fstab".into(),
                fstab(tree, uuid, def.filesystem.fs.name()),
            ));
        }
        for (path, bytes) in files {
            place(tree, &path, text_file(&bytes, 0o644, inputs.mtime))?;
        }
        Ok(())
    };

    let nil = "00000000-0000-0000-0000-000000000000";
    render(&mut tree, nil)?;
    hash_contents(&mut tree, &|_| {})?;
    let before = tree_digest(&tree)?;
    let uuid = match &def.filesystem.uuid {
        Some(text) => parse_uuid(text).ok_or_else(|| FinishError::BadUuid {
            key: "uuid",
            value: text.clone(),
        })?,
        None => derive_uuid(b"fs-uuid", &def.name, &before),
    };
    let hash_seed = match &def.filesystem.hash_seed {
        Some(text) => parse_uuid(text).ok_or_else(|| FinishError::BadUuid {
            key: "hash_seed",
            value: text.clone(),
        })?,
        None => derive_uuid(b"hash-seed", &def.name, &before),
    };
    render(&mut tree, &format_uuid(&uuid))?;
    hash_contents(&mut tree, &|_| {})?;
    let digest = tree_digest(&tree)?;

    let info = serde_json::json!({
        "image": def.name,
        "rootfs_digest": digest,
        "fs_uuid": format_uuid(&uuid),
        "fs_type": def.filesystem.fs.name(),
        "imgbuild_version": env!("CARGO_PKG_VERSION"),
    });
    let info = serde_json::to_vec_pretty(&info).unwrap_or_default();
    place(
        &mut tree,
        BUILD_INFO_PATH,
        text_file(&info, 0o644, inputs.mtime),
    )?;
    hash_contents(&mut tree, &|_| {})?;
    Ok(Finished {
        tree,
        digest,
        uuid,
        hash_seed,
        notes,
    })
}

/// The profile the definition chooses: one of its own `[workloads.profiles.NAME]`, or a
/// built-in one; validated here so that a bad profile fails the build, not the guest.
fn chosen_profile(def: &Definition) -> Result<Profile, FinishError> {
    let name = &def.workloads.profile;
    match def.workloads.profiles.get(name) {
        Some(table) => {
            let mut value = serde_json::to_value(table).unwrap_or_default();
            if let Some(map) = value.as_object_mut() {
                map.entry("name")
                    .or_insert_with(|| serde_json::Value::String(name.clone()));
            }
            Ok(Profile::from_value(
                value,
                &format!("workloads.profiles.{name}"),
            )?)
        }
        None => Ok(Profile::builtin(name)?),
    }
}

/// Places `inode` at `path`, following symlinked parent directories inside the tree
/// (`/sbin` → `usr/sbin` on merged-/usr roots).
fn place(tree: &mut Tree, path: &str, inode: Inode) -> Result<(), FinishError> {
    let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
    let target = match tree.resolve(parent.as_bytes()) {
        Some(mut dir) => {
            if dir != b"/" {
                dir.push(b'/');
            } else {
                dir.clear();
                dir.push(b'/');
            }
            dir.extend_from_slice(name.as_bytes());
            dir
        }
        None => path.as_bytes().to_vec(),
    };
    tree.insert(&target, inode)
        .map(|_| ())
        .map_err(|source| FinishError::Place {
            path: path.to_string(),
            source,
        })
}

fn place_init(tree: &mut Tree, inputs: &FinishInputs<'_>) -> Result<(), FinishError> {
    let path = inputs.init_binary;
    let size = std::fs::metadata(path)
        .map_err(|source| FinishError::Init {
            path: path.display().to_string(),
            source,
        })?
        .len();
    let init = Inode::new(
        Meta::root(0o755, inputs.mtime),
        Kind::File(FileData {
            size,
            content: Content::HostFile(Arc::from(path)),
            sha256: None,
        }),
    );
    place(tree, INIT_PATH, init)?;
    let link = Inode::new(
        Meta::root(0o777, inputs.mtime),
        Kind::Symlink((*b"imgbuild-init").into()),
    );
    place(tree, "/sbin/init", link)
}

fn identity_files(def: &Definition) -> Vec<(String, Vec<u8>)> {
    let os = &def.os;
    let mut files = vec![(
        "/etc/hostname".to_string(),
        format!("{}\n", os.hostname).into_bytes(),
    )];
    if os.os_release {
        let pretty = os.pretty_name.clone().unwrap_or_else(|| match &os.version {
            Some(v) => format!("{} {v}", os.name),
            None => match &os.version_id {
                Some(v) => format!("{} {v}", os.name),
                None => os.name.clone(),
            },
        });
        let mut text = format!("NAME=\"{}\"\nID=\"{}\"\n", os.name, os.id);
        for (key, value) in [
            ("VERSION", &os.version),
            ("VERSION_ID", &os.version_id),
            ("ID_LIKE", &os.id_like),
        ] {
            if let Some(v) = value {
                text.push_str(&format!("{key}=\"{v}\"\n"));
            }
        }
        text.push_str(&format!("PRETTY_NAME=\"{pretty}\"\n"));
        files.push(("/etc/os-release".into(), text.into_bytes()));
    }
    if let Some(release) = &os.redhat_release {
        for path in std::iter::once("/etc/redhat-release")
            .chain(os.release_files.iter().map(String::as_str))
        {
            files.push((path.to_string(), format!("{release}\n").into_bytes()));
        }
    }
    files
}

/// The tree's fstab with its root line replaced by one naming `uuid`.
fn fstab(tree: &Tree, uuid: &str, fs_type: &str) -> Vec<u8> {
    let mut text = format!("UUID={uuid}\t/\t{fs_type}\tdefaults\t1 1\n");
    if let Some(id) = tree.lookup(b"/etc/fstab") {
        if let Kind::File(data) = &tree.inode(id).kind {
            if data.size <= 1 << 20 {
                let mut buf = vec![0u8; data.size as usize];
                let readable = data
                    .content
                    .open(data.size, "/etc/fstab")
                    .ok()
                    .and_then(|r| r.read_exact_at(&mut buf, 0).ok());
                if readable.is_some() {
                    for line in String::from_utf8_lossy(&buf).lines() {
                        let mount_point = line.split_whitespace().nth(1);
                        if line.trim_start().starts_with('#') || mount_point != Some("/") {
                            text.push_str(line);
                            text.push('\n');
                        }
                    }
                }
            }
        }
    }
    text.into_bytes()
}

fn clamp_mtimes(tree: &mut Tree, epoch: i64) {
    let ids: Vec<_> = tree.walk().map(|(_, id)| id).collect();
    for id in ids {
        let meta = &mut tree.inode_mut(id).meta;
        meta.mtime = meta.mtime.min(epoch);
    }
}

/// A name-based UUID (RFC 9562 version 8) from the image name and the tree digest.
fn derive_uuid(purpose: &[u8], name: &str, digest: &RootfsDigest) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"imgbuild\0");
    h.update(purpose);
    h.update(b"\0");
    h.update(name.as_bytes());
    h.update(b"\0");
    h.update(digest.0);
    let full: [u8; 32] = h.finalize().into();
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&full[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x80;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    uuid
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let hex: String = uuid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Parses the 8-4-4-4-12 form.
pub fn parse_uuid(text: &str) -> Option<[u8; 16]> {
    let groups: Vec<&str> = text.split('-').collect();
    if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
        return None;
    }
    let hex: String = groups.concat();
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::load;

    fn inputs<'a>(def: &'a Definition, init: &'a Path) -> FinishInputs<'a> {
        FinishInputs {
            definition: def,
            init_binary: init,
            boot: None,
            uuid_files: &|uuid| {
                vec![(
                    "/boot/grub/grub.cfg".into(),
                    format!("root={uuid}\n").into_bytes(),
                )]
            },
            mtime: 100,
            clamp: Some(50),
        }
    }

    fn base_tree() -> Tree {
        let mut t = Tree::new(Meta::root(0o755, 0));
        crate::sources::builtin::apply(&mut t, 1000).unwrap();
        t.insert(
            b"/etc/fstab",
            text_file(
                b"# comment\n/dev/sda1 / ext4 defaults 0 0\nproc /proc proc defaults 0 0\n",
                0o644,
                0,
            ),
        )
        .unwrap();
        t
    }

    #[test]
    fn finishing_is_deterministic_and_uuid_lands_in_files() {
        let def = load(None, &[]).unwrap().definition;
        let init = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(init.path(), b"\x7fELF fake init").unwrap();
        let a = finish(base_tree(), &inputs(&def, init.path())).unwrap();
        let b = finish(base_tree(), &inputs(&def, init.path())).unwrap();
        assert_eq!(a.digest, b.digest);
        assert_eq!(a.uuid, b.uuid);
        assert_ne!(a.uuid, a.hash_seed);
        let uuid = format_uuid(&a.uuid);
        assert_eq!(parse_uuid(&uuid), Some(a.uuid));

        let read = |t: &Tree, p: &str| {
            let Kind::File(d) = &t.inode(t.lookup(p.as_bytes()).unwrap()).kind else {
                panic!()
            };
            let mut buf = vec![0; d.size as usize];
            d.content
                .open(d.size, p)
                .unwrap()
                .read_exact_at(&mut buf, 0)
                .unwrap();
            String::from_utf8(buf).unwrap()
        };
        let fstab = read(&a.tree, "/etc/fstab");
        assert!(
            fstab.starts_with(&format!("UUID={uuid}\t/\text4")),
            "{fstab}"
        );
        assert!(
            fstab.contains("proc /proc") && !fstab.contains("/dev/sda1"),
            "{fstab}"
        );
        assert!(read(&a.tree, "/boot/grub/grub.cfg").contains(&uuid));
        assert!(read(&a.tree, BUILD_INFO_PATH).contains(&a.digest.to_string()));
        assert!(
            matches!(&a.tree.inode(a.tree.lookup(b"/sbin/init").unwrap()).kind, Kind::Symlink(t) if &**t == b"imgbuild-init")
        );
        // Clamped to SOURCE_DATE_EPOCH.
        assert_eq!(
            a.tree
                .inode(a.tree.lookup(b"/etc/passwd").unwrap())
                .meta
                .mtime,
            50
        );

        // Another init binary changes the digest.
        std::fs::write(init.path(), b"\x7fELF other init").unwrap();
        let c = finish(base_tree(), &inputs(&def, init.path())).unwrap();
        assert_ne!(a.digest, c.digest);
    }

    #[test]
    fn init_goes_through_merged_usr() {
        let def = load(None, &[]).unwrap().definition;
        let init = tempfile::NamedTempFile::new().unwrap();
        let mut t = Tree::new(Meta::root(0o755, 0));
        t.insert(
            b"usr/sbin",
            Inode::new(Meta::root(0o755, 0), Kind::empty_dir()),
        )
        .unwrap();
        t.insert(
            b"sbin",
            Inode::new(Meta::root(0o777, 0), Kind::Symlink((*b"usr/sbin").into())),
        )
        .unwrap();
        let f = finish(t, &inputs(&def, init.path())).unwrap();
        assert!(f.tree.lookup(b"/usr/sbin/imgbuild-init").is_some());
        assert!(f.tree.lookup(b"/usr/sbin/init").is_some());
    }

    #[test]
    fn bad_uuid_in_definition() {
        let mut def = load(None, &[]).unwrap().definition;
        def.filesystem.uuid = Some("not-a-uuid".into());
        let init = tempfile::NamedTempFile::new().unwrap();
        assert!(matches!(
            finish(base_tree(), &inputs(&def, init.path())),
            Err(FinishError::BadUuid { .. })
        ));
    }
}
