//! Recognising an x86 Linux kernel image (bzImage) and reading its version string.
//!
//! The boot protocol header sits at 0x1f1 of the image: the magic "HdrS" at 0x202, the protocol
//! version at 0x206 and, from protocol 2.00 on, a pointer at 0x20e to a NUL-terminated version
//! string stored at that value + 0x200. That string starts with the release (`uname -r`), which
//! names the kernel's modules directory. Reading it from the image instead of trusting the file
//! name catches a `vmlinuz-X` that is really another kernel, or no kernel at all.

/// Bytes of the image needed to read the header and any version string it can point to.
pub const HEADER_WINDOW: usize = 0x200 + 0x1_0000 + MAX_VERSION_LEN;

/// Longest version string accepted.
const MAX_VERSION_LEN: usize = 512;

const BOOT_FLAG_OFFSET: usize = 0x1fe;
const MAGIC_OFFSET: usize = 0x202;
const PROTOCOL_OFFSET: usize = 0x206;
const VERSION_PTR_OFFSET: usize = 0x20e;

/// What the header of a bzImage says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BzImageHeader {
    /// Boot protocol version, e.g. 0x020f.
    pub protocol: u16,
    /// The whole version string: "6.1.0-56-cloud-amd64 (debian-kernel@…) #1 SMP …".
    pub version: String,
    /// Its first word: the release, as `uname -r` prints it.
    pub release: String,
}

/// Why bytes are not a kernel image; the caller adds the file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAKernel {
    /// Too short to hold a boot header.
    #[error("it is {0} bytes long, too short for a boot sector and setup header")]
    TooShort(usize),
    /// No "HdrS" magic at 0x202.
    #[error("no \"HdrS\" boot header magic at offset 0x202 (not an x86 bzImage)")]
    NoMagic,
    /// The protocol predates the version pointer.
    #[error("boot protocol {0:#06x} is older than 2.00 and carries no version string")]
    OldProtocol(u16),
    /// The version pointer is zero or points outside the image.
    #[error("the version string pointer at 0x20e ({0:#x}) points outside the image")]
    BadVersionPointer(u16),
    /// The version string is empty, unterminated or not printable text.
    #[error("the version string at offset {0:#x} is not printable text")]
    BadVersion(usize),
}

/// Parses the boot header at the start of `image` (at least the first [`HEADER_WINDOW`] bytes,
/// or the whole image when shorter).
pub fn parse(image: &[u8]) -> Result<BzImageHeader, NotAKernel> {
    if image.len() < VERSION_PTR_OFFSET + 2 {
        return Err(NotAKernel::TooShort(image.len()));
    }
    if &image[MAGIC_OFFSET..MAGIC_OFFSET + 4] != b"HdrS" {
        return Err(NotAKernel::NoMagic);
    }
    // The 0xAA55 boot flag is checked after the magic so that a random file reports the more
    // telling "no HdrS"; a file with HdrS but no boot flag is still refused.
    if image[BOOT_FLAG_OFFSET..BOOT_FLAG_OFFSET + 2] != [0x55, 0xaa] {
        return Err(NotAKernel::NoMagic);
    }
    let protocol = u16::from_le_bytes([image[PROTOCOL_OFFSET], image[PROTOCOL_OFFSET + 1]]);
    if protocol < 0x0200 {
        return Err(NotAKernel::OldProtocol(protocol));
    }
    let pointer = u16::from_le_bytes([image[VERSION_PTR_OFFSET], image[VERSION_PTR_OFFSET + 1]]);
    let start = usize::from(pointer) + 0x200;
    if pointer == 0 || start >= image.len() {
        return Err(NotAKernel::BadVersionPointer(pointer));
    }
    let tail = &image[start..image.len().min(start + MAX_VERSION_LEN)];
    let end = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or(NotAKernel::BadVersion(start))?;
    let text = &tail[..end];
    if text.is_empty() || !text.iter().all(|&b| (0x20..0x7f).contains(&b)) {
        return Err(NotAKernel::BadVersion(start));
    }
    let version = String::from_utf8_lossy(text).into_owned();
    let release = version
        .split(' ')
        .next()
        .filter(|r| !r.is_empty() && !r.contains('/'))
        .ok_or(NotAKernel::BadVersion(start))?
        .to_string();
    Ok(BzImageHeader {
        protocol,
        version,
        release,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(version: &[u8], pointer: u16) -> Vec<u8> {
        let mut img = vec![0u8; 0x4000];
        img[BOOT_FLAG_OFFSET] = 0x55;
        img[BOOT_FLAG_OFFSET + 1] = 0xaa;
        img[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(b"HdrS");
        img[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x020fu16.to_le_bytes());
        img[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2].copy_from_slice(&pointer.to_le_bytes());
        let at = usize::from(pointer) + 0x200;
        img[at..at + version.len()].copy_from_slice(version);
        img
    }

    #[test]
    fn reads_version_and_release() {
        let h = parse(&image(b"6.1.0-56-cloud-amd64 (x@y) #1 SMP\0", 0x1000)).unwrap();
        assert_eq!(h.release, "6.1.0-56-cloud-amd64");
        assert_eq!(h.version, "6.1.0-56-cloud-amd64 (x@y) #1 SMP");
        assert_eq!(h.protocol, 0x020f);
    }

    #[test]
    fn refuses_non_kernels() {
        assert_eq!(parse(b"hello"), Err(NotAKernel::TooShort(5)));
        assert_eq!(parse(&[0u8; 0x1000]), Err(NotAKernel::NoMagic));
        let mut img = image(b"6.1\0", 0x1000);
        img[BOOT_FLAG_OFFSET] = 0;
        assert_eq!(parse(&img), Err(NotAKernel::NoMagic));
        let mut img = image(b"6.1\0", 0x1000);
        img[VERSION_PTR_OFFSET..VERSION_PTR_OFFSET + 2].copy_from_slice(&0xf000u16.to_le_bytes());
        assert_eq!(parse(&img), Err(NotAKernel::BadVersionPointer(0xf000)));
        assert!(matches!(
            parse(&image(b"\x01bad\0", 0x1000)),
            Err(NotAKernel::BadVersion(_))
        ));
        // No terminating NUL within the image.
        let mut img = image(b"", 0x1000);
        let len = img.len();
        img[0x1200..len].fill(b'a');
        assert!(matches!(parse(&img), Err(NotAKernel::BadVersion(_))));
        let mut img = image(b"6.1\0", 0x1000);
        img[PROTOCOL_OFFSET..PROTOCOL_OFFSET + 2].copy_from_slice(&0x0104u16.to_le_bytes());
        assert_eq!(parse(&img), Err(NotAKernel::OldProtocol(0x0104)));
    }
}
