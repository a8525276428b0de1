//! Copying file data into the image. Worker threads take the plan's data extents in order, in
//! units of at most 4 MiB, and copy each piece with `copy_file_range` (the kernel moves the
//! pages; no copy through user space), falling back to `pread`/`pwrite` through one bounded
//! buffer when the kernel cannot. Memory stays the same whatever the amount of data.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::format::BLOCK_SIZE;
use super::planner::Ext4Plan;
use super::write::{mismatch, Output};
use super::Ext4Error;
use crate::tree::{Content, ContentError, Kind, Tree};

const UNIT_BLOCKS: u64 = 1024;
const BUFFER: usize = 1 << 20;

/// Position in the plan's file data: which file, which extent, how far into it.
#[derive(Default)]
pub struct DataCursor {
    file: usize,
    extent: usize,
    within: u64,
}

#[derive(Clone, Copy)]
struct Piece {
    node: usize,
    logical: u64,
    phys: u64,
    len: u64,
}

impl DataCursor {
    /// The next pieces of data, together at most [`UNIT_BLOCKS`].
    fn next_unit(&mut self, plan: &Ext4Plan, pieces: &mut Vec<Piece>) {
        pieces.clear();
        let mut total = 0;
        while let Some(&node) = plan.data_order.get(self.file) {
            let extents = &plan.allocs[node].extents;
            let Some(e) = extents.get(self.extent) else {
                self.file += 1;
                self.extent = 0;
                self.within = 0;
                continue;
            };
            let n = (e.len - self.within).min(UNIT_BLOCKS - total);
            pieces.push(Piece {
                node,
                logical: e.logical + self.within,
                phys: e.start + self.within,
                len: n,
            });
            total += n;
            self.within += n;
            if self.within == e.len {
                self.extent += 1;
                self.within = 0;
            }
            if total == UNIT_BLOCKS {
                break;
            }
        }
    }
}

/// Where one file's bytes come from.
enum Source<'t> {
    Bytes(&'t [u8]),
    Owned(File),
    Shared(&'t File, u64),
}

struct Open<'t> {
    node: usize,
    source: Source<'t>,
    size: u64,
    path: String,
}

fn open<'t>(tree: &'t Tree, plan: &Ext4Plan, node: usize) -> Result<Open<'t>, Ext4Error> {
    let n = &plan.collected.nodes[node];
    let path = String::from_utf8_lossy(&n.path).into_owned();
    let data = match n.tree.map(|id| &tree.inode(id).kind) {
        Some(Kind::File(data)) if data.size == n.size => data,
        _ => {
            return Err(mismatch(format!(
                "{path} is no longer a file of {} bytes",
                n.size
            )))
        }
    };
    let source = match &data.content {
        Content::Bytes(b) if b.len() as u64 == data.size => Source::Bytes(b),
        Content::Bytes(_) => {
            return Err(mismatch(format!(
                "{path}: in-memory content changed length"
            )))
        }
        Content::HostFile(host) => {
            let err = |source| ContentError {
                path: host.display().to_string(),
                source,
            };
            let f = File::open(host).map_err(err)?;
            let len = f.metadata().map_err(err)?.len();
            if len != data.size {
                return Err(ContentError {
                    path: host.display().to_string(),
                    source: io::Error::new(
                        io::ErrorKind::InvalidData,
                        "its size changed since the tree was assembled",
                    ),
                }
                .into());
            }
            Source::Owned(f)
        }
        Content::Archive { archive, offset } => Source::Shared(archive.file(), *offset),
    };
    Ok(Open {
        node,
        source,
        size: data.size,
        path,
    })
}

