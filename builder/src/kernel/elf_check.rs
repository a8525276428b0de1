//! Checks that a binary can be PID 1 of an initramfs, and finds the `imgbuild-init` binary.
//!
//! The initramfs holds no libraries and no dynamic loader, so a dynamically linked init dies
//! with a bare "No such file or directory" from the kernel and a panic. Refusing it at build
//! time, with the reason, saves a boot. The checks read only ELF headers, program headers and
//! the dynamic section, through goblin.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use goblin::elf::header::{machine_to_str, ELFCLASS64, ET_DYN, ET_EXEC};
use goblin::elf::Elf;

/// `e_machine` of x86_64.
pub const EM_X86_64: u16 = goblin::elf::header::EM_X86_64;

/// Largest init binary accepted.
pub const MAX_INIT_SIZE: u64 = 256 << 20;

/// Environment variable naming the init binary.
pub const INIT_ENV: &str = "IMGBUILD_INIT";

/// File name of the guest init binary.
pub const INIT_NAME: &str = "imgbuild-init";

/// An init binary that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ElfCheckError {
    /// The file cannot be read.
    #[error("cannot read init binary {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_INIT_SIZE`].
    #[error("init binary {path} is {size} bytes, more than the {limit} accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// Not an ELF file, or a damaged one.
    #[error("init binary {path} is not a valid ELF executable: {reason}")]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Built for another architecture.
    #[error(
        "init binary {path} is built for {found} (e_machine {found_code}), not for {expected}"
    )]
    WrongMachine {
        /// The file.
        path: PathBuf,
        /// Its architecture.
        found: String,
        /// Its `e_machine`.
        found_code: u16,
        /// The architecture wanted.
        expected: String,
    },
    /// An object file, core dump or other non-executable ELF.
    #[error("init binary {path} is an ELF file of type {e_type}, not an executable")]
    NotExecutable {
        /// The file.
        path: PathBuf,
        /// Its `e_type`.
        e_type: u16,
    },
    /// Dynamically linked.
    #[error("init binary {path} is dynamically linked ({reason}); the initramfs has no libraries: link it statically (the workspace builds imgbuild-init with crt-static)")]
    Dynamic {
        /// The file.
        path: PathBuf,
        /// The interpreter or libraries it asks for.
        reason: String,
    },
    /// No init binary was found.
    #[error("no {INIT_NAME} binary found (looked at: {}); build it with `{build}`, or name it with --init PATH or {INIT_ENV}=PATH", .tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// Paths tried.
        tried: Vec<PathBuf>,
        /// The command that builds the binary looked for.
        build: &'static str,
    },
    /// The init's C library refuses to start on the guest kernel.
    #[error("init binary {path} needs Linux {needs} or later (its ABI note: glibc's static startup stops with \"FATAL: kernel too old\"), but the image boots kernel {kernel}; use the musl build: `{MUSL_BUILD}` and `[init] libc = \"musl\"` (or --init PATH)")]
    KernelTooOld {
        /// The init binary.
        path: PathBuf,
        /// The minimum from its ABI note.
        needs: String,
        /// The guest kernel release.
        kernel: String,
    },
}

/// The command that builds the glibc init.
pub const GNU_BUILD: &str = "cargo build -p imgbuild-init --release";
/// The command that builds the musl init, for guest kernels older than 3.2.
pub const MUSL_BUILD: &str =
    "cargo build --release -p imgbuild-init --target x86_64-unknown-linux-musl";
/// Rust target triple of the musl init.
pub const MUSL_TRIPLE: &str = "x86_64-unknown-linux-musl";
/// File name of an installed musl init, beside `imgbuild`.
pub const MUSL_INIT_NAME: &str = "imgbuild-init-musl";

/// What the checks found about an accepted binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticElf {
    /// `e_machine`.
    pub machine: u16,
    /// True for a static position-independent executable (`ET_DYN` without interpreter).
    pub pie: bool,
    /// File size.
    pub size: u64,
    /// Bytes of DWARF sections (`.debug_*`): dead weight in an initramfs.
    pub debug_bytes: u64,
}

