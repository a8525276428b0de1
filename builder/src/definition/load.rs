//! Loading a definition: the file (or the embedded default), `extends` chains, `--set` overrides,
//! relative paths, and validation, each failure named with the file and the key.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use toml::{Table, Value};

use super::validate::validate;
use super::Definition;

/// The embedded default image, `images/minimal.toml`.
pub const DEFAULT_DEFINITION: &str = include_str!("../../../images/minimal.toml");
const DEFAULT_NAME: &str = "<embedded images/minimal.toml>";
/// Largest definition file read.
const MAX_DEFINITION_BYTES: u64 = 1 << 20;

/// A definition that cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The file cannot be read.
    #[error("cannot read image definition {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed, or a key has the wrong type or is unknown.
    #[error("image definition {path}: {message}")]
    Invalid {
        /// The file (or the embedded default).
        path: String,
        /// What is wrong, with line and column when known.
        message: String,
    },
    /// `extends` leads back to a file already on the chain.
    #[error("image definition {path} extends itself through: {chain}")]
    Cycle {
        /// The file where the cycle closes.
        path: PathBuf,
        /// The chain of files.
        chain: String,
    },
    /// A `--set` argument cannot be applied.
    #[error("--set {arg}: {reason}")]
    BadSet {
        /// The argument as given.
        arg: String,
        /// What is wrong.
        reason: String,
    },
}

/// One `--set KEY=VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct SetArg {
    /// Dotted key: `filesystem.size`, `kernel.rpm`, `LAYERNAME.tar`, `layers.0.dir`.
    pub key: String,
    /// The value as typed.
    pub value: String,
}

impl FromStr for SetArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not KEY=VALUE"))?;
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(format!("{s:?}: the key is empty or has an empty part"));
        }
        Ok(SetArg {
            key: key.to_string(),
            value: value.to_string(),
        })
    }
}

impl std::fmt::Display for SetArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// A loaded, validated definition.
#[derive(Debug, Clone)]
pub struct LoadedDefinition {
    /// The definition, with every host path absolute.
    pub definition: Definition,
    /// Where it came from, for messages.
    pub source: String,
}

/// Loads `path`, or the embedded default when `None`, then applies `sets` in order.
pub fn load(path: Option<&Path>, sets: &[SetArg]) -> Result<LoadedDefinition, DefinitionError> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let (table, source) = match path {
        Some(p) => (load_chain(p, &mut Vec::new())?, p.display().to_string()),
        None => (
            parse_table(DEFAULT_DEFINITION, DEFAULT_NAME, &cwd)?,
            DEFAULT_NAME.to_string(),
        ),
    };
    let base_ok = deserialize(&table, &source).is_ok();
    let mut current = table;
    for set in sets {
        let mut typed = current.clone();
        apply_set(&mut typed, set, &cwd, false)?;
        if !base_ok {
            current = typed;
            continue;
        }
        match deserialize(&typed, &source) {
            Ok(_) => current = typed,
            Err(typed_error) => {
                // A value that looked like a number or a boolean may have been meant as text.
                let mut text = current.clone();
                apply_set(&mut text, set, &cwd, true)?;
                if deserialize(&text, &source).is_err() {
                    return Err(DefinitionError::BadSet {
                        arg: set.to_string(),
                        reason: set_message(&typed).unwrap_or_else(|| message_of(typed_error)),
                    });
                }
                current = text;
            }
        }
    }
    let definition = deserialize(&current, &source)?;
    validate(&definition, &source)?;
    Ok(LoadedDefinition { definition, source })
}

fn message_of(e: DefinitionError) -> String {
    match e {
        DefinitionError::Invalid { message, .. } => message,
        other => other.to_string(),
    }
}

/// toml's message without its excerpt: the excerpt would show a line of the merged definition
/// re-serialized, which is no file the user wrote.
fn set_message(table: &Table) -> Option<String> {
    let text = toml::to_string(table).ok()?;
    let err = toml::from_str::<Definition>(&text).err()?;
    Some(err.message().trim().to_string())
}

