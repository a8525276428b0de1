//! QEMU as a boot engine: one command-line builder for every platform's device set, and
//! supervision of the QEMU process (timeout, kill, serial console to a file). The KVM probe is
//! in [`super::accel`].
//!
//! Device sets: [`DeviceSet::Virtio`] is virtio disk and network (KVM's, and Xen's image under
//! QEMU); [`DeviceSet::Vmware`] is VMware's emulated SCSI controller (pvscsi, or mptsas1068 for
//! lsisas1068) and NIC (vmxnet3 or e1000) with the VMDK booted from disk.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::definition::{NicModel, ScsiAdapter};

pub use super::accel::{choose_accel, choose_accel_explained};

/// CPU accelerator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// Software emulation.
    Tcg,
}

impl Accel {
    /// `kvm` or `tcg`.
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }

    /// The guest's CPU model. Under KVM the host's CPU. Under TCG a named model rather than
    /// `max`, whose features change with every QEMU release (results would not compare across
    /// hosts) and slow the guest's kernel down: Westmere (SSE4.2, AES-NI, PCLMULQDQ, 2010) is
    /// the newest model TCG emulates without dropping a feature, and the paper's hardware era.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Accel::Kvm => "host",
            Accel::Tcg => "Westmere",
        }
    }
}

/// Host-side cache mode of the guest's disks (the same for every engine of a comparison).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// O_DIRECT on the host: guest I/O is not inflated by the host's page cache.
    #[default]
    None,
    /// Host page cache, write-back.
    Writeback,
    /// Host page cache, write-through.
    Writethrough,
}

impl CacheMode {
    /// QEMU's name.
    pub fn name(self) -> &'static str {
        match self {
            CacheMode::None => "none",
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
        }
    }
}

/// Whose device set the guest sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSet {
    /// virtio-blk and virtio-net (KVM's).
    Virtio,
    /// VMware's SCSI controller and NIC.
    Vmware {
        /// SCSI controller.
        adapter: ScsiAdapter,
        /// NIC.
        nic: NicModel,
    },
}

/// How the guest is started.
#[derive(Debug, Clone)]
pub enum Boot {
    /// QEMU loads kernel and initramfs itself.
    Kernel {
        /// Kernel image on the host.
        kernel: PathBuf,
        /// Initramfs on the host.
        initrd: PathBuf,
        /// Kernel command line.
        cmdline: String,
    },
    /// The BIOS boots the first disk (its own boot loader).
    Disk,
}

/// A disk image attached to the guest.
#[derive(Debug, Clone)]
pub struct Drive {
    /// Host path.
    pub path: PathBuf,
    /// `raw`, `vmdk` or `qcow2`.
    pub format: &'static str,
}

/// Everything that makes one QEMU guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// Accelerator.
    pub accel: Accel,
    /// vCPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mb: u32,
    /// Disk cache mode.
    pub cache: CacheMode,
    /// Device set.
    pub devices: DeviceSet,
    /// Boot method.
    pub boot: Boot,
    /// Disks in order: the root disk first, the results disk second.
    pub drives: Vec<Drive>,
    /// Where the serial console goes.
    pub serial_log: PathBuf,
    /// Host TCP port forwarded to the guest's port 80, for a client on the host.
    pub forward_http: Option<u16>,
    /// Firmware in place of QEMU's default SeaBIOS (`-bios`).
    pub firmware: Option<PathBuf>,
}

/// QEMU's qboot, a firmware that does no more than start a kernel QEMU loaded (the microvm
/// machine's default), where the QEMU installation at `qemu` has it. SeaBIOS's power-on self
/// test costs a tenth of a second under TCG and only matters to guests that boot from a disk.
pub fn qboot(qemu: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(qemu).ok()?;
    let rom = real.parent()?.parent()?.join("share/qemu/qboot.rom");
    rom.is_file().then_some(rom)
}

/// A QEMU command line, printable exactly as it will run.
#[derive(Debug, Clone)]
pub struct QemuCommand {
    program: OsString,
    args: Vec<OsString>,
}

impl QemuCommand {
    /// The program and arguments.
    pub fn argv(&self) -> impl Iterator<Item = &OsStr> {
        std::iter::once(self.program.as_os_str()).chain(self.args.iter().map(OsString::as_os_str))
    }
}

impl fmt::Display for QemuCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let words: Vec<String> = self
            .argv()
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect();
        f.write_str(&words.join(" "))
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

/// The QEMU binary: `IMGBUILD_QEMU` or `qemu-system-x86_64` on PATH.
pub fn qemu_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IMGBUILD_QEMU") {
        return Some(PathBuf::from(p));
    }
    find_on_path("qemu-system-x86_64")
}