/// Checks the file at `path`: ELF, executable, built for `machine`, statically linked.
pub fn check_static_executable(path: &Path, machine: u16) -> Result<StaticElf, ElfCheckError> {
    let bytes = read_bounded(path)?;
    check_static_bytes(path, &bytes, machine)
}

/// Reads the file at `path` and checks it as [`check_static_executable`] does; returns its bytes
/// with what the checks found.
pub fn read_checked(path: &Path, machine: u16) -> Result<(Vec<u8>, StaticElf), ElfCheckError> {
    let bytes = read_bounded(path)?;
    let found = check_static_bytes(path, &bytes, machine)?;
    Ok((bytes, found))
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ElfCheckError> {
    let read = |source| ElfCheckError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path).map_err(read)?;
    let size = file.metadata().map_err(read)?.len();
    if size > MAX_INIT_SIZE {
        return Err(ElfCheckError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: MAX_INIT_SIZE,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(MAX_INIT_SIZE + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    Ok(bytes)
}

/// Checks `bytes` (the content of `path`), as [`check_static_executable`] does.
pub fn check_static_bytes(
    path: &Path,
    bytes: &[u8],
    machine: u16,
) -> Result<StaticElf, ElfCheckError> {
    let not_elf = |reason: String| ElfCheckError::NotElf {
        path: path.to_path_buf(),
        reason,
    };
    if !bytes.starts_with(b"\x7fELF") {
        return Err(not_elf(
            "it does not start with the ELF magic \\x7fELF".into(),
        ));
    }
    let header = Elf::parse_header(bytes).map_err(|e| not_elf(format!("bad header: {e}")))?;
    // The machine is checked before anything else is parsed, so a binary for another
    // architecture is named as such even if goblin would stumble over the rest.
    let x32 = header.e_machine == EM_X86_64 && header.e_ident[4] != ELFCLASS64;
    if header.e_machine != machine || x32 {
        let found = if x32 {
            "x86_64 x32 (32-bit)".to_string()
        } else {
            machine_to_str(header.e_machine).to_string()
        };
        return Err(ElfCheckError::WrongMachine {
            path: path.to_path_buf(),
            found,
            found_code: header.e_machine,
            expected: machine_to_str(machine).to_string(),
        });
    }
    if header.e_type != ET_EXEC && header.e_type != ET_DYN {
        return Err(ElfCheckError::NotExecutable {
            path: path.to_path_buf(),
            e_type: header.e_type,
        });
    }
    let elf = Elf::parse(bytes).map_err(|e| not_elf(e.to_string()))?;
    if let Some(interp) = elf.interpreter {
        return Err(ElfCheckError::Dynamic {
            path: path.to_path_buf(),
            reason: format!("it asks for the program interpreter {interp}"),
        });
    }
    if !elf.libraries.is_empty() {
        return Err(ElfCheckError::Dynamic {
            path: path.to_path_buf(),
            reason: format!("it needs the shared libraries {}", elf.libraries.join(", ")),
        });
    }
    Ok(StaticElf {
        machine: header.e_machine,
        pie: header.e_type == ET_DYN,
        size: bytes.len() as u64,
        debug_bytes: elf
            .section_headers
            .iter()
            .filter(|sh| {
                elf.shdr_strtab
                    .get_at(sh.sh_name)
                    .is_some_and(|n| n.starts_with(".debug_"))
            })
            .map(|sh| sh.sh_size)
            .fold(0u64, u64::saturating_add),
    })
}

/// Finds the init binary: `explicit` when given, else `$IMGBUILD_INIT`, else `imgbuild-init`
/// next to the running executable or in its parent directory (which covers
/// `target/<triple>/{debug,release}/` for the builder and `…/deps/` for tests).
pub fn locate_init(explicit: Option<&Path>) -> Result<PathBuf, ElfCheckError> {
    locate_from(
        explicit,
        std::env::var_os(INIT_ENV),
        std::env::current_exe().ok(),
    )
}

/// [`locate_init`] for the musl build: `explicit` or `$IMGBUILD_INIT` when given, else
/// `imgbuild-init-musl` beside the running executable, else
/// `target/x86_64-unknown-linux-musl/release/imgbuild-init` of the cargo target directory the
/// executable runs from (`target/<triple>/<profile>/` or `…/deps/`).
pub fn locate_musl_init(explicit: Option<&Path>) -> Result<PathBuf, ElfCheckError> {
    locate_musl_from(
        explicit,
        std::env::var_os(INIT_ENV),
        std::env::current_exe().ok(),
    )
}

fn locate_musl_from(
    explicit: Option<&Path>,
    env: Option<OsString>,
    exe: Option<PathBuf>,
) -> Result<PathBuf, ElfCheckError> {
    let mut candidates = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        candidates.push(dir.join(MUSL_INIT_NAME));
        // `<target>/<triple>/<profile>[/deps]`: the target directory is two or three up.
        for target_dir in dir.ancestors().skip(2).take(2) {
            candidates.push(target_dir.join(MUSL_TRIPLE).join("release").join(INIT_NAME));
        }
    }
    first_found(named(explicit, env), candidates, MUSL_BUILD)
}

/// ELF notes read at most from one file; a program or a kernel has a dozen.
const MAX_NOTES: usize = 4096;

/// The notes of the ELF file `bytes` (parsed as `elf`) from its PT_NOTE segments, up to the
/// first damaged one: goblin's iterator yields a damaged note's error again and again without
/// advancing, so reading past an error loops forever (a fuzzed kernel did).
pub fn notes<'a>(
    elf: &Elf<'a>,
    bytes: &'a [u8],
) -> impl Iterator<Item = goblin::elf::note::Note<'a>> + 'a {
    elf.iter_note_headers(bytes)
        .into_iter()
        .flatten()
        .map_while(Result::ok)
        .take(MAX_NOTES)
}

/// `NT_GNU_ABI_TAG`: the note glibc's startup files put in every binary.
const NT_GNU_ABI_TAG: u32 = 1;

/// The oldest kernel the binary says it runs on: the `NT_GNU_ABI_TAG` note (`.note.ABI-tag`,
/// OS 0 = Linux) that glibc links into every program and whose version its static startup
/// enforces. `None` when there is no such note (musl, most non-glibc binaries).
pub fn min_kernel(bytes: &[u8]) -> Option<[u32; 3]> {
    let elf = Elf::parse(bytes).ok()?;
    for note in notes(&elf, bytes) {
        if note.n_type == NT_GNU_ABI_TAG && note.name == "GNU" && note.desc.len() >= 16 {
            let word = |i: usize| {
                let mut w = [0u8; 4];
                w.copy_from_slice(&note.desc[4 * i..4 * i + 4]);
                u32::from_le_bytes(w)
            };
            if word(0) == 0 {
                return Some([word(1), word(2), word(3)]);
            }
        }
    }
    None
}

/// The `major.minor.patch` at the start of a kernel release (`2.6.32-754.el6.x86_64`).
pub fn release_version(release: &str) -> Option<[u32; 3]> {
    let mut out = [0u32; 3];
    let numeric: String = release
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let mut parts = numeric.split('.').filter(|p| !p.is_empty());
    for slot in out.iter_mut() {
        match parts.next() {
            Some(p) => *slot = p.parse().ok()?,
            None => break,
        }
    }
    (!numeric.is_empty()).then_some(out)
}

/// Refuses an init whose ABI note asks for a newer kernel than `kernel_release`: glibc's
/// static startup would print "FATAL: kernel too old" and the guest would panic.
pub fn check_kernel_compat(
    path: &Path,
    bytes: &[u8],
    kernel_release: &str,
) -> Result<(), ElfCheckError> {
    let (Some(needs), Some(have)) = (min_kernel(bytes), release_version(kernel_release)) else {
        return Ok(());
    };
    if have < needs {
        return Err(ElfCheckError::KernelTooOld {
            path: path.to_path_buf(),
            needs: format!("{}.{}.{}", needs[0], needs[1], needs[2]),
            kernel: kernel_release.to_string(),
        });
    }
    Ok(())
}

fn locate_from(
    explicit: Option<&Path>,
    env: Option<OsString>,
    exe: Option<PathBuf>,
) -> Result<PathBuf, ElfCheckError> {
    let mut candidates = Vec::new();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        candidates.push(dir.join(INIT_NAME));
        if let Some(up) = dir.parent() {
            candidates.push(up.join(INIT_NAME));
        }
    }
    first_found(named(explicit, env), candidates, GNU_BUILD)
}

