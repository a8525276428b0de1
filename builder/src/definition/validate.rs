//! Checks of a loaded definition that its types cannot express: names that become file names,
//! values that go into config files, ranges. Each failure names the key.

use super::load::{DefinitionError, TOP_LEVEL};
use super::Definition;

pub(super) fn validate(d: &Definition, source: &str) -> Result<(), DefinitionError> {
    let invalid = |message: String| DefinitionError::Invalid {
        path: source.to_string(),
        message,
    };
    if d.name.is_empty()
        || !d
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        || d.name.starts_with('.')
    {
        return Err(invalid(format!(
            "name {:?}: use letters, digits, '.', '_' and '-' (it names files)",
            d.name
        )));
    }
    let mut names = std::collections::HashSet::new();
    for (i, layer) in d.layers.iter().enumerate() {
        let sources = [
            layer.builtin.unwrap_or(false),
            layer.dir.is_some(),
            layer.tar.is_some(),
            layer.rpm.is_some(),
            layer.deb.is_some(),
            layer.files.is_some(),
        ]
        .iter()
        .filter(|s| **s)
        .count();
        let label = layer
            .name
            .clone()
            .map(|n| format!("layer {i} ({n})"))
            .unwrap_or_else(|| format!("layer {i}"));
        if sources > 1 {
            return Err(invalid(format!(
                "{label} has more than one of builtin, dir, tar, rpm, deb, files; use one layer each"
            )));
        }
        if sources == 0 && layer.remove.is_none() {
            return Err(invalid(format!(
                "{label} has none of builtin, dir, tar, rpm, deb, files, remove"
            )));
        }
        if layer.owner.is_some() && layer.dir.is_none() && layer.tar.is_none() {
            return Err(invalid(format!(
                "{label}: owner applies to dir and tar layers only"
            )));
        }
        if let Some(name) = &layer.name {
            if TOP_LEVEL.contains(&name.as_str()) || !names.insert(name.clone()) {
                return Err(invalid(format!(
                    "{label}: the name {name:?} is taken (by another layer or a top-level key)"
                )));
            }
        }
    }
    if d.filesystem.label.len() > 16 {
        return Err(invalid(format!(
            "filesystem.label {:?} is longer than 16 bytes",
            d.filesystem.label
        )));
    }
    if d.filesystem.inode_ratio < 1024 || d.filesystem.inode_ratio > (64 << 20) {
        return Err(invalid(format!(
            "filesystem.inode_ratio {} must be between 1024 and 67108864",
            d.filesystem.inode_ratio
        )));
    }
    if !(0.0..=50.0).contains(&d.filesystem.reserved_percent) {
        return Err(invalid(
            "filesystem.reserved_percent must be 0 to 50".into(),
        ));
    }
    for path in &d.os.release_files {
        if !path.starts_with('/') || path.ends_with('/') || path.contains('\n') {
            return Err(invalid(format!(
                "os.release_files: {path:?} is not an absolute file path"
            )));
        }
    }
    if d.el.network_hostname && !is_hostname(&d.os.hostname) {
        return Err(invalid(format!(
            "os.hostname {:?} cannot go into /etc/sysconfig/network: use letters, digits, '-' and '.'",
            d.os.hostname
        )));
    }
    let interface = d.el.interface();
    if interface.is_empty()
        || interface.len() > 15
        || !interface
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(invalid(format!(
            "el.interface {interface:?}: an interface name is 1 to 15 letters, digits, '.', '_' or '-'"
        )));
    }
    if !matches!(d.xen.console.as_str(), "hvc0" | "xvc0" | "ttyS0" | "tty0") {
        return Err(invalid(format!(
            "xen.console {:?}: use hvc0 (pvops kernels) or xvc0 (EL5 kernel-xen)",
            d.xen.console
        )));
    }
    if d.vm.vcpus == 0 || d.vm.memory < 64 {
        return Err(invalid(
            "vm.vcpus must be at least 1 and vm.memory at least 64 (MiB)".into(),
        ));
    }
    Ok(())
}

fn is_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        for ok in ["sl6-bench", "node1.example.org", "a"] {
            assert!(is_hostname(ok), "{ok}");
        }
        for bad in ["", "bad name", "-lead", "a..b", "x;reboot", &"a".repeat(64)] {
            assert!(!is_hostname(bad), "{bad}");
        }
    }
}
