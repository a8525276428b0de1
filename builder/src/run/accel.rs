//! Which accelerator QEMU gets: KVM only when a probe boot proves it works on this host (a
//! nested KVM can exist and hang), else TCG. The probe's outcome is cached for the host's boot.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::qemu::{supervise, Accel, Outcome};

/// How long a working KVM takes at most to start a kernel that panics at once.
const PROBE_TIMEOUT: Duration = Duration::from_secs(6);

/// The accelerator to use: `IMGBUILD_ACCEL` (kvm or tcg) when set; otherwise KVM only if
/// /dev/kvm exists and a probe boot of `kernel` (no root, `panic=-1`) exits within seconds.
/// The probe runs once per process, and its outcome is kept for the rest of the host's boot
/// (see [`choose_accel_explained`]).
pub fn choose_accel(qemu: &Path, kernel: &Path) -> Accel {
    choose_accel_explained(qemu, kernel).0
}

/// [`choose_accel`] with the reason, for the run's record.
///
/// A probe that hangs costs its whole timeout, and every `imgbuild run` would pay it again:
/// the outcome is cached in `$XDG_RUNTIME_DIR` (else the temporary directory) under the
/// host's boot id, this user and the QEMU binary, so a reboot, another QEMU or a new /dev/kvm
/// state probes afresh.
pub fn choose_accel_explained(qemu: &Path, kernel: &Path) -> (Accel, String) {
    static CHOSEN: OnceLock<(Accel, String)> = OnceLock::new();
    CHOSEN
        .get_or_init(|| match std::env::var("IMGBUILD_ACCEL").as_deref() {
            Ok("kvm") => (Accel::Kvm, "IMGBUILD_ACCEL=kvm".into()),
            Ok("tcg") => (Accel::Tcg, "IMGBUILD_ACCEL=tcg".into()),
            _ => cached_probe(qemu, kernel),
        })
        .clone()
}

/// What identifies a probe's outcome: QEMU's path and modification time, /dev/kvm's presence.
fn probe_key(qemu: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mtime = std::fs::metadata(qemu).map(|m| m.mtime()).unwrap_or(0);
    format!(
        "{} {mtime} {}",
        qemu.display(),
        Path::new("/dev/kvm").exists()
    )
}

fn probe_cache_file() -> Option<PathBuf> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let dir = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    Some(dir.join(format!("imgbuild-kvm-probe-{uid}-{}", boot_id.trim())))
}

fn cached_probe(qemu: &Path, kernel: &Path) -> (Accel, String) {
    use std::os::unix::fs::MetadataExt;
    let key = probe_key(qemu);
    let file = probe_cache_file();
    if let Some(path) = &file {
        // SAFETY: getuid has no preconditions.
        let mine = std::fs::symlink_metadata(path)
            .is_ok_and(|m| m.is_file() && m.uid() == unsafe { libc::getuid() });
        if let (true, Ok(text)) = (mine, std::fs::read_to_string(path)) {
            let (accel, rest) = text.split_once('\n').unwrap_or(("", ""));
            let (cached_key, reason) = rest.split_once('\n').unwrap_or((rest, ""));
            if cached_key == key {
                let accel = match accel {
                    "kvm" => Some(Accel::Kvm),
                    "tcg" => Some(Accel::Tcg),
                    _ => None,
                };
                if let Some(accel) = accel {
                    return (
                        accel,
                        format!(
                            "{reason} (probed earlier in this boot; cached in {})",
                            path.display()
                        ),
                    );
                }
            }
        }
    }
    let (accel, reason) = probe_kvm(qemu, kernel);
    if let Some(path) = &file {
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let text = format!("{}\n{key}\n{reason}", accel.name());
        if std::fs::write(&tmp, text).is_ok() {
            let _ = std::fs::rename(&tmp, path);
        }
    }
    (accel, reason)
}

fn probe_kvm(qemu: &Path, kernel: &Path) -> (Accel, String) {
    if !Path::new("/dev/kvm").exists() {
        return (Accel::Tcg, "no /dev/kvm: TCG".into());
    }
    let start = Instant::now();
    let child = Command::new(qemu)
        .args(["-accel", "kvm", "-cpu", "host", "-m", "128", "-nodefaults"])
        .args(["-display", "none", "-no-reboot", "-monitor", "none"])
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match child.and_then(|c| supervise(c, PROBE_TIMEOUT, start)) {
        Ok(Outcome {
            status: Some(s),
            wall,
            ..
        }) if s.success() => (
            Accel::Kvm,
            format!("KVM probe boot ended in {:.1} s: KVM", wall.as_secs_f64()),
        ),
        Ok(Outcome {
            timed_out: true, ..
        }) => (
            Accel::Tcg,
            format!(
                "KVM probe boot did not end within {} s (nested KVM that hangs): TCG",
                PROBE_TIMEOUT.as_secs()
            ),
        ),
        Ok(o) => (
            Accel::Tcg,
            format!("KVM probe boot failed ({:?}): TCG", o.status),
        ),
        Err(e) => (
            Accel::Tcg,
            format!("KVM probe could not start QEMU ({e}): TCG"),
        ),
    }
}
