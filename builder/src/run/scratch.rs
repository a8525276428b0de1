//! Scratch copies of the build's disks: a guest writes to its root filesystem (the work
//! directory of the workloads) and to its results disk, and the build must stay byte for byte
//! what its manifest says. Copies keep holes (only data ranges are copied, in the kernel).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use super::RunError;
use crate::tree::Content;

/// Copies `src` to a new file `dest` (which must not exist), holes preserved.
pub fn sparse_copy(src: &Path, dest: &Path) -> Result<(), RunError> {
    let input = File::open(src).map_err(RunError::io(src, "open"))?;
    let len = input.metadata().map_err(RunError::io(src, "stat"))?.len();
    let output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(RunError::io(dest, "create"))?;
    output.set_len(len).map_err(RunError::io(dest, "size"))?;
    copy_ranges(src, &input, &output, len).map_err(RunError::io(dest, "copy into"))?;
    output.sync_all().map_err(RunError::io(dest, "sync"))
}

fn copy_ranges(src: &Path, input: &File, output: &File, len: u64) -> io::Result<()> {
    let content = Content::HostFile(Arc::from(src));
    let reader = content
        .open(len, &src.display().to_string())
        .map_err(|e| e.source)?;
    for (start, end) in reader.data_ranges()? {
        let mut in_off = i64::try_from(start).map_err(io::Error::other)?;
        let mut out_off = in_off;
        let mut left = end.saturating_sub(start);
        while left > 0 {
            let chunk = usize::try_from(left.min(1 << 30)).unwrap_or(1 << 30);
            // SAFETY: two open descriptors and offsets the kernel updates.
            let n = unsafe {
                libc::copy_file_range(
                    input.as_raw_fd(),
                    &mut in_off,
                    output.as_raw_fd(),
                    &mut out_off,
                    chunk,
                    0,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} ended at byte {in_off}", src.display()),
                ));
            }
            left = left.saturating_sub(n as u64);
        }
    }
    Ok(())
}

/// Copies the disk `src` into the directory `dest_dir` under its own name, with the extent
/// files a VMDK descriptor names (monolithicFlat); returns the copy's path.
pub fn copy_disk(src: &Path, dest_dir: &Path) -> Result<std::path::PathBuf, RunError> {
    let name = src
        .file_name()
        .ok_or_else(|| RunError::Usage(format!("{} is not a file", src.display())))?;
    let dest = dest_dir.join(name);
    sparse_copy(src, &dest)?;
    let mut head = [0u8; 21];
    let n = File::open(src)
        .and_then(|f| std::os::unix::fs::FileExt::read_at(&f, &mut head, 0))
        .map_err(RunError::io(src, "read"))?;
    if !head[..n].starts_with(b"# Disk DescriptorFile") {
        return Ok(dest);
    }
    let text = std::fs::read_to_string(src).map_err(RunError::io(src, "read"))?;
    let descriptor = crate::vmdk::descriptor::parse(&text)
        .map_err(|(line, e)| RunError::Usage(format!("{}: line {line}: {e}", src.display())))?;
    let dir = src.parent().unwrap_or(Path::new("."));
    for extent in descriptor.extents {
        let Some(file) = extent.file else { continue };
        if file.is_empty() || file.contains('/') || file.starts_with('.') {
            return Err(RunError::Usage(format!(
                "{}: extent {file:?} is not a file next to the descriptor",
                src.display()
            )));
        }
        sparse_copy(&dir.join(&file), &dest_dir.join(&file))?;
    }
    Ok(dest)
}

/// Checks that files in `dir` can be opened with O_DIRECT, which QEMU's `cache=none` needs
/// (tmpfs, for one, refuses it).
pub fn check_direct_io(dir: &Path) -> Result<(), RunError> {
    let probe = dir.join(".direct-io-probe");
    let result = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_DIRECT)
        .open(&probe);
    let _ = std::fs::remove_file(&probe);
    match result {
        Ok(_) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Err(RunError::Usage(format!(
            "--cache none needs O_DIRECT, which the filesystem of {} does not support; use \
             --cache writeback or an output directory on another filesystem",
            dir.display()
        ))),
        Err(e) => Err(RunError::io(&probe, "create")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copy_keeps_bytes_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(32 << 20).unwrap();
        f.write_at(b"head", 0).unwrap();
        f.write_at(b"middle", 16 << 20).unwrap();
        f.write_at(b"tail", (32 << 20) - 4).unwrap();
        let dest = dir.path().join("dest");
        sparse_copy(&src, &dest).unwrap();
        let a = std::fs::read(&src).unwrap();
        let b = std::fs::read(&dest).unwrap();
        assert!(a == b);
        assert!(std::fs::metadata(&dest).unwrap().blocks() * 512 < 4 << 20);
        // The destination must be new.
        assert!(sparse_copy(&src, &dest).is_err());
    }

    #[test]
    fn direct_io_probe_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let _ = check_direct_io(dir.path());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
