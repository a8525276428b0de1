//! pax extended headers: `LEN KEY=VALUE\n` records, and the extended attributes they carry
//! (`SCHILY.xattr.NAME` raw, `LIBARCHIVE.xattr.NAME` percent-encoded name and base64 value,
//! `RHT.security.selinux` from Red Hat's tar).

/// Records of one pax header, in order (GNU sparse 0.0 repeats keys, so order matters).
pub(crate) type Records = Vec<(String, Vec<u8>)>;

/// Parses the data of a pax header.
pub(crate) fn parse(data: &[u8]) -> Result<Records, String> {
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        // Trailing NUL padding is tolerated, as GNU tar does.
        if data[pos..].iter().all(|&b| b == 0) {
            break;
        }
        let rest = &data[pos..];
        let space = rest
            .iter()
            .take(20)
            .position(|&b| b == b' ')
            .ok_or_else(|| format!("pax record at byte {pos} has no length"))?;
        let len: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("pax record at byte {pos} has a bad length"))?;
        if len <= space + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(format!(
                "pax record at byte {pos} claims {len} bytes, which does not fit"
            ));
        }
        let body = &rest[space + 1..len - 1];
        let eq = body
            .iter()
            .position(|&b| b == b'=')
            .ok_or_else(|| format!("pax record at byte {pos} has no '='"))?;
        let key = String::from_utf8(body[..eq].to_vec())
            .map_err(|_| format!("pax record at byte {pos} has a non-UTF-8 key"))?;
        records.push((key, body[eq + 1..].to_vec()));
        pos += len;
    }
    Ok(records)
}

/// The last value of `key`.
pub(crate) fn get<'a>(records: &'a Records, key: &str) -> Option<&'a [u8]> {
    records
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_slice())
}

/// A decimal value (pax `size`, `uid`, …).
pub(crate) fn decimal(key: &str, value: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            format!(
                "pax {key}={:?} is not a number",
                String::from_utf8_lossy(value)
            )
        })
}

/// A time (pax `mtime`, possibly fractional and negative): whole seconds, rounded down.
pub(crate) fn time(value: &[u8]) -> Result<i64, String> {
    let bad = || {
        format!(
            "pax mtime={:?} is not a time",
            String::from_utf8_lossy(value)
        )
    };
    let text = std::str::from_utf8(value).map_err(|_| bad())?;
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seconds: i64 = whole.parse().map_err(|_| bad())?;
    let fractional = frac.bytes().any(|b| b != b'0');
    Ok(if seconds < 0 || whole.starts_with('-') {
        seconds - i64::from(fractional)
    } else {
        seconds
    })
}

/// An extended attribute: name and value.
pub(crate) type Xattr = (Vec<u8>, Vec<u8>);

/// The extended attribute a record carries, if it is one.
pub(crate) fn xattr(key: &str, value: &[u8]) -> Result<Option<Xattr>, String> {
    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
        return Ok(Some((name.as_bytes().to_vec(), value.to_vec())));
    }
    if key == "RHT.security.selinux" {
        return Ok(Some((b"security.selinux".to_vec(), value.to_vec())));
    }
    if let Some(name) = key.strip_prefix("LIBARCHIVE.xattr.") {
        let name = percent_decode(name).ok_or_else(|| format!("bad xattr name in {key}"))?;
        let value = base64(value).ok_or_else(|| format!("bad base64 value of {key}"))?;
        return Ok(Some((name, value)));
    }
    Ok(None)
}

fn percent_decode(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Standard base64, padding optional (libarchive omits it).
fn base64(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for &c in text.iter().filter(|&&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, value: &[u8]) -> Vec<u8> {
        let body_len = key.len() + value.len() + 3;
        let mut len = body_len + 1;
        while len != body_len + len.to_string().len() {
            len = body_len + len.to_string().len();
        }
        let mut r = format!("{len} {key}=").into_bytes();
        r.extend_from_slice(value);
        r.push(b'\n');
        r
    }

    #[test]
    fn parses_records_with_binary_values() {
        let mut data = record("path", b"a/very/long/name");
        data.extend(record(
            "SCHILY.xattr.security.capability",
            b"\x01\x00\n\x02=",
        ));
        data.extend(record("mtime", b"1681068559.5"));
        data.extend([0u8; 20]);
        let r = parse(&data).unwrap();
        assert_eq!(get(&r, "path").unwrap(), b"a/very/long/name");
        let (k, v) = (&r[1].0, &r[1].1);
        assert_eq!(
            xattr(k, v).unwrap().unwrap(),
            (b"security.capability".to_vec(), b"\x01\x00\n\x02=".to_vec())
        );
        assert_eq!(time(get(&r, "mtime").unwrap()).unwrap(), 1681068559);
    }

    #[test]
    fn rejects_bad_records() {
        assert!(parse(b"99 path=x\n").is_err());
        assert!(parse(b"4 a=\n").is_err());
        assert_eq!(parse(b"5 a=\n").unwrap()[0].1, b"");
        assert!(parse(b"x path=y\n").is_err());
        assert!(parse(b"9 pathxy\n").is_err());
    }

    #[test]
    fn times_and_libarchive_xattrs() {
        assert_eq!(time(b"-1.5").unwrap(), -2);
        assert_eq!(time(b"-1").unwrap(), -1);
        assert_eq!(time(b"12").unwrap(), 12);
        assert!(time(b"1e9").is_err());
        let (n, v) = xattr("LIBARCHIVE.xattr.user.a%3Db", b"aGVsbG8")
            .unwrap()
            .unwrap();
        assert_eq!(
            (n.as_slice(), v.as_slice()),
            (&b"user.a=b"[..], &b"hello"[..])
        );
        assert!(xattr("path", b"x").unwrap().is_none());
    }
}
