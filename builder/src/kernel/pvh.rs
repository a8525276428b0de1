//! The ELF `vmlinux` inside a bzImage, for booting through the kernel's PVH entry point.
//!
//! A bzImage is a real-mode setup, a small decompressor and the compressed ELF kernel. QEMU
//! given the bzImage runs the BIOS's Linux loader and then the decompressor; given the ELF
//! `vmlinux` of a kernel built with `CONFIG_PVH`, it jumps straight to the 32-bit PVH entry that
//! Xen's `type = "pvh"` guests use. Under TCG the decompressor alone costs a quarter of a second
//! of every boot, so `imgbuild run` boots the PVH entry when the kernel has one. The kernel is
//! the same bytes either way: this only undoes the compression the build of the kernel applied.
//!
//! Boot protocol 2.08 and later give the payload's place (`payload_offset` at 0x248 and
//! `payload_length` at 0x24c, counted from the protected-mode code after the setup sectors);
//! the kernel's build appends the decompressed length as four little-endian bytes, which bounds
//! the output. The ELF must carry the `Xen` note `XEN_ELFNOTE_PHYS32_ENTRY` (18): without it
//! QEMU could not start the file, and the bzImage is booted instead.

use crate::sources::compression::{decompress_as, Format};

/// Largest `vmlinux` accepted: the decompressed-length trailer is read from the (untrusted)
/// kernel file, and a distribution kernel's ELF is well under 200 MiB.
const MAX_VMLINUX: usize = 256 << 20;

/// The Xen ELF note naming the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

/// Magic of the LZ4 "legacy" frame format the kernel's build writes (`lz4 -l`).
const LZ4_LEGACY_MAGIC: [u8; 4] = [0x02, 0x21, 0x4c, 0x18];

/// An LZ4 legacy block decompresses to at most 8 MiB.
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Why a kernel image gives no PVH-bootable `vmlinux`; the bzImage is booted instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoPvhEntry {
    /// Not a bzImage, or one too old to say where its payload is.
    #[error("boot protocol {0:#06x} does not give the payload's place (2.08 and later do)")]
    OldProtocol(u16),
    /// The header is missing or points outside the file.
    #[error("the setup header is damaged: {0}")]
    BadHeader(&'static str),
    /// A compression this reader does not undo (LZO), or none it recognises.
    #[error("the payload's compression is not one of gzip, xz, lzma, zstd, bzip2 or lz4")]
    UnknownCompression,
    /// The payload does not decompress.
    #[error("the {format} payload does not decompress: {reason}")]
    Corrupt {
        /// Its compression.
        format: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// The payload is not an x86-64 ELF executable.
    #[error("the payload is not an x86-64 ELF executable: {0}")]
    NotElf(String),
    /// The kernel was built without `CONFIG_PVH`.
    #[error("the kernel has no PVH entry (no XEN_ELFNOTE_PHYS32_ENTRY note; CONFIG_PVH is off)")]
    NoEntryNote,
}

/// The ELF `vmlinux` of the bzImage `image`, when it has a PVH entry point.
pub fn vmlinux(image: &[u8]) -> Result<Vec<u8>, NoPvhEntry> {
    let payload = payload(image)?;
    let (body, trailer) = payload.split_at(payload.len() - 4);
    let expected = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]) as usize;
    if expected == 0 || expected > MAX_VMLINUX {
        return Err(NoPvhEntry::BadHeader(
            "the decompressed length after the payload is zero or implausibly large",
        ));
    }
    let elf = if body.starts_with(&LZ4_LEGACY_MAGIC) {
        lz4_legacy(body, expected)?
    } else {
        let format = match Format::detect(body) {
            Format::None if body.starts_with(&[0x5d, 0, 0]) => Format::Lzma,
            Format::None => return Err(NoPvhEntry::UnknownCompression),
            f => f,
        };
        decompress_as(body, format, "the kernel payload", expected).map_err(|e| {
            NoPvhEntry::Corrupt {
                format: format.name(),
                reason: e.to_string(),
            }
        })?
    };
    if elf.len() != expected {
        return Err(NoPvhEntry::Corrupt {
            format: "kernel",
            reason: format!(
                "{} bytes decompressed, the trailer says {expected}",
                elf.len()
            ),
        });
    }
    check_pvh_elf(&elf)?;
    Ok(elf)
}

