//! What the records of a results disk say: serde structs shared by the guest (writer) and
//! `imgbuild collect` (reader).
//!
//! Every record is one JSON object tagged by `"type"`: `run_start`, `workload`, `run_end`.
//! [`SCHEMA_VERSION`] is carried in `run_start`; fields are added only with a version bump, and
//! unknown fields are rejected so that a reader never silently drops data it does not understand.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::RootfsDigest;
use crate::profile::Profile;

/// Version of the record schema written by this build.
pub const SCHEMA_VERSION: u32 = 1;

/// One record of the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// First record of a run: environment, platform, boot phases, digest check, profile.
    RunStart(Box<RunStart>),
    /// One workload's outcome.
    Workload(Box<WorkloadResult>),
    /// Last record of a run; its absence means the run did not finish.
    RunEnd(RunEnd),
}

/// How the init was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// PID 1 of an initramfs: loads drivers, mounts the root, switches to it.
    Initramfs,
    /// PID 1 of the real root of a virtual machine.
    Root,
    /// PID 1 of a container (OpenVZ, LXC, runc).
    Container,
    /// A normal process on a host.
    Host,
}

impl Mode {
    /// The lower-case name, as on the kernel command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Initramfs => "initramfs",
            Mode::Root => "root",
            Mode::Container => "container",
            Mode::Host => "host",
        }
    }

    /// Parses a name as written on the kernel command line.
    pub fn parse(name: &str) -> Option<Mode> {
        match name {
            "initramfs" => Some(Mode::Initramfs),
            "root" => Some(Mode::Root),
            "container" => Some(Mode::Container),
            "host" => Some(Mode::Host),
            _ => None,
        }
    }
}

/// A named instant of the boot, in seconds since the kernel started (CLOCK_BOOTTIME, the clock
/// of /proc/uptime).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// `kernel_handoff`, `modules_loaded`, `root_mounted`, `switch_root`, `root_init`, ….
    pub name: String,
    /// Seconds since boot.
    pub at_s: f64,
}

/// The hypervisor the guest detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hypervisor {
    /// Xen (CPUID `XenVMMXenVMM` or /sys/hypervisor/type, which also covers PV guests).
    Xen,
    /// KVM (`KVMKVMKVM`).
    Kvm,
    /// VMware (`VMwareVMware`).
    Vmware,
    /// Hyper-V (`Microsoft Hv`).
    HyperV,
    /// QEMU without acceleration (`TCGTCGTCGTCG`).
    Tcg,
    /// A hypervisor with another signature (see `hypervisor_signature`).
    Other,
    /// No hypervisor bit: bare metal (or a container on bare metal).
    BareMetal,
}

/// The kind of container the init runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerKind {
    /// OpenVZ / Virtuozzo.
    Openvz,
    /// LXC.
    Lxc,
    /// runc, Docker, Podman and other OCI runtimes.
    Runc,
    /// A PID namespace without a recognised runtime.
    Other,
}

/// A detected container, with what gave it away.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerInfo {
    /// The runtime family.
    pub kind: ContainerKind,
    /// The hint that decided it (`/proc/vz without /proc/bc`, `container=lxc`, …).
    pub evidence: String,
}

/// The machine as the guest sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// Detected hypervisor.
    pub hypervisor: Hypervisor,
    /// The raw CPUID 0x40000000 vendor string, when there is one.
    pub hypervisor_signature: Option<String>,
    /// Xen guest type from /sys/hypervisor/guest_type (`PV`, `HVM`, `PVH`), when available.
    pub xen_guest_type: Option<String>,
    /// The container, when the init runs in one.
    pub container: Option<ContainerInfo>,
    /// `uname -r`.
    pub kernel_release: String,
    /// `uname -v`.
    pub kernel_version: String,
    /// `uname -m`.
    pub machine: String,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: Option<String>,
    /// Online CPUs.
    pub online_cpus: u32,
    /// CPUs this process may run on (affinity, cgroup quota not included).
    pub usable_cpus: u32,
    /// `MemTotal` of /proc/meminfo, KiB.
    pub memory_total_kib: Option<u64>,
    /// Current clocksource.
    pub clocksource: Option<String>,
    /// /proc/cmdline.
    pub kernel_cmdline: Option<String>,
}

/// How the guest computed its rootfs digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestMethod {
    /// Over a non-recursive bind mount of `/`: sees exactly the root filesystem.
    BindMount,
    /// Walking `/` and skipping mount points of other devices (their own metadata is still
    /// covered, not what they hide): an approximation, for containers.
    SameDeviceWalk,
    /// Over a directory given on the command line (host mode `--root`).
    Directory,
}

/// Outcome of the digest check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DigestStatus {
    /// Computed and equal to the build's digest.
    Match,
    /// Computed and different.
    Mismatch,
    /// Computed, but the build recorded no digest to compare with.
    NoExpected,
    /// Could not be computed.
    Error,
    /// Not attempted (profile flag off, host mode without `--root`).
    Skipped,
}

