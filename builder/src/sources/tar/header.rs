//! The 512-byte tar header block: ustar, GNU and v7 layouts, numeric fields in octal or base-256,
//! and the checksum.

/// Size of a tar block.
pub(crate) const BLOCK: u64 = 512;

/// One header block.
pub(crate) struct Header(pub [u8; BLOCK as usize]);

/// Layout of the header, from its magic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// POSIX ustar (and pax): `ustar\0` `00`, with a name prefix field.
    Ustar,
    /// GNU: `ustar  \0`; the prefix area holds times and the old sparse map.
    Gnu,
    /// Version 7: no magic, only name, link name and numeric fields.
    V7,
}

impl Header {
    /// True for an all-zero block (end of archive).
    pub fn is_zero(&self) -> bool {
        self.0.iter().all(|&b| b == 0)
    }

    /// Checks the header checksum: the sum of all bytes with the checksum field read as spaces,
    /// unsigned (POSIX) or signed (some historic tars).
    pub fn verify_checksum(&self) -> Result<(), String> {
        let stored = octal(&self.0[148..156])
            .map_err(|e| format!("the checksum field is unreadable ({e})"))?;
        let mut unsigned: u64 = 0;
        let mut signed: i64 = 0;
        for (i, &b) in self.0.iter().enumerate() {
            let b = if (148..156).contains(&i) { b' ' } else { b };
            unsigned += u64::from(b);
            signed += i64::from(b as i8);
        }
        if stored == unsigned || i64::try_from(stored).ok() == Some(signed) {
            Ok(())
        } else {
            Err(format!(
                "checksum mismatch (stored {stored:o}, computed {unsigned:o}): not a tar header, \
                 or a damaged one"
            ))
        }
    }

    /// The layout, from the magic field.
    pub fn layout(&self) -> Layout {
        match &self.0[257..265] {
            b"ustar  \0" => Layout::Gnu,
            m if &m[..6] == b"ustar\0" => Layout::Ustar,
            _ => Layout::V7,
        }
    }

    /// The type flag byte.
    pub fn typeflag(&self) -> u8 {
        self.0[156]
    }

    /// The path: `prefix/name` for ustar, `name` otherwise.
    pub fn path(&self) -> Vec<u8> {
        let name = cstr(&self.0[0..100]);
        if self.layout() == Layout::Ustar {
            let prefix = cstr(&self.0[345..500]);
            if !prefix.is_empty() {
                let mut path = prefix.to_vec();
                path.push(b'/');
                path.extend_from_slice(name);
                return path;
            }
        }
        name.to_vec()
    }

    /// The link target field.
    pub fn link_name(&self) -> Vec<u8> {
        cstr(&self.0[157..257]).to_vec()
    }

    /// The owner's user name, when the layout has one.
    pub fn uname(&self) -> Option<Vec<u8>> {
        (self.layout() != Layout::V7)
            .then(|| cstr(&self.0[265..297]).to_vec())
            .filter(|n| !n.is_empty())
    }

    /// The owner's group name, when the layout has one.
    pub fn gname(&self) -> Option<Vec<u8>> {
        (self.layout() != Layout::V7)
            .then(|| cstr(&self.0[297..329]).to_vec())
            .filter(|n| !n.is_empty())
    }

    /// Permission bits and type bits as stored.
    pub fn mode(&self) -> Result<u64, String> {
        field("mode", &self.0[100..108])
    }

    /// Owner id.
    pub fn uid(&self) -> Result<u64, String> {
        field("uid", &self.0[108..116])
    }

    /// Group id.
    pub fn gid(&self) -> Result<u64, String> {
        field("gid", &self.0[116..124])
    }

    /// Size of the data following the header.
    pub fn size(&self) -> Result<u64, String> {
        field("size", &self.0[124..136])
    }

    /// Modification time (may be negative in base-256).
    pub fn mtime(&self) -> Result<i64, String> {
        signed_field("mtime", &self.0[136..148])
    }

    /// Device major number.
    pub fn dev_major(&self) -> Result<u64, String> {
        if self.layout() == Layout::V7 {
            return Ok(0);
        }
        field("devmajor", &self.0[329..337])
    }

    /// Device minor number.
    pub fn dev_minor(&self) -> Result<u64, String> {
        if self.layout() == Layout::V7 {
            return Ok(0);
        }
        field("devminor", &self.0[337..345])
    }
}