/// The compressed payload with its 4-byte length trailer.
fn payload(image: &[u8]) -> Result<&[u8], NoPvhEntry> {
    let header =
        super::bzimage::parse(image).map_err(|_| NoPvhEntry::BadHeader("no boot header"))?;
    if header.protocol < 0x0208 {
        return Err(NoPvhEntry::OldProtocol(header.protocol));
    }
    let field = |at: usize| -> Result<usize, NoPvhEntry> {
        let b = image.get(at..at + 4).ok_or(NoPvhEntry::BadHeader(
            "the file ends inside the setup header",
        ))?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // A setup_sects of 0 means 4, for the oldest boot loaders' sake.
    let setup_sects = match image[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let start = (setup_sects + 1) * 512 + field(0x248)?;
    let end = start
        .checked_add(field(0x24c)?)
        .ok_or(NoPvhEntry::BadHeader("the payload length overflows"))?;
    match image.get(start..end) {
        Some(p) if p.len() > 4 => Ok(p),
        _ => Err(NoPvhEntry::BadHeader(
            "payload_offset and payload_length point outside the file",
        )),
    }
}

/// Decodes the LZ4 legacy frame format: the magic, then blocks each preceded by its
/// compressed length, every block but the last expanding to exactly 8 MiB.
fn lz4_legacy(data: &[u8], expected: usize) -> Result<Vec<u8>, NoPvhEntry> {
    let corrupt = |reason: String| NoPvhEntry::Corrupt {
        format: "lz4",
        reason,
    };
    let mut out = vec![0u8; expected];
    let mut produced = 0;
    let mut at = LZ4_LEGACY_MAGIC.len();
    while at < data.len() {
        let len = data
            .get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| corrupt(format!("a block length is cut off at byte {at}")))?;
        at += 4;
        let block = data
            .get(at..at.saturating_add(len))
            .ok_or_else(|| corrupt(format!("the block at byte {at} runs past the end")))?;
        let room = (expected - produced).min(LZ4_LEGACY_BLOCK);
        let n = lz4_flex::block::decompress_into(block, &mut out[produced..produced + room])
            .map_err(|e| corrupt(format!("block at byte {at}: {e}")))?;
        produced += n;
        at += len;
    }
    out.truncate(produced);
    Ok(out)
}

fn check_pvh_elf(elf: &[u8]) -> Result<(), NoPvhEntry> {
    use goblin::elf::{header, Elf};
    let parsed = Elf::parse(elf).map_err(|e| NoPvhEntry::NotElf(e.to_string()))?;
    if parsed.header.e_machine != header::EM_X86_64 || parsed.header.e_type != header::ET_EXEC {
        return Err(NoPvhEntry::NotElf(format!(
            "machine {} type {}",
            parsed.header.e_machine, parsed.header.e_type
        )));
    }
    super::elf_check::notes(&parsed, elf)
        .any(|n| n.name == "Xen" && n.n_type == XEN_ELFNOTE_PHYS32_ENTRY)
        .then_some(())
        .ok_or(NoPvhEntry::NoEntryNote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A bzImage-shaped file: boot sector, setup header and `payload` after one setup sector.
    fn bzimage(payload: &[u8], protocol: u16) -> Vec<u8> {
        let mut image = vec![0u8; 1024];
        image[0x1f1] = 1;
        image[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&protocol.to_le_bytes());
        image[0x20e..0x210].copy_from_slice(&0x100u16.to_le_bytes());
        image[0x300..0x305].copy_from_slice(b"6.1.0");
        image[0x248..0x24c].copy_from_slice(&16u32.to_le_bytes());
        image[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        image.extend_from_slice(&[0; 16]);
        image.extend_from_slice(payload);
        image
    }

    fn with_trailer(mut compressed: Vec<u8>, len: usize) -> Vec<u8> {
        compressed.extend_from_slice(&(len as u32).to_le_bytes());
        compressed
    }

    fn lz4_frame(data: &[u8]) -> Vec<u8> {
        let mut out = LZ4_LEGACY_MAGIC.to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            out.extend_from_slice(&(block.len() as u32).to_le_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    #[test]
    fn lz4_legacy_frames_round_trip_across_blocks() {
        let data: Vec<u8> = (0..LZ4_LEGACY_BLOCK + 4321)
            .map(|i| (i % 251) as u8)
            .collect();
        assert_eq!(lz4_legacy(&lz4_frame(&data), data.len()).unwrap(), data);
    }

    #[test]
    fn a_payload_that_is_not_elf_is_refused_by_name() {
        let text = b"not an ELF file at all".repeat(100);
        let image = bzimage(&with_trailer(lz4_frame(&text), text.len()), 0x020f);
        assert!(matches!(vmlinux(&image), Err(NoPvhEntry::NotElf(_))));
    }

    #[test]
    fn damaged_headers_and_payloads_are_errors_not_panics() {
        let good = with_trailer(lz4_frame(b"abc"), 3);
        assert_eq!(
            vmlinux(&bzimage(&good, 0x0206)),
            Err(NoPvhEntry::OldProtocol(0x0206))
        );
        let mut outside = bzimage(&good, 0x020f);
        outside[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(vmlinux(&outside), Err(NoPvhEntry::BadHeader(_))));
        let bomb = with_trailer(lz4_frame(b"abc"), u32::MAX as usize);
        assert!(matches!(
            vmlinux(&bzimage(&bomb, 0x020f)),
            Err(NoPvhEntry::BadHeader(_))
        ));
        let mut cut = lz4_frame(&[7u8; 5000]);
        cut.truncate(cut.len() - 3);
        assert!(matches!(
            vmlinux(&bzimage(&with_trailer(cut, 5000), 0x020f)),
            Err(NoPvhEntry::Corrupt { .. })
        ));
        let lzo = with_trailer(vec![0x89, b'L', b'Z', b'O', 0, 1, 2], 3);
        assert_eq!(
            vmlinux(&bzimage(&lzo, 0x020f)),
            Err(NoPvhEntry::UnknownCompression)
        );
        for len in [0, 100, 600, 1100] {
            let image = bzimage(&good, 0x020f);
            let _ = vmlinux(&image[..len.min(image.len())]);
        }
    }

    /// The PVH fuzz target's seeds: an ELF made by gcc and ld, compressed by the real `lz4 -l`
    /// and `gzip` (fuzz/make-seeds).
    #[test]
    fn seeds_compressed_by_the_real_tools_unpack() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pvh");
        for seed in ["seed-lz4.bzimage", "seed-gzip.bzimage"] {
            let image = std::fs::read(dir.join(seed)).unwrap();
            let elf = vmlinux(&image).unwrap_or_else(|e| panic!("{seed}: {e}"));
            assert_eq!(&elf[..4], b"\x7fELF", "{seed}");
        }
    }

    /// Inputs the fuzzer found (fuzz/corpus/pvh/regression-*): each is refused with an error,
    /// promptly. One hung in the ELF note search, one made liblzma allocate gigabytes.
    #[test]
    fn fuzzer_regressions_end_in_errors() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/pvh");
        for name in ["regression-note-loop", "regression-lzma-dictionary"] {
            let image = std::fs::read(dir.join(name)).unwrap();
            assert!(vmlinux(&image).is_err(), "{name}");
        }
    }

    /// The host's own kernel, when it is a bzImage: Debian's cloud kernels are LZ4 and PVH.
    #[test]
    fn the_host_kernel_unpacks_to_its_pvh_vmlinux() {
        use crate::kernel::{newest_host_kernel, KernelFile, HOST_BOOT, HOST_MODULES};
        let found = newest_host_kernel(Path::new(HOST_BOOT), Path::new(HOST_MODULES));
        let Ok(KernelFile::Host(path)) = found.map(|k| k.image) else {
            eprintln!("skipped: no kernel under {HOST_BOOT}");
            return;
        };
        let Ok(image) = std::fs::read(&path) else {
            eprintln!("skipped: {} is not readable", path.display());
            return;
        };
        // The kernel's own build configuration says whether it must work: CONFIG_PVH and a
        // compression this module undoes (LZO is the one it does not).
        let release = crate::kernel::bzimage::parse(&image).unwrap().release;
        let config = std::fs::read_to_string(format!("{HOST_BOOT}/config-{release}"));
        let expected = config.as_ref().ok().map(|c| {
            c.lines().any(|l| l == "CONFIG_PVH=y")
                && ["GZIP", "XZ", "LZMA", "ZSTD", "BZIP2", "LZ4"]
                    .iter()
                    .any(|z| c.lines().any(|l| l == format!("CONFIG_KERNEL_{z}=y")))
        });
        match (vmlinux(&image), expected) {
            (Ok(elf), Some(true) | None) => assert_eq!(&elf[..4], b"\x7fELF"),
            (Err(NoPvhEntry::NoEntryNote | NoPvhEntry::UnknownCompression), Some(false) | None) => {
            }
            (got, expected) => panic!(
                "{}: {:?} though its config says PVH-bootable: {expected:?}",
                path.display(),
                got.map(|elf| elf.len())
            ),
        }
    }
}
