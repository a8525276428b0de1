//! Where a file's bytes are, and reading them back without copying whole files into memory.
//!
//! Uncompressed sources are referenced in place (a host file, a member of a plain tar). Compressed
//! archives are decompressed once into an unnamed spool file, written sparse, and referenced there.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An open file holding the contents of many tree files: an archive or its spool.
#[derive(Debug)]
pub struct ArchiveFile {
    label: String,
    file: File,
}

impl ArchiveFile {
    /// Wraps an open file; `label` names it in errors (the archive's path).
    pub fn new(label: impl Into<String>, file: File) -> ArchiveFile {
        ArchiveFile {
            label: label.into(),
            file,
        }
    }

    /// The name used in messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// Where the bytes of a regular file are.
#[derive(Debug, Clone)]
pub enum Content {
    /// Bytes held in memory: generated files, small inline files.
    Bytes(Arc<[u8]>),
    /// A whole file on the host (a `dir` layer).
    HostFile(Arc<Path>),
    /// A range of an archive or spool file, starting at `offset`; the length is the file size.
    Archive {
        /// The archive.
        archive: Arc<ArchiveFile>,
        /// Offset of the first byte.
        offset: u64,
    },
}

/// A file's content that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the content of {path}: {source}")]
pub struct ContentError {
    /// The tree path or host path concerned.
    pub path: String,
    /// Why.
    #[source]
    pub source: io::Error,
}

enum Source<'a> {
    Bytes(&'a [u8]),
    Owned(File),
    Shared(&'a File, u64),
}

/// Positional reads of one file's content, and where its holes are.
pub struct ContentReader<'a> {
    source: Source<'a>,
    len: u64,
}

impl Content {
    /// Opens the content of a file of `len` bytes. `path` names it in errors.
    pub fn open(&self, len: u64, path: &str) -> Result<ContentReader<'_>, ContentError> {
        let source = match self {
            Content::Bytes(bytes) => {
                if bytes.len() as u64 != len {
                    return Err(changed(path, "in-memory content has another length"));
                }
                Source::Bytes(bytes)
            }
            Content::HostFile(host) => {
                let err = |source| ContentError {
                    path: host.display().to_string(),
                    source,
                };
                let file = File::open(host).map_err(err)?;
                let actual = file.metadata().map_err(err)?.len();
                if actual != len {
                    return Err(changed(
                        &host.display().to_string(),
                        "its size changed since the tree was assembled",
                    ));
                }
                Source::Owned(file)
            }
            Content::Archive { archive, offset } => Source::Shared(&archive.file, *offset),
        };
        Ok(ContentReader { source, len })
    }

    /// The host path behind this content, when it is a host file (for messages).
    pub fn host_path(&self) -> Option<PathBuf> {
        match self {
            Content::HostFile(p) => Some(p.to_path_buf()),
            _ => None,
        }
    }
}

fn changed(path: &str, what: &str) -> ContentError {
    ContentError {
        path: path.to_string(),
        source: io::Error::new(io::ErrorKind::InvalidData, what.to_string()),
    }
}

impl ContentReader<'_> {
    /// Length of the content.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for empty content.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.len {
            return Ok(0);
        }
        let want = buf
            .len()
            .min((self.len - offset).min(usize::MAX as u64) as usize);
        let buf = &mut buf[..want];
        match &self.source {
            Source::Bytes(bytes) => {
                let start = offset as usize;
                buf.copy_from_slice(&bytes[start..start + want]);
                Ok(want)
            }
            Source::Owned(file) => file.read_at(buf, offset),
            Source::Shared(file, base) => file.read_at(buf, base + offset),
        }
    }

    /// Fills `buf` from `offset`; a short source is an error (the file was truncated).
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        crate::image_io::ReadAt::read_exact_at(self, buf, offset)
    }

    /// The ranges `(start, end)` that may hold data; everything else is a hole and reads as
    /// zeros. Found with SEEK_DATA/SEEK_HOLE, so a 10 GiB sparse file costs nothing to skip.
    /// Filesystems without hole reporting give one range covering everything.
    pub fn data_ranges(&self) -> io::Result<Vec<(u64, u64)>> {
        let (file, base) = match &self.source {
            Source::Bytes(_) => return Ok(whole(self.len)),
            Source::Owned(file) => (file, 0),
            Source::Shared(file, base) => (*file, *base),
        };
        let ranges = crate::image_io::data_ranges(file, base, base + self.len)?;
        Ok(ranges
            .into_iter()
            .map(|(s, e)| (s - base, e - base))
            .collect())
    }
}

impl crate::image_io::ReadAt for ContentReader<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        ContentReader::read_at(self, buf, offset)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
}

fn whole(len: u64) -> Vec<(u64, u64)> {
    if len == 0 {
        Vec::new()
    } else {
        vec![(0, len)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bytes_read_and_bounds() {
        let c = Content::Bytes(Arc::from(&b"hello"[..]));
        let r = c.open(5, "/x").unwrap();
        let mut buf = [0u8; 10];
        assert_eq!(r.read_at(&mut buf, 1).unwrap(), 4);
        assert_eq!(&buf[..4], b"ello");
        assert_eq!(r.read_at(&mut buf, 5).unwrap(), 0);
        assert_eq!(r.data_ranges().unwrap(), vec![(0, 5)]);
        assert!(c.open(6, "/x").is_err());
    }

    #[test]
    fn archive_member_and_holes() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"junkDATA").unwrap();
        // A hole of 4 MiB, then data.
        f.write_all_at(b"tail", 8 + (4 << 20)).unwrap();
        let archive = Arc::new(ArchiveFile::new("t.tar", f));
        let c = Content::Archive { archive, offset: 4 };
        let r = c.open(4 + (4 << 20) + 4, "/y").unwrap();
        let mut buf = [0u8; 4];
        r.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"DATA");
        let ranges = r.data_ranges().unwrap();
        assert!(!ranges.is_empty());
        assert_eq!(ranges[0].0, 0);
        assert_eq!(ranges.last().unwrap().1, r.len());
        assert!(r.read_exact_at(&mut buf, r.len() - 2).is_err());
    }

    #[test]
    fn host_file_size_change_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"abc").unwrap();
        let c = Content::HostFile(Arc::from(p.as_path()));
        assert!(c.open(3, "/f").is_ok());
        let err = c.open(4, "/f").err().unwrap();
        assert!(err.to_string().contains("size changed"), "{err}");
    }
}
