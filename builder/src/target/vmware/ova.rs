//! The OVA: one ustar archive holding, in this order, the OVF 1.0 descriptor (`NAME.ovf`), the
//! manifest of SHA-256 sums (`NAME.mf`), and the streamOptimized disks it references — what
//! ESXi's "Deploy OVF Template" and ovftool take. The archive is deterministic: fixed order,
//! numeric owner 0, mode 0644, one time stamp (the root directory's), no user names.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::definition::{NicModel, ScsiAdapter, VmwareSpec};
use crate::manifest::hex;

/// One disk of the appliance.
#[derive(Debug, Clone)]
pub struct OvaDisk<'a> {
    /// The streamOptimized VMDK on the host.
    pub path: &'a Path,
    /// Its name inside the archive.
    pub name: &'a str,
    /// Virtual size in bytes.
    pub capacity: u64,
}

/// What the OVF describes besides the disks.
#[derive(Debug, Clone)]
pub struct OvaMachine<'a> {
    /// VM name.
    pub name: &'a str,
    /// `[vmware]` of the definition.
    pub spec: &'a VmwareSpec,
    /// Memory, MiB.
    pub memory: u32,
    /// vCPUs.
    pub vcpus: u32,
}

const BLOCK: u64 = 512;
/// GNU tar's default record: 20 blocks.
const RECORD: u64 = 20 * BLOCK;
/// ustar's size field holds 11 octal digits.
const MAX_MEMBER: u64 = 0o77777777777;

/// The CIM ResourceSubType of a SCSI controller, as VMware's OVF export writes it.
fn scsi_subtype(adapter: ScsiAdapter) -> &'static str {
    match adapter {
        ScsiAdapter::Pvscsi => "VirtualSCSI",
        ScsiAdapter::Lsilogic => "lsilogic",
        ScsiAdapter::Lsisas1068 => "lsilogicsas",
    }
}