/// Finds an executable on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Builds the command line for `guest`.
pub fn command(qemu: &Path, guest: &Guest) -> QemuCommand {
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-accel", guest.accel.name()]);
    // The KVM platform is a q35 machine (libvirt's and virt-install's default for x86-64
    // guests): its PCI interrupts reach the guest through fixed GSI links, where the i440FX's
    // PIIX links make the kernel run ACPI interrupt-routing AML for every virtio device (0.4 s
    // of every boot under TCG). KVM's and Xen's platforms run Linux guests without an HPET
    // (libvirt's and PVH's defaults); under TCG an HPET also makes the guest's clock reads MMIO
    // exits and its TSC calibration slow. VMware's virtual hardware is an i440BX with an HPET,
    // so its device set keeps the `pc` machine and its HPET.
    let machine = match guest.devices {
        DeviceSet::Virtio => "q35,hpet=off",
        DeviceSet::Vmware { .. } => "pc",
    };
    push(&["-machine", machine]);
    push(&["-cpu", guest.accel.cpu_model()]);
    push(&["-smp", &guest.cpus.to_string()]);
    push(&["-m", &guest.memory_mb.to_string()]);
    push(&[
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-monitor",
        "none",
    ]);
    push(&["-serial", &format!("file:{}", guest.serial_log.display())]);
    if let Some(firmware) = &guest.firmware {
        push(&["-bios", &firmware.display().to_string()]);
    }
    match &guest.boot {
        Boot::Kernel {
            kernel,
            initrd,
            cmdline,
        } => {
            push(&["-kernel", &kernel.display().to_string()]);
            push(&["-initrd", &initrd.display().to_string()]);
            push(&["-append", cmdline]);
        }
        Boot::Disk => push(&["-boot", "order=c"]),
    }
    let cache = guest.cache.name();
    match guest.devices {
        DeviceSet::Virtio => {
            for (i, d) in guest.drives.iter().enumerate() {
                push(&[
                    "-drive",
                    &format!(
                        "file={},format={},if=none,id=d{i},cache={cache}",
                        drive_path(&d.path),
                        d.format
                    ),
                ]);
                push(&["-device", &format!("virtio-blk-pci,drive=d{i}")]);
            }
        }
        DeviceSet::Vmware { adapter, .. } => {
            let controller = match adapter {
                ScsiAdapter::Pvscsi => "pvscsi",
                // QEMU has no LSI53C1030 (mptspi); the SAS 1068 is the closest it emulates.
                ScsiAdapter::Lsilogic | ScsiAdapter::Lsisas1068 => "mptsas1068",
            };
            push(&["-device", &format!("{controller},id=scsi0")]);
            for (i, d) in guest.drives.iter().enumerate() {
                push(&[
                    "-drive",
                    &format!(
                        "file={},format={},if=none,id=d{i},cache={cache}",
                        drive_path(&d.path),
                        d.format
                    ),
                ]);
                push(&[
                    "-device",
                    &format!("scsi-hd,drive=d{i},bus=scsi0.0,scsi-id={i},lun=0"),
                ]);
            }
        }
    }
    let nic = match guest.devices {
        DeviceSet::Virtio => "virtio-net-pci",
        DeviceSet::Vmware {
            nic: NicModel::Vmxnet3,
            ..
        } => "vmxnet3",
        DeviceSet::Vmware {
            nic: NicModel::E1000,
            ..
        } => "e1000",
    };
    let mut netdev = "user,id=n0".to_string();
    if let Some(port) = guest.forward_http {
        netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{port}-:80"));
    }
    push(&["-netdev", &netdev]);
    // No option ROM: the guests boot from the kernel or the disk, never from the network, and
    // SeaBIOS would otherwise load and start the NIC's iPXE before booting.
    push(&["-device", &format!("{nic},netdev=n0,romfile=")]);
    QemuCommand {
        program: qemu.as_os_str().to_os_string(),
        args: a.into_iter().map(OsString::from).collect(),
    }
}

fn drive_path(p: &Path) -> String {
    // QEMU's -drive splits on commas; a comma in a path is written doubled.
    p.display().to_string().replace(',', ",,")
}

/// How a QEMU run ended.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's exit status (None when it was killed at the timeout).
    pub status: Option<ExitStatus>,
    /// The guest did not finish in time and was killed.
    pub timed_out: bool,
    /// Wall time from start to exit.
    pub wall: Duration,
}

/// Starts `cmd`, waits up to `timeout`, kills it (SIGKILL) past that. QEMU's own stderr goes
/// to `stderr_log`; `tick` is called about every 10 ms while QEMU runs.
pub fn run(
    cmd: &QemuCommand,
    timeout: Duration,
    stderr_log: &Path,
    tick: &mut dyn FnMut(),
) -> io::Result<Outcome> {
    let log = std::fs::File::create(stderr_log)?;
    let mut argv = cmd.argv();
    let program = argv.next().unwrap_or_default();
    let start = Instant::now();
    let child = Command::new(program)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?;
    supervise_with(child, timeout, start, tick, &mut |c: &mut Child| {
        let _ = c.kill();
    })
}

/// Waits for `child` until `timeout` after `start`, then kills it.
pub fn supervise(child: Child, timeout: Duration, start: Instant) -> io::Result<Outcome> {
    supervise_with(child, timeout, start, &mut || {}, &mut |c: &mut Child| {
        let _ = c.kill();
    })
}

