//! gzip on every core, with bytes that depend only on the input (the layout pigz uses).
//!
//! The input is cut into fixed chunks of [`CHUNK`] bytes. Each chunk is compressed on its own
//! as raw deflate, primed with the last 32 KiB of the chunk before it as dictionary (so the
//! ratio is that of one stream), and ends in a sync flush: byte-aligned, not final. The chunks
//! are concatenated behind one gzip header; the last, partial chunk ends the deflate stream;
//! the trailer holds the CRC-32 and length of the whole input. The result is one ordinary gzip
//! member that every gunzip reads, and since chunk boundaries depend on offsets only, the same
//! input gives the same bytes whatever the number of threads.

use std::io::{self, Write};
use std::thread;

use flate2::{Compress, Compression, Crc, FlushCompress, Status};

/// Bytes of input per independently compressed chunk.
pub const CHUNK: usize = 1 << 20;
/// The deflate window: the dictionary a chunk gets from the one before.
const WINDOW: usize = 32 << 10;
/// Threads compressing at most.
const MAX_THREADS: usize = 8;

/// A gzip writer that compresses chunks of its input on several threads.
pub struct ParallelGz<W: Write> {
    out: W,
    level: Compression,
    threads: usize,
    /// Input not compressed yet, whole chunks first.
    pending: Vec<u8>,
    /// The last [`WINDOW`] bytes of the input before `pending`.
    dictionary: Vec<u8>,
    crc: Crc,
    length: u64,
    header_written: bool,
}

impl<W: Write> ParallelGz<W> {
    /// A writer of a gzip stream with no name and no time in its header, compressing at
    /// `level` on up to `threads` threads (0: as many as the machine has, at most 8).
    pub fn new(out: W, level: Compression, threads: usize) -> ParallelGz<W> {
        let threads = match threads {
            0 => thread::available_parallelism()
                .map_or(1, |n| n.get())
                .min(MAX_THREADS),
            n => n,
        };
        ParallelGz {
            out,
            level,
            threads,
            pending: Vec::with_capacity(threads * CHUNK),
            dictionary: Vec::new(),
            crc: Crc::new(),
            length: 0,
            header_written: false,
        }
    }

    fn write_header(&mut self) -> io::Result<()> {
        if self.header_written {
            return Ok(());
        }
        // ID, deflate, no flags, mtime 0 (none), XFL as gzip sets it, OS 3 (Unix).
        let xfl = match self.level.level() {
            9.. => 2,
            0 | 1 => 4,
            _ => 0,
        };
        self.out
            .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
        self.header_written = true;
        Ok(())
    }

    /// Compresses and writes the whole chunks of `pending`, spread over the threads.
    fn flush_chunks(&mut self) -> io::Result<()> {
        let whole = self.pending.len() / CHUNK * CHUNK;
        if whole == 0 {
            return Ok(());
        }
        self.write_header()?;
        let chunks: Vec<&[u8]> = self.pending[..whole].chunks(CHUNK).collect();
        let dictionaries: Vec<&[u8]> = std::iter::once(self.dictionary.as_slice())
            .chain(chunks.iter().map(|c| &c[c.len() - WINDOW..]))
            .collect();
        let level = self.level;
        let compressed = thread::scope(|s| {
            let handles: Vec<_> = chunks
                .iter()
                .zip(&dictionaries)
                .map(|(chunk, dictionary)| {
                    s.spawn(move || deflate_chunk(level, dictionary, chunk, false))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| io::Error::other("a compression thread panicked"))?
                })
                .collect::<io::Result<Vec<Vec<u8>>>>()
        })?;
        for c in &compressed {
            self.out.write_all(c)?;
        }
        self.dictionary.clear();
        self.dictionary
            .extend_from_slice(&self.pending[whole - WINDOW..whole]);
        self.pending.drain(..whole);
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.flush_chunks()?;
        self.write_header()?;
        let last = deflate_chunk(self.level, &self.dictionary, &self.pending, true)?;
        self.out.write_all(&last)?;
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        // ISIZE is the length modulo 2^32 (RFC 1952).
        self.out
            .write_all(&((self.length & 0xffff_ffff) as u32).to_le_bytes())?;
        Ok(self.out)
    }
}

impl<W: Write> Write for ParallelGz<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.crc.update(buf);
        self.length += buf.len() as u64;
        self.pending.extend_from_slice(buf);
        if self.pending.len() >= self.threads * CHUNK {
            self.flush_chunks()?;
        }
        Ok(buf.len())
    }

    /// Passes the flush on without compressing a partial chunk: that would make the bytes
    /// depend on when callers flush.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// `data` as raw deflate primed with `dictionary`: ended by a sync flush, or, when `last`,
/// ending the stream.
fn deflate_chunk(
    level: Compression,
    dictionary: &[u8],
    data: &[u8],
    last: bool,
) -> io::Result<Vec<u8>> {
    let mut z = Compress::new(level, false);
    if !dictionary.is_empty() {
        z.set_dictionary(dictionary).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(64 << 10));
        }
        let consumed = usize::try_from(z.total_in()).unwrap_or(usize::MAX);
        let input = data.get(consumed..).unwrap_or_default();
        let status = z
            .compress_vec(input, &mut out, flush)
            .map_err(io::Error::other)?;
        let all_in = usize::try_from(z.total_in()).is_ok_and(|n| n == data.len());
        // A flush is complete once deflate stops short of filling the output space.
        let done = match status {
            Status::StreamEnd => true,
            _ => !last && all_in && out.len() < out.capacity(),
        };
        if done {
            return Ok(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn sample(len: usize) -> Vec<u8> {
        // Compressible but not trivial: text-like runs with a drifting pattern.
        (0..len)
            .map(|i| b"abcdefghij klmnop\n"[(i * 7 + i / 1000) % 18])
            .collect()
    }

    fn gz(data: &[u8], threads: usize, piece: usize) -> Vec<u8> {
        let mut w = ParallelGz::new(Vec::new(), Compression::new(1), threads);
        for p in data.chunks(piece.max(1)) {
            w.write_all(p).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn round_trips_and_ignores_threads_and_write_sizes() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 12345] {
            let data = sample(len);
            let one = gz(&data, 1, 4096);
            assert_eq!(one, gz(&data, 3, 1 << 20), "len {len}");
            assert_eq!(one, gz(&data, 2, 777_777), "len {len}");
            let mut back = Vec::new();
            GzDecoder::new(&one[..]).read_to_end(&mut back).unwrap();
            assert_eq!(back, data, "len {len}");
            assert_eq!(&one[..10], &[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 3]);
        }
    }

    #[test]
    fn gzip_reads_it() {
        let data = sample(3 * CHUNK + 99);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.gz");
        std::fs::write(&path, gz(&data, 2, 65536)).unwrap();
        let out = std::process::Command::new("gzip")
            .arg("-dc")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(out.stdout == data);
        let test = std::process::Command::new("gzip")
            .arg("-t")
            .arg(&path)
            .status()
            .unwrap();
        assert!(test.success());
    }
}