fn nic_subtype(nic: NicModel) -> &'static str {
    match nic {
        NicModel::Vmxnet3 => "VmxNet3",
        NicModel::E1000 => "E1000",
    }
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The OVF 1.0 envelope for `machine` with `disks` (each with its file size in the archive),
/// the first disk at SCSI 0:0, the next at 0:1, and so on.
pub fn render_ovf(machine: &OvaMachine<'_>, disks: &[(OvaDisk<'_>, u64)]) -> String {
    let name = xml(machine.name);
    let mut t = String::new();
    let _ = writeln!(t, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        t,
        r#"<!-- Written by imgbuild {} -->"#,
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        t,
        r#"<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#
    );
    let _ = writeln!(t, "  <References>");
    for (i, (disk, size)) in disks.iter().enumerate() {
        let _ = writeln!(
            t,
            r#"    <File ovf:href="{}" ovf:id="file{}" ovf:size="{size}"/>"#,
            xml(disk.name),
            i + 1
        );
    }
    let _ = writeln!(t, "  </References>");
    let _ = writeln!(t, "  <DiskSection>");
    let _ = writeln!(t, "    <Info>Virtual disk information</Info>");
    for (i, (disk, _)) in disks.iter().enumerate() {
        let _ = writeln!(
            t,
            r#"    <Disk ovf:capacity="{}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk{n}" ovf:fileRef="file{n}" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>"#,
            disk.capacity,
            n = i + 1
        );
    }
    let _ = writeln!(t, "  </DiskSection>");
    let _ = writeln!(t, "  <NetworkSection>");
    let _ = writeln!(t, "    <Info>The list of logical networks</Info>");
    let _ = writeln!(t, r#"    <Network ovf:name="VM Network">"#);
    let _ = writeln!(t, "      <Description>The VM Network network</Description>");
    let _ = writeln!(t, "    </Network>");
    let _ = writeln!(t, "  </NetworkSection>");
    let _ = writeln!(t, r#"  <VirtualSystem ovf:id="{name}">"#);
    let _ = writeln!(t, "    <Info>A virtual machine</Info>");
    let _ = writeln!(t, "    <Name>{name}</Name>");
    // CIM operating system 101 is "Linux 64-Bit", 36 "LINUX"; the exact VMware guest type
    // is in the .vmx (guestOS), and the importer lets the user change it.
    let os_id = if machine.spec.guest_os.ends_with("-64") {
        101
    } else {
        36
    };
    let _ = writeln!(t, r#"    <OperatingSystemSection ovf:id="{os_id}">"#);
    let _ = writeln!(
        t,
        "      <Info>The kind of installed guest operating system</Info>"
    );
    let _ = writeln!(
        t,
        "      <Description>{}</Description>",
        xml(&machine.spec.guest_os)
    );
    let _ = writeln!(t, "    </OperatingSystemSection>");
    let _ = writeln!(t, "    <VirtualHardwareSection>");
    let _ = writeln!(t, "      <Info>Virtual hardware requirements</Info>");
    let _ = writeln!(t, "      <System>");
    let _ = writeln!(
        t,
        "        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>"
    );
    let _ = writeln!(t, "        <vssd:InstanceID>0</vssd:InstanceID>");
    let _ = writeln!(
        t,
        "        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>"
    );
    let _ = writeln!(
        t,
        "        <vssd:VirtualSystemType>vmx-{:02}</vssd:VirtualSystemType>",
        machine.spec.hw_version
    );
    let _ = writeln!(t, "      </System>");
    // rasd elements in the schema's (alphabetical) order.
    let mut item = |fields: &[(&str, String)]| {
        let _ = writeln!(t, "      <Item>");
        for (k, v) in fields {
            let _ = writeln!(t, "        <rasd:{k}>{v}</rasd:{k}>");
        }
        let _ = writeln!(t, "      </Item>");
    };
    item(&[
        ("AllocationUnits", "hertz * 10^6".into()),
        ("Description", "Number of Virtual CPUs".into()),
        ("ElementName", format!("{} virtual CPU(s)", machine.vcpus)),
        ("InstanceID", "1".into()),
        ("ResourceType", "3".into()),
        ("VirtualQuantity", machine.vcpus.to_string()),
    ]);
    item(&[
        ("AllocationUnits", "byte * 2^20".into()),
        ("Description", "Memory Size".into()),
        ("ElementName", format!("{}MB of memory", machine.memory)),
        ("InstanceID", "2".into()),
        ("ResourceType", "4".into()),
        ("VirtualQuantity", machine.memory.to_string()),
    ]);
    item(&[
        ("Address", "0".into()),
        ("Description", "SCSI Controller".into()),
        ("ElementName", "SCSI controller 0".into()),
        ("InstanceID", "3".into()),
        ("ResourceSubType", scsi_subtype(machine.spec.adapter).into()),
        ("ResourceType", "6".into()),
    ]);
    let mut id = 4;
    for (i, _) in disks.iter().enumerate() {
        item(&[
            ("AddressOnParent", i.to_string()),
            ("ElementName", format!("Hard disk {}", i + 1)),
            ("HostResource", format!("ovf:/disk/vmdisk{}", i + 1)),
            ("InstanceID", id.to_string()),
            ("Parent", "3".into()),
            ("ResourceType", "17".into()),
        ]);
        id += 1;
    }
    let nic = nic_subtype(machine.spec.nic);
    item(&[
        ("AddressOnParent", "7".into()),
        ("AutomaticAllocation", "true".into()),
        ("Connection", "VM Network".into()),
        (
            "Description",
            format!("{nic} ethernet adapter on &quot;VM Network&quot;"),
        ),
        ("ElementName", "Network adapter 1".into()),
        ("InstanceID", id.to_string()),
        ("ResourceSubType", nic.into()),
        ("ResourceType", "10".into()),
    ]);
    let _ = writeln!(t, "    </VirtualHardwareSection>");
    let _ = writeln!(t, "  </VirtualSystem>");
    let _ = writeln!(t, "</Envelope>");
    t
}

/// sha256 of a file, hex.
fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(hex(&h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

fn octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    field[..digits].copy_from_slice(text.as_bytes());
    field[digits] = 0;
}

/// A ustar header of a regular file.
fn header(name: &str, size: u64, mtime: u64) -> io::Result<[u8; BLOCK as usize]> {
    if name.len() > 100 || size > MAX_MEMBER {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name}: does not fit an ustar header ({size} bytes)"),
        ));
    }
    let mut h = [0u8; BLOCK as usize];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], 0o644);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], mtime.min(MAX_MEMBER));
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    Ok(h)
}

