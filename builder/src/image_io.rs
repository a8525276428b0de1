//! Positional reads over images, whatever holds them: a file, a partition of a disk image, a
//! VMDK, memory. The ext4 reader, the VMDK reader and `verify` all read through [`ReadAt`].

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Random-access reads of a fixed-size image.
pub trait ReadAt: Sync {
    /// Reads up to `buf.len()` bytes at `offset`; 0 means end of image.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// The size of the image in bytes.
    fn size(&self) -> io::Result<u64>;

    /// Fills `buf` from `offset`, or fails with UnexpectedEof naming the offset.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            let n = self.read_at(&mut buf[done..], offset + done as u64)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("image ends at byte {}", offset + done as u64),
                ));
            }
            done += n;
        }
        Ok(())
    }
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        block_device_or_file_size(self)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        (**self).read_at(buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
}

/// A window of another image: a partition inside a disk image.
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Window<R> {
    /// The bytes `[start, start + len)` of `inner`.
    pub fn new(inner: R, start: u64, len: u64) -> Window<R> {
        Window { inner, start, len }
    }
}

impl<R: ReadAt> ReadAt for Window<R> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let n = buf
            .len()
            .min((self.len - offset).min(usize::MAX as u64) as usize);
        self.inner.read_at(&mut buf[..n], self.start + offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

/// A `Read + Seek` view of a [`ReadAt`] image, for readers written against streams.
pub struct Cursor<R> {
    inner: R,
    pos: u64,
}

impl<R: ReadAt> Cursor<R> {
    /// A cursor at offset 0.
    pub fn new(inner: R) -> Cursor<R> {
        Cursor { inner, pos: 0 }
    }
}

impl<R: ReadAt> io::Read for Cursor<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: ReadAt> io::Seek for Cursor<R> {
    fn seek(&mut self, to: io::SeekFrom) -> io::Result<u64> {
        let base = match to {
            io::SeekFrom::Start(p) => {
                self.pos = p;
                return Ok(p);
            }
            io::SeekFrom::End(d) => (self.inner.size()?, d),
            io::SeekFrom::Current(d) => (self.pos, d),
        };
        self.pos = base
            .0
            .checked_add_signed(base.1)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek out of range"))?;
        Ok(self.pos)
    }
}

/// The byte ranges `(start, end)` within `[from, to)` of `file` that may hold data; the rest
/// are holes and read as zeros. Found with SEEK_DATA/SEEK_HOLE, so a 10 GiB sparse file costs a
/// few calls; files and devices without hole reporting give one range covering everything.
pub fn data_ranges(file: &File, from: u64, to: u64) -> io::Result<Vec<(u64, u64)>> {
    use std::os::unix::io::AsRawFd;
    let fd = file.as_raw_fd();
    let mut ranges = Vec::new();
    let mut pos = from;
    while pos < to {
        let data = match seek(fd, pos, libc::SEEK_DATA) {
            Ok(d) => d,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => break,
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(vec![(pos, to)]),
            Err(e) => return Err(e),
        };
        if data >= to {
            break;
        }
        let hole = seek(fd, data, libc::SEEK_HOLE)?.min(to);
        if hole <= data {
            // The file is changing under us: take the rest as data rather than loop.
            ranges.push((data, to));
            break;
        }
        ranges.push((data, hole));
        pos = hole;
    }
    Ok(ranges)
}

fn seek(fd: i32, offset: u64, whence: i32) -> io::Result<u64> {
    let offset = i64::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: lseek has no memory effects. Moving a shared descriptor's offset is harmless:
    // every read through these descriptors is positional.
    let r = unsafe { libc::lseek(fd, offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// One `copy_file_range` call: up to `len` bytes (at most 1 GiB) from `src` at `src_at` to
/// `dst` at `dst_at`, moved inside the kernel. Returns the bytes copied (0 at the source's end).
pub fn copy_file_range(
    src: &File,
    src_at: u64,
    dst: &File,
    dst_at: u64,
    len: u64,
) -> io::Result<u64> {
    use std::os::unix::io::AsRawFd;
    let mut off_in =
        i64::try_from(src_at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut off_out =
        i64::try_from(dst_at).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len = usize::try_from(len.min(1 << 30)).unwrap_or(1 << 30);
    // SAFETY: both descriptors are open for the call; the offsets point to locals.
    let r = unsafe {
        libc::copy_file_range(
            src.as_raw_fd(),
            &mut off_in,
            dst.as_raw_fd(),
            &mut off_out,
            len,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as u64)
    }
}

/// Size of a regular file, or of a block device (where metadata says 0).
pub fn block_device_or_file_size(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    let meta = file.metadata()?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    use std::os::unix::io::AsRawFd;
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: the ioctl writes one u64 into `size`, which lives for the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_ranges_skip_holes() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(16 << 20).unwrap();
        FileExt::write_at(&f, b"x", 8 << 20).unwrap();
        let r = data_ranges(&f, 1 << 20, 12 << 20).unwrap();
        assert!(!r.is_empty());
        assert!(r
            .iter()
            .all(|&(s, e)| s >= 1 << 20 && e <= 12 << 20 && s < e));
        assert!(r.iter().any(|&(s, e)| s <= 8 << 20 && e > 8 << 20));
        assert!(data_ranges(&f, 9 << 20, 9 << 20).unwrap().is_empty());
    }

    #[test]
    fn cursor_reads_and_seeks() {
        use std::io::{Read, Seek, SeekFrom};
        let data: Vec<u8> = (0..10u8).collect();
        let mut c = Cursor::new(&data);
        c.seek(SeekFrom::End(-3)).unwrap();
        let mut buf = Vec::new();
        c.read_to_end(&mut buf).unwrap();
        assert_eq!(buf, [7, 8, 9]);
        assert!(c.seek(SeekFrom::Current(-20)).is_err());
    }

    #[test]
    fn window_reads_inside_only() {
        let data: Vec<u8> = (0..100u8).collect();
        let w = Window::new(&data, 10, 20);
        let mut buf = [0u8; 30];
        assert_eq!(w.read_at(&mut buf, 15).unwrap(), 5);
        assert_eq!(buf[0], 25);
        assert_eq!(w.read_at(&mut buf, 20).unwrap(), 0);
        assert!(w.read_exact_at(&mut buf[..10], 15).is_err());
        assert_eq!(w.size().unwrap(), 20);
    }
}
