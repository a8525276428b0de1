//! Shell-style patterns as module aliases use them (`pci:v00001AF4d*sv*sd*bc*sc*i*`): `*`, `?`,
//! `[a-z]`, `[!0-9]`, and `\` to quote. Matching is linear in practice: one backtrack point for
//! the last `*`, no recursion, so hostile patterns cannot blow up.

/// True when `text` matches `pattern` as a whole.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(p, pi, t[ti]) {
                        if matched {
                            pi = next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == b'[' {
                        // An unclosed `[` is a literal.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        // Mismatch: let the last `*` swallow one more byte, or fail.
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `p[start] == b'['`; returns (matched, index after
/// the class), or `None` when the class is not closed.
fn class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&hi| hi != b']') {
            let hi = p[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_alias_patterns() {
        let virtio_blk = "virtio:d00000002v*";
        assert!(glob_match(virtio_blk, "virtio:d00000002v00001AF4"));
        assert!(!glob_match(virtio_blk, "virtio:d00000001v00001AF4"));
        let pci = "pci:v00001AF4d00001001sv*sd*bc*sc*i*";
        assert!(glob_match(
            pci,
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"
        ));
        assert!(!glob_match(
            pci,
            "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00"
        ));
        assert!(glob_match("xen:vbd", "xen:vbd"));
        assert!(!glob_match("xen:vbd", "xen:vif"));
        assert!(glob_match("scsi:t-0x00*", "scsi:t-0x00"));
        assert!(glob_match("acpi*:PNP0A0[38]:*", "acpi:PNP0A08:"));
        assert!(!glob_match("acpi*:PNP0A0[38]:*", "acpi:PNP0A05:"));
    }

    #[test]
    fn metacharacters() {
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("[!a-c]x", "dx"));
        assert!(!glob_match("[!a-c]x", "bx"));
        assert!(glob_match("[]]", "]"));
        assert!(glob_match("a\\*", "a*"));
        assert!(!glob_match("a\\*", "ab"));
        assert!(glob_match("[abc", "[abc"), "unclosed class is literal");
        assert!(glob_match("*", ""));
        assert!(glob_match("**a**", "a"));
        assert!(!glob_match("", "a"));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let pattern = "*a*a*a*a*a*a*a*a*a*a*b";
        let text = "a".repeat(5000);
        let t = std::time::Instant::now();
        assert!(!glob_match(pattern, &text));
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
