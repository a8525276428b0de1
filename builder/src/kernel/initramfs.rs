//! The initramfs: `/init`, the modules of the driver closure (decompressed) and the index the
//! guest init loads them from, as a deterministic gzip-compressed cpio newc archive.
//!
//! Determinism: members in byte order of their paths (so parents precede children), inode
//! numbers counted from 1 in that order, one fixed mtime, uid/gid 0, and a gzip header with no
//! name and no time. `/dev/console` is left out: the init mounts devtmpfs first.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::elf_check::{self, EM_X86_64};
use super::modules::{DriverRequest, MetadataSource, Reason};
use super::{Kernel, KernelError};

/// Path of the module index inside the initramfs.
pub const INDEX_PATH: &str = "lib/modules/imgbuild-modules.json";

/// Mount points the init uses before anything else exists.
const MOUNT_POINTS: &[&str] = &["dev", "proc", "sys"];

/// The module index the guest init reads (`/lib/modules/imgbuild-modules.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModulesIndexFile {
    /// The kernel release.
    pub kernel: String,
    /// Modules in load order: every module after all of its `depends`.
    pub modules: Vec<ModuleEntry>,
}

/// One module of the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleEntry {
    /// Module name (`_` spelling).
    pub name: String,
    /// The `.ko`, relative to `/lib/modules/<kernel>/`.
    pub file: String,
    /// Modules to load before it, transitively, in load order.
    pub depends: Vec<String>,
    /// Its aliases: a device whose modalias matches one needs this module.
    pub aliases: Vec<String>,
    /// Load it whether or not a device matches (filesystems, disk class drivers, soft
    /// dependencies).
    pub always: bool,
}

/// Compression of the cpio archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Compression {
    /// gzip, level 6: every kernel can unpack it. Level 9 takes 3.5 times as long (a third of
    /// a second of every build) for an image 3 % smaller.
    #[default]
    Gzip,
    /// xz with CRC32 checks (the kernel's decoder has no CRC64 before 6.x); needs CONFIG_RD_XZ.
    Xz,
    /// Plain cpio.
    None,
}

/// How to build an initramfs.
#[derive(Debug, Clone)]
pub struct InitramfsOptions<'a> {
    /// Driver names; `None` for the default set (absent drivers are then not an error).
    pub drivers: Option<&'a [String]>,
    /// The init binary.
    pub init: &'a Path,
    /// The mtime of every member.
    pub mtime: u32,
    /// Archive compression.
    pub compression: Compression,
    /// `e_machine` the init must be built for.
    pub machine: u16,
}

/// A module placed in the initramfs.
#[derive(Debug, Clone, Serialize)]
pub struct IncludedModule {
    /// Its name.
    pub name: String,
    /// Path relative to the modules directory.
    pub file: String,
    /// Decompressed size.
    pub size: u64,
    /// Loaded unconditionally.
    pub always: bool,
    /// Why it is there: "requested", "dependency of X", "soft dependency of X".
    pub reason: String,
}

/// What went into an initramfs.
#[derive(Debug, Clone, Serialize)]
pub struct InitramfsReport {
    /// Kernel release.
    pub kernel: String,
    /// Modules, in load order.
    pub modules: Vec<IncludedModule>,
    /// Requested drivers built into the kernel.
    pub builtin: Vec<String>,
    /// Requested drivers the kernel lacks (default set only).
    pub missing: Vec<String>,
    /// Other facts for the log.
    pub notes: Vec<String>,
    /// Where module metadata came from.
    pub metadata: MetadataSource,
    /// The init binary used.
    pub init: PathBuf,
    /// Its size.
    pub init_size: u64,
    /// Members in the archive (without the trailer).
    pub entries: usize,
    /// Size of the cpio archive.
    pub cpio_size: u64,
    /// Size written (compressed).
    pub size: u64,
    /// Compression used.
    pub compression: Compression,
}

/// `SOURCE_DATE_EPOCH` when set to a number that fits a cpio mtime, else 0.
pub fn mtime_from_env() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
        .unwrap_or(0)
}

/// Builds the initramfs of `kernel` with `drivers` (the default set when `None`) and the init
/// at `init_binary`, gzip-compressed, mtimes from `SOURCE_DATE_EPOCH` (or 0), into `out`.
pub fn build_initramfs(
    kernel: &Kernel,
    drivers: Option<&[String]>,
    init_binary: &Path,
    out: &mut impl Write,
) -> Result<InitramfsReport, KernelError> {
    let options = InitramfsOptions {
        drivers,
        init: init_binary,
        mtime: mtime_from_env(),
        compression: Compression::Gzip,
        machine: EM_X86_64,
    };
    build_initramfs_with(kernel, &options, out)
}

