//! Checking, before a build starts its long steps, that every host file a definition names
//! exists. Loading never opens them (a definition with placeholder paths must load, so that
//! `--set rootfs.tar=PATH` can fill them in); a build must then fail at once, naming the key to
//! set, rather than after the kernel and initramfs are made.

use std::path::{Path, PathBuf};

use super::Definition;

/// A host file or directory a definition names that is not there.
#[derive(Debug, thiserror::Error)]
#[error("{key} = {}: {what} does not exist; give it with --set {key}=PATH", path.display())]
pub struct MissingInput {
    /// The key as `--set` addresses it (`rootfs.tar`, `layers.2.dir`, `kernel.rpm`).
    pub key: String,
    /// The path named.
    pub path: PathBuf,
    /// What should be there ("file", "directory").
    pub what: &'static str,
}

/// The first input of `definition` that is missing, if any. RPM and deb patterns with glob
/// characters are left to the layer, which reports a pattern matching nothing.
pub fn check_inputs(definition: &Definition) -> Result<(), MissingInput> {
    for (i, layer) in definition.layers.iter().enumerate() {
        let key = |field: &str| match &layer.name {
            Some(name) => format!("{name}.{field}"),
            None => format!("layers.{i}.{field}"),
        };
        if let Some(dir) = &layer.dir {
            need(dir, true, key("dir"))?;
        }
        if let Some(tar) = &layer.tar {
            need(tar, false, key("tar"))?;
        }
        for (field, patterns) in [("rpm", &layer.rpm), ("deb", &layer.deb)] {
            for pattern in patterns.iter().flatten() {
                if !pattern.contains(['*', '?', '[']) {
                    need(Path::new(pattern), false, key(field))?;
                }
            }
        }
        for file in layer.files.iter().flatten() {
            if let Some(source) = &file.source {
                need(source, false, key("files"))?;
            }
        }
    }
    if let Some(kernel) = &definition.kernel {
        for (field, path, dir) in [
            ("path", &kernel.path, false),
            ("modules", &kernel.modules, true),
            ("deb", &kernel.deb, false),
            ("rpm", &kernel.rpm, false),
        ] {
            if let Some(path) = path {
                need(path, dir, format!("kernel.{field}"))?;
            }
        }
    }
    Ok(())
}

fn need(path: &Path, dir: bool, key: String) -> Result<(), MissingInput> {
    let ok = if dir { path.is_dir() } else { path.is_file() };
    if ok {
        return Ok(());
    }
    Err(MissingInput {
        key,
        path: path.to_path_buf(),
        what: if dir { "the directory" } else { "the file" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::definition::{load, SetArg};

    #[test]
    fn names_the_key_to_set() {
        let dir = tempfile::tempdir().unwrap();
        let def_path = dir.path().join("d.toml");
        std::fs::write(
            &def_path,
            "name = \"x\"\n[[layers]]\nbuiltin = true\n[[layers]]\nname = \"rootfs\"\ntar = \"REQUIRED.tar.gz\"\n[[layers]]\nrpm = [\"pkgs/*.rpm\"]\n",
        )
        .unwrap();
        let d = load(Some(&def_path), &[]).unwrap().definition;
        let e = check_inputs(&d).unwrap_err();
        assert_eq!(e.key, "rootfs.tar");
        let text = e.to_string();
        assert!(text.contains("REQUIRED.tar.gz") && text.contains("--set rootfs.tar=PATH"));

        let tar = dir.path().join("root.tar");
        std::fs::write(&tar, b"").unwrap();
        let set: SetArg = format!("rootfs.tar={}", tar.display()).parse().unwrap();
        let mut d = load(Some(&def_path), &[set]).unwrap().definition;
        check_inputs(&d).unwrap();
        d.kernel = Some(crate::definition::KernelSpec {
            rpm: Some(dir.path().join("kernel.rpm")),
            ..Default::default()
        });
        let e = check_inputs(&d).unwrap_err();
        assert_eq!(e.key, "kernel.rpm");
        d.kernel = None;
        d.layers[0].dir = Some(tar.clone());
        d.layers[0].builtin = None;
        let e = check_inputs(&d).unwrap_err();
        assert_eq!((e.key.as_str(), e.what), ("layers.0.dir", "the directory"));
    }
}