fn pad(out: &mut impl Write, len: u64, to: u64) -> io::Result<()> {
    let rest = (to - len % to) % to;
    io::copy(&mut io::repeat(0).take(rest), out).map(|_| ())
}

/// Writes the OVA for `machine` and `disks` to `out` (the file being created at `ova`, for
/// messages); `mtime` stamps every member.
pub fn write_ova(
    out: &mut File,
    machine: &OvaMachine<'_>,
    disks: &[OvaDisk<'_>],
    mtime: u64,
) -> io::Result<()> {
    let mut sized = Vec::with_capacity(disks.len());
    for d in disks {
        sized.push((d.clone(), std::fs::metadata(d.path)?.len()));
    }
    let ovf_name = format!("{}.ovf", machine.name);
    let mf_name = format!("{}.mf", machine.name);
    let ovf = render_ovf(machine, &sized);
    let mut mf = format!(
        "SHA256({ovf_name})= {}\n",
        hex(&Sha256::digest(ovf.as_bytes()))
    );
    for (d, _) in &sized {
        let _ = writeln!(mf, "SHA256({})= {}", d.name, sha256_file(d.path)?);
    }
    let mut written = 0u64;
    for (name, text) in [(&ovf_name, &ovf), (&mf_name, &mf)] {
        out.write_all(&header(name, text.len() as u64, mtime)?)?;
        out.write_all(text.as_bytes())?;
        pad(out, text.len() as u64, BLOCK)?;
        written += BLOCK + (text.len() as u64).next_multiple_of(BLOCK);
    }
    for (d, size) in &sized {
        out.write_all(&header(d.name, *size, mtime)?)?;
        // File to file: the standard library copies in the kernel (copy_file_range).
        let copied = io::copy(&mut File::open(d.path)?, out)?;
        if copied != *size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} changed while being archived", d.path.display()),
            ));
        }
        pad(out, *size, BLOCK)?;
        written += BLOCK + size.next_multiple_of(BLOCK);
    }
    out.write_all(&[0u8; 2 * BLOCK as usize])?;
    written += 2 * BLOCK;
    pad(out, written, RECORD)?;
    out.flush()
}

/// Members of an OVA checked at most (ours have four).
const MAX_MEMBERS: usize = 1024;
/// Largest `.mf` read.
const MAX_MF: u64 = 1 << 20;

fn parse_octal(field: &[u8]) -> Option<u64> {
    let text: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0 && b != b' ')
        .skip_while(|&b| b == b' ')
        .collect();
    if text.is_empty() || !text.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&text).ok()?, 8).ok()
}

/// One member: name, data offset, size.
type Member = (String, u64, u64);

fn members(file: &File, len: u64) -> Result<Vec<Member>, String> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut at = 0u64;
    loop {
        if at + BLOCK > len {
            return Err(format!(
                "ends at byte {len} without the end-of-archive blocks"
            ));
        }
        let mut h = [0u8; BLOCK as usize];
        file.read_exact_at(&mut h, at)
            .map_err(|e| format!("cannot read the header at byte {at}: {e}"))?;
        if h.iter().all(|&b| b == 0) {
            return Ok(out);
        }
        let stored = parse_octal(&h[148..156]);
        let mut sum_block = h;
        sum_block[148..156].copy_from_slice(b"        ");
        let sum: u64 = sum_block.iter().map(|&b| u64::from(b)).sum();
        if stored != Some(sum) {
            return Err(format!("bad header checksum at byte {at}"));
        }
        if &h[257..262] != b"ustar" {
            return Err(format!("the header at byte {at} is not ustar"));
        }
        if h[156] != b'0' && h[156] != 0 {
            return Err(format!("member at byte {at} is not a regular file"));
        }
        let field = |r: std::ops::Range<usize>| {
            let f = &h[r];
            let end = f.iter().position(|&b| b == 0).unwrap_or(f.len());
            String::from_utf8_lossy(&f[..end]).into_owned()
        };
        let (prefix, base) = (field(345..500), field(0..100));
        let name = if prefix.is_empty() {
            base
        } else {
            format!("{prefix}/{base}")
        };
        let size = parse_octal(&h[124..136])
            .ok_or_else(|| format!("{name}: bad size field at byte {}", at + 124))?;
        let data = at + BLOCK;
        let end = data
            .checked_add(size)
            .filter(|&e| e <= len)
            .ok_or_else(|| format!("{name}: {size} bytes run past the end of the archive"))?;
        if out.len() == MAX_MEMBERS {
            return Err(format!("more than {MAX_MEMBERS} members"));
        }
        out.push((name, data, size));
        at = end.next_multiple_of(BLOCK);
    }
}