/// The guest's own rootfs digest compared with the build's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DigestCheck {
    /// Outcome.
    pub status: DigestStatus,
    /// How it was computed.
    pub method: Option<DigestMethod>,
    /// The digest computed in the guest.
    pub digest: Option<RootfsDigest>,
    /// The digest from build.json.
    pub expected: Option<RootfsDigest>,
    /// Mount points not descended into (same-device walk).
    #[serde(default)]
    pub skipped_mounts: Vec<String>,
    /// Time the computation took.
    pub seconds: Option<f64>,
    /// Why it was skipped or failed; which fallback was used.
    pub reason: Option<String>,
}

impl DigestCheck {
    /// A check that was not attempted, for `reason`.
    pub fn skipped(reason: impl Into<String>, expected: Option<RootfsDigest>) -> Self {
        DigestCheck {
            status: DigestStatus::Skipped,
            method: None,
            digest: None,
            expected,
            skipped_mounts: Vec::new(),
            seconds: None,
            reason: Some(reason.into()),
        }
    }
}

/// What happened to one kernel module in the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModuleStatus {
    /// finit_module succeeded.
    Loaded,
    /// The kernel had it already (EEXIST).
    AlreadyLoaded,
    /// Loading failed (see `error`).
    Failed,
}

/// One module load attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleLoad {
    /// Module name.
    pub name: String,
    /// Outcome.
    pub status: ModuleStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Seconds since boot when the attempt ended.
    pub at_s: f64,
}

/// What the initramfs stage did, handed to the root init in the `IMGBUILD_INITRAMFS` variable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitramfsReport {
    /// Boot phases up to the switch to the root.
    pub phases: Vec<Phase>,
    /// Modules loaded, in order.
    pub modules: Vec<ModuleLoad>,
    /// The device the root was found on (`/dev/vda`).
    pub root_device: Option<String>,
    /// The filesystem type it was mounted as.
    pub root_fstype: Option<String>,
    /// Non-fatal problems.
    pub problems: Vec<String>,
}

/// First record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunStart {
    /// [`SCHEMA_VERSION`] of the writer.
    pub schema: u32,
    /// Version of imgbuild-init.
    pub init_version: String,
    /// How the init ran.
    pub mode: Mode,
    /// Wall clock at the start of the run, seconds since the Unix epoch (guests may not have a
    /// correct clock; the boot-relative times are what to compare).
    pub wall_clock_unix_s: f64,
    /// Image name from build.json.
    pub image: Option<String>,
    /// Rootfs digest from build.json.
    pub build_digest: Option<RootfsDigest>,
    /// Why build.json could not be read, when it could not.
    pub build_info_error: Option<String>,
    /// The machine.
    pub platform: Platform,
    /// Boot phases up to the start of the run (including the initramfs stage's).
    pub phases: Vec<Phase>,
    /// The initramfs stage's report, when there was one.
    pub initramfs: Option<InitramfsReport>,
    /// The guest rootfs digest check.
    pub digest_check: DigestCheck,
    /// The profile that is run, with defaults filled in.
    pub profile: Profile,
    /// Where the profile came from (`builtin`, a path).
    pub profile_source: String,
    /// Non-fatal problems found while starting.
    pub problems: Vec<String>,
}

/// Outcome of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Ran to the end; the metrics are valid.
    Ok,
    /// Returned an error, panicked or died of a signal.
    Failed,
    /// Killed at its timeout.
    Timeout,
    /// Not run (see `reason`).
    Skipped,
}

/// Name and version of an external tool a workload ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolVersion {
    /// Tool name (`bonnie++`).
    pub name: String,
    /// Its version as it reports it.
    pub version: String,
}

/// One measured quantity over all repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    /// Name, unique within the workload (`sha256/16/single`).
    pub name: String,
    /// Unit (`bytes/s`).
    pub unit: String,
    /// What distinguishes this metric (algorithm, block size, threads…).
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// True when a larger value is better.
    pub higher_is_better: bool,
    /// One value per repetition, in run order.
    pub values: Vec<f64>,
    /// Median of `values`.
    pub median: f64,
    /// Coefficient of variation of `values` (sample standard deviation / mean; 0 for fewer than
    /// two values or a zero mean).
    pub cv: f64,
}

/// The record of one workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadResult {
    /// Instance name from the profile (unique in the run).
    pub name: String,
    /// Registry name of the workload (`crypto`).
    pub workload: String,
    /// Parameters as given in the profile.
    pub parameters: serde_json::Value,
    /// Repetitions asked for.
    pub repetitions: u32,
    /// Timeout, seconds.
    pub timeout_s: f64,
    /// Outcome.
    pub status: Status,
    /// Why it failed, timed out or was skipped.
    pub reason: Option<String>,
    /// Start, seconds since boot.
    pub start_s: f64,
    /// End, seconds since boot.
    pub end_s: f64,
    /// `end_s - start_s`.
    pub duration_s: f64,
    /// The external tool run, for workloads that run one.
    pub tool: Option<ToolVersion>,
    /// Free-form facts the workload reports (implementation, CPU features…).
    #[serde(default)]
    pub info: BTreeMap<String, serde_json::Value>,
    /// The measurements (empty unless `status` is `ok`).
    pub metrics: Vec<Metric>,
}