/// The path the user named: the option first, then a non-empty environment variable.
fn named(explicit: Option<&Path>, env: Option<OsString>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// The named path, which must exist (silently falling back to another binary would hide a
/// typo), else the first of `candidates` that exists; `build` says how to make one.
fn first_found(
    named: Option<PathBuf>,
    candidates: Vec<PathBuf>,
    build: &'static str,
) -> Result<PathBuf, ElfCheckError> {
    let tried = match named {
        Some(path) => vec![path],
        None => candidates,
    };
    match tried.iter().find(|p| p.is_file()) {
        Some(found) => Ok(found.clone()),
        None => Err(ElfCheckError::NotFound { tried, build }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 64-byte ELF header of the given class, type and machine, with nothing after it.
    fn header(class: u8, e_type: u16, machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = class;
        h[5] = 1;
        h[6] = 1;
        h[16..18].copy_from_slice(&e_type.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[20] = 1;
        h[52..54].copy_from_slice(&64u16.to_le_bytes());
        h
    }

    /// An x86-64 executable whose only segment is a PT_NOTE holding one note named `name`.
    fn with_note(name: &[u8; 4], n_type: u32) -> Vec<u8> {
        let mut elf = header(2, ET_EXEC, EM_X86_64);
        elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        let mut phdr = vec![0u8; 56];
        phdr[..4].copy_from_slice(&4u32.to_le_bytes()); // PT_NOTE
        phdr[8..16].copy_from_slice(&120u64.to_le_bytes());
        phdr[32..40].copy_from_slice(&20u64.to_le_bytes());
        phdr[40..48].copy_from_slice(&20u64.to_le_bytes());
        phdr[48..56].copy_from_slice(&4u64.to_le_bytes());
        elf.extend_from_slice(&phdr);
        for word in [4u32, 4, n_type] {
            elf.extend_from_slice(&word.to_le_bytes());
        }
        elf.extend_from_slice(name);
        elf.extend_from_slice(&[0; 4]);
        elf
    }

    #[test]
    fn a_damaged_note_ends_the_note_search() {
        let good = with_note(b"Xen\0", 18);
        let elf = Elf::parse(&good).unwrap();
        let found: Vec<_> = notes(&elf, &good).map(|n| (n.name, n.n_type)).collect();
        assert_eq!(found, [("Xen", 18)]);
        // A name that is not UTF-8: goblin fails on it without advancing.
        let bad = with_note(b"\xa4en\0", NT_GNU_ABI_TAG);
        let elf = Elf::parse(&bad).unwrap();
        assert_eq!(notes(&elf, &bad).count(), 0);
        assert_eq!(min_kernel(&bad), None);
    }

    #[test]
    fn header_level_refusals() {
        let p = Path::new("/x/init");
        let err = check_static_bytes(p, b"#!/bin/sh\n", EM_X86_64).unwrap_err();
        assert!(matches!(err, ElfCheckError::NotElf { .. }), "{err}");
        assert!(err.to_string().contains("/x/init"));
        let err = check_static_bytes(p, &header(2, ET_EXEC, 183), EM_X86_64).unwrap_err();
        assert!(
            matches!(
                &err,
                ElfCheckError::WrongMachine {
                    found_code: 183,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("ARM_AARCH64") || err.to_string().contains("183"));
        let err = check_static_bytes(p, &header(1, ET_EXEC, EM_X86_64), EM_X86_64).unwrap_err();
        assert!(matches!(err, ElfCheckError::WrongMachine { .. }), "{err}");
        let err = check_static_bytes(p, &header(2, 1, EM_X86_64), EM_X86_64).unwrap_err();
        assert!(matches!(
            err,
            ElfCheckError::NotExecutable { e_type: 1, .. }
        ));
        // The same aarch64 header is accepted as far as the machine goes when that is expected.
        let ok = check_static_bytes(p, &header(2, ET_EXEC, 183), 183).unwrap();
        assert!(!ok.pie);
    }

    #[test]
    fn locates_explicit_env_and_beside_exe() {
        let d = tempfile::tempdir().unwrap();
        let deps = d.path().join("debug/deps");
        fs::create_dir_all(&deps).unwrap();
        let exe = deps.join("kernel_test-123");
        let err = locate_from(None, None, Some(exe.clone())).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("cargo build -p imgbuild-init --release"),
            "{msg}"
        );
        assert!(msg.contains("debug/deps/imgbuild-init"), "{msg}");
        let init = d.path().join("debug").join(INIT_NAME);
        fs::write(&init, b"x").unwrap();
        assert_eq!(locate_from(None, None, Some(exe.clone())).unwrap(), init);
        let beside = deps.join(INIT_NAME);
        fs::write(&beside, b"x").unwrap();
        assert_eq!(locate_from(None, None, Some(exe.clone())).unwrap(), beside);
        let other = d.path().join("other");
        fs::write(&other, b"x").unwrap();
        assert_eq!(
            locate_from(None, Some(other.clone().into()), Some(exe.clone())).unwrap(),
            other
        );
        assert_eq!(
            locate_from(Some(&init), Some(other.into()), Some(exe.clone())).unwrap(),
            init
        );
        let missing = d.path().join("missing");
        assert!(matches!(
            locate_from(Some(&missing), None, Some(exe)),
            Err(ElfCheckError::NotFound { .. })
        ));
    }

    #[test]
    fn locates_the_musl_build_in_the_target_dir() {
        let d = tempfile::tempdir().unwrap();
        let deps = d.path().join("x86_64-unknown-linux-gnu/release/deps");
        fs::create_dir_all(&deps).unwrap();
        let exe = deps.join("sl_musl-123");
        let err = locate_musl_from(None, None, Some(exe.clone())).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(MUSL_BUILD), "{msg}");
        assert!(
            msg.contains("x86_64-unknown-linux-musl/release/imgbuild-init"),
            "{msg}"
        );
        let musl = d.path().join("x86_64-unknown-linux-musl/release");
        fs::create_dir_all(&musl).unwrap();
        fs::write(musl.join(INIT_NAME), b"x").unwrap();
        assert_eq!(
            locate_musl_from(None, None, Some(exe.clone())).unwrap(),
            musl.join(INIT_NAME)
        );
        // From the builder binary itself (one level less deep).
        let builder = d.path().join("x86_64-unknown-linux-gnu/release/imgbuild");
        assert_eq!(
            locate_musl_from(None, None, Some(builder)).unwrap(),
            musl.join(INIT_NAME)
        );
        let installed = deps.join(MUSL_INIT_NAME);
        fs::write(&installed, b"x").unwrap();
        assert_eq!(
            locate_musl_from(None, None, Some(exe.clone())).unwrap(),
            installed
        );
        let missing = d.path().join("nope");
        let err = locate_musl_from(Some(&missing), None, Some(exe)).unwrap_err();
        assert!(err.to_string().contains(MUSL_BUILD), "{err}");
    }

    #[test]
    fn kernel_releases_and_abi_floor() {
        assert_eq!(release_version("2.6.32-754.el6.x86_64"), Some([2, 6, 32]));
        assert_eq!(release_version("2.6.18-398.el5xen"), Some([2, 6, 18]));
        assert_eq!(release_version("6.1.0-56-cloud-amd64"), Some([6, 1, 0]));
        assert_eq!(release_version("3.10"), Some([3, 10, 0]));
        assert_eq!(release_version("vmlinuz"), None);
        // A header-only ELF has no notes: nothing to enforce.
        assert_eq!(min_kernel(&header(2, ET_EXEC, EM_X86_64)), None);
        let p = Path::new("/x/init");
        assert!(check_kernel_compat(p, b"not elf", "2.6.18").is_ok());
    }
}