/// A member's content.
enum Member {
    Dir,
    File { mode: u32, data: Vec<u8> },
}

/// Builds the initramfs as `options` say.
pub fn build_initramfs_with(
    kernel: &Kernel,
    options: &InitramfsOptions<'_>,
    out: &mut impl Write,
) -> Result<InitramfsReport, KernelError> {
    let (init, found) = elf_check::read_checked(options.init, options.machine)?;
    let init_size = init.len() as u64;
    let index = kernel.module_index()?;
    let request = match options.drivers {
        Some(list) => DriverRequest::Explicit(list),
        None => DriverRequest::Default,
    };
    let mut closure = index.closure(request)?;
    if found.debug_bytes > 0 {
        closure.notes.push(format!(
            "init {} carries {} bytes of debug info; build it without (for imgbuild-init: \
             [profile.release.package.imgbuild-init] debug = false, strip = \"debuginfo\")",
            options.init.display(),
            found.debug_bytes
        ));
    }

    let mut members: BTreeMap<String, Member> = BTreeMap::new();
    for dir in MOUNT_POINTS {
        members.insert((*dir).to_string(), Member::Dir);
    }
    members.insert(
        "init".into(),
        Member::File {
            mode: 0o755,
            data: init,
        },
    );
    let base = format!("lib/modules/{}", kernel.version);
    let mut entries = Vec::with_capacity(closure.modules.len());
    let mut included = Vec::with_capacity(closure.modules.len());
    for m in closure.modules {
        entries.push(ModuleEntry {
            name: m.name.clone(),
            file: m.file.clone(),
            depends: m.depends.clone(),
            aliases: m.aliases.clone(),
            always: m.always,
        });
        included.push(IncludedModule {
            name: m.name.clone(),
            file: m.file.clone(),
            size: m.data.len() as u64,
            always: m.always,
            reason: match &m.reason {
                Reason::Requested => "requested".into(),
                Reason::DependencyOf(d) => format!("dependency of {d}"),
                Reason::SoftDependencyOf(d) => format!("soft dependency of {d}"),
            },
        });
        members.insert(
            format!("{base}/{}", m.file),
            Member::File {
                mode: 0o644,
                data: m.data,
            },
        );
    }
    let index_file = ModulesIndexFile {
        kernel: kernel.version.clone(),
        modules: entries,
    };
    let mut json = serde_json::to_vec_pretty(&index_file)
        .map_err(|e| KernelError::Write(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    json.push(b'\n');
    members.insert(
        INDEX_PATH.into(),
        Member::File {
            mode: 0o644,
            data: json,
        },
    );
    // Every parent directory of every member.
    let parents: Vec<String> = members
        .keys()
        .flat_map(|p| {
            p.match_indices('/')
                .map(|(i, _)| p[..i].to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for p in parents {
        members.entry(p).or_insert(Member::Dir);
    }
    let entry_count = members.len();

    let mut counter = CountingWriter {
        inner: out,
        count: 0,
    };
    let cpio_size = match options.compression {
        Compression::Gzip => {
            let gz = flate2::GzBuilder::new()
                .mtime(0)
                .write(&mut counter, flate2::Compression::default());
            let (gz, size) = write_cpio(gz, &members, options.mtime)?;
            gz.finish().map_err(KernelError::Write)?;
            size
        }
        Compression::Xz => {
            let stream = xz2::stream::Stream::new_easy_encoder(9, xz2::stream::Check::Crc32)
                .map_err(|e| KernelError::Write(e.into()))?;
            let xz = xz2::write::XzEncoder::new_stream(&mut counter, stream);
            let (xz, size) = write_cpio(xz, &members, options.mtime)?;
            xz.finish().map_err(KernelError::Write)?;
            size
        }
        Compression::None => {
            let (_, size) = write_cpio(&mut counter, &members, options.mtime)?;
            size
        }
    };
    counter.flush().map_err(KernelError::Write)?;

    Ok(InitramfsReport {
        kernel: kernel.version.clone(),
        modules: included,
        builtin: closure.builtin,
        missing: closure.missing,
        notes: closure.notes,
        metadata: closure.source,
        init: options.init.to_path_buf(),
        init_size,
        entries: entry_count,
        cpio_size,
        size: counter.count,
        compression: options.compression,
    })
}

fn write_cpio<W: Write>(
    out: W,
    members: &BTreeMap<String, Member>,
    mtime: u32,
) -> Result<(W, u64), KernelError> {
    let mut cpio = CpioWriter::new(out, mtime);
    for (path, member) in members {
        match member {
            Member::Dir => cpio.member(path, 0o040_755, 2, &[]),
            Member::File { mode, data } => cpio.member(path, 0o100_000 | mode, 1, data),
        }?;
    }
    cpio.finish()
}

/// A cpio "newc" (SVR4, no CRC) writer with sequential inode numbers and one mtime.
pub struct CpioWriter<W: Write> {
    out: W,
    mtime: u32,
    next_ino: u32,
    written: u64,
}

impl<W: Write> CpioWriter<W> {
    /// A writer whose members all get `mtime`.
    pub fn new(out: W, mtime: u32) -> CpioWriter<W> {
        CpioWriter {
            out,
            mtime,
            next_ino: 1,
            written: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> Result<(), KernelError> {
        self.out.write_all(bytes).map_err(KernelError::Write)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<(), KernelError> {
        let pad = (4 - (self.written % 4) as usize) % 4;
        self.put(&[0u8; 3][..pad])
    }

    fn header(
        &mut self,
        name: &str,
        ino: u32,
        mode: u32,
        nlink: u32,
        size: u32,
    ) -> Result<(), KernelError> {
        let namesize = u32::try_from(name.len() + 1).map_err(|_| KernelError::MemberTooLarge {
            path: name.to_string(),
            size: name.len() as u64,
        })?;
        let fields = [
            ino, mode, 0, 0, nlink, self.mtime, size, 0, 0, 0, 0, namesize, 0,
        ];
        let mut head = String::with_capacity(110);
        head.push_str("070701");
        for f in fields {
            head.push_str(&format!("{f:08X}"));
        }
        self.put(head.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()
    }

    /// Appends a member: `mode` includes the file type bits.
    pub fn member(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        data: &[u8],
    ) -> Result<(), KernelError> {
        let size = u32::try_from(data.len()).map_err(|_| KernelError::MemberTooLarge {
            path: name.to_string(),
            size: data.len() as u64,
        })?;
        let ino = self.next_ino;
        self.next_ino = self.next_ino.saturating_add(1);
        self.header(name, ino, mode, nlink, size)?;
        self.put(data)?;
        self.pad()
    }

    /// Writes the trailer, pads the archive to 512 bytes as cpio(1) does, and returns the
    /// writer with the archive size.
    pub fn finish(mut self) -> Result<(W, u64), KernelError> {
        self.header("TRAILER!!!", 0, 0, 1, 0)?;
        let pad = ((512 - self.written % 512) % 512) as usize;
        self.put(&vec![0u8; pad])?;
        Ok((self.out, self.written))
    }
}

struct CountingWriter<'a, W: Write> {
    inner: &'a mut W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::modinfo::fake_module;
    use crate::kernel::{from_tree, KernelOrigin};
    use crate::tree::{Content, FileData, Inode, Kind, Meta, Tree};
    use std::io::Read;

    fn put(t: &mut Tree, path: &str, bytes: Vec<u8>) {
        let inode = Inode::new(
            Meta::root(0o644, 0),
            Kind::File(FileData {
                size: bytes.len() as u64,
                content: Content::Bytes(bytes.into()),
                sha256: None,
            }),
        );
        t.insert(path.as_bytes(), inode).unwrap();
    }

    /// A bzImage header with the given release, and nothing else.
    fn fake_bzimage(release: &str) -> Vec<u8> {
        let mut img = vec![0u8; 0x2000];
        img[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x20e..0x210].copy_from_slice(&0x0e00u16.to_le_bytes());
        let v = format!("{release} (test@example) #1 SMP\0");
        img[0x1000..0x1000 + v.len()].copy_from_slice(v.as_bytes());
        img
    }

    /// A static x86_64 executable as far as the checks can tell: a bare ELF header.
    fn fake_init(dir: &Path) -> PathBuf {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[6] = 1;
        h[16] = 2; // ET_EXEC
        h[18] = 62;
        h[20] = 1;
        h[52] = 64;
        let p = dir.join("init");
        std::fs::write(&p, h).unwrap();
        p
    }

    #[test]
    fn tree_kernel_initramfs_members_in_order() {
        let rel = "1.0-test";
        let vermagic = format!("vermagic={rel} SMP");
        let mut t = Tree::new(Meta::root(0o755, 0));
        put(&mut t, &format!("/boot/vmlinuz-{rel}"), fake_bzimage(rel));
        put(
            &mut t,
            "/boot/vmlinuz-0.9",
            b"older, never looked at".to_vec(),
        );
        let m = |name: &str, deps: &str, alias: &str| {
            fake_module(&[
                &format!("name={name}"),
                &format!("depends={deps}"),
                alias,
                &vermagic,
            ])
        };
        let base = format!("/lib/modules/{rel}/kernel");
        put(
            &mut t,
            &format!("{base}/virtio_ring.ko"),
            m("virtio_ring", "", "x=y"),
        );
        put(
            &mut t,
            &format!("{base}/virtio.ko"),
            m("virtio", "virtio_ring", "x=y"),
        );
        put(
            &mut t,
            &format!("{base}/virtio_blk.ko"),
            m("virtio_blk", "virtio", "alias=virtio:d00000002v*"),
        );
        let kernel = from_tree(&t, "k.deb").unwrap();
        assert_eq!(kernel.version, rel);
        assert_eq!(kernel.origin, KernelOrigin::Package("k.deb".into()));

        let d = tempfile::tempdir().unwrap();
        let init = fake_init(d.path());
        let drivers = vec!["virtio-blk".to_string()];
        let opts = InitramfsOptions {
            drivers: Some(&drivers),
            init: &init,
            mtime: 42,
            compression: Compression::None,
            machine: EM_X86_64,
        };
        let mut out = Vec::new();
        let report = build_initramfs_with(&kernel, &opts, &mut out).unwrap();
        assert_eq!(report.size, out.len() as u64);
        assert_eq!(report.cpio_size, out.len() as u64);

        let mut names = Vec::new();
        let mut index = Vec::new();
        let mut rest = out.as_slice();
        loop {
            let mut entry = cpio::NewcReader::new(rest).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            let e = entry.entry();
            assert_eq!((e.uid(), e.gid(), e.mtime()), (0, 0, 42));
            assert_eq!(e.ino() as usize, names.len() + 1);
            let name = e.name().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            names.push(name.clone());
            if name == INDEX_PATH {
                index = data;
            }
            rest = entry.finish().unwrap();
        }
        let k = format!("lib/modules/{rel}");
        let expected: Vec<String> = [
            "dev".to_string(),
            "init".into(),
            "lib".into(),
            "lib/modules".into(),
            k.clone(),
            format!("{k}/kernel"),
            format!("{k}/kernel/virtio.ko"),
            format!("{k}/kernel/virtio_blk.ko"),
            format!("{k}/kernel/virtio_ring.ko"),
            INDEX_PATH.into(),
            "proc".into(),
            "sys".into(),
        ]
        .into();
        assert_eq!(names, expected);
        let parsed: ModulesIndexFile = serde_json::from_slice(&index).unwrap();
        assert_eq!(parsed.kernel, rel);
        let order: Vec<&str> = parsed.modules.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(order, ["virtio_ring", "virtio", "virtio_blk"]);
        assert_eq!(parsed.modules[2].depends, ["virtio_ring", "virtio"]);
        assert_eq!(parsed.modules[2].file, "kernel/virtio_blk.ko");
        assert!(!parsed.modules[2].always);
        assert!(report.notes.is_empty(), "{:?}", report.notes);

        // A dynamically linked init is refused before anything is written.
        let mut out = Vec::new();
        let dynamic = InitramfsOptions {
            init: Path::new("/bin/ls"),
            ..opts
        };
        let err = build_initramfs_with(&kernel, &dynamic, &mut out).unwrap_err();
        assert!(matches!(err, KernelError::Elf(_)), "{err}");
        assert!(out.is_empty());
    }

    #[test]
    fn cpio_newc_layout() {
        let mut cpio = CpioWriter::new(Vec::new(), 7);
        cpio.member("a", 0o100_644, 1, b"xyz").unwrap();
        let (bytes, size) = cpio.finish().unwrap();
        assert_eq!(size, bytes.len() as u64);
        assert_eq!(size % 512, 0);
        let head = std::str::from_utf8(&bytes[..110]).unwrap();
        assert!(head.starts_with("070701"));
        assert_eq!(&head[6..14], "00000001"); // ino
        assert_eq!(&head[14..22], "000081A4"); // mode
        assert_eq!(&head[46..54], "00000007"); // mtime
        assert_eq!(&head[54..62], "00000003"); // filesize
        assert_eq!(&head[94..102], "00000002"); // namesize with NUL
                                                // 110 + "a\0" = 112, aligned; data at 112, padded to 116; trailer header at 116.
        assert_eq!(&bytes[110..112], b"a\0");
        assert_eq!(&bytes[112..115], b"xyz");
        assert_eq!(&bytes[116..122], b"070701");
        assert_eq!(&bytes[226..237], b"TRAILER!!!\0");
    }
}