/// Overall outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every workload was attempted (each has its own status).
    Complete,
    /// The run stopped early (see `reason`).
    Failed,
}

/// Number of workloads per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusCounts {
    /// `ok`.
    pub ok: u32,
    /// `failed`.
    pub failed: u32,
    /// `timeout`.
    pub timeout: u32,
    /// `skipped`.
    pub skipped: u32,
}

impl StatusCounts {
    /// Counts one more workload with `status`.
    pub fn add(&mut self, status: Status) {
        let slot = match status {
            Status::Ok => &mut self.ok,
            Status::Failed => &mut self.failed,
            Status::Timeout => &mut self.timeout,
            Status::Skipped => &mut self.skipped,
        };
        *slot = slot.saturating_add(1);
    }
}

/// Last record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunEnd {
    /// Whether the run got through its workload list.
    pub status: RunStatus,
    /// Why it stopped early (a panic of the init, a full results disk…).
    pub reason: Option<String>,
    /// Seconds since boot.
    pub end_s: f64,
    /// Workloads per status.
    pub counts: StatusCounts,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample_platform() -> Platform {
        Platform {
            hypervisor: Hypervisor::Kvm,
            hypervisor_signature: Some("KVMKVMKVM".into()),
            xen_guest_type: None,
            container: Some(ContainerInfo {
                kind: ContainerKind::Openvz,
                evidence: "/proc/vz".into(),
            }),
            kernel_release: "6.1.0".into(),
            kernel_version: "#1 SMP".into(),
            machine: "x86_64".into(),
            cpu_model: Some("AMD EPYC".into()),
            online_cpus: 2,
            usable_cpus: 2,
            memory_total_kib: Some(512 * 1024),
            clocksource: Some("tsc".into()),
            kernel_cmdline: Some("console=ttyS0".into()),
        }
    }

    #[test]
    fn every_record_kind_round_trips() {
        let profile = Profile::builtin("smoke").unwrap();
        let records = vec![
            Record::RunStart(Box::new(RunStart {
                schema: SCHEMA_VERSION,
                init_version: "0.1.0".into(),
                mode: Mode::Root,
                wall_clock_unix_s: 1.7e9,
                image: Some("minimal".into()),
                build_digest: Some(RootfsDigest([7; 32])),
                build_info_error: None,
                platform: sample_platform(),
                phases: vec![Phase {
                    name: "kernel_handoff".into(),
                    at_s: 0.5,
                }],
                initramfs: Some(InitramfsReport {
                    modules: vec![ModuleLoad {
                        name: "virtio_blk".into(),
                        status: ModuleStatus::Failed,
                        error: Some("ENOENT".into()),
                        at_s: 0.6,
                    }],
                    ..InitramfsReport::default()
                }),
                digest_check: DigestCheck::skipped("off", None),
                profile,
                profile_source: "builtin".into(),
                problems: vec!["x".into()],
            })),
            Record::Workload(Box::new(WorkloadResult {
                name: "crypto".into(),
                workload: "crypto".into(),
                parameters: serde_json::json!({"seconds": 0.01}),
                repetitions: 3,
                timeout_s: 30.0,
                status: Status::Timeout,
                reason: Some("killed".into()),
                start_s: 1.0,
                end_s: 2.5,
                duration_s: 1.5,
                tool: Some(ToolVersion {
                    name: "t".into(),
                    version: "1".into(),
                }),
                info: BTreeMap::from([("k".into(), serde_json::json!(true))]),
                metrics: vec![Metric {
                    name: "sha256/16/single".into(),
                    unit: "bytes/s".into(),
                    parameters: BTreeMap::new(),
                    higher_is_better: true,
                    values: vec![1.0, 2.0, 3.0],
                    median: 2.0,
                    cv: 0.5,
                }],
            })),
            Record::RunEnd(RunEnd {
                status: RunStatus::Failed,
                reason: Some("panic".into()),
                end_s: 3.0,
                counts: StatusCounts {
                    ok: 1,
                    failed: 2,
                    timeout: 3,
                    skipped: 4,
                },
            }),
        ];
        for record in records {
            let text = serde_json::to_string(&record).unwrap();
            let back: Record = serde_json::from_str(&text).unwrap();
            assert_eq!(back, record, "{text}");
        }
    }

    #[test]
    fn unknown_fields_and_types_are_rejected() {
        let end = r#"{"type":"run_end","status":"complete","reason":null,"end_s":1.0,
                      "counts":{"ok":0,"failed":0,"timeout":0,"skipped":0}}"#;
        assert!(serde_json::from_str::<Record>(end).is_ok());
        let extra = end.replace("\"end_s\"", "\"bogus\":1,\"end_s\"");
        assert!(serde_json::from_str::<Record>(&extra).is_err());
        let other = end.replace("run_end", "run_middle");
        assert!(serde_json::from_str::<Record>(&other).is_err());
    }

    #[test]
    fn mode_names_round_trip() {
        for mode in [Mode::Initramfs, Mode::Root, Mode::Container, Mode::Host] {
            assert_eq!(Mode::parse(mode.name()), Some(mode));
        }
        assert_eq!(Mode::parse("vm"), None);
    }
}
