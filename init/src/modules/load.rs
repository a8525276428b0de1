//! Loading the index's modules for the devices present, as udev and modprobe would, without
//! them: read every device's `modalias` from sysfs, match, load with finit_module.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use super::{canonical_name, ModuleIndex};
use crate::clock;
use crate::results::schema::{ModuleLoad, ModuleStatus};

/// Devices read at most from sysfs (a bound, not an expectation).
const MAX_DEVICES: usize = 100_000;
/// Largest module file loaded through the init_module fallback.
const MAX_MODULE_BYTES: u64 = 256 << 20;

/// The `modalias` of every device on every bus under `sys` (normally `/sys`).
pub fn device_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for device in devices.flatten() {
            if out.len() >= MAX_DEVICES {
                return out;
            }
            let mut text = String::new();
            let read = File::open(device.path().join("modalias"))
                .and_then(|f| f.take(4096).read_to_string(&mut text));
            if read.is_ok() && !text.trim().is_empty() {
                out.push(text.trim().to_owned());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Loads one module file. EEXIST (already loaded or built in) is success.
pub fn load_module_file(path: &Path) -> io::Result<ModuleStatus> {
    let file = File::open(path)?;
    let params = c"";
    // SAFETY: a valid descriptor, a NUL-terminated parameter string, no flags.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), 0) };
    let err = if r == 0 {
        return Ok(ModuleStatus::Loaded);
    } else {
        io::Error::last_os_error()
    };
    let err = match err.raw_os_error() {
        Some(libc::EEXIST) => return Ok(ModuleStatus::AlreadyLoaded),
        // Kernels before 3.8 have only init_module, which takes the image in memory.
        Some(libc::ENOSYS) => {
            let len = file.metadata()?.len();
            if len > MAX_MODULE_BYTES {
                return Err(io::Error::other(format!(
                    "{len} bytes is too large for a module"
                )));
            }
            let image = fs::read(path)?;
            // SAFETY: image is valid for its length; params is NUL-terminated.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_init_module,
                    image.as_ptr(),
                    image.len(),
                    params.as_ptr(),
                )
            };
            if r == 0 {
                return Ok(ModuleStatus::Loaded);
            }
            io::Error::last_os_error()
        }
        _ => err,
    };
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(ModuleStatus::AlreadyLoaded);
    }
    Err(err)
}

/// Loads modules round after round as devices appear (a bus driver makes new devices, which
/// want their own drivers).
pub struct Loader {
    index: ModuleIndex,
    dir: PathBuf,
    attempted: BTreeSet<String>,
    /// Every attempt, in order.
    pub loads: Vec<ModuleLoad>,
    /// Problems of the index (missing dependencies, cycles).
    pub problems: Vec<String>,
}

impl Loader {
    /// A loader for `index`, whose files are under `modules_root/<kernel>/`.
    pub fn new(index: ModuleIndex, modules_root: &Path) -> Loader {
        let dir = modules_root.join(&index.kernel);
        Loader {
            index,
            dir,
            attempted: BTreeSet::new(),
            loads: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// Loads what the devices under `sys` want and has not been tried; returns how many
    /// modules were tried in this round.
    pub fn round(&mut self, sys: &Path) -> usize {
        let aliases = device_modaliases(sys);
        let wanted: Vec<String> = self
            .index
            .wanted(&aliases)
            .into_iter()
            .filter(|n| !self.attempted.contains(n))
            .collect();
        if wanted.is_empty() {
            return 0;
        }
        let (order, problems) = self.index.load_order(&wanted);
        for p in problems {
            if !self.problems.contains(&p) {
                self.problems.push(p);
            }
        }
        let todo: Vec<(String, PathBuf)> = order
            .into_iter()
            .filter(|m| !self.attempted.contains(&canonical_name(&m.name)))
            .map(|m| (canonical_name(&m.name), self.dir.join(&m.file)))
            .collect();
        for (name, path) in &todo {
            self.attempted.insert(name.clone());
            let (status, error) = match load_module_file(path) {
                Ok(status) => (status, None),
                Err(e) => (
                    ModuleStatus::Failed,
                    Some(format!("{}: {e}", path.display())),
                ),
            };
            match &error {
                Some(e) => crate::say!("module {name}: FAILED: {e}"),
                None => crate::say!("module {name}: {status:?}"),
            }
            self.loads.push(ModuleLoad {
                name: name.clone(),
                status,
                error,
                at_s: clock::since_boot(),
            });
        }
        todo.len()
    }

    /// Names of modules that loaded (or were there already).
    pub fn loaded(&self) -> impl Iterator<Item = &str> {
        self.loads
            .iter()
            .filter(|l| l.status != ModuleStatus::Failed)
            .map(|l| l.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::ModuleEntry;

    #[test]
    fn modaliases_are_read_from_a_sysfs_tree() {
        let sys = tempfile::tempdir().unwrap();
        for (bus, dev, alias) in [
            (
                "pci",
                "0000:00:04.0",
                "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00\n",
            ),
            ("virtio", "virtio0", "virtio:d00000002v00001AF4\n"),
            ("virtio", "virtio1", "virtio:d00000002v00001AF4\n"),
        ] {
            let d = sys.path().join("bus").join(bus).join("devices").join(dev);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("modalias"), alias).unwrap();
        }
        fs::create_dir_all(sys.path().join("bus/platform/devices/nothing")).unwrap();
        let got = device_modaliases(sys.path());
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.contains(&"virtio:d00000002v00001AF4".to_string()));
    }

    #[test]
    fn failed_loads_are_recorded_not_fatal() {
        let sys = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let index = ModuleIndex {
            kernel: "k".into(),
            modules: vec![ModuleEntry {
                name: "nonexistent-mod".into(),
                file: "missing.ko".into(),
                always: true,
                ..Default::default()
            }],
        };
        let mut loader = Loader::new(index, root.path());
        assert_eq!(loader.round(sys.path()), 1);
        assert_eq!(loader.round(sys.path()), 0, "tried once only");
        assert_eq!(loader.loads[0].status, ModuleStatus::Failed);
        assert!(loader.loads[0]
            .error
            .as_deref()
            .unwrap()
            .contains("missing.ko"));
        assert_eq!(loader.loaded().count(), 0);
    }
}
