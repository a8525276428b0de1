//! A build output directory as the engines see it: the manifest, each target's files by role,
//! and the settings each package's own configuration carries (the QEMU script's `-smp`/`-m` and
//! `-append`, the xl config's `extra`, the `.vmx`, the OpenVZ conf sample).
//!
//! Engines boot exactly what the build wrote, so these configurations are read rather than
//! recomputed from a definition the output directory no longer has.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Component, Path, PathBuf};

use imgbuild_init::profile::{Profile, BUILTIN_NAMES, PROFILE_PATH};

use super::RunError;
use crate::disk::mbr;
use crate::ext4::reader::Ext4Image;
use crate::image_io::{ReadAt, Window};
use crate::manifest::{Manifest, Role};
use crate::vmdk::VmdkReader;

/// Configuration files larger than this are not ours.
const MAX_CONFIG: u64 = 1 << 20;

/// A build output directory.
#[derive(Debug, Clone)]
pub struct BuildDir {
    /// The directory, absolute.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

impl BuildDir {
    /// Reads `dir/manifest.json`.
    pub fn open(dir: &Path) -> Result<BuildDir, RunError> {
        let dir = std::path::absolute(dir).map_err(|source| RunError::Io {
            path: dir.to_path_buf(),
            action: "resolve",
            source,
        })?;
        let manifest = Manifest::read(&dir)?;
        Ok(BuildDir { dir, manifest })
    }

    /// The files of `target` with `role`, absolute, in manifest order.
    pub fn files(&self, target: &str, role: Role) -> Result<Vec<PathBuf>, RunError> {
        let Some(files) = self.manifest.targets.get(target) else {
            return Err(RunError::MissingTarget {
                dir: self.dir.clone(),
                target: target.to_string(),
            });
        };
        files
            .files
            .iter()
            .filter(|f| f.role == role)
            .map(|f| self.inside(&f.path))
            .collect()
    }

    /// The first file of `target` with `role`.
    pub fn file(&self, target: &str, role: Role) -> Result<PathBuf, RunError> {
        self.files(target, role)?
            .into_iter()
            .next()
            .ok_or_else(|| RunError::BadBuild {
                dir: self.dir.clone(),
                message: format!("the {target} target lists no {role:?} file in the manifest"),
            })
    }

    /// The first config file of `target` whose name ends with `suffix`.
    pub fn config(&self, target: &str, suffix: &str) -> Result<PathBuf, RunError> {
        self.files(target, Role::Config)?
            .into_iter()
            .find(|p| p.to_string_lossy().ends_with(suffix))
            .ok_or_else(|| RunError::BadBuild {
                dir: self.dir.clone(),
                message: format!("the {target} target has no *{suffix} config file"),
            })
    }

    /// `relative` under the output directory; a manifest path that leaves it is refused.
    fn inside(&self, relative: &str) -> Result<PathBuf, RunError> {
        let path = Path::new(relative);
        if path.is_absolute()
            || path
                .components()
                .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(RunError::BadBuild {
                dir: self.dir.clone(),
                message: format!("manifest path {relative:?} leaves the output directory"),
            });
        }
        Ok(self.dir.join(path))
    }

    /// A kernel of the build (for the KVM probe): the first kernel file of any target.
    pub fn any_kernel(&self) -> Option<PathBuf> {
        self.manifest.targets.keys().find_map(|t| {
            self.files(t, Role::Kernel)
                .ok()
                .and_then(|f| f.into_iter().next())
        })
    }

    /// The profile the image carries in /etc/imgbuild/profile.json, read from the first VM
    /// package's filesystem (Xen's bare image, QEMU's disk, VMware's VMDK).
    pub fn image_profile(&self) -> Result<Profile, RunError> {
        let bad = |message: String| RunError::BadBuild {
            dir: self.dir.clone(),
            message,
        };
        let bytes = if let Ok(rootfs) = self.file("xen", Role::Rootfs) {
            let file = open(&rootfs)?;
            read_profile(file).map_err(|e| bad(format!("{}: {e}", rootfs.display())))?
        } else if let Ok(disk) = self.file("qemu", Role::Disk) {
            let file = open(&disk)?;
            read_partition_profile(file).map_err(|e| bad(format!("{}: {e}", disk.display())))?
        } else if let Ok(vmdk) = self.file("vmware", Role::Disk) {
            let reader = VmdkReader::open(&vmdk).map_err(|e| bad(e.to_string()))?;
            read_partition_profile(reader).map_err(|e| bad(format!("{}: {e}", vmdk.display())))?
        } else {
            return Err(bad(
                "no xen, qemu or vmware package to read the image's profile from".into(),
            ));
        };
        let text = String::from_utf8_lossy(&bytes);
        Profile::from_json(&text, PROFILE_PATH).map_err(|e| bad(e.to_string()))
    }

    /// Checks a `--profile` request against what the image can run: a built-in profile or the
    /// image's own.
    pub fn check_profile(&self, requested: &str) -> Result<(), RunError> {
        if BUILTIN_NAMES.contains(&requested) {
            return Ok(());
        }
        let image = self.image_profile()?;
        if image.name == requested {
            Ok(())
        } else {
            Err(RunError::Usage(format!(
                "profile {requested:?} is neither built in ({}) nor the image's own ({:?})",
                BUILTIN_NAMES.join(", "),
                image.name
            )))
        }
    }
}

fn open(path: &Path) -> Result<File, RunError> {
    File::open(path).map_err(|source| RunError::Io {
        path: path.to_path_buf(),
        action: "open",
        source,
    })
}

