//! One kernel module file: its compression (`.ko`, `.ko.xz`, `.ko.zst`, `.ko.gz`) and the
//! metadata in its `.modinfo` section (`name=`, `depends=`, `alias=`, `vermagic=`, `softdep=`).
//!
//! Package kernels ship no `modules.dep` (depmod runs in the package's maintainer scripts, which
//! we never run), so the `.modinfo` section is the source of truth they leave us. The section is
//! found from the ELF section headers only, parsed with goblin; nothing else of the module is
//! interpreted, and every offset is checked against the file length.

use std::io::Read;

use goblin::container::Ctx;
use goblin::elf::{Elf, SectionHeader};

/// File name endings of kernel modules, with the compression each implies.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// Largest module accepted, compressed or not (the largest in-tree modules are around 20 MiB).
pub const MAX_MODULE_SIZE: u64 = 128 << 20;

/// A module file whose metadata cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ModinfoError {
    /// Decompression failed.
    #[error("cannot decompress {file} ({format}): {source}")]
    Decompress {
        /// The module file.
        file: String,
        /// xz, zstd or gzip.
        format: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file's start does not match its name's compression.
    #[error("{file} is named as {format}-compressed but does not start with the {format} magic")]
    WrongMagic {
        /// The module file.
        file: String,
        /// The compression its name gives.
        format: &'static str,
    },
    /// Decompressed, the module exceeds [`MAX_MODULE_SIZE`].
    #[error("{file} decompresses to more than {limit} bytes")]
    TooLarge {
        /// The module file.
        file: String,
        /// The bound.
        limit: u64,
    },
    /// Not an ELF object, or its section headers are damaged.
    #[error("{file} is not a kernel module: {reason}")]
    NotElf {
        /// The module file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// No `.modinfo` section.
    #[error("{file} has no .modinfo section")]
    NoModinfo {
        /// The module file.
        file: String,
    },
}

/// The `.modinfo` fields imgbuild uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=` (absent in modules older than about Linux 3.x).
    pub name: Option<String>,
    /// `depends=`: modules that must be loaded first, by name.
    pub depends: Vec<String>,
    /// Every `alias=`, in file order.
    pub aliases: Vec<String>,
    /// `vermagic=`: the release it was built for, then flags.
    pub vermagic: Option<String>,
    /// Modules named in `softdep=` after `pre:`.
    pub softdep_pre: Vec<String>,
}

/// The module name for a file name or relative path (`kernel/drivers/block/xen-blkfront.ko.xz`
/// → `xen_blkfront`), or `None` when it is not a module file name.
pub fn name_from_path(rel: &str) -> Option<String> {
    let base = rel.rsplit('/').next().unwrap_or(rel);
    MODULE_SUFFIXES
        .iter()
        .rev()
        .find_map(|s| base.strip_suffix(s))
        .filter(|stem| !stem.is_empty())
        .map(canonical)
}

/// The path a module has once decompressed: the compression suffix dropped.
pub fn uncompressed_path(rel: &str) -> &str {
    for s in &MODULE_SUFFIXES[1..] {
        if let Some(stem) = rel.strip_suffix(s) {
            return &rel[..stem.len() + 3];
        }
    }
    rel
}

/// A module name with `-` and `_` made equal, as the kernel and kmod treat them.
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// Decompresses `bytes` of the module file `rel` according to its name; a plain `.ko` is
/// returned as is. The output is bounded by [`MAX_MODULE_SIZE`].
pub fn decompress(rel: &str, bytes: Vec<u8>) -> Result<Vec<u8>, ModinfoError> {
    let (format, magic): (&'static str, &[u8]) = if rel.ends_with(".ko.xz") {
        ("xz", b"\xfd7zXZ\0")
    } else if rel.ends_with(".ko.zst") {
        ("zstd", b"\x28\xb5\x2f\xfd")
    } else if rel.ends_with(".ko.gz") {
        ("gzip", b"\x1f\x8b")
    } else {
        return Ok(bytes);
    };
    if !bytes.starts_with(magic) {
        return Err(ModinfoError::WrongMagic {
            file: rel.to_string(),
            format,
        });
    }
    let err = |source| ModinfoError::Decompress {
        file: rel.to_string(),
        format,
        source,
    };
    let input = bytes.as_slice();
    let reader: Box<dyn Read + '_> = match format {
        "xz" => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(input).map_err(err)?),
        _ => Box::new(flate2::read::MultiGzDecoder::new(input)),
    };
    let mut out = Vec::new();
    reader
        .take(MAX_MODULE_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(err)?;
    if out.len() as u64 > MAX_MODULE_SIZE {
        return Err(ModinfoError::TooLarge {
            file: rel.to_string(),
            limit: MAX_MODULE_SIZE,
        });
    }
    Ok(out)
}

