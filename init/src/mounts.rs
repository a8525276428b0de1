//! Thin, checked wrappers of the mount-related syscalls the boot stages use.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// `statfs` magic of ramfs (the initramfs root).
pub const RAMFS_MAGIC: i64 = 0x8584_58f6;
/// `statfs` magic of tmpfs (also an initramfs root when the kernel chooses it).
pub const TMPFS_MAGIC: i64 = 0x0102_1994;
/// `statfs` magic of proc.
pub const PROC_SUPER_MAGIC: i64 = 0x9fa0;
/// `statfs` magic of sysfs.
pub const SYSFS_MAGIC: i64 = 0x6265_6572;

/// A mount-related call that failed, with what it was doing.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action}: {source}")]
pub struct MountError {
    /// What was attempted (`mount proc on /proc`).
    pub action: String,
    /// The errno.
    #[source]
    pub source: io::Error,
}

impl MountError {
    /// The errno of the failure.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// A C string of a path, for syscalls.
pub fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn c_str(text: &str) -> io::Result<CString> {
    CString::new(text).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "text contains NUL"))
}

/// mount(2). `fstype` and `data` may be absent (bind and move mounts).
pub fn mount(
    source: &str,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<(), MountError> {
    let action = || {
        format!(
            "mount {source} on {} (type {}, flags {flags:#x})",
            target.display(),
            fstype.unwrap_or("none")
        )
    };
    let wrap = |source: io::Error| MountError {
        action: action(),
        source,
    };
    let c_source = c_str(source).map_err(wrap)?;
    let c_target = c_path(target).map_err(wrap)?;
    let c_type = fstype.map(c_str).transpose().map_err(wrap)?;
    let c_data = data.map(c_str).transpose().map_err(wrap)?;
    // SAFETY: every pointer is a NUL-terminated string or null, as mount(2) accepts.
    let r = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_type.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            c_data
                .as_ref()
                .map_or(std::ptr::null(), |d| d.as_ptr().cast()),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(wrap(io::Error::last_os_error()))
    }
}

/// umount2(2).
pub fn umount(target: &Path, flags: libc::c_int) -> Result<(), MountError> {
    let wrap = |source| MountError {
        action: format!("unmount {}", target.display()),
        source,
    };
    let c_target = c_path(target).map_err(wrap)?;
    // SAFETY: NUL-terminated path.
    if unsafe { libc::umount2(c_target.as_ptr(), flags) } == 0 {
        Ok(())
    } else {
        Err(wrap(io::Error::last_os_error()))
    }
}

/// The filesystem magic of the filesystem holding `path`.
pub fn fs_magic(path: &Path) -> io::Result<i64> {
    let c = c_path(path)?;
    // SAFETY: statfs is plain data; the call fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64)
}

/// True when `path` is on a filesystem with `magic`.
pub fn is_fs(path: &Path, magic: i64) -> bool {
    fs_magic(path).is_ok_and(|m| m == magic)
}

/// Mounts `fstype` on `target` (created if missing) unless a filesystem with `magic` is there.
/// Returns true when it mounted something.
pub fn ensure_mounted(
    fstype: &str,
    target: &Path,
    magic: Option<i64>,
    flags: libc::c_ulong,
) -> Result<bool, MountError> {
    if let Some(magic) = magic {
        if is_fs(target, magic) {
            return Ok(false);
        }
    }
    if let Err(source) = std::fs::create_dir_all(target) {
        return Err(MountError {
            action: format!("create mount point {}", target.display()),
            source,
        });
    }
    match mount(fstype, target, Some(fstype), flags, None) {
        Ok(()) => Ok(true),
        // Already mounted there (devtmpfs auto-mounted by the kernel, for example).
        Err(e) if e.errno() == Some(libc::EBUSY) => Ok(false),
        Err(e) => Err(e),
    }
}

/// True when `path` is the root of a mount: its device differs from its parent's, or it is
/// the same directory as its parent (`/`).
pub fn is_mount_point(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let (Ok(me), Ok(parent)) = (std::fs::metadata(path), std::fs::metadata(path.join(".."))) else {
        return false;
    };
    me.dev() != parent.dev() || me.ino() == parent.ino()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_is_recognised_and_root_is_a_mount_point() {
        assert!(is_fs(Path::new("/proc"), PROC_SUPER_MAGIC) || !Path::new("/proc/self").exists());
        assert!(is_mount_point(Path::new("/")));
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert!(!is_mount_point(&dir.path().join("sub")));
    }

    #[test]
    fn failures_name_the_call() {
        let err = mount(
            "none",
            Path::new("/nonexistent/imgbuild"),
            Some("bogusfs"),
            0,
            None,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/imgbuild") && text.contains("bogusfs"),
            "{text}"
        );
        assert!(err.errno().is_some());
    }
}