fn deserialize(table: &Table, source: &str) -> Result<Definition, DefinitionError> {
    // Going through text keeps toml's messages, which name the key and show the line.
    let text = toml::to_string(table).map_err(|e| DefinitionError::Invalid {
        path: source.to_string(),
        message: e.to_string(),
    })?;
    toml::from_str::<Definition>(&text).map_err(|e| DefinitionError::Invalid {
        path: source.to_string(),
        message: e.to_string().trim_end().to_string(),
    })
}

fn parse_table(text: &str, source: &str, base: &Path) -> Result<Table, DefinitionError> {
    let mut table: Table = toml::from_str(text).map_err(|e| DefinitionError::Invalid {
        path: source.to_string(),
        message: e.to_string().trim_end().to_string(),
    })?;
    absolutize(&mut table, base);
    // Deserialize once here so that errors point at lines of this very file.
    if !table.contains_key("extends") {
        toml::from_str::<Definition>(text).map_err(|e| DefinitionError::Invalid {
            path: source.to_string(),
            message: e.to_string().trim_end().to_string(),
        })?;
    }
    Ok(table)
}

fn load_chain(path: &Path, chain: &mut Vec<PathBuf>) -> Result<Table, DefinitionError> {
    let canonical = path
        .canonicalize()
        .map_err(|source| DefinitionError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if chain.contains(&canonical) {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(canonical.display().to_string());
        return Err(DefinitionError::Cycle {
            path: path.to_path_buf(),
            chain: names.join(" -> "),
        });
    }
    let text = read_definition(&canonical).map_err(|source| DefinitionError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let base = canonical
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut table = parse_table(&text, &path.display().to_string(), &base)?;
    let Some(parent) = table.remove("extends") else {
        return Ok(table);
    };
    let Value::String(parent) = parent else {
        return Err(DefinitionError::Invalid {
            path: path.display().to_string(),
            message: "`extends` must be a path string".into(),
        });
    };
    chain.push(canonical);
    let mut merged = load_chain(&base.join(parent), chain)?;
    chain.pop();
    merge(&mut merged, table);
    Ok(merged)
}

/// Reads a definition file: a regular file of at most [`MAX_DEFINITION_BYTES`]. `extends` may
/// name any path, and `/dev/zero` or a FIFO would otherwise never end.
fn read_definition(path: &Path) -> std::io::Result<String> {
    use std::io::{Error, ErrorKind, Read};
    // Checked before opening: opening a FIFO for reading blocks until someone writes to it.
    if !std::fs::metadata(path)?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let file = std::fs::File::open(path)?;
    let mut text = String::new();
    file.take(MAX_DEFINITION_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_DEFINITION_BYTES {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("longer than {MAX_DEFINITION_BYTES} bytes; a definition is a small text file"),
        ));
    }
    Ok(text)
}

/// Child keys override the parent's; tables merge; `layers` of the child follow the parent's.
fn merge(parent: &mut Table, child: Table) {
    for (key, value) in child {
        match (parent.get_mut(&key), value) {
            (Some(Value::Array(base)), Value::Array(more)) if key == "layers" => base.extend(more),
            (Some(Value::Table(base)), Value::Table(more)) => merge(base, more),
            (_, value) => {
                parent.insert(key, value);
            }
        }
    }
}

/// Whether the value at this key path (with `*` for array indexes and layer names resolved to
/// `layers.*`) is a host path, resolved against the file's directory.
fn is_path_key(path: &[&str]) -> bool {
    matches!(
        path,
        ["layers", "*", "dir" | "tar" | "rpm" | "deb"]
            | ["layers", "*", "rpm" | "deb", "*"]
            | ["layers", "*", "files", "*", "source"]
            | ["kernel", "path" | "modules" | "deb" | "rpm"]
    )
}

fn absolutize(table: &mut Table, base: &Path) {
    fn walk(value: &mut Value, key: &mut Vec<String>, base: &Path) {
        let as_strs: Vec<&str> = key.iter().map(String::as_str).collect();
        if is_path_key(&as_strs) {
            if let Value::String(s) = value {
                *s = resolve(base, s);
            }
        }
        match value {
            Value::Table(t) => {
                for (k, v) in t.iter_mut() {
                    key.push(k.clone());
                    walk(v, key, base);
                    key.pop();
                }
            }
            Value::Array(items) => {
                for v in items {
                    key.push("*".into());
                    walk(v, key, base);
                    key.pop();
                }
            }
            _ => {}
        }
    }
    for (k, v) in table.iter_mut() {
        walk(v, &mut vec![k.clone()], base);
    }
}

fn resolve(base: &Path, s: &str) -> String {
    let p = Path::new(s);
    if p.is_absolute() || s.is_empty() {
        s.to_string()
    } else {
        base.join(p).display().to_string()
    }
}

pub(super) const TOP_LEVEL: [&str; 15] = [
    "name",
    "description",
    "source_date_epoch",
    "os",
    "el",
    "init",
    "filesystem",
    "layers",
    "kernel",
    "vm",
    "workloads",
    "xen",
    "openvz",
    "vmware",
    "qemu",
];

fn apply_set(
    table: &mut Table,
    set: &SetArg,
    cwd: &Path,
    as_string: bool,
) -> Result<(), DefinitionError> {
    let bad = |reason: String| DefinitionError::BadSet {
        arg: set.to_string(),
        reason,
    };
    let parts: Vec<&str> = set.key.split('.').collect();
    // Resolve the first part: a top-level key, or the name of a layer.
    let (mut current, rest, mut schema_path): (&mut Table, &[&str], Vec<&str>) =
        if TOP_LEVEL.contains(&parts[0]) && !(parts[0] == "layers" && parts.len() > 1) {
            (table, &parts[..], Vec::new())
        } else {
            let (index, rest) = if parts[0] == "layers" {
                let i: usize = parts[1]
                    .parse()
                    .map_err(|_| bad(format!("{:?} is not a layer index", parts[1])))?;
                (i, &parts[2..])
            } else {
                let layers = table.get("layers").and_then(Value::as_array);
                let found = layers.and_then(|l| {
                    l.iter().position(|layer| {
                        layer.get("name").and_then(Value::as_str) == Some(parts[0])
                    })
                });
                let i = found.ok_or_else(|| {
                    bad(format!(
                        "unknown key {:?}: not one of {} nor the name of a layer",
                        parts[0],
                        TOP_LEVEL.join(", ")
                    ))
                })?;
                (i, &parts[1..])
            };
            if rest.is_empty() {
                return Err(bad("name a key inside the layer, e.g. NAME.tar".into()));
            }
            let layer = table
                .get_mut("layers")
                .and_then(Value::as_array_mut)
                .and_then(|l| l.get_mut(index))
                .and_then(Value::as_table_mut)
                .ok_or_else(|| bad(format!("there is no layer {index}")))?;
            (layer, rest, vec!["layers", "*"])
        };
    for (i, part) in rest.iter().enumerate() {
        schema_path.push(part);
        if i + 1 == rest.len() {
            let mut value = parse_value(&set.value, as_string);
            if is_path_key(&schema_path) {
                value = match value {
                    Value::String(s) => Value::String(resolve(cwd, &s)),
                    Value::Array(items) => Value::Array(
                        items
                            .into_iter()
                            .map(|v| match v {
                                Value::String(s) => Value::String(resolve(cwd, &s)),
                                other => other,
                            })
                            .collect(),
                    ),
                    other => other,
                };
            }
            // A list of paths (rpm, deb) given as one string becomes a one-element list.
            if matches!(schema_path.as_slice(), ["layers", "*", "rpm" | "deb"]) {
                if let Value::String(s) = value {
                    value = Value::Array(vec![Value::String(s)]);
                }
            }
            current.insert((*part).to_string(), value);
            return Ok(());
        }
        let next = current
            .entry((*part).to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        current = next
            .as_table_mut()
            .ok_or_else(|| bad(format!("{part:?} is not a table, so it has no keys")))?;
    }
    Ok(())
}

fn parse_value(text: &str, as_string: bool) -> Value {
    if !as_string {
        if let Ok(mut t) = toml::from_str::<Table>(&format!("v = {text}")) {
            if let Some(v) = t.remove("v") {
                return v;
            }
        }
    }
    Value::String(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn embedded_default_loads() {
        let d = load(None, &[]).unwrap();
        assert_eq!(d.definition.name, "minimal");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "bad.toml", "name = \"x\"\n[filesystem\n");
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("bad.toml"), "{e}");
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn unknown_key_and_wrong_type() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "a.toml", "name = \"x\"\ncolour = 1\n");
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("colour"), "{e}");
        let p = write(
            dir.path(),
            "b.toml",
            "name = \"x\"\n[vm]\nmemory = \"lots\"\n",
        );
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("line 3"), "{e}");
    }

    #[test]
    fn extends_merges_and_resolves_paths_per_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        write(
            dir.path(),
            "base.toml",
            "name = \"base\"\n[vm]\nmemory = 256\nvcpus = 2\n[[layers]]\nbuiltin = true\n[[layers]]\nname = \"rootfs\"\ntar = \"root.tar\"\n",
        );
        let child = write(
            &dir.path().join("sub"),
            "child.toml",
            "extends = \"../base.toml\"\nname = \"child\"\n[vm]\nmemory = 1024\n[[layers]]\ndir = \"tree\"\n",
        );
        let d = load(Some(&child), &[]).unwrap().definition;
        assert_eq!(d.name, "child");
        assert_eq!((d.vm.memory, d.vm.vcpus), (1024, 2));
        assert_eq!(d.layers.len(), 3);
        let base = dir.path().canonicalize().unwrap();
        assert_eq!(
            d.layers[1].tar.as_deref(),
            Some(base.join("root.tar").as_path())
        );
        assert_eq!(
            d.layers[2].dir.as_deref(),
            Some(base.join("sub/tree").as_path())
        );
    }

    #[test]
    fn extends_cycle_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.toml", "extends = \"b.toml\"\nname = \"a\"\n");
        let b = write(dir.path(), "b.toml", "extends = \"a.toml\"\nname = \"b\"\n");
        let e = load(Some(&b), &[]).unwrap_err();
        assert!(matches!(e, DefinitionError::Cycle { .. }), "{e}");
    }

    #[test]
    fn set_overrides_by_key_and_layer_name() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.toml",
            "name = \"x\"\n[[layers]]\nname = \"rootfs\"\ntar = \"a.tar\"\n",
        );
        let sets: Vec<SetArg> = [
            "rootfs.tar=/srv/sl6.tar.gz",
            "filesystem.size=2G",
            "vm.memory=1024",
            "os.version_id=7",
            "kernel.rpm=kernel.rpm",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let d = load(Some(&p), &sets).unwrap().definition;
        assert_eq!(
            d.layers[0].tar.as_deref(),
            Some(Path::new("/srv/sl6.tar.gz"))
        );
        assert_eq!(d.vm.memory, 1024);
        assert_eq!(d.os.version_id.as_deref(), Some("7"));
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(d.kernel.unwrap().rpm, Some(cwd.join("kernel.rpm")));
    }

    #[test]
    fn set_errors_are_clear() {
        let bad = |s: &str| load(None, &[s.parse().unwrap()]).unwrap_err().to_string();
        let e = bad("nosuchthing.x=1");
        assert!(e.contains("--set") && e.contains("unknown key"), "{e}");
        let e = bad("vm.memory=lots");
        assert!(e.contains("--set") && e.contains("memory"), "{e}");
        let e = bad("filesystem.colour=red");
        assert!(e.contains("--set") && e.contains("colour"), "{e}");
        assert!("novalue".parse::<SetArg>().is_err());
    }

    #[test]
    fn extends_of_a_device_or_a_huge_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "z.toml",
            "extends = \"/dev/zero\"\nname = \"z\"\n",
        );
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(
            e.contains("/dev/zero") && e.contains("not a regular file"),
            "{e}"
        );
        let big = format!("name = \"x\"\n{}", "# padding\n".repeat(200_000));
        let p = write(dir.path(), "big.toml", &big);
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("big.toml") && e.contains("longer than"), "{e}");
    }

    #[test]
    fn layers_need_exactly_one_source() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "d.toml",
            "name = \"x\"\n[[layers]]\ndir = \"a\"\ntar = \"b\"\n",
        );
        let e = load(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("more than one"), "{e}");
        let p = write(dir.path(), "e.toml", "name = \"bad/name\"\n");
        assert!(load(Some(&p), &[]).is_err());
    }
}
