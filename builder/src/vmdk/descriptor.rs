//! The VMDK text descriptor: rendered for our three forms, parsed (from hostile files) by the
//! reader. Layout and keys follow what qemu-img and VMware's open-vmdk write.

use crate::definition::ScsiAdapter;

use super::VmdkOptions;

/// Longest descriptor the reader accepts, embedded or in its own file.
pub const MAX_DESCRIPTOR_BYTES: usize = 1 << 20;
/// Most extents the reader accepts (a 2 TB twoGbMaxExtent disk has about 1000).
pub const MAX_EXTENTS: usize = 4096;

/// `ddb.adapterType` for a disk on `adapter`. The descriptor only knows ide, buslogic, lsilogic
/// and legacyESX (the vSphere API's VirtualDiskAdapterType has just ide, busLogic, lsiLogic);
/// the controller model itself is chosen in the .vmx. VMware writes "lsilogic" for disks on
/// pvscsi and SAS controllers too, and it gives the 255-head geometry a SCSI disk should have.
pub fn adapter_type(adapter: ScsiAdapter) -> &'static str {
    match adapter {
        ScsiAdapter::Pvscsi | ScsiAdapter::Lsilogic | ScsiAdapter::Lsisas1068 => "lsilogic",
    }
}

/// SCSI geometry (cylinders, heads, sectors) of a disk of `sectors`: 255 heads, 63 sectors,
/// cylinders rounded up and capped at 65535 as open-vmdk does.
pub fn geometry(sectors: u64) -> (u64, u64, u64) {
    let cylinders = sectors.div_ceil(255 * 63).clamp(1, 65535);
    (cylinders, 255, 63)
}

/// Access of an extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `RW`.
    ReadWrite,
    /// `RDONLY`.
    ReadOnly,
    /// `NOACCESS`.
    NoAccess,
}

/// One extent line: `RW 204800 SPARSE "disk.vmdk"` or `RW 204800 FLAT "disk-flat.vmdk" 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentLine {
    /// Access.
    pub access: Access,
    /// Size in sectors.
    pub sectors: u64,
    /// Type: `SPARSE`, `FLAT`, `VMFS`, `ZERO`, …, upper-cased.
    pub kind: String,
    /// File name (none for ZERO).
    pub file: Option<String>,
    /// Offset in sectors into the file (FLAT, VMFS).
    pub offset: u64,
}

/// A parsed descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Descriptor {
    /// `CID`.
    pub cid: Option<u32>,
    /// `parentCID`.
    pub parent_cid: Option<u32>,
    /// `createType`.
    pub create_type: String,
    /// Extents in order.
    pub extents: Vec<ExtentLine>,
    /// `ddb.*` entries, in file order.
    pub ddb: Vec<(String, String)>,
}

impl Descriptor {
    /// The value of a `ddb.` key.
    pub fn ddb(&self, key: &str) -> Option<&str> {
        self.ddb
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// Renders the descriptor of a disk of `capacity_sectors` with one extent line.
pub fn render(
    create_type: &str,
    extent: &ExtentLine,
    capacity_sectors: u64,
    opts: &VmdkOptions,
) -> String {
    let (c, h, s) = geometry(capacity_sectors);
    let access = match extent.access {
        Access::ReadWrite => "RW",
        Access::ReadOnly => "RDONLY",
        Access::NoAccess => "NOACCESS",
    };
    let mut line = format!("{access} {} {}", extent.sectors, extent.kind);
    if let Some(f) = &extent.file {
        line.push_str(&format!(" \"{f}\""));
    }
    if extent.kind == "FLAT" || extent.kind == "VMFS" {
        line.push_str(&format!(" {}", extent.offset));
    }
    let long_id: String = opts
        .long_content_id()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         encoding=\"UTF-8\"\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"{create_type}\"\n\
         \n\
         # Extent description\n\
         {line}\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.adapterType = \"{adapter}\"\n\
         ddb.geometry.cylinders = \"{c}\"\n\
         ddb.geometry.heads = \"{h}\"\n\
         ddb.geometry.sectors = \"{s}\"\n\
         ddb.longContentID = \"{long_id}\"\n\
         ddb.toolsVersion = \"2147483647\"\n\
         ddb.virtualHWVersion = \"{hw}\"\n",
        cid = opts.cid(),
        adapter = adapter_type(opts.adapter),
        hw = opts.hw_version,
    )
}

/// Parses a descriptor. Errors carry the 1-based line number.
pub fn parse(text: &str) -> Result<Descriptor, (usize, String)> {
    if text.len() > MAX_DESCRIPTOR_BYTES {
        return Err((0, format!("longer than {MAX_DESCRIPTOR_BYTES} bytes")));
    }
    let mut d = Descriptor::default();
    let mut seen_header = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        if line.starts_with('#') {
            if line.eq_ignore_ascii_case("# Disk DescriptorFile") {
                seen_header = true;
            }
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if matches!(first, "RW" | "RDONLY" | "NOACCESS") {
            if d.extents.len() >= MAX_EXTENTS {
                return Err((n, format!("more than {MAX_EXTENTS} extents")));
            }
            d.extents.push(parse_extent(line).map_err(|e| (n, e))?);
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err((n, format!("neither key=value nor an extent: {line:?}")));
        };
        let key = key.trim();
        let value = unquote(value.trim());
        if key.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("ddb.")) {
            d.ddb.push((key.to_string(), value.to_string()));
            continue;
        }
        match key.to_ascii_lowercase().as_str() {
            "cid" => d.cid = Some(parse_cid(value).map_err(|e| (n, e))?),
            "parentcid" => d.parent_cid = Some(parse_cid(value).map_err(|e| (n, e))?),
            "createtype" => d.create_type = value.to_string(),
            _ => {} // version, encoding, isNativeSnapshot, parentFileNameHint …
        }
    }
    if !seen_header && d.extents.is_empty() {
        return Err((
            1,
            "no \"# Disk DescriptorFile\" header and no extents".into(),
        ));
    }
    Ok(d)
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

fn parse_cid(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 16).map_err(|_| format!("CID {v:?} is not 8 hex digits"))
}

