//! Fault workloads for the runner's tests: they hang, crash, panic or fill the disk on purpose.
//! No built-in profile names them; a test profile does.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{ErrorKind, Write};
use std::time::Duration;

use serde::Deserialize;

use super::{parse_params, Context, Repetition, Sample, Workload};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn no_params(params: &serde_json::Value) -> Result<(), String> {
    parse_params::<NoParams>(params).map(|_| ())
}

/// `fault-hang`: sleeps forever; the runner must kill it at its timeout.
pub struct Hang;

impl Workload for Hang {
    fn name(&self) -> &'static str {
        "fault-hang"
    }
    fn summary(&self) -> &'static str {
        "test only: sleeps forever"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        no_params(params)
    }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// `fault-segv`: dies of SIGSEGV.
pub struct Segv;

impl Workload for Segv {
    fn name(&self) -> &'static str {
        "fault-segv"
    }
    fn summary(&self) -> &'static str {
        "test only: dies of SIGSEGV"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        no_params(params)
    }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> {
        // Rust's own SIGSEGV handler (stack overflow detection) would swallow a raised signal
        // that is not a guard-page fault, so restore the default first.
        // SAFETY: plain libc calls; the process is meant to die here.
        unsafe {
            libc::signal(libc::SIGSEGV, libc::SIG_DFL);
            libc::raise(libc::SIGSEGV);
        }
        Err("still alive after raising SIGSEGV".into())
    }
}

/// `fault-panic`: panics.
pub struct Panic;

impl Workload for Panic {
    fn name(&self) -> &'static str {
        "fault-panic"
    }
    fn summary(&self) -> &'static str {
        "test only: panics"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        no_params(params)
    }
    #[allow(clippy::panic)]
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> {
        panic!("fault-panic workload panicked on purpose")
    }
}

/// `fault-panic-kernel`: crashes the guest kernel (`c` to /proc/sysrq-trigger), to test that a
/// guest that dies keeps the records written before. It refuses to run anywhere but under a
/// VM's PID 1: not in host mode (its parent would not be PID 1) and not in a container (a
/// container shares its host's kernel).
pub struct PanicKernel;

impl Workload for PanicKernel {
    fn name(&self) -> &'static str {
        "fault-panic-kernel"
    }
    fn summary(&self) -> &'static str {
        "test only: crashes the guest kernel through sysrq (VMs only)"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        no_params(params)
    }
    fn run(&self, _: &serde_json::Value, _: &Context) -> Result<Repetition, String> {
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() };
        if parent != 1 {
            return Err(format!(
                "refused: the runner is not PID 1 (parent {parent}), so this is not a guest"
            ));
        }
        if let Some(c) =
            crate::platform::container_from_hints(&crate::platform::ContainerHints::gather())
        {
            return Err(format!(
                "refused: in a container ({}), the kernel is the host's",
                c.evidence
            ));
        }
        // SAFETY: sync has no preconditions; what the kernel has cached goes to the disks first.
        unsafe { libc::sync() };
        std::fs::write("/proc/sysrq-trigger", b"c")
            .map_err(|e| format!("cannot write /proc/sysrq-trigger: {e}"))?;
        Err("the kernel survived sysrq-c".into())
    }
}

/// `fault-fill-disk`: writes zeros into the work directory until the filesystem is full (or
/// `max_mib` is reached), reports how much fitted, and deletes the file again.
pub struct FillDisk;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FillParams {
    #[serde(default = "default_max_mib")]
    max_mib: u64,
}

fn default_max_mib() -> u64 {
    1024
}

impl Workload for FillDisk {
    fn name(&self) -> &'static str {
        "fault-fill-disk"
    }
    fn summary(&self) -> &'static str {
        "test only: fills the work directory's filesystem"
    }
    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse_params::<FillParams>(params).map(|_| ())
    }
    fn run(&self, params: &serde_json::Value, ctx: &Context) -> Result<Repetition, String> {
        let p: FillParams = parse_params(params)?;
        let path = ctx.workdir.join("fill");
        let mut file =
            File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        let mut full = false;
        while written < p.max_mib << 20 {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    full = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("write {}: {e}", path.display())),
            }
        }
        drop(file);
        let _ = std::fs::remove_file(&path);
        Ok(Repetition {
            samples: vec![Sample {
                metric: "written".into(),
                unit: "bytes".into(),
                parameters: BTreeMap::new(),
                higher_is_better: true,
                value: written as f64,
            }],
            tool: None,
            info: BTreeMap::from([("filesystem_full".into(), full.into())]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_disk_stops_at_its_limit_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context {
            workdir: dir.path().to_path_buf(),
            online_cpus: 1,
            repetition: 0,
            repetitions: 1,
        };
        let rep = FillDisk
            .run(&serde_json::json!({"max_mib": 2}), &ctx)
            .unwrap();
        assert_eq!(rep.samples[0].value, (2 << 20) as f64);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn kernel_panic_refuses_outside_a_guest() {
        let ctx = Context {
            workdir: std::env::temp_dir(),
            online_cpus: 1,
            repetition: 0,
            repetitions: 1,
        };
        // A test process's parent is the test harness, never PID 1.
        let e = PanicKernel.run(&serde_json::json!({}), &ctx).unwrap_err();
        assert!(e.starts_with("refused"), "{e}");
    }

    #[test]
    fn fault_workloads_take_no_params() {
        assert!(Hang.check(&serde_json::json!({})).is_ok());
        assert!(Segv.check(&serde_json::json!({"x": 1})).is_err());
    }
}
