//! The OCI runtime bundle's `config.json` for the OpenVZ engine: a system container as OpenVZ
//! makes one — PID, mount, UTS, IPC and network namespaces, /proc and a private /dev, the
//! template's `/sbin/init` as the process with `container=openvz`, memory and CPU limits from
//! the conf sample (or the command line).
//!
//! Capabilities are those of an OpenVZ container's root, minus any this process does not hold
//! itself (runc cannot grant what its caller lacks; the dropped ones are reported).

use std::path::Path;

use serde_json::{json, Value};

/// The capabilities an OpenVZ container's root has (vzctl's default set, roughly: everything
/// but module loading, raw I/O, time, MAC and audit control).
pub const OPENVZ_CAPS: &[(&str, u32)] = &[
    ("CAP_CHOWN", 0),
    ("CAP_DAC_OVERRIDE", 1),
    ("CAP_DAC_READ_SEARCH", 2),
    ("CAP_FOWNER", 3),
    ("CAP_FSETID", 4),
    ("CAP_KILL", 5),
    ("CAP_SETGID", 6),
    ("CAP_SETUID", 7),
    ("CAP_SETPCAP", 8),
    ("CAP_LINUX_IMMUTABLE", 9),
    ("CAP_NET_BIND_SERVICE", 10),
    ("CAP_NET_BROADCAST", 11),
    ("CAP_NET_ADMIN", 12),
    ("CAP_NET_RAW", 13),
    ("CAP_IPC_LOCK", 14),
    ("CAP_IPC_OWNER", 15),
    ("CAP_SYS_CHROOT", 18),
    ("CAP_SYS_PTRACE", 19),
    ("CAP_SYS_ADMIN", 21),
    ("CAP_SYS_BOOT", 22),
    ("CAP_SYS_NICE", 23),
    ("CAP_SYS_RESOURCE", 24),
    ("CAP_SYS_TTY_CONFIG", 26),
    ("CAP_MKNOD", 27),
    ("CAP_LEASE", 28),
    ("CAP_AUDIT_WRITE", 29),
    ("CAP_SETFCAP", 31),
];

/// The bounding set of this process (`CapBnd` of /proc/self/status); all bits when unknown.
pub fn own_bounding_set() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX)
}

/// The container's capabilities (those in `bounding`) and the names dropped for lack of them.
pub fn capabilities(bounding: u64) -> (Vec<&'static str>, Vec<&'static str>) {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for &(name, bit) in OPENVZ_CAPS {
        if bounding & (1u64 << bit) != 0 {
            kept.push(name);
        } else {
            dropped.push(name);
        }
    }
    (kept, dropped)
}

/// What the container gets.
#[derive(Debug, Clone)]
pub struct ContainerSpec<'a> {
    /// Host name (the image name).
    pub hostname: &'a str,
    /// The init's arguments after `/sbin/init`.
    pub init_args: Vec<String>,
    /// Memory limit in bytes.
    pub memory_bytes: u64,
    /// CPUs (a CFS quota of this many periods).
    pub cpus: u32,
    /// Capabilities.
    pub capabilities: Vec<&'static str>,
    /// Mount /sys (only when the image has the directory: runc would create it otherwise,
    /// changing the tree the guest digests).
    pub mount_sys: bool,
}

/// CFS period, microseconds.
const CPU_PERIOD: u64 = 100_000;

/// Renders config.json (OCI runtime spec 1.0) for a bundle whose root is `rootfs`.
pub fn config(spec: &ContainerSpec<'_>, rootfs: &Path) -> Value {
    let mut args = vec!["/sbin/init".to_string()];
    args.extend(spec.init_args.iter().cloned());
    let caps = &spec.capabilities;
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
    ];
    if spec.mount_sys {
        mounts.push(
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                           "options": ["nosuid", "noexec", "nodev", "ro"]}),
        );
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "container=openvz"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps
            },
            "noNewPrivileges": false
        },
        "root": {"path": rootfs.display().to_string(), "readonly": false},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "mount"}, {"type": "uts"},
                {"type": "ipc"}, {"type": "network"}
            ],
            "resources": {
                "memory": {"limit": spec.memory_bytes},
                "cpu": {
                    "quota": u64::from(spec.cpus) * CPU_PERIOD,
                    "period": CPU_PERIOD
                }
            },
            // As runc's default spec: the host's kernel knobs stay out of reach, and
            // /proc/sysrq-trigger in particular (a guest's fault workload must not crash the host).
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_follow_the_bounding_set() {
        let (kept, dropped) = capabilities(u64::MAX);
        assert_eq!(kept.len(), OPENVZ_CAPS.len());
        assert!(dropped.is_empty());
        let (kept, dropped) = capabilities(!(1 << 24));
        assert_eq!(dropped, ["CAP_SYS_RESOURCE"]);
        assert!(!kept.contains(&"CAP_SYS_RESOURCE"));
        assert!(own_bounding_set() != 0);
    }

    #[test]
    fn config_has_namespaces_limits_and_init() {
        let spec = ContainerSpec {
            hostname: "minimal",
            init_args: vec!["--profile".into(), "quick".into()],
            memory_bytes: 512 << 20,
            cpus: 2,
            capabilities: vec!["CAP_SYS_ADMIN"],
            mount_sys: false,
        };
        let c = config(&spec, Path::new("/b/rootfs"));
        assert_eq!(
            c["process"]["args"],
            json!(["/sbin/init", "--profile", "quick"])
        );
        assert!(c["process"]["env"]
            .as_array()
            .unwrap()
            .contains(&json!("container=openvz")));
        let ns: Vec<&str> = c["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "mount", "uts", "ipc", "network"]);
        assert_eq!(
            c["linux"]["resources"]["memory"]["limit"],
            json!(512u64 << 20)
        );
        assert_eq!(c["linux"]["resources"]["cpu"]["quota"], json!(200_000));
        assert!(!c["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["destination"] == "/sys"));
        assert_eq!(c["root"]["path"], "/b/rootfs");
    }
}
