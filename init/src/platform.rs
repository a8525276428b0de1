//! What machine the guest runs on: hypervisor (CPUID), container runtime, kernel, CPUs, memory.

use std::ffi::CStr;
use std::fs;
use std::path::Path;

use crate::cmdline::Cmdline;
use crate::results::schema::{ContainerInfo, ContainerKind, Hypervisor, Platform};

/// The hypervisor from a CPUID vendor signature.
pub fn classify_signature(signature: &str) -> Hypervisor {
    match signature.trim_end_matches('\0') {
        "XenVMMXenVMM" => Hypervisor::Xen,
        "KVMKVMKVM" => Hypervisor::Kvm,
        "VMwareVMware" => Hypervisor::Vmware,
        "Microsoft Hv" => Hypervisor::HyperV,
        "TCGTCGTCGTCG" => Hypervisor::Tcg,
        _ => Hypervisor::Other,
    }
}

#[cfg(target_arch = "x86_64")]
fn cpuid(leaf: u32) -> [u32; 4] {
    // SAFETY: CPUID exists on every x86_64 CPU; unknown leaves return defined (if useless) data.
    #[allow(unused_unsafe)]
    let r = unsafe { std::arch::x86_64::__cpuid(leaf) };
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// The hypervisor signatures CPUID shows, in leaf order. Hypervisors that also offer Hyper-V
/// enlightenments (Xen with viridian, KVM with hv-*) put `Microsoft Hv` at 0x40000000 and their
/// own signature at 0x40000100, so the range is scanned.
#[cfg(target_arch = "x86_64")]
pub fn cpuid_signatures() -> Vec<String> {
    const HYPERVISOR_BIT: u32 = 1 << 31;
    if cpuid(1)[2] & HYPERVISOR_BIT == 0 {
        return Vec::new();
    }
    let mut found = Vec::new();
    for base in (0x4000_0000u32..=0x4001_0000).step_by(0x100) {
        let [max, b, c, d] = cpuid(base);
        // A real hypervisor range reports its own highest leaf inside it.
        if max < base || max > base + 0xff {
            continue;
        }
        let mut bytes = Vec::with_capacity(12);
        for word in [b, c, d] {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        let text: String = bytes
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '?'
                }
            })
            .collect();
        if !text.is_empty() {
            found.push(text);
        }
    }
    found
}

/// No CPUID outside x86_64.
#[cfg(not(target_arch = "x86_64"))]
pub fn cpuid_signatures() -> Vec<String> {
    Vec::new()
}

/// Picks the hypervisor from CPUID signatures and /sys/hypervisor/type (which is how a Xen PV
/// guest, whose CPUID is the bare CPU's, knows it runs on Xen).
pub fn choose_hypervisor(
    signatures: &[String],
    sys_type: Option<&str>,
) -> (Hypervisor, Option<String>) {
    if sys_type.map(str::trim) == Some("xen") {
        let sig = signatures
            .iter()
            .find(|s| classify_signature(s) == Hypervisor::Xen);
        return (Hypervisor::Xen, sig.or(signatures.first()).cloned());
    }
    // The last non-Hyper-V signature is the real hypervisor behind enlightenments.
    let best = signatures
        .iter()
        .rev()
        .find(|s| classify_signature(s) != Hypervisor::HyperV)
        .or(signatures.first());
    match best {
        Some(sig) => (classify_signature(sig), Some(sig.clone())),
        None => (Hypervisor::BareMetal, None),
    }
}

/// What the container detection looks at, gathered so the decision itself can be tested.
#[derive(Debug, Clone, Default)]
pub struct ContainerHints {
    /// The `container` environment variable of PID 1.
    pub env_container: Option<String>,
    /// /proc/vz exists.
    pub proc_vz: bool,
    /// /proc/bc exists (the OpenVZ host node has it, containers do not).
    pub proc_bc: bool,
    /// /proc/user_beancounters exists.
    pub beancounters: bool,
    /// /.dockerenv exists.
    pub dockerenv: bool,
    /// /run/.containerenv exists (Podman).
    pub containerenv: bool,
    /// /proc/1/cgroup.
    pub cgroup: Option<String>,
    /// The pid in the first line of /proc/1/sched (`init (PID, #threads: 1)`); older kernels
    /// show the host pid there from inside a PID namespace.
    pub sched_pid: Option<u32>,
}

