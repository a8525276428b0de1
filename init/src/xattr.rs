//! Extended attributes of host files, read without following symlinks.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Extended attributes of `path` (not following symlinks), sorted by name.
pub fn read(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    let names = xattr_call(|buf, len| {
        // SAFETY: c_path is NUL-terminated; buf is valid for len bytes (or null with len 0).
        unsafe { libc::llistxattr(c_path.as_ptr(), buf.cast(), len) }
    })?;
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name).map_err(|_| io::Error::other("xattr name with NUL"))?;
        let value = xattr_call(|buf, len| {
            // SAFETY: both names are NUL-terminated; buf is valid for len bytes.
            unsafe { libc::lgetxattr(c_path.as_ptr(), c_name.as_ptr(), buf.cast(), len) }
        })?;
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// Calls a size-then-fill xattr syscall until the buffer is large enough.
fn xattr_call(mut call: impl FnMut(*mut u8, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let size = call(std::ptr::null_mut(), 0);
        if size < 0 {
            let err = io::Error::last_os_error();
            // Filesystems without xattr support answer ENOTSUP: that is "no attributes".
            if err.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(err);
        }
        let mut buf = vec![0u8; size as usize];
        if buf.is_empty() {
            return Ok(buf);
        }
        let got = call(buf.as_mut_ptr(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
        // The attribute grew between the two calls: ask again.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_user_xattrs_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"").unwrap();
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        for (name, value) in [("user.b", "2"), ("user.a", "1")] {
            let n = CString::new(name).unwrap();
            // SAFETY: valid NUL-terminated strings and a valid value buffer.
            let r = unsafe {
                libc::lsetxattr(
                    c.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if r != 0 {
                return; // filesystem without user xattrs (tmpfs on old kernels)
            }
        }
        let got = read(&p).unwrap();
        assert_eq!(
            got,
            vec![
                (b"user.a".to_vec(), b"1".to_vec()),
                (b"user.b".to_vec(), b"2".to_vec())
            ]
        );
    }
}