/// Reads the `.modinfo` section of the (decompressed) module `elf`; `file` names it in errors.
pub fn parse(file: &str, elf: &[u8]) -> Result<ModInfo, ModinfoError> {
    let section = modinfo_section(file, elf)?;
    let mut info = ModInfo::default();
    for entry in section.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(canonical(value)),
            "depends" => info.depends.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|d| !d.is_empty())
                    .map(canonical),
            ),
            "alias" => info.aliases.push(value.to_string()),
            "vermagic" => info.vermagic = Some(value.to_string()),
            "softdep" => info.softdep_pre.extend(softdep_pre(value)),
            _ => {}
        }
    }
    Ok(info)
}

/// The module names after `pre:` in a softdep specification (`pre: crc32c post: foo`).
pub fn softdep_pre(spec: &str) -> Vec<String> {
    let mut pre = false;
    let mut out = Vec::new();
    for word in spec.split_whitespace() {
        match word {
            "pre:" => pre = true,
            "post:" => pre = false,
            name if pre => out.push(canonical(name)),
            _ => {}
        }
    }
    out
}

fn modinfo_section<'a>(file: &str, elf: &'a [u8]) -> Result<&'a [u8], ModinfoError> {
    let not_elf = |reason: String| ModinfoError::NotElf {
        file: file.to_string(),
        reason,
    };
    if !elf.starts_with(b"\x7fELF") {
        return Err(not_elf("no ELF magic".into()));
    }
    let header = Elf::parse_header(elf).map_err(|e| not_elf(format!("bad ELF header: {e}")))?;
    let container = header
        .container()
        .map_err(|e| not_elf(format!("bad ELF class: {e}")))?;
    let endian = header
        .endianness()
        .map_err(|e| not_elf(format!("bad ELF byte order: {e}")))?;
    let ctx = Ctx::new(container, endian);
    let shoff = usize::try_from(header.e_shoff).map_err(|_| not_elf("e_shoff too large".into()))?;
    if shoff == 0 || header.e_shnum == 0 {
        return Err(not_elf("no section headers".into()));
    }
    let sections = SectionHeader::parse(elf, shoff, usize::from(header.e_shnum), ctx)
        .map_err(|e| not_elf(format!("bad section headers at offset {shoff}: {e}")))?;
    let names = sections
        .get(usize::from(header.e_shstrndx))
        .ok_or_else(|| not_elf("e_shstrndx points past the section headers".into()))?;
    let names = section_bytes(elf, names)
        .ok_or_else(|| not_elf("the section name table lies outside the file".into()))?;
    for sh in &sections {
        let Some(name) = names
            .get(sh.sh_name..)
            .and_then(|rest| rest.split(|&b| b == 0).next())
        else {
            continue;
        };
        if name == b".modinfo" {
            return section_bytes(elf, sh).ok_or_else(|| {
                not_elf(format!(
                    ".modinfo at offset {} size {} lies outside the file",
                    sh.sh_offset, sh.sh_size
                ))
            });
        }
    }
    Err(ModinfoError::NoModinfo {
        file: file.to_string(),
    })
}

fn section_bytes<'a>(elf: &'a [u8], sh: &SectionHeader) -> Option<&'a [u8]> {
    let start = usize::try_from(sh.sh_offset).ok()?;
    let len = usize::try_from(sh.sh_size).ok()?;
    elf.get(start..start.checked_add(len)?)
}