impl ContainerHints {
    /// Gathers the hints of this process's environment.
    pub fn gather() -> ContainerHints {
        let exists = |p: &str| Path::new(p).exists();
        ContainerHints {
            env_container: std::env::var("container").ok().filter(|v| !v.is_empty()),
            proc_vz: exists("/proc/vz"),
            proc_bc: exists("/proc/bc"),
            beancounters: exists("/proc/user_beancounters"),
            dockerenv: exists("/.dockerenv"),
            containerenv: exists("/run/.containerenv"),
            cgroup: fs::read_to_string("/proc/1/cgroup").ok(),
            sched_pid: fs::read_to_string("/proc/1/sched")
                .ok()
                .and_then(|t| sched_pid(&t)),
        }
    }
}

fn sched_pid(text: &str) -> Option<u32> {
    let line = text.lines().next()?;
    let inner = line.split_once('(')?.1;
    inner.split(',').next()?.trim().parse().ok()
}

/// Decides whether (and in what) the hints say we run in a container.
pub fn container_from_hints(h: &ContainerHints) -> Option<ContainerInfo> {
    let found = |kind, evidence: &str| {
        Some(ContainerInfo {
            kind,
            evidence: evidence.to_owned(),
        })
    };
    if h.proc_vz && !h.proc_bc {
        return found(ContainerKind::Openvz, "/proc/vz without /proc/bc");
    }
    if h.beancounters && !h.proc_bc {
        return found(
            ContainerKind::Openvz,
            "/proc/user_beancounters without /proc/bc",
        );
    }
    if let Some(value) = &h.env_container {
        let kind = match value.as_str() {
            "lxc" | "lxc-libvirt" => ContainerKind::Lxc,
            "docker" | "podman" | "oci" | "crio" | "containerd" => ContainerKind::Runc,
            _ => ContainerKind::Other,
        };
        return found(kind, &format!("container={value}"));
    }
    if h.dockerenv {
        return found(ContainerKind::Runc, "/.dockerenv");
    }
    if h.containerenv {
        return found(ContainerKind::Runc, "/run/.containerenv");
    }
    if let Some(cgroup) = &h.cgroup {
        for (needle, kind) in [
            ("/docker", ContainerKind::Runc),
            ("/kubepods", ContainerKind::Runc),
            ("/libpod", ContainerKind::Runc),
            ("/crio", ContainerKind::Runc),
            ("/containerd", ContainerKind::Runc),
            ("/lxc", ContainerKind::Lxc),
        ] {
            if cgroup.contains(needle) {
                return found(kind, &format!("/proc/1/cgroup mentions {needle}"));
            }
        }
    }
    if let Some(pid) = h.sched_pid.filter(|&p| p != 1) {
        return found(
            ContainerKind::Other,
            &format!("/proc/1/sched shows host pid {pid}"),
        );
    }
    None
}

/// Counts the CPUs of a sysfs cpu list (`0-3,5`).
pub fn count_cpu_list(text: &str) -> Option<u32> {
    let mut total = 0u32;
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>().ok()?, b.parse::<u32>().ok()?),
            None => {
                let a = part.parse::<u32>().ok()?;
                (a, a)
            }
        };
        total = total.checked_add(b.checked_sub(a)?.checked_add(1)?)?;
    }
    (total > 0).then_some(total)
}

/// `MemTotal` in KiB from /proc/meminfo text.
pub fn mem_total_kib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// `model name` from /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

/// Online CPUs: sysfs, else sysconf.
pub fn online_cpus() -> u32 {
    fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|t| count_cpu_list(&t))
        .unwrap_or_else(|| {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
            u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1)
        })
}