fn read_profile(dev: impl ReadAt) -> Result<Vec<u8>, String> {
    let image = Ext4Image::open(dev).map_err(|e| format!("ext4: {e}"))?;
    image
        .read_file(PROFILE_PATH.as_bytes())
        .map_err(|e| format!("{PROFILE_PATH}: {e}"))
}

fn read_partition_profile(disk: impl ReadAt) -> Result<Vec<u8>, String> {
    let partitions = mbr::read_partitions(&disk).map_err(|e| e.to_string())?;
    let first = partitions.first().ok_or("no partition in the MBR")?;
    read_profile(Window::new(disk, first.start_bytes(), first.len_bytes()))
}

/// Reads a small text configuration file.
pub fn read_config(path: &Path) -> Result<String, RunError> {
    let file = open(path)?;
    let len = file
        .metadata()
        .map_err(|source| RunError::Io {
            path: path.to_path_buf(),
            action: "stat",
            source,
        })?
        .len();
    if len > MAX_CONFIG {
        return Err(RunError::BadBuild {
            dir: path.to_path_buf(),
            message: format!("{len} bytes is too large for a configuration file"),
        });
    }
    std::fs::read_to_string(path).map_err(|source| RunError::Io {
        path: path.to_path_buf(),
        action: "read",
        source,
    })
}

/// Splits a POSIX shell command line into words: plain words, '…' and "…" quoting, and
/// backslash escapes (enough for the scripts the packagers write).
pub fn shell_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated \"".into()),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    word.push(c);
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// What the QEMU package's script says.
#[derive(Debug, Clone, PartialEq)]
pub struct QemuScript {
    /// `-smp`.
    pub cpus: Option<u32>,
    /// `-m`, MiB.
    pub memory_mb: Option<u32>,
    /// `-append`.
    pub cmdline: Option<String>,
}

/// Reads the `exec qemu-system-…` line of the QEMU package's script.
pub fn parse_qemu_script(text: &str) -> Result<QemuScript, String> {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix("exec "))
        .ok_or("no `exec qemu-system-…` line")?;
    let words = shell_words(line)?;
    let value = |flag: &str| {
        words
            .iter()
            .position(|w| w == flag)
            .and_then(|i| words.get(i + 1))
            .cloned()
    };
    Ok(QemuScript {
        cpus: value("-smp").and_then(|v| v.split(',').next()?.parse().ok()),
        memory_mb: value("-m").and_then(|v| v.trim_end_matches(['M', 'm']).parse().ok()),
        cmdline: value("-append"),
    })
}

/// `key = value` lines of an xl config, a `.vmx` or an OpenVZ conf sample; double quotes
/// around values are removed, `#` starts a comment line.
pub fn key_values(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        out.insert(key.trim().to_string(), value.replace("\\\"", "\""));
    }
    out
}

/// An OpenVZ resource size: pages (`131072`), or bytes with a K, M, G or T suffix; `unlimited`
/// is None. Returns bytes.
pub fn vz_size(text: &str) -> Result<Option<u64>, String> {
    let text = text.trim();
    if text == "unlimited" {
        return Ok(None);
    }
    let (digits, scale) = match text.char_indices().last() {
        Some((i, 'K' | 'k')) => (&text[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&text[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&text[..i], 1 << 30),
        Some((i, 'T' | 't')) => (&text[..i], 1 << 40),
        Some((i, 'P' | 'p')) => (&text[..i], 4096),
        _ => (text, 4096),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a number of pages or a size"))?;
    n.checked_mul(scale)
        .map(Some)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// The limit of a `barrier:limit` pair (or a single value).
pub fn vz_limit(text: &str) -> Result<Option<u64>, String> {
    vz_size(text.rsplit(':').next().unwrap_or(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_undo_shell_quote() {
        use crate::run::qemu::shell_quote;
        let words = [
            "a b",
            "it's",
            "-append",
            "root=UUID=x console=ttyS0",
            "",
            "plain",
        ];
        let line: Vec<String> = words.iter().map(|w| shell_quote(w)).collect();
        assert_eq!(shell_words(&line.join(" ")).unwrap(), words);
        assert_eq!(
            shell_words(r#"x "a \"b\"" c\ d"#).unwrap(),
            ["x", "a \"b\"", "c d"]
        );
        assert!(shell_words("'open").is_err());
    }

    #[test]
    fn qemu_script_values() {
        let text = "#!/bin/sh\ncd x\nexec qemu-system-x86_64 -smp 2 -m 512 -append 'root=UUID=u ro console=ttyS0' -drive x\n";
        let s = parse_qemu_script(text).unwrap();
        assert_eq!(s.cpus, Some(2));
        assert_eq!(s.memory_mb, Some(512));
        assert_eq!(s.cmdline.as_deref(), Some("root=UUID=u ro console=ttyS0"));
        assert!(parse_qemu_script("#!/bin/sh\n").is_err());
    }

    #[test]
    fn key_value_files() {
        let kv = key_values("# c\nmemsize = \"512\"\nextra = \"a \\\"b\\\"\"\nCPUS=\"2\"\nnoise\n");
        assert_eq!(kv["memsize"], "512");
        assert_eq!(kv["extra"], "a \"b\"");
        assert_eq!(kv["CPUS"], "2");
        assert_eq!(kv.len(), 3);
    }

    #[test]
    fn openvz_sizes() {
        assert_eq!(vz_limit("0:512M").unwrap(), Some(512 << 20));
        assert_eq!(vz_limit("131072").unwrap(), Some(131072 * 4096));
        assert_eq!(vz_limit("1G:2G").unwrap(), Some(2 << 30));
        assert_eq!(vz_limit("unlimited").unwrap(), None);
        assert!(vz_limit("lots").is_err());
        assert!(vz_limit("99999999999999T").is_err());
    }
}
