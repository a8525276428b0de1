//! File capabilities: the text form of rpm's `FILECAPS` tag (`cap_net_raw=ep`, libcap's
//! `cap_from_text` syntax) turned into the binary `security.capability` extended attribute that
//! the kernel reads (`struct vfs_cap_data`, revision 2).

/// Capability names by number, as libcap knows them (Linux 5.9+).
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// Highest capability number a revision 2 xattr can hold.
const MAX_CAP: u32 = 63;
/// `VFS_CAP_REVISION_2`.
const REVISION_2: u32 = 0x0200_0000;
/// `VFS_CAP_FLAGS_EFFECTIVE`.
const FLAG_EFFECTIVE: u32 = 0x1;

/// The name of the extended attribute holding file capabilities.
pub const XATTR_NAME: &[u8] = b"security.capability";

#[derive(Default, Clone, Copy)]
struct Sets {
    effective: u64,
    permitted: u64,
    inheritable: u64,
}

/// Parses `text` (`cap_a,cap_b=ep cap_c+i`) into the `security.capability` value.
pub fn to_xattr(text: &str) -> Result<Vec<u8>, String> {
    let mut sets = Sets::default();
    for clause in text.split_whitespace() {
        let op_at = clause
            .find(['=', '+', '-'])
            .ok_or_else(|| format!("capability clause {clause:?} has no operator (=, + or -)"))?;
        let caps = cap_list(&clause[..op_at])?;
        let mut rest = &clause[op_at..];
        let mut first = true;
        while let Some(op) = rest.chars().next() {
            if !matches!(op, '=' | '+' | '-') {
                return Err(format!("unexpected {op:?} in capability clause {clause:?}"));
            }
            let flags_end = rest[1..]
                .find(['=', '+', '-'])
                .map_or(rest.len(), |i| i + 1);
            let flags = &rest[1..flags_end];
            if op == '=' && !first {
                return Err(format!(
                    "'=' must come first in capability clause {clause:?}"
                ));
            }
            let (mut e, mut p, mut i) = (false, false, false);
            for f in flags.chars() {
                match f {
                    'e' => e = true,
                    'p' => p = true,
                    'i' => i = true,
                    other => {
                        return Err(format!("unknown capability flag {other:?} in {clause:?}"))
                    }
                }
            }
            if op != '=' && !(e || p || i) {
                return Err(format!(
                    "capability clause {clause:?} has an operator without flags"
                ));
            }
            let apply = |set: &mut u64, on: bool| match op {
                '=' => *set = if on { *set | caps } else { *set & !caps },
                '+' if on => *set |= caps,
                '-' if on => *set &= !caps,
                _ => {}
            };
            apply(&mut sets.effective, e);
            apply(&mut sets.permitted, p);
            apply(&mut sets.inheritable, i);
            rest = &rest[flags_end..];
            first = false;
        }
    }
    let mut magic = REVISION_2;
    if sets.effective != 0 {
        magic |= FLAG_EFFECTIVE;
    }
    let mut out = Vec::with_capacity(20);
    out.extend(magic.to_le_bytes());
    for half in 0..2 {
        let shift = 32 * half;
        out.extend(((sets.permitted >> shift) as u32).to_le_bytes());
        out.extend(((sets.inheritable >> shift) as u32).to_le_bytes());
    }
    Ok(out)
}

/// A comma-separated list of names (`cap_x`, `x`, numbers, `all`); empty means all.
fn cap_list(list: &str) -> Result<u64, String> {
    if list.is_empty() {
        return Ok(all());
    }
    let mut bits = 0u64;
    for name in list.split(',') {
        let lower = name.to_ascii_lowercase();
        let short = lower.strip_prefix("cap_").unwrap_or(&lower);
        let number = if lower == "all" {
            bits |= all();
            continue;
        } else if let Some(n) = NAMES.iter().position(|n| *n == short) {
            n as u32
        } else if let Ok(n) = lower.parse::<u32>() {
            n
        } else {
            return Err(format!("unknown capability {name:?}"));
        };
        if number > MAX_CAP {
            return Err(format!("capability number {number} is out of range"));
        }
        bits |= 1 << number;
    }
    Ok(bits)
}

fn all() -> u64 {
    (1u64 << NAMES.len()) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(x: &[u8]) -> Vec<u32> {
        x.chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn encodes_common_forms() {
        assert_eq!(
            words(&to_xattr("cap_net_raw=ep").unwrap()),
            [0x0200_0001, 1 << 13, 0, 0, 0]
        );
        assert_eq!(
            words(&to_xattr("cap_sys_ptrace,cap_sys_admin=ep").unwrap()),
            [0x0200_0001, (1 << 19) | (1 << 21), 0, 0, 0]
        );
        assert_eq!(
            words(&to_xattr("cap_net_bind_service+ip").unwrap()),
            [0x0200_0000, 1 << 10, 1 << 10, 0, 0]
        );
        assert_eq!(words(&to_xattr("=").unwrap()), [0x0200_0000, 0, 0, 0, 0]);
        assert_eq!(
            words(&to_xattr("all=p cap_kill-p").unwrap())[1],
            !(1u32 << 5)
        );
        assert_eq!(words(&to_xattr("CAP_BPF=ep").unwrap())[3], 1 << 7);
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "cap_net_raw",
            "cap_nope=ep",
            "cap_net_raw=x",
            "cap_net_raw+",
            "64=p",
            "cap_kill+p=e",
        ] {
            assert!(to_xattr(bad).is_err(), "{bad}");
        }
    }
}
