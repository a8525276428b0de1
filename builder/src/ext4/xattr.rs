//! Extended attributes on disk: name prefixes as indexes, POSIX ACLs in ext4's compact form,
//! entry hashes, and the two places they live: after the inode's extra fields and in a shared
//! xattr block.
//!
//! Entries are sorted by (index, name length, name) because the kernel stops searching a block
//! at the first entry that sorts after the wanted one.

use super::checksum::ext4_crc;
use super::format::{put16, put32, BLOCK, XATTR_MAGIC};

/// Size of the xattr block header.
pub const BLOCK_HEADER: usize = 32;
/// Size of an entry before its name.
pub const ENTRY_HEADER: usize = 16;

/// Name prefixes and their indexes. The two ACL names are complete names with an empty suffix.
const PREFIXES: [(&[u8], u8); 6] = [
    (b"system.posix_acl_access", 2),
    (b"system.posix_acl_default", 3),
    (b"user.", 1),
    (b"trusted.", 4),
    (b"security.", 6),
    (b"system.", 7),
];

/// An attribute that cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum XattrError {
    /// The part of the name after its prefix is over 255 bytes.
    #[error("extended attribute name {0:?} is too long")]
    NameTooLong(String),
    /// A POSIX ACL value is not in the kernel's xattr format.
    #[error("extended attribute {name:?} is not a valid POSIX ACL: {reason}")]
    BadAcl {
        /// The attribute.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The value cannot fit in one xattr block.
    #[error("extended attribute {name:?} has {size} bytes; at most {max} fit in a block")]
    TooLarge {
        /// The attribute.
        name: String,
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

/// One attribute as stored: name index, name suffix, value in disk format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DiskXattr {
    /// Prefix index (0 = no known prefix, the full name is stored).
    pub index: u8,
    /// The name after the prefix.
    pub name: Vec<u8>,
    /// The value as stored (ACLs converted).
    pub value: Vec<u8>,
}

fn round4(n: usize) -> usize {
    (n + 3) & !3
}

impl DiskXattr {
    /// Bytes the entry takes in the entry table.
    pub fn entry_len(&self) -> usize {
        ENTRY_HEADER + round4(self.name.len())
    }

    /// Bytes the value takes in the value area.
    pub fn value_len(&self) -> usize {
        round4(self.value.len())
    }

    fn sort_key(&self) -> (u8, usize, &[u8]) {
        (self.index, self.name.len(), &self.name)
    }
}

/// Converts a tree attribute (name and value as `getxattr` returns them) to its disk form.
pub fn to_disk(name: &[u8], value: &[u8]) -> Result<DiskXattr, XattrError> {
    let shown = || String::from_utf8_lossy(name).into_owned();
    let (index, suffix) = PREFIXES
        .iter()
        .find_map(|(prefix, index)| {
            let exact = *index == 2 || *index == 3;
            if exact {
                (name == *prefix).then_some((*index, &name[name.len()..]))
            } else {
                name.strip_prefix(*prefix).map(|s| (*index, s))
            }
        })
        .unwrap_or((0, name));
    if suffix.len() > 255 {
        return Err(XattrError::NameTooLong(shown()));
    }
    let value = if index == 2 || index == 3 {
        acl_to_disk(value).map_err(|reason| XattrError::BadAcl {
            name: shown(),
            reason,
        })?
    } else {
        value.to_vec()
    };
    let x = DiskXattr {
        index,
        name: suffix.to_vec(),
        value,
    };
    let max = BLOCK - BLOCK_HEADER - 4 - x.entry_len();
    if x.value.len() > max {
        return Err(XattrError::TooLarge {
            name: shown(),
            size: x.value.len(),
            max,
        });
    }
    Ok(x)
}

/// The attribute's full name and `getxattr` value from its disk form.
pub fn from_disk(index: u8, suffix: &[u8], value: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let prefix: &[u8] = match index {
        0 => b"",
        1 => b"user.",
        2 => b"system.posix_acl_access",
        3 => b"system.posix_acl_default",
        4 => b"trusted.",
        5 => b"lustre.",
        6 => b"security.",
        7 => b"system.",
        8 => b"system.richacl",
        other => return Err(format!("unknown xattr name index {other}")),
    };
    let mut name = prefix.to_vec();
    name.extend_from_slice(suffix);
    let value = if index == 2 || index == 3 {
        acl_from_disk(value)?
    } else {
        value.to_vec()
    };
    Ok((name, value))
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// `posix_acl_xattr` (version 2, 8-byte entries) to ext4's disk ACL (version 1, 4-byte entries
/// for the owner, group, mask and other).
fn acl_to_disk(value: &[u8]) -> Result<Vec<u8>, String> {
    if value.len() < 4 || (value.len() - 4) % 8 != 0 {
        return Err(format!("length {} is not 4 + 8n", value.len()));
    }
    let version = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
    if version != 2 {
        return Err(format!("version {version}, expected 2"));
    }
    let mut out = Vec::with_capacity(value.len());
    out.extend_from_slice(&1u32.to_le_bytes());
    for e in value[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        match tag {
            ACL_USER | ACL_GROUP => out.extend_from_slice(e),
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                if id != ACL_UNDEFINED_ID {
                    return Err(format!("entry with tag {tag:#x} carries id {id}"));
                }
                out.extend_from_slice(&e[..4]);
            }
            other => return Err(format!("unknown tag {other:#x}")),
        }
    }
    Ok(out)
}

fn acl_from_disk(value: &[u8]) -> Result<Vec<u8>, String> {
    if value.len() < 4 || u32::from_le_bytes([value[0], value[1], value[2], value[3]]) != 1 {
        return Err("ACL without a version 1 header".into());
    }
    let mut out = Vec::with_capacity(value.len() * 2);
    out.extend_from_slice(&2u32.to_le_bytes());
    let mut rest = &value[4..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err("ACL ends inside an entry".into());
        }
        let tag = u16::from_le_bytes([rest[0], rest[1]]);
        match tag {
            ACL_USER | ACL_GROUP => {
                if rest.len() < 8 {
                    return Err("ACL ends inside an entry".into());
                }
                out.extend_from_slice(&rest[..8]);
                rest = &rest[8..];
            }
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                out.extend_from_slice(&rest[..4]);
                out.extend_from_slice(&ACL_UNDEFINED_ID.to_le_bytes());
                rest = &rest[4..];
            }
            other => return Err(format!("unknown ACL tag {other:#x}")),
        }
    }
    Ok(out)
}