/// The bytes of a NUL-terminated (or full-width) text field.
pub(crate) fn cstr(field: &[u8]) -> &[u8] {
    match field.iter().position(|&b| b == 0) {
        Some(end) => &field[..end],
        None => field,
    }
}

fn field(name: &str, raw: &[u8]) -> Result<u64, String> {
    let value = number(raw).map_err(|e| format!("the {name} field is unreadable ({e})"))?;
    u64::try_from(value).map_err(|_| format!("the {name} field is negative"))
}

fn signed_field(name: &str, raw: &[u8]) -> Result<i64, String> {
    let value = number(raw).map_err(|e| format!("the {name} field is unreadable ({e})"))?;
    i64::try_from(value).map_err(|_| format!("the {name} field is out of range"))
}

/// A numeric field: octal text, or GNU base-256 binary when the top bit of the first byte is set
/// (large uids, sizes over 8 GiB, negative times).
pub(crate) fn number(raw: &[u8]) -> Result<i128, String> {
    match raw.first() {
        Some(0x80) => {
            let mut value: i128 = 0;
            for &b in &raw[1..] {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(i128::from(b)))
                    .filter(|v| *v <= i128::from(u64::MAX))
                    .ok_or("base-256 value too large")?;
            }
            Ok(value)
        }
        Some(0xff) => {
            // Negative, two's complement over the whole field.
            let mut value: i128 = -1;
            for &b in &raw[1..] {
                value = value
                    .checked_mul(256)
                    .and_then(|v| v.checked_add(i128::from(b)))
                    .filter(|v| *v >= i128::from(i64::MIN))
                    .ok_or("base-256 value too small")?;
            }
            Ok(value)
        }
        Some(b) if b & 0x80 != 0 => Err(format!("unknown binary encoding 0x{b:02x}")),
        _ => octal(raw).map(i128::from),
    }
}

/// Octal digits, optionally surrounded by spaces and terminated by NUL or space; empty is 0.
pub(crate) fn octal(raw: &[u8]) -> Result<u64, String> {
    let text = cstr(raw);
    let trimmed = text
        .iter()
        .position(|&b| b != b' ')
        .map_or(&text[text.len()..], |start| &text[start..]);
    let digits = match trimmed.iter().position(|&b| b == b' ') {
        Some(end) => {
            if trimmed[end..].iter().any(|&b| b != b' ') {
                return Err(format!("{:?} is not an octal number", show(raw)));
            }
            &trimmed[..end]
        }
        None => trimmed,
    };
    let mut value: u64 = 0;
    for &d in digits {
        if !(b'0'..=b'7').contains(&d) {
            return Err(format!("{:?} is not an octal number", show(raw)));
        }
        value = value
            .checked_mul(8)
            .and_then(|v| v.checked_add(u64::from(d - b'0')))
            .ok_or("octal value too large")?;
    }
    Ok(value)
}

fn show(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(octal(b"0000644\0").unwrap(), 0o644);
        assert_eq!(octal(b"   755 \0").unwrap(), 0o755);
        assert_eq!(octal(b"\0\0\0\0").unwrap(), 0);
        assert_eq!(octal(b"77777777777").unwrap(), 0o77777777777);
        assert!(octal(b"12x4").is_err());
        assert!(octal(b"12 4").is_err());
        let mut big = [0u8; 12];
        big[0] = 0x80;
        big[11] = 1;
        big[7] = 2;
        assert_eq!(number(&big).unwrap(), (2 << 32) + 1);
        let neg = [0xffu8; 12];
        assert_eq!(number(&neg).unwrap(), -1);
        let mut huge = [0xffu8; 12];
        huge[0] = 0x80;
        assert!(number(&huge).is_err());
        assert!(number(&[0x90, 0, 0]).is_err());
    }

    #[test]
    fn checksum() {
        let mut h = Header([0u8; 512]);
        h.0[0] = b'a';
        h.0[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.0.iter().map(|&b| u32::from(b)).sum();
        let text = format!("{sum:06o}\0 ");
        h.0[148..156].copy_from_slice(text.as_bytes());
        h.verify_checksum().unwrap();
        h.0[1] = b'b';
        assert!(h.verify_checksum().is_err());
    }
}
