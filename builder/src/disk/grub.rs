//! GRUB 2 for BIOS on our disk images, installed the way grub-bios-setup would but without a
//! loop device or root: boot.img's code into the MBR, core.img (made by the host's
//! `grub-mkimage`) into the gap before the partition, both patched to find each other. Also the
//! boot configuration files the root tree carries (`/boot/grub/grub.cfg`, `menu.lst`).
//!
//! `grub-mkimage` output depends only on its module list (order included), prefix and the host's
//! grub-pc-bin version, not on time or paths (checked in the tests), so a disk built twice on the
//! same host is the same; [`GrubImages::digest`] names what went in, for the manifest.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::mbr::{self, DiskLayout, MbrError, BOOT_CODE_LEN, SECTOR};

/// Where Debian's grub-pc-bin keeps the i386-pc images and modules.
pub const GRUB_PC_DIR: &str = "/usr/lib/grub/i386-pc";
/// Where core.img looks for grub.cfg: the first partition of the boot disk.
pub const PREFIX: &str = "(hd0,msdos1)/boot/grub";
/// Modules built into core.img, in this order (the order changes the bytes). `serial` and
/// `terminal` let grub.cfg talk on the serial port, `halt` lets tests stop the machine.
pub const MODULES: &[&str] = &[
    "biosdisk",
    "part_msdos",
    "ext2",
    "normal",
    "linux",
    "configfile",
    "search",
    "search_fs_uuid",
    "echo",
    "serial",
    "terminal",
    "halt",
];
/// The sector core.img starts at.
pub const CORE_LBA: u64 = 1;
/// Title of the single boot entry.
pub const ENTRY_TITLE: &str = "imgbuild";
/// Consoles put on the kernel command line when the caller names none: the Xen PV console and
/// the first serial port (the last one named becomes /dev/console; absent ones are skipped).
pub const DEFAULT_CONSOLES: &str = "console=hvc0 console=ttyS0,115200";

/// In boot.img: the u64 LBA of core.img's first sector.
const KERNEL_SECTOR_OFFSET: usize = 0x5C;
/// In boot.img: the boot drive; 0xFF means "the drive the BIOS booted from".
const BOOT_DRIVE_OFFSET: usize = 0x64;
/// In boot.img: a short jump over the workaround for BIOSes passing a bad drive number.
const DRIVE_CHECK_OFFSET: usize = 0x66;
/// In diskboot.img (core.img's first sector): the last block-list entry.
const BLOCKLIST_OFFSET: usize = 512 - 12;
/// Load segment of core.img's second sector onward (0x8000 + 0x200 bytes).
const CORE_SEGMENT: u16 = 0x820;