/// One worker: takes units until the data is done or another thread failed.
pub fn copy_data(
    tree: &Tree,
    plan: &Ext4Plan,
    out: &Output<'_>,
    cursor: &Mutex<DataCursor>,
    abort: &AtomicBool,
    total: &AtomicU64,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<(), Ext4Error> {
    let mut buf: Vec<u8> = Vec::new();
    let mut pieces = Vec::new();
    let mut current: Option<Open<'_>> = None;
    let mut kernel_copy = true;
    loop {
        if abort.load(Ordering::Relaxed) {
            return Ok(());
        }
        cursor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_unit(plan, &mut pieces);
        if pieces.is_empty() {
            return Ok(());
        }
        let mut bytes = 0u64;
        for p in &pieces {
            if current.as_ref().map(|o| o.node) != Some(p.node) {
                current = Some(open(tree, plan, p.node)?);
            }
            let Some(src) = current.as_ref() else {
                continue;
            };
            let start = p.logical * BLOCK_SIZE;
            let span = p.len * BLOCK_SIZE;
            let want = span.min(src.size.saturating_sub(start));
            copy_piece(src, out, start, p.phys, want, &mut kernel_copy, &mut buf)?;
            if want < span && !out.zeroed {
                // The end of the file's last block must read as zeros.
                let zeros = vec![0u8; (span - want) as usize];
                let at = out.offset + p.phys * BLOCK_SIZE + want;
                out.file
                    .write_all_at(&zeros, at)
                    .map_err(|source| Ext4Error::Io {
                        image: out.name.clone(),
                        offset: at,
                        source,
                    })?;
            }
            bytes += want;
        }
        total.fetch_add(bytes, Ordering::Relaxed);
        progress(bytes);
    }
}

fn copy_piece(
    src: &Open<'_>,
    out: &Output<'_>,
    start: u64,
    phys: u64,
    len: u64,
    kernel_copy: &mut bool,
    buf: &mut Vec<u8>,
) -> Result<(), Ext4Error> {
    let dst_at = out.offset + phys * BLOCK_SIZE;
    let io_out = |at: u64, source| Ext4Error::Io {
        image: out.name.clone(),
        offset: at,
        source,
    };
    let io_in = |source| -> Ext4Error {
        ContentError {
            path: src.path.clone(),
            source,
        }
        .into()
    };
    let (file, base) = match &src.source {
        Source::Bytes(b) => {
            let s = start as usize;
            return out
                .file
                .write_all_at(&b[s..s + len as usize], dst_at)
                .map_err(|e| io_out(dst_at, e));
        }
        Source::Owned(f) => (f, 0),
        Source::Shared(f, base) => (*f, *base),
    };
    let mut done = 0u64;
    while *kernel_copy && done < len {
        match crate::image_io::copy_file_range(
            file,
            base + start + done,
            out.file,
            dst_at + done,
            len - done,
        ) {
            Ok(0) => {
                return Err(io_in(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("content ends early at byte {}", start + done),
                )))
            }
            Ok(n) => done += n,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(
                        libc::EXDEV
                            | libc::EINVAL
                            | libc::ENOSYS
                            | libc::EOPNOTSUPP
                            | libc::EBADF
                            | libc::ETXTBSY
                    )
                ) =>
            {
                *kernel_copy = false;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_out(dst_at + done, e)),
        }
    }
    if done < len && buf.is_empty() {
        buf.resize(BUFFER, 0);
    }
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        let chunk = &mut buf[..n];
        file.read_exact_at(chunk, base + start + done)
            .map_err(io_in)?;
        out.file
            .write_all_at(chunk, dst_at + done)
            .map_err(|e| io_out(dst_at + done, e))?;
        done += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(file: &File) -> Output<'_> {
        Output {
            file,
            offset: 4096,
            name: "test".into(),
            zeroed: true,
        }
    }

    fn source(dir: &std::path::Path, data: &[u8]) -> Open<'static> {
        let p = dir.join("src");
        std::fs::write(&p, data).unwrap();
        Open {
            node: 0,
            source: Source::Owned(File::open(&p).unwrap()),
            size: data.len() as u64,
            path: "src".into(),
        }
    }

    #[test]
    fn kernel_copy_and_buffered_fallback_give_the_same_bytes() {
        let data: Vec<u8> = (0..3 * BUFFER + 100).map(|i| (i % 253) as u8).collect();
        let dir = tempfile::tempdir().unwrap();
        let src = source(dir.path(), &data);
        for kernel in [true, false] {
            let dst = tempfile::tempfile().unwrap();
            let out = output(&dst);
            let mut k = kernel;
            let mut buf = Vec::new();
            copy_piece(
                &src,
                &out,
                100,
                2,
                data.len() as u64 - 100,
                &mut k,
                &mut buf,
            )
            .unwrap();
            let mut back = vec![0u8; data.len() - 100];
            dst.read_exact_at(&mut back, 4096 + 2 * 4096).unwrap();
            assert_eq!(back, &data[100..]);
            assert_eq!(buf.is_empty(), k, "the buffer is only used by the fallback");
        }
        // A source shorter than planned is an error, not a short image.
        let dst = tempfile::tempfile().unwrap();
        let err = copy_piece(
            &src,
            &output(&dst),
            0,
            0,
            data.len() as u64 + 4096,
            &mut true,
            &mut Vec::new(),
        );
        assert!(err.is_err());
        let err = copy_piece(
            &src,
            &output(&dst),
            0,
            0,
            data.len() as u64 + 4096,
            &mut false,
            &mut Vec::new(),
        );
        assert!(err.is_err());
    }

    #[test]
    fn cross_filesystem_copies_fall_back() {
        // tmpfs to the temp directory's filesystem: copy_file_range may refuse (EXDEV).
        let Ok(shm) = tempfile::tempdir_in("/dev/shm") else {
            return;
        };
        let data = vec![7u8; 10_000];
        let src = source(shm.path(), &data);
        let dst = tempfile::tempfile().unwrap();
        let mut k = true;
        copy_piece(
            &src,
            &output(&dst),
            0,
            0,
            data.len() as u64,
            &mut k,
            &mut Vec::new(),
        )
        .unwrap();
        let mut back = vec![0u8; data.len()];
        dst.read_exact_at(&mut back, 4096).unwrap();
        assert_eq!(back, data);
    }
}
