//! Assembling the root tree: the definition's layers, in order, each on top of the previous.

use crate::definition::{Definition, LayerSpec};
use crate::progress::Progress;
use crate::sources::{self, LayerReport, Owner};
use crate::tree::{Meta, Tree, TreeError};

/// Why a layer failed.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// The builtin root.
    #[error(transparent)]
    Builtin(#[from] TreeError),
    /// A host directory.
    #[error(transparent)]
    Dir(#[from] sources::dir::DirError),
    /// Inline files or removals.
    #[error(transparent)]
    Files(#[from] sources::files::FilesError),
    /// A tar archive.
    #[error(transparent)]
    Tar(#[from] sources::tar::TarError),
    /// RPM packages.
    #[error(transparent)]
    Rpm(#[from] sources::rpm::RpmError),
    /// Debian packages.
    #[error(transparent)]
    Deb(#[from] sources::deb::DebError),
    /// The layer itself is not usable.
    #[error("{0}")]
    Invalid(String),
}

/// A layer that cannot be applied, with its position and name.
#[derive(Debug, thiserror::Error)]
#[error("layer {index} ({label}): {source}")]
pub struct AssembleError {
    /// Position in the definition (0-based).
    pub index: usize,
    /// What the layer is (`tar /srv/sl6.tar.gz`).
    pub label: String,
    /// Why it failed.
    #[source]
    pub source: LayerError,
}

/// The assembled tree with what each layer reported.
pub struct Assembled {
    /// The root tree.
    pub tree: Tree,
    /// (layer label, report) in order.
    pub reports: Vec<(String, LayerReport)>,
}

/// A short description of a layer for logs and errors.
pub fn label(layer: &LayerSpec) -> String {
    let what = if layer.builtin == Some(true) {
        "builtin".to_string()
    } else if let Some(p) = &layer.dir {
        format!("dir {}", p.display())
    } else if let Some(p) = &layer.tar {
        format!("tar {}", p.display())
    } else if let Some(p) = &layer.rpm {
        format!("rpm {}", p.join(" "))
    } else if let Some(p) = &layer.deb {
        format!("deb {}", p.join(" "))
    } else if let Some(f) = &layer.files {
        format!("files ({} entries)", f.len())
    } else {
        "remove".to_string()
    };
    match &layer.name {
        Some(name) => format!("{name}: {what}"),
        None => what,
    }
}

/// Applies every layer of `definition`; `mtime` stamps generated entries.
pub fn assemble(
    definition: &Definition,
    mtime: i64,
    progress: &Progress,
) -> Result<Assembled, AssembleError> {
    let mut tree = Tree::new(Meta::root(0o755, mtime));
    tree.set_parent_meta(Meta::root(0o755, mtime));
    let mut reports = Vec::new();
    for (index, layer) in definition.layers.iter().enumerate() {
        let label = label(layer);
        let spinner = progress.spinner("layer");
        spinner.set_message(label.clone());
        tree.begin_layer();
        let report = apply_layer(&mut tree, layer, mtime).map_err(|source| AssembleError {
            index,
            label: label.clone(),
            source,
        })?;
        spinner.finish_and_clear();
        progress.log(format!(
            "layer {index} ({label}): {} entries",
            report.entries
        ));
        // Every package with what it placed, so a result traces to exact package builds.
        for p in &report.packages {
            progress.log(format!("  installed {} ({} files)", p.nevra, p.files));
        }
        for note in &report.notes {
            progress.log(format!("  {note}"));
        }
        reports.push((label, report));
    }
    Ok(Assembled { tree, reports })
}

fn apply_layer(tree: &mut Tree, layer: &LayerSpec, mtime: i64) -> Result<LayerReport, LayerError> {
    let owner: Option<Owner> = match &layer.owner {
        Some(text) => Some(text.parse().map_err(LayerError::Invalid)?),
        None => None,
    };
    let mut report = if layer.builtin == Some(true) {
        sources::builtin::apply(tree, mtime)?
    } else if let Some(dir) = &layer.dir {
        sources::dir::apply(tree, dir, owner)?
    } else if let Some(files) = &layer.files {
        sources::files::apply(tree, files, mtime)?
    } else if let Some(tar) = &layer.tar {
        sources::tar::apply(tree, tar, owner)?
    } else if let Some(patterns) = &layer.rpm {
        let packages = sources::rpm::expand_globs(patterns)?;
        sources::rpm::apply(tree, &packages)?
    } else if let Some(patterns) = &layer.deb {
        let packages = sources::deb::expand_globs(patterns)?;
        sources::deb::apply(tree, &packages)?
    } else {
        LayerReport::default()
    };
    if let Some(paths) = &layer.remove {
        let removed = sources::files::remove(tree, paths)?;
        report.notes.extend(removed.notes);
    }
    Ok(report)
}