/// A minimal ELF64 relocatable object whose `.modinfo` holds `entries` (`key=value`), for tests.
#[cfg(test)]
pub(crate) fn fake_module(entries: &[&str]) -> Vec<u8> {
    let mut modinfo = Vec::new();
    for e in entries {
        modinfo.extend_from_slice(e.as_bytes());
        modinfo.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let modinfo_at = 64u64;
    let strtab_at = modinfo_at + modinfo.len() as u64;
    let shoff = (strtab_at + shstrtab.len() as u64 + 7) & !7;
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2;
    out[5] = 1;
    out[6] = 1;
    out[16] = 1; // ET_REL
    out[18] = 62;
    out[20] = 1;
    out[40..48].copy_from_slice(&shoff.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes());
    out[58..60].copy_from_slice(&64u16.to_le_bytes());
    out[60..62].copy_from_slice(&3u16.to_le_bytes());
    out[62..64].copy_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&modinfo);
    out.extend_from_slice(shstrtab);
    out.resize(shoff as usize, 0);
    let section = |name: u32, kind: u32, offset: u64, size: u64| {
        let mut sh = vec![0u8; 64];
        sh[..4].copy_from_slice(&name.to_le_bytes());
        sh[4..8].copy_from_slice(&kind.to_le_bytes());
        sh[24..32].copy_from_slice(&offset.to_le_bytes());
        sh[32..40].copy_from_slice(&size.to_le_bytes());
        sh[48..56].copy_from_slice(&1u64.to_le_bytes());
        sh
    };
    out.extend(vec![0u8; 64]);
    out.extend(section(1, 1, modinfo_at, modinfo.len() as u64));
    out.extend(section(10, 3, strtab_at, shstrtab.len() as u64));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn parses_fields_of_a_module() {
        let m = fake_module(&[
            "alias=pci:v00001AF4d*",
            "depends=virtio,virtio-ring",
            "alias=virtio:d00000002v*",
            "softdep=pre: crc32c",
            "name=virtio_blk",
            "vermagic=6.1.0-x SMP mod_unload",
        ]);
        let info = parse("m.ko", &m).unwrap();
        assert_eq!(info.name.as_deref(), Some("virtio_blk"));
        assert_eq!(info.depends, ["virtio", "virtio_ring"]);
        assert_eq!(info.aliases, ["pci:v00001AF4d*", "virtio:d00000002v*"]);
        assert_eq!(info.softdep_pre, ["crc32c"]);
        assert_eq!(info.vermagic.as_deref(), Some("6.1.0-x SMP mod_unload"));
        let empty = parse("e.ko", &fake_module(&["depends="])).unwrap();
        assert!(empty.depends.is_empty());
        // Cut inside the section header table.
        assert!(parse("m.ko", &m[..m.len() - 10]).is_err());
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(
            name_from_path("kernel/drivers/block/xen-blkfront.ko.xz").as_deref(),
            Some("xen_blkfront")
        );
        assert_eq!(
            name_from_path("a/virtio_blk.ko").as_deref(),
            Some("virtio_blk")
        );
        assert_eq!(name_from_path("modules.dep"), None);
        assert_eq!(name_from_path(".ko"), None);
        assert_eq!(uncompressed_path("k/x.ko.zst"), "k/x.ko");
        assert_eq!(uncompressed_path("k/x.ko.gz"), "k/x.ko");
        assert_eq!(uncompressed_path("k/x.ko"), "k/x.ko");
        assert_eq!(
            softdep_pre("pre: crc32c  foo-bar post: baz"),
            ["crc32c", "foo_bar"]
        );
    }

    #[test]
    fn decompresses_each_format_and_checks_magic() {
        let data = b"\x7fELF pretend module".to_vec();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decompress("m.ko.gz", gz.clone()).unwrap(), data);
        let zst = zstd::encode_all(data.as_slice(), 3).unwrap();
        assert_eq!(decompress("m.ko.zst", zst).unwrap(), data);
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&data).unwrap();
        assert_eq!(decompress("m.ko.xz", xz.finish().unwrap()).unwrap(), data);
        assert!(matches!(
            decompress("m.ko.xz", gz),
            Err(ModinfoError::WrongMagic { .. })
        ));
        assert!(matches!(
            decompress("m.ko.gz", b"\x1f\x8bjunk".to_vec()),
            Err(ModinfoError::Decompress { .. })
        ));
        assert_eq!(decompress("m.ko", data.clone()).unwrap(), data);
    }

    #[test]
    fn refuses_non_elf_and_truncated_elf() {
        assert!(matches!(
            parse("x.ko", b"hello"),
            Err(ModinfoError::NotElf { .. })
        ));
        // A valid 64-bit header whose section table points far past the end.
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little endian
        h[6] = 1;
        h[16] = 1; // ET_REL
        h[18] = 62;
        h[20] = 1;
        h[40..48].copy_from_slice(&0x10_0000u64.to_le_bytes()); // e_shoff
        h[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        h[60..62].copy_from_slice(&3u16.to_le_bytes()); // e_shnum
        h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        assert!(matches!(
            parse("x.ko", &h),
            Err(ModinfoError::NotElf { .. })
        ));
    }
}
