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