/// Converts and sorts all attributes of an inode into disk order.
pub fn disk_list(xattrs: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<DiskXattr>, XattrError> {
    let mut list = xattrs
        .iter()
        .map(|(n, v)| to_disk(n, v))
        .collect::<Result<Vec<_>, _>>()?;
    list.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(list)
}

/// Splits `list` into the attributes kept in the inode (`space` bytes after the magic, 4 of
/// which end the entry table) and those for the xattr block: in disk order, each attribute goes
/// in the inode if it still fits there.
pub fn split(list: Vec<DiskXattr>, space: usize) -> (Vec<DiskXattr>, Vec<DiskXattr>) {
    let mut used = 4;
    let mut inline = Vec::new();
    let mut block = Vec::new();
    for x in list {
        let need = x.entry_len() + x.value_len();
        if used + need <= space {
            used += need;
            inline.push(x);
        } else {
            block.push(x);
        }
    }
    (inline, block)
}

/// True when `list` fits in one xattr block.
pub fn fits_block(list: &[DiskXattr]) -> bool {
    let used: usize = list.iter().map(|x| x.entry_len() + x.value_len()).sum();
    BLOCK_HEADER + used + 4 <= BLOCK
}

/// The entry hash (signed-char name bytes, as x86 kernels and e2fsprogs have long computed it).
pub fn entry_hash(name: &[u8], value: &[u8]) -> u32 {
    let mut hash: u32 = 0;
    for &c in name {
        hash = (hash << 5) ^ (hash >> 27) ^ (c as i8 as i32 as u32);
    }
    for w in value.chunks(4) {
        let mut word = [0u8; 4];
        word[..w.len()].copy_from_slice(w);
        hash = (hash << 16) ^ (hash >> 16) ^ u32::from_le_bytes(word);
    }
    hash
}

/// Writes entries at `buf[table..]` and values downward from `buf.len()`; value offsets are
/// relative to `origin`. The caller guarantees the space (see [`split`] and [`fits_block`]).
/// Returns the entry hashes.
fn encode_entries(buf: &mut [u8], table: usize, origin: usize, list: &[DiskXattr]) -> Vec<u32> {
    let mut pos = table;
    let mut value_end = buf.len();
    let mut hashes = Vec::with_capacity(list.len());
    for x in list {
        let offs = if x.value.is_empty() {
            0
        } else {
            value_end -= x.value_len();
            buf[value_end..value_end + x.value.len()].copy_from_slice(&x.value);
            value_end - origin
        };
        let hash = entry_hash(&x.name, &x.value);
        buf[pos] = x.name.len() as u8;
        buf[pos + 1] = x.index;
        put16(buf, pos + 2, offs as u16);
        put32(buf, pos + 4, 0);
        put32(buf, pos + 8, x.value.len() as u32);
        put32(buf, pos + 12, hash);
        buf[pos + ENTRY_HEADER..pos + ENTRY_HEADER + x.name.len()].copy_from_slice(&x.name);
        pos += x.entry_len();
        hashes.push(hash);
    }
    hashes
}

/// Fills the in-inode area (`area` starts right after i_extra_isize's fields) with the magic and
/// `list`. An empty list leaves the area zero.
pub fn encode_inline(area: &mut [u8], list: &[DiskXattr]) {
    if list.is_empty() {
        return;
    }
    put32(area, 0, XATTR_MAGIC);
    encode_entries(area, 4, 4, list);
}

/// An xattr block with `list`, refcount and checksum still zero (see [`finish_block`]).
pub fn encode_block(list: &[DiskXattr]) -> Vec<u8> {
    let mut buf = vec![0u8; BLOCK];
    put32(&mut buf, 0, XATTR_MAGIC);
    put32(&mut buf, 8, 1); // h_blocks
    let hashes = encode_entries(&mut buf, BLOCK_HEADER, 0, list);
    let mut hash: u32 = 0;
    for h in hashes {
        hash = (hash << 16) ^ (hash >> 16) ^ h;
    }
    put32(&mut buf, 12, hash);
    buf
}

/// Sets the reference count and, with metadata_csum, the checksum (which covers the block number).
pub fn finish_block(buf: &mut [u8], refcount: u32, block: u64, csum_seed: Option<u32>) {
    put32(buf, 4, refcount);
    if let Some(seed) = csum_seed {
        put32(buf, 16, 0);
        let crc = ext4_crc(seed, &block.to_le_bytes());
        let crc = ext4_crc(crc, buf);
        put32(buf, 16, crc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4::format::le32;

    fn acl_xattr(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn prefixes_and_acl_round_trip() {
        let acl = acl_xattr(&[
            (1, 7, u32::MAX),
            (2, 5, 1000),
            (4, 5, u32::MAX),
            (0x10, 5, u32::MAX),
            (0x20, 4, u32::MAX),
        ]);
        let d = to_disk(b"system.posix_acl_access", &acl).unwrap();
        assert_eq!((d.index, d.name.as_slice()), (2, &b""[..]));
        assert_eq!(d.value.len(), 4 + 4 + 8 + 4 + 4 + 4);
        let (n, v) = from_disk(d.index, &d.name, &d.value).unwrap();
        assert_eq!(n, b"system.posix_acl_access");
        assert_eq!(v, acl);
        let c = to_disk(b"security.capability", b"x").unwrap();
        assert_eq!((c.index, c.name.as_slice()), (6, &b"capability"[..]));
        let odd = to_disk(b"foo.bar", b"").unwrap();
        assert_eq!((odd.index, odd.name.as_slice()), (0, &b"foo.bar"[..]));
        assert_eq!(from_disk(0, b"foo.bar", b"").unwrap().0, b"foo.bar");
        assert!(to_disk(b"system.posix_acl_access", b"\x02\0\0\0\x01").is_err());
        assert!(to_disk(b"system.posix_acl_access", &acl_xattr(&[(1, 7, 0)])).is_err());
        assert!(to_disk(b"user.big", &vec![0u8; 5000]).is_err());
    }

    #[test]
    fn inline_split_and_block_layout() {
        let list = disk_list(&[
            (b"user.b".to_vec(), vec![1u8; 40]),
            (
                b"security.selinux".to_vec(),
                b"system_u:object_r:bin_t:s0\0".to_vec(),
            ),
            (b"user.a".to_vec(), vec![2u8; 3]),
        ])
        .unwrap();
        // Sorted by index, then name length, then name: user.a, user.b, security.selinux.
        assert_eq!(list[0].name, b"a");
        assert_eq!(list[2].index, 6);
        let (inline, rest) = split(list.clone(), 92);
        assert_eq!((inline.len(), rest.len()), (2, 1));
        assert_eq!(rest[0].name, b"selinux");
        assert_eq!(split(list.clone(), 20).0.len(), 0);
        let mut block = encode_block(&list);
        finish_block(&mut block, 3, 1234, Some(99));
        assert_eq!(le32(&block, 0), XATTR_MAGIC);
        assert_eq!(le32(&block, 4), 3);
        // The first value sits at the very end of the block.
        assert_eq!(&block[BLOCK - 4..BLOCK - 1], &[2, 2, 2]);
        assert_eq!(block[BLOCK_HEADER], 1); // name length of "a"
    }

    #[test]
    fn hash_of_high_bytes_is_signed() {
        assert_ne!(entry_hash(&[0x80], b""), entry_hash(&[0x7f], b""));
        assert_eq!(entry_hash(&[0x80], b""), 0xffff_ff80);
    }
}