fn sha256_range(file: &File, offset: u64, size: u64) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < size {
        let n = buf.len().min((size - done) as usize);
        file.read_exact_at(&mut buf[..n], offset + done)?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(hex(&h.finalize()))
}

/// Checks an OVA as an importer does: a ustar archive whose first member is the `.ovf`, the
/// second the `.mf`, and every member but the `.mf` listed there with its SHA-256. Returns
/// the member names.
pub fn check_ova(path: &Path) -> Result<Vec<String>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let list = members(&file, len)?;
    let names: Vec<String> = list.iter().map(|(n, _, _)| n.clone()).collect();
    match (list.first(), list.get(1)) {
        (Some((ovf, _, _)), Some((mf, _, _))) if ovf.ends_with(".ovf") && mf.ends_with(".mf") => {}
        _ => {
            return Err(format!(
                "members {names:?}: the .ovf must come first, the .mf second"
            ))
        }
    }
    let (mf_name, mf_at, mf_size) = &list[1];
    if *mf_size > MAX_MF {
        return Err(format!(
            "{mf_name}: {mf_size} bytes is too large for a manifest"
        ));
    }
    let mut text = vec![0u8; *mf_size as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut text, *mf_at)
        .map_err(|e| format!("cannot read {mf_name}: {e}"))?;
    let text = String::from_utf8(text).map_err(|_| format!("{mf_name} is not text"))?;
    let mut listed = std::collections::BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let parsed = line
            .strip_prefix("SHA256(")
            .and_then(|r| r.split_once(")= "));
        let Some((name, sum)) = parsed else {
            return Err(format!("{mf_name}: not a SHA256 line: {line:?}"));
        };
        listed.insert(name.to_string(), sum.trim().to_string());
    }
    for (name, at, size) in list.iter().filter(|(n, _, _)| n != mf_name) {
        let want = listed
            .remove(name)
            .ok_or_else(|| format!("{name} is not in {mf_name}"))?;
        let got =
            sha256_range(&file, *at, *size).map_err(|e| format!("cannot read {name}: {e}"))?;
        if got != want {
            return Err(format!("{name}: SHA-256 is {got}, {mf_name} says {want}"));
        }
    }
    if let Some(name) = listed.keys().next() {
        return Err(format!(
            "{mf_name} lists {name}, which the archive does not hold"
        ));
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovf_names_the_devices() {
        let spec = VmwareSpec {
            adapter: ScsiAdapter::Lsisas1068,
            nic: NicModel::E1000,
            hw_version: 9,
            ..VmwareSpec::default()
        };
        let machine = OvaMachine {
            name: "a<b",
            spec: &spec,
            memory: 768,
            vcpus: 3,
        };
        let disk = OvaDisk {
            path: Path::new("/nonexistent"),
            name: "a-stream.vmdk",
            capacity: 1 << 30,
        };
        let text = render_ovf(&machine, &[(disk, 12345)]);
        for want in [
            r#"ovf:href="a-stream.vmdk" ovf:id="file1" ovf:size="12345""#,
            r#"ovf:capacity="1073741824""#,
            "vmdk.html#streamOptimized",
            "<vssd:VirtualSystemType>vmx-09</vssd:VirtualSystemType>",
            "<rasd:ResourceSubType>lsilogicsas</rasd:ResourceSubType>",
            "<rasd:ResourceSubType>E1000</rasd:ResourceSubType>",
            "<rasd:VirtualQuantity>768</rasd:VirtualQuantity>",
            "<rasd:VirtualQuantity>3</rasd:VirtualQuantity>",
            "<Name>a&lt;b</Name>",
        ] {
            assert!(text.contains(want), "{want}\n{text}");
        }
    }

    #[test]
    fn headers_are_ustar() {
        let h = header("x.ovf", 1000, 1_767_225_600).unwrap();
        assert_eq!(&h[257..263], b"ustar\0");
        assert_eq!(&h[124..136], b"00000001750\0");
        assert!(header(&"n".repeat(101), 1, 0).is_err());
    }
}