/// Waits for `child` until `timeout` after `start`, calling `tick` about every 10 ms while it
/// runs; at the timeout calls `kill` (which must make the child exit: a container runtime
/// kills its container first) and reaps the child.
pub fn supervise_with(
    mut child: Child,
    timeout: Duration,
    start: Instant,
    tick: &mut dyn FnMut(),
    kill: &mut dyn FnMut(&mut Child),
) -> io::Result<Outcome> {
    loop {
        if let Some(status) = child.try_wait()? {
            tick();
            return Ok(Outcome {
                status: Some(status),
                timed_out: false,
                wall: start.elapsed(),
            });
        }
        if start.elapsed() >= timeout {
            kill(&mut child);
            // A child that survives its kill is killed outright.
            let waited = Instant::now();
            while child.try_wait()?.is_none() {
                if waited.elapsed() > Duration::from_secs(10) {
                    let _ = child.kill();
                    child.wait()?;
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            return Ok(Outcome {
                status: None,
                timed_out: true,
                wall: start.elapsed(),
            });
        }
        tick();
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(devices: DeviceSet, boot: Boot) -> Guest {
        Guest {
            accel: Accel::Tcg,
            cpus: 2,
            memory_mb: 512,
            cache: CacheMode::None,
            devices,
            boot,
            drives: vec![
                Drive {
                    path: "/o/root,1.vmdk".into(),
                    format: "vmdk",
                },
                Drive {
                    path: "/o/results.vmdk".into(),
                    format: "vmdk",
                },
            ],
            serial_log: "/o/console.log".into(),
            forward_http: Some(8080),
            firmware: None,
        }
    }

    #[test]
    fn vmware_device_set_boots_from_disk() {
        let g = guest(
            DeviceSet::Vmware {
                adapter: ScsiAdapter::Pvscsi,
                nic: NicModel::Vmxnet3,
            },
            Boot::Disk,
        );
        let text = command(Path::new("qemu-system-x86_64"), &g).to_string();
        assert!(text.contains("-device pvscsi,id=scsi0"), "{text}");
        assert!(text.contains("file=/o/root,,1.vmdk,format=vmdk"), "{text}");
        assert!(
            text.contains("scsi-hd,drive=d1,bus=scsi0.0,scsi-id=1"),
            "{text}"
        );
        assert!(text.contains("-device vmxnet3,netdev=n0"), "{text}");
        assert!(text.contains("-machine pc "), "{text}");
        assert!(text.contains("hostfwd=tcp:127.0.0.1:8080-:80"), "{text}");
        assert!(!text.contains("-kernel"), "{text}");
    }

    #[test]
    fn virtio_direct_kernel_boot_quotes_the_cmdline() {
        let g = guest(
            DeviceSet::Virtio,
            Boot::Kernel {
                kernel: "/k".into(),
                initrd: "/i".into(),
                cmdline: "root=UUID=x console=ttyS0".into(),
            },
        );
        let text = command(Path::new("/usr/bin/qemu-system-x86_64"), &g).to_string();
        assert!(
            text.contains("-append 'root=UUID=x console=ttyS0'"),
            "{text}"
        );
        assert!(text.contains("virtio-blk-pci,drive=d0"), "{text}");
        assert!(text.contains("cache=none"), "{text}");
        assert!(text.contains("-machine q35,hpet=off"), "{text}");
        assert!(text.contains("-cpu Westmere"), "{text}");
        assert!(!text.contains("-bios"), "{text}");
    }

    #[test]
    fn qboot_is_found_beside_the_qemu_installation_and_passed_as_bios() {
        let prefix = tempfile::tempdir().unwrap();
        let bin = prefix.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let qemu = bin.join("qemu-system-x86_64");
        std::fs::write(&qemu, b"").unwrap();
        assert_eq!(qboot(&qemu), None);
        let share = prefix.path().join("share/qemu");
        std::fs::create_dir_all(&share).unwrap();
        std::fs::write(share.join("qboot.rom"), b"rom").unwrap();
        let rom = qboot(&qemu).unwrap();
        assert!(rom.ends_with("share/qemu/qboot.rom"), "{}", rom.display());
        let mut g = guest(
            DeviceSet::Virtio,
            Boot::Kernel {
                kernel: "/o/vmlinux".into(),
                initrd: "/o/initrd".into(),
                cmdline: "root=UUID=x".into(),
            },
        );
        g.firmware = Some(rom.clone());
        let text = command(Path::new("qemu-system-x86_64"), &g).to_string();
        assert!(text.contains(&format!("-bios {}", rom.display())), "{text}");
    }

    #[test]
    fn supervise_kills_at_timeout() {
        let child = Command::new("sleep").arg("30").spawn().unwrap();
        let out = supervise(child, Duration::from_millis(200), Instant::now()).unwrap();
        assert!(out.timed_out && out.status.is_none());
        let child = Command::new("true").spawn().unwrap();
        let out = supervise(child, Duration::from_secs(10), Instant::now()).unwrap();
        assert!(!out.timed_out && out.status.unwrap().success());
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(shell_quote("file:/x"), "file:/x");
    }
}