fn parse_extent(line: &str) -> Result<ExtentLine, String> {
    let (head, rest) = match line.find('"') {
        Some(q) => (&line[..q], Some(&line[q + 1..])),
        None => (line, None),
    };
    let mut words = head.split_whitespace();
    let access = match words.next() {
        Some("RW") => Access::ReadWrite,
        Some("RDONLY") => Access::ReadOnly,
        _ => Access::NoAccess,
    };
    let sectors: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("extent size missing or not a number in {line:?}"))?;
    let kind = words
        .next()
        .ok_or_else(|| format!("extent type missing in {line:?}"))?
        .to_ascii_uppercase();
    if words.next().is_some() {
        return Err(format!("unexpected words before the file name in {line:?}"));
    }
    let (file, offset) = match rest {
        None => (None, 0),
        Some(r) => {
            let end = r
                .find('"')
                .ok_or_else(|| format!("unterminated file name in {line:?}"))?;
            let tail = r[end + 1..].trim();
            let offset = if tail.is_empty() {
                0
            } else {
                tail.split_whitespace()
                    .next()
                    .and_then(|w| w.parse().ok())
                    .ok_or_else(|| format!("extent offset {tail:?} is not a number"))?
            };
            (Some(r[..end].to_string()), offset)
        }
    };
    if file.is_none() && kind != "ZERO" {
        return Err(format!("{kind} extent without a file name: {line:?}"));
    }
    Ok(ExtentLine {
        access,
        sectors,
        kind,
        file,
        offset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_parses_back() {
        let opts = VmdkOptions::new(b"some disk", ScsiAdapter::Pvscsi);
        let e = ExtentLine {
            access: Access::ReadWrite,
            sectors: 204_800,
            kind: "FLAT".into(),
            file: Some("d-flat.vmdk".into()),
            offset: 0,
        };
        let text = render("monolithicFlat", &e, 204_800, &opts);
        assert!(text.starts_with("# Disk DescriptorFile\nversion=1\n"));
        assert!(text.contains("RW 204800 FLAT \"d-flat.vmdk\" 0\n"));
        assert!(text.contains("ddb.adapterType = \"lsilogic\"\n"));
        assert!(text.contains("ddb.geometry.cylinders = \"13\"\n"));
        let d = parse(&text).unwrap();
        assert_eq!(d.create_type, "monolithicFlat");
        assert_eq!(d.cid, Some(opts.cid()));
        assert_eq!(d.parent_cid, Some(0xffff_ffff));
        assert_eq!(d.extents, vec![e]);
        assert_eq!(d.ddb("ddb.geometry.heads"), Some("255"));
        let long = d.ddb("ddb.longContentID").unwrap();
        assert!(long.ends_with(&format!("{:08x}", opts.cid())));
    }

    #[test]
    fn geometry_caps() {
        assert_eq!(geometry(1), (1, 255, 63));
        assert_eq!(geometry(4 << 30), (65535, 255, 63));
        assert_eq!(geometry(255 * 63 * 10 + 1), (11, 255, 63));
    }

    #[test]
    fn hostile_descriptors() {
        assert!(parse("garbage line").is_err());
        assert!(parse("").is_err());
        assert!(parse("RW x SPARSE \"a\"").is_err());
        assert!(parse("RW 10 SPARSE \"a").is_err());
        assert!(parse("RW 10 FLAT").is_err());
        assert!(parse("RW 10 FLAT \"a\" zz").is_err());
        assert!(parse("# Disk DescriptorFile\nCID=xyz").is_err());
        let many = "RW 1 ZERO\n".repeat(MAX_EXTENTS + 1);
        assert!(parse(&many).is_err());
        let big = "#".repeat(MAX_DESCRIPTOR_BYTES + 1);
        assert!(parse(&big).is_err());
        assert!(parse("# Disk DescriptorFile\nabcé=1").is_ok());
        let d = parse("RW 10 ZERO\nRDONLY 5 VMFS \"x y.vmdk\" 7").unwrap();
        assert_eq!(d.extents[1].file.as_deref(), Some("x y.vmdk"));
        assert_eq!(d.extents[1].offset, 7);
    }
}