/// Errors of making or installing GRUB, or of rendering its configuration.
#[derive(Debug, thiserror::Error)]
pub enum GrubError {
    /// A tool could not be started.
    #[error("cannot run {cmd} (is grub-pc-bin installed?): {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// Cause.
        source: io::Error,
    },
    /// A tool failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        cmd: String,
        /// Exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        source: io::Error,
    },
    /// boot.img or core.img is not what GRUB makes.
    #[error("{what} is not a usable GRUB image: {reason}")]
    BadImage {
        /// Which image.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// core.img does not fit between the MBR and the partition.
    #[error("core.img needs {sectors} sectors but only {room} are free before the partition")]
    TooBig {
        /// Sectors of core.img.
        sectors: u64,
        /// Sectors available.
        room: u64,
    },
    /// A configuration value would break the config file's syntax.
    #[error("{field} {value:?} cannot go into a boot config: {reason}")]
    BadValue {
        /// Which value.
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Writing the MBR failed.
    #[error(transparent)]
    Mbr(#[from] MbrError),
}

/// boot.img and core.img, patched for a disk whose core.img sits at [`CORE_LBA`].
#[derive(Debug, Clone)]
pub struct GrubImages {
    boot_code: [u8; BOOT_CODE_LEN],
    core: Vec<u8>,
    version: String,
}

impl GrubImages {
    /// Builds core.img with the host's `grub-mkimage` and reads boot.img from [`GRUB_PC_DIR`].
    pub fn from_host() -> Result<GrubImages, GrubError> {
        GrubImages::build(Path::new(GRUB_PC_DIR), Path::new("grub-mkimage"))
    }

    /// Builds core.img with `mkimage` from the modules in `grub_dir`, which also holds boot.img.
    pub fn build(grub_dir: &Path, mkimage: &Path) -> Result<GrubImages, GrubError> {
        let boot_path = grub_dir.join("boot.img");
        let boot = read_bounded(&boot_path, 512)?;
        // core.img goes to grub-mkimage's stdout (its default output), which is an unnamed
        // temporary file: nothing is created outside the output directory, not even for a
        // moment. Not a pipe: grub-mkimage syncs its output, and fsync fails on pipes.
        let spool_err = |source| GrubError::Io {
            what: "create a temporary file for",
            path: "core.img".into(),
            source,
        };
        let mut spool = tempfile::tempfile().map_err(spool_err)?;
        let mut cmd = Command::new(mkimage);
        cmd.arg("-d")
            .arg(grub_dir)
            .args(["-O", "i386-pc", "-p", PREFIX])
            .args(MODULES)
            .env("LC_ALL", "C")
            .env("SOURCE_DATE_EPOCH", "0")
            .stdout(spool.try_clone().map_err(spool_err)?);
        let shown = format!("{cmd:?}");
        let out = cmd.output().map_err(|source| GrubError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
        if !out.status.success() {
            return Err(GrubError::Tool {
                cmd: shown,
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        let core = read_bounded_from(&mut spool, Path::new("core.img"), max_core_bytes())?;
        let version = Command::new(mkimage)
            .arg("--version")
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let mut images = GrubImages::from_bytes(&boot, &core)?;
        images.version = version;
        Ok(images)
    }

    /// Checks and patches a boot.img and a core.img as grub-bios-setup does for a hard disk
    /// with core.img embedded right after the MBR.
    pub fn from_bytes(boot_img: &[u8], core_img: &[u8]) -> Result<GrubImages, GrubError> {
        let bad_boot = |reason: String| GrubError::BadImage {
            what: "boot.img",
            reason,
        };
        if boot_img.len() != 512 {
            return Err(bad_boot(format!("{} bytes, not 512", boot_img.len())));
        }
        if boot_img[510..] != [0x55, 0xAA] || boot_img[0] != 0xEB {
            return Err(bad_boot(
                "no jump at byte 0 or no 0x55AA at byte 510".into(),
            ));
        }
        let mut boot_code = [0u8; BOOT_CODE_LEN];
        boot_code.copy_from_slice(&boot_img[..BOOT_CODE_LEN]);
        boot_code[KERNEL_SECTOR_OFFSET..KERNEL_SECTOR_OFFSET + 8]
            .copy_from_slice(&CORE_LBA.to_le_bytes());
        boot_code[BOOT_DRIVE_OFFSET] = 0xFF;
        // grub-bios-setup turns the jump into NOPs on hard disks, so a BIOS passing a drive
        // number without bit 7 set still boots from 0x80.
        if boot_code[DRIVE_CHECK_OFFSET] == 0xEB {
            boot_code[DRIVE_CHECK_OFFSET] = 0x90;
            boot_code[DRIVE_CHECK_OFFSET + 1] = 0x90;
        } else if boot_code[DRIVE_CHECK_OFFSET..DRIVE_CHECK_OFFSET + 2] != [0x90, 0x90] {
            return Err(bad_boot(format!(
                "no drive-check jump at byte {DRIVE_CHECK_OFFSET:#x}"
            )));
        }

        let bad_core = |reason: String| GrubError::BadImage {
            what: "core.img",
            reason,
        };
        if core_img.len() < 1024 || core_img.len() as u64 > max_core_bytes() {
            return Err(bad_core(format!(
                "{} bytes, outside 1024..={}",
                core_img.len(),
                max_core_bytes()
            )));
        }
        let mut core = core_img.to_vec();
        core.resize(core_img.len().div_ceil(512) * 512, 0);
        let sectors = core.len() / 512;
        let b = BLOCKLIST_OFFSET;
        let segment = u16::from_le_bytes([core[b + 10], core[b + 11]]);
        let previous_len = u16::from_le_bytes([core[b - 4], core[b - 3]]);
        if segment != CORE_SEGMENT || previous_len != 0 {
            return Err(bad_core(format!(
                "first sector is not diskboot.img (block list segment {segment:#x}, \
                 previous entry length {previous_len})"
            )));
        }
        let rest = u16::try_from(sectors - 1)
            .map_err(|_| bad_core(format!("{sectors} sectors is too many")))?;
        core[b..b + 8].copy_from_slice(&(CORE_LBA + 1).to_le_bytes());
        core[b + 8..b + 10].copy_from_slice(&rest.to_le_bytes());
        Ok(GrubImages {
            boot_code,
            core,
            version: String::new(),
        })
    }

    /// The 440 bytes of MBR boot code (boot.img, patched).
    pub fn boot_code(&self) -> &[u8; BOOT_CODE_LEN] {
        &self.boot_code
    }

    /// core.img, patched and padded to whole sectors.
    pub fn core_img(&self) -> &[u8] {
        &self.core
    }

    /// Sectors core.img occupies from [`CORE_LBA`].
    pub fn core_sectors(&self) -> u64 {
        self.core.len() as u64 / SECTOR
    }

    /// `grub-mkimage --version` of the tool that made core.img (empty if unknown).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// SHA-256 of boot code and core.img as written, hex: what the manifest records.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.boot_code);
        h.update(&self.core);
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Largest core.img that could ever fit before a partition at 1 MiB.
fn max_core_bytes() -> u64 {
    (mbr::PARTITION_START / SECTOR - CORE_LBA) * SECTOR
}

fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, GrubError> {
    let mut f = File::open(path).map_err(|source| GrubError::Io {
        what: "open",
        path: path.to_path_buf(),
        source,
    })?;
    read_bounded_from(&mut f, path, max)
}

/// Reads `f` from its start, failing beyond `max` bytes; `path` names it in errors.
fn read_bounded_from(f: &mut File, path: &Path, max: u64) -> Result<Vec<u8>, GrubError> {
    use std::io::{Read, Seek};
    let io = |source| GrubError::Io {
        what: "read",
        path: path.to_path_buf(),
        source,
    };
    f.rewind().map_err(io)?;
    let mut data = Vec::new();
    f.take(max + 1).read_to_end(&mut data).map_err(io)?;
    if data.len() as u64 > max {
        return Err(io(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        )));
    }
    Ok(data)
}

/// Makes the disk in `out` boot with GRUB: writes the MBR of `layout` with GRUB's boot code and
/// core.img at [`CORE_LBA`]. The filesystem (with /boot/grub/grub.cfg) goes into the partition
/// separately, before or after.
pub fn install(
    out: &File,
    layout: &DiskLayout,
    signature: u32,
    grub: &GrubImages,
) -> Result<(), GrubError> {
    let room = layout.partition_lba().saturating_sub(CORE_LBA);
    if grub.core_sectors() > room {
        return Err(GrubError::TooBig {
            sectors: grub.core_sectors(),
            room,
        });
    }
    mbr::write_mbr(out, layout, signature, Some(grub.boot_code()))?;
    out.write_all_at(grub.core_img(), CORE_LBA * SECTOR)
        .map_err(|source| GrubError::Io {
            what: "write core.img at sector 1 of",
            path: "the disk image".into(),
            source,
        })
}

/// Checks that `value` can go on a config line: printable ASCII without the characters GRUB's
/// shell or grub-legacy would interpret (quotes, `$`, `;`, braces, `#`, backslash).
fn check_value(field: &'static str, value: &str, spaces: bool) -> Result<(), GrubError> {
    let bad = |reason| GrubError::BadValue {
        field,
        value: value.to_string(),
        reason,
    };
    for c in value.chars() {
        if !(c.is_ascii_graphic() || spaces && c == ' ') {
            return Err(bad("only printable ASCII is allowed here"));
        }
        if matches!(
            c,
            '"' | '\'' | '$' | ';' | '{' | '}' | '#' | '\\' | '&' | '|' | '<' | '>'
        ) {
            return Err(bad("quotes, $ ; { } # \\ & | < > are not allowed"));
        }
    }
    Ok(())
}

fn check_path(field: &'static str, value: &str) -> Result<(), GrubError> {
    check_value(field, value, false)?;
    if !value.starts_with('/') {
        return Err(GrubError::BadValue {
            field,
            value: value.to_string(),
            reason: "must be an absolute path inside the root filesystem",
        });
    }
    Ok(())
}

fn check_uuid(value: &str) -> Result<(), GrubError> {
    let groups: Vec<&str> = value.split('-').collect();
    let shape = groups.iter().map(|g| g.len()).collect::<Vec<_>>() == [8, 4, 4, 4, 12];
    if !shape || !value.chars().all(|c| c == '-' || c.is_ascii_hexdigit()) {
        return Err(GrubError::BadValue {
            field: "filesystem UUID",
            value: value.to_string(),
            reason: "must look like 01234567-89ab-cdef-0123-456789abcdef",
        });
    }
    Ok(())
}

/// The kernel arguments after `root=UUID=… ro`: the caller's, plus [`DEFAULT_CONSOLES`] if they
/// name no console.
fn kernel_args(uuid: &str, cmdline: &str) -> Result<String, GrubError> {
    check_uuid(uuid)?;
    check_value("kernel command line", cmdline, true)?;
    let mut args = format!("root=UUID={uuid} ro");
    for word in cmdline.split_whitespace() {
        args.push(' ');
        args.push_str(word);
    }
    if !cmdline
        .split_whitespace()
        .any(|w| w.starts_with("console="))
    {
        args.push(' ');
        args.push_str(DEFAULT_CONSOLES);
    }
    Ok(args)
}

/// `/boot/grub/grub.cfg` for GRUB 2: serial and screen, no menu, one entry that finds the root
/// filesystem by UUID and boots `kernel_path` (with `initrd_path` unless empty). The entry is a
/// `menuentry` block because pygrub, which prefers grub.cfg to menu.lst, only reads those.
pub fn grub_cfg(
    uuid: &str,
    kernel_path: &str,
    initrd_path: &str,
    cmdline: &str,
) -> Result<String, GrubError> {
    let args = kernel_args(uuid, cmdline)?;
    check_path("kernel path", kernel_path)?;
    let mut s = String::from(
        "# Written by imgbuild. GRUB 2 (core.img in the MBR gap) and Xen's pygrub read this.\n\
         serial --unit=0 --speed=115200\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         set default=0\n\
         set timeout=0\n",
    );
    s.push_str(&format!("menuentry '{ENTRY_TITLE}' {{\n"));
    s.push_str(&format!(
        "\tsearch --no-floppy --fs-uuid --set=root {uuid}\n"
    ));
    s.push_str(&format!("\tlinux {kernel_path} {args}\n"));
    if !initrd_path.is_empty() {
        check_path("initrd path", initrd_path)?;
        s.push_str(&format!("\tinitrd {initrd_path}\n"));
    }
    s.push_str("}\n");
    Ok(s)
}

/// `/boot/grub/menu.lst` in grub-legacy syntax, as SL5/SL6 tools and pygrub read it: one entry,
/// no timeout, root on the first partition of the first disk.
pub fn menu_lst(
    uuid: &str,
    kernel_path: &str,
    initrd_path: &str,
    cmdline: &str,
) -> Result<String, GrubError> {
    let args = kernel_args(uuid, cmdline)?;
    check_path("kernel path", kernel_path)?;
    let mut s = String::from(
        "# Written by imgbuild (grub-legacy syntax, for pygrub and SL5/SL6 tools).\n\
         default 0\n\
         timeout 0\n\
         hiddenmenu\n",
    );
    s.push_str(&format!("title {ENTRY_TITLE}\n"));
    s.push_str("\troot (hd0,0)\n");
    s.push_str(&format!("\tkernel {kernel_path} {args}\n"));
    if !initrd_path.is_empty() {
        check_path("initrd path", initrd_path)?;
        s.push_str(&format!("\tinitrd {initrd_path}\n"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_images() -> (Vec<u8>, Vec<u8>) {
        let mut boot = vec![0u8; 512];
        boot[0] = 0xEB;
        boot[DRIVE_CHECK_OFFSET] = 0xEB;
        boot[DRIVE_CHECK_OFFSET + 1] = 0x05;
        boot[510] = 0x55;
        boot[511] = 0xAA;
        let mut core = vec![0xAB; 3 * 512 + 7];
        core[BLOCKLIST_OFFSET - 12..512].fill(0);
        core[510..512].copy_from_slice(&CORE_SEGMENT.to_le_bytes());
        (boot, core)
    }

    #[test]
    fn patches_like_grub_bios_setup() {
        let (boot, core) = fake_images();
        let g = GrubImages::from_bytes(&boot, &core).unwrap();
        let code = g.boot_code();
        assert_eq!(
            code[KERNEL_SECTOR_OFFSET..KERNEL_SECTOR_OFFSET + 8],
            1u64.to_le_bytes()
        );
        assert_eq!(code[BOOT_DRIVE_OFFSET], 0xFF);
        assert_eq!(
            code[DRIVE_CHECK_OFFSET..DRIVE_CHECK_OFFSET + 2],
            [0x90, 0x90]
        );
        assert_eq!(g.core_sectors(), 4);
        let c = g.core_img();
        assert_eq!(c[500..508], 2u64.to_le_bytes());
        assert_eq!(c[508..510], 3u16.to_le_bytes());
        assert_eq!(c[510..512], 0x820u16.to_le_bytes());
        assert_eq!(c[3 * 512 + 7..], [0u8; 505]);
    }

    #[test]
    fn refuses_foreign_images() {
        let (boot, core) = fake_images();
        assert!(GrubImages::from_bytes(&boot[..511], &core).is_err());
        let mut b = boot.clone();
        b[511] = 0;
        assert!(GrubImages::from_bytes(&b, &core).is_err());
        let mut c = core.clone();
        c[510] = 0;
        assert!(GrubImages::from_bytes(&boot, &c).is_err());
        assert!(GrubImages::from_bytes(&boot, &core[..600]).is_err());
        assert!(GrubImages::from_bytes(&boot, &vec![0u8; 2 << 20]).is_err());
    }

    const UUID: &str = "0a1b2c3d-4e5f-4061-8293-a4b5c6d7e8f9";

    #[test]
    fn configs_render() {
        let cfg = grub_cfg(UUID, "/boot/vmlinuz-6.1", "/boot/initrd.img-6.1", "quiet").unwrap();
        assert!(cfg.contains("set timeout=0\n"));
        assert!(cfg.contains(&format!("search --no-floppy --fs-uuid --set=root {UUID}\n")));
        assert!(cfg.contains(&format!(
            "linux /boot/vmlinuz-6.1 root=UUID={UUID} ro quiet {DEFAULT_CONSOLES}\n"
        )));
        assert!(cfg.contains("initrd /boot/initrd.img-6.1\n"));
        let lst = menu_lst(UUID, "/boot/vmlinuz", "", "console=ttyS0").unwrap();
        assert!(lst.contains("default 0\ntimeout 0\n"));
        assert!(lst.contains("root (hd0,0)\n"));
        assert!(lst.contains(&format!(
            "kernel /boot/vmlinuz root=UUID={UUID} ro console=ttyS0\n"
        )));
        assert!(!lst.contains("initrd"));
    }

    #[test]
    fn configs_refuse_injection() {
        assert!(grub_cfg("not-a-uuid", "/k", "/i", "").is_err());
        assert!(grub_cfg(UUID, "k", "/i", "").is_err());
        assert!(grub_cfg(UUID, "/k", "/i", "a\nreboot").is_err());
        assert!(grub_cfg(UUID, "/k x", "/i", "").is_err());
        assert!(menu_lst(UUID, "/k", "/i", "x=$y").is_err());
        assert!(menu_lst(UUID, "/k", "/i;", "").is_err());
    }

    #[test]
    fn core_must_fit_the_gap() {
        let (boot, mut core) = fake_images();
        core.resize(2047 * 512, 1);
        let g = GrubImages::from_bytes(&boot, &core).unwrap();
        let layout = DiskLayout {
            disk_bytes: 2 << 20,
            partition_start: 512 * 1024,
            partition_bytes: (2 << 20) - 512 * 1024,
        };
        let f = tempfile::tempfile().unwrap();
        assert!(matches!(
            install(&f, &layout, 1, &g),
            Err(GrubError::TooBig {
                sectors: 2047,
                room: 1023
            })
        ));
    }
}