fn uname() -> (String, String, String) {
    // SAFETY: utsname is plain old data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return Default::default();
    }
    let field = |f: &[libc::c_char]| {
        // SAFETY: uname NUL-terminates each field within its array.
        unsafe { CStr::from_ptr(f.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    (field(&u.release), field(&u.version), field(&u.machine))
}

/// The kernel release (`uname -r`).
pub fn kernel_release() -> String {
    uname().0
}

fn read_trimmed(path: &str) -> Option<String> {
    fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
}

/// Everything the run records about the machine.
pub fn collect(cmdline: Option<&Cmdline>, container: Option<ContainerInfo>) -> Platform {
    let sys_type = read_trimmed("/sys/hypervisor/type");
    let (hypervisor, hypervisor_signature) =
        choose_hypervisor(&cpuid_signatures(), sys_type.as_deref());
    let (kernel_release, kernel_version, machine) = uname();
    Platform {
        hypervisor,
        hypervisor_signature,
        xen_guest_type: read_trimmed("/sys/hypervisor/guest_type"),
        container,
        kernel_release,
        kernel_version,
        machine,
        cpu_model: fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| cpu_model(&t)),
        online_cpus: online_cpus(),
        usable_cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        memory_total_kib: fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| mem_total_kib(&t)),
        clocksource: read_trimmed(
            "/sys/devices/system/clocksource/clocksource0/current_clocksource",
        ),
        kernel_cmdline: cmdline.map(|c| c.raw.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_classify() {
        assert_eq!(classify_signature("XenVMMXenVMM"), Hypervisor::Xen);
        assert_eq!(classify_signature("KVMKVMKVM"), Hypervisor::Kvm);
        assert_eq!(classify_signature("VMwareVMware"), Hypervisor::Vmware);
        assert_eq!(classify_signature("Microsoft Hv"), Hypervisor::HyperV);
        assert_eq!(classify_signature("TCGTCGTCGTCG"), Hypervisor::Tcg);
        assert_eq!(classify_signature("bhyve bhyve "), Hypervisor::Other);
    }

    #[test]
    fn enlightenments_do_not_hide_the_real_hypervisor() {
        let sigs = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            choose_hypervisor(&sigs(&["Microsoft Hv", "XenVMMXenVMM"]), None).0,
            Hypervisor::Xen
        );
        assert_eq!(
            choose_hypervisor(&sigs(&["Microsoft Hv", "KVMKVMKVM"]), None).0,
            Hypervisor::Kvm
        );
        assert_eq!(
            choose_hypervisor(&sigs(&["Microsoft Hv"]), None).0,
            Hypervisor::HyperV
        );
        assert_eq!(choose_hypervisor(&[], None), (Hypervisor::BareMetal, None));
        assert_eq!(
            choose_hypervisor(&[], Some("xen\n")).0,
            Hypervisor::Xen,
            "Xen PV"
        );
    }

    #[test]
    fn this_host_is_detected_plausibly() {
        let sigs = cpuid_signatures();
        let (hv, sig) = choose_hypervisor(&sigs, read_trimmed("/sys/hypervisor/type").as_deref());
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap();
        let flagged = cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.contains(" hypervisor"));
        if !flagged {
            assert_eq!(hv, Hypervisor::BareMetal, "{sigs:?}");
        }
        if hv != Hypervisor::BareMetal && hv != Hypervisor::Other {
            assert_eq!(classify_signature(sig.as_deref().unwrap_or("")), hv);
        }
        let p = collect(Cmdline::read().as_ref(), None);
        assert!(p.online_cpus >= 1 && p.usable_cpus >= 1);
        assert!(!p.kernel_release.is_empty());
        assert_eq!(p.machine, "x86_64");
        assert!(p.memory_total_kib.unwrap_or(0) > 1024);
    }

    #[test]
    fn container_rules() {
        let vz = ContainerHints {
            proc_vz: true,
            ..Default::default()
        };
        assert_eq!(
            container_from_hints(&vz).unwrap().kind,
            ContainerKind::Openvz
        );
        let node = ContainerHints {
            proc_vz: true,
            proc_bc: true,
            beancounters: true,
            ..Default::default()
        };
        assert!(
            container_from_hints(&node).is_none(),
            "an OpenVZ host node is no container"
        );
        let lxc = ContainerHints {
            env_container: Some("lxc".into()),
            ..Default::default()
        };
        assert_eq!(container_from_hints(&lxc).unwrap().kind, ContainerKind::Lxc);
        let docker = ContainerHints {
            dockerenv: true,
            ..Default::default()
        };
        assert_eq!(
            container_from_hints(&docker).unwrap().kind,
            ContainerKind::Runc
        );
        let cg = ContainerHints {
            cgroup: Some("0::/kubepods/x".into()),
            ..Default::default()
        };
        assert_eq!(container_from_hints(&cg).unwrap().kind, ContainerKind::Runc);
        let ns = ContainerHints {
            sched_pid: Some(4242),
            ..Default::default()
        };
        assert_eq!(
            container_from_hints(&ns).unwrap().kind,
            ContainerKind::Other
        );
        let vm = ContainerHints {
            sched_pid: Some(1),
            cgroup: Some("0::/\n".into()),
            ..Default::default()
        };
        assert!(container_from_hints(&vm).is_none());
    }

    #[test]
    fn proc_text_parsers() {
        assert_eq!(sched_pid("init (4321, #threads: 1)\n-----"), Some(4321));
        assert_eq!(sched_pid("garbage"), None);
        assert_eq!(count_cpu_list("0-3,5\n"), Some(5));
        assert_eq!(count_cpu_list("0"), Some(1));
        assert_eq!(count_cpu_list("3-1"), None);
        assert_eq!(count_cpu_list(""), None);
        assert_eq!(
            mem_total_kib("MemTotal:       16318784 kB\nMemFree: 1 kB"),
            Some(16318784)
        );
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"),
            Some("AMD EPYC 7B13".into())
        );
    }
}
