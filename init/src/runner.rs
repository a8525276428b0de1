//! Runs each workload in a forked child so that a hang, crash or panic stays contained.
//!
//! The child puts itself in its own process group, runs every repetition, and sends the
//! aggregated measurements back over a pipe as JSON. The parent waits with a deadline: at the
//! timeout it kills the whole process group and records `timeout`; a child that dies of a
//! signal, exits non-zero or panics is recorded `failed` with the reason. As PID 1 the parent
//! also reaps every orphan that the kernel hands it while it waits.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::profile::ResolvedWorkload;
use crate::results::schema::{Status, WorkloadResult};
use crate::workloads::{self, Context, Measured};

/// Largest report a child may send back.
const MAX_REPORT: usize = 16 << 20;
/// How long a killed child gets to disappear before the run moves on without it.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How long a finished child's leftover processes may keep its pipe open.
const PIPE_GRACE: Duration = Duration::from_secs(1);

/// How the runner treats processes.
#[derive(Debug, Clone, Copy)]
pub struct RunnerOptions {
    /// Reap every child, not only the workload's (PID 1 inherits all orphans).
    pub reap_all: bool,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ChildReport {
    Measured(Measured),
    Failed(String),
    Panicked(String),
}

enum Outcome {
    Done(Measured),
    Failed(String),
    Timeout(String),
}

/// Reaps every exited child without waiting; returns how many.
pub fn reap_orphans() -> usize {
    let mut n = 0;
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return n;
        }
        n += 1;
    }
}

/// Runs `spec` in a child process under its timeout; `workdir` is the run's scratch directory
/// (a subdirectory per workload is created in it and removed afterwards).
pub fn run_workload(
    spec: &ResolvedWorkload,
    workdir: &Path,
    online_cpus: usize,
    options: RunnerOptions,
) -> WorkloadResult {
    let start_s = clock::since_boot();
    let mut result = WorkloadResult {
        name: spec.name.clone(),
        workload: spec.workload.clone(),
        parameters: spec.params.clone(),
        repetitions: spec.repetitions,
        timeout_s: spec.timeout_s,
        status: Status::Failed,
        reason: None,
        start_s,
        end_s: start_s,
        duration_s: 0.0,
        tool: None,
        info: Default::default(),
        metrics: Vec::new(),
    };
    let finish = |mut result: WorkloadResult| {
        result.end_s = clock::since_boot();
        result.duration_s = (result.end_s - result.start_s).max(0.0);
        result
    };
    let Some(workload) = workloads::find(&spec.workload) else {
        result.status = Status::Skipped;
        result.reason = Some(format!("unknown workload {:?}", spec.workload));
        return finish(result);
    };
    let dir = workdir.join(&spec.name);
    // Workloads that need no disk still run when the work directory cannot be made (a root
    // left read-only); those that need it fail on their own, and the info says why.
    let workdir_error = std::fs::create_dir_all(&dir)
        .err()
        .map(|e| format!("cannot create work directory {}: {e}", dir.display()));
    let ctx = Context {
        workdir: dir.clone(),
        online_cpus,
        repetition: 0,
        repetitions: spec.repetitions,
    };
    let outcome = supervise(workload, spec, &ctx, options);
    let _ = std::fs::remove_dir_all(&dir);
    match outcome {
        Outcome::Done(measured) if measured.skipped.is_some() => {
            result.status = Status::Skipped;
            result.reason = measured.skipped;
            result.info = measured.info;
        }
        Outcome::Done(measured) => {
            result.status = Status::Ok;
            result.metrics = measured.metrics;
            result.tool = measured.tool;
            result.info = measured.info;
        }
        Outcome::Failed(reason) => result.reason = Some(reason),
        Outcome::Timeout(reason) => {
            result.status = Status::Timeout;
            result.reason = Some(reason);
        }
    }
    if let Some(e) = workdir_error {
        result.info.insert("workdir_error".into(), e.into());
    }
    finish(result)
}

fn supervise(
    workload: &dyn workloads::Workload,
    spec: &ResolvedWorkload,
    ctx: &Context,
    options: RunnerOptions,
) -> Outcome {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Outcome::Failed(format!(
            "cannot create a pipe: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fork has no preconditions; the child only runs the workload and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Outcome::Failed(format!("cannot fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(read_end);
        child(workload, spec, ctx, write_end, options);
    }
    drop(write_end);
    // Also done by the child; doing it here too closes the race with an early kill.
    // SAFETY: plain syscall on our child.
    unsafe { libc::setpgid(pid, pid) };
    let timeout = spec.timeout_s.clamp(0.0, crate::profile::MAX_TIMEOUT_S);
    let deadline = Instant::now() + Duration::try_from_secs_f64(timeout).unwrap_or(Duration::ZERO);
    let mut report = Vec::new();
    let mut eof = false;
    let mut status = None;
    let mut exited_at = None;
    let mut too_large = false;
    let mut timed_out = false;
    loop {
        if status.is_none() {
            status = reap(pid, options, false);
            if status.is_some() {
                exited_at = Some(Instant::now());
            }
        }
        if status.is_some() && (eof || exited_at.is_some_and(|t| t.elapsed() > PIPE_GRACE)) {
            break;
        }
        let now = Instant::now();
        if status.is_none() && now >= deadline {
            timed_out = true;
            break;
        }
        let wait = deadline
            .saturating_duration_since(now)
            .min(Duration::from_millis(50));
        if !eof {
            match read_some(read_end.as_raw_fd(), wait, &mut report) {
                Ok(true) => eof = true,
                Ok(false) => {}
                Err(_) => eof = true,
            }
            if report.len() > MAX_REPORT {
                too_large = true;
                break;
            }
        } else {
            std::thread::sleep(wait);
        }
    }
    // Whatever is left of the workload's process group goes now.
    // SAFETY: signalling a process group we created; ESRCH when it is already gone.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
    if status.is_none() {
        status = wait_after_kill(pid, options);
    }
    if timed_out {
        let mut reason = format!("killed after its timeout of {} s", spec.timeout_s);
        if status.is_none() {
            reason.push_str("; the process did not exit after SIGKILL");
        }
        return Outcome::Timeout(reason);
    }
    if too_large {
        return Outcome::Failed(format!("report larger than {MAX_REPORT} bytes"));
    }
    let Some(status) = status else {
        return Outcome::Failed("the workload process did not exit after SIGKILL".into());
    };
    interpret(status, &report)
}

fn interpret(status: libc::c_int, report: &[u8]) -> Outcome {
    let parsed = serde_json::from_slice::<ChildReport>(report);
    if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        return Outcome::Failed(format!(
            "killed by signal {} ({signal})",
            signal_name(signal)
        ));
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    match parsed {
        Ok(ChildReport::Measured(m)) if code == 0 => Outcome::Done(m),
        Ok(ChildReport::Measured(_)) => Outcome::Failed(format!("exited with status {code}")),
        Ok(ChildReport::Failed(reason)) => Outcome::Failed(reason),
        Ok(ChildReport::Panicked(message)) => Outcome::Failed(format!("panicked: {message}")),
        Err(e) => Outcome::Failed(format!(
            "exited with status {code} without a valid report ({e})"
        )),
    }
}

fn signal_name(signal: libc::c_int) -> &'static str {
    match signal {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        _ => "signal",
    }
}

/// Reaps the workload child (and, for PID 1, any orphan); returns the child's wait status.
fn reap(pid: libc::pid_t, options: RunnerOptions, block: bool) -> Option<libc::c_int> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status = 0;
        let target = if options.reap_all { -1 } else { pid };
        // SAFETY: waitpid with a valid status pointer.
        let got = unsafe { libc::waitpid(target, &mut status, flags) };
        if got == pid {
            return Some(status);
        }
        if got <= 0 {
            return None;
        }
        // An orphan reaped by PID 1: keep going.
    }
}

fn wait_after_kill(pid: libc::pid_t, options: RunnerOptions) -> Option<libc::c_int> {
    let until = Instant::now() + KILL_GRACE;
    loop {
        if let Some(status) = reap(pid, options, false) {
            return Some(status);
        }
        if Instant::now() >= until {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to `wait` for data and appends it; true at end of file.
fn read_some(fd: libc::c_int, wait: Duration, out: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: pfd is one valid pollfd.
    let ready = unsafe { libc::poll(&mut pfd, 1, ms) };
    if ready < 0 {
        let err = std::io::Error::last_os_error();
        return if err.kind() == std::io::ErrorKind::Interrupted {
            Ok(false)
        } else {
            Err(err)
        };
    }
    if ready == 0 {
        return Ok(false);
    }
    let mut buf = [0u8; 65536];
    // SAFETY: buf is valid for its length.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    match n {
        0 => Ok(true),
        n if n < 0 => {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(err)
            }
        }
        n => {
            out.extend_from_slice(&buf[..n as usize]);
            Ok(false)
        }
    }
}

/// The child side: never returns.
fn child(
    workload: &dyn workloads::Workload,
    spec: &ResolvedWorkload,
    ctx: &Context,
    report_fd: OwnedFd,
    options: RunnerOptions,
) -> ! {
    // SAFETY: plain syscalls on ourselves.
    unsafe {
        libc::setpgid(0, 0);
        if !options.reap_all {
            // A host-mode runner that dies takes its workload with it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        }
    }
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        workloads::measure(workload, &spec.params, ctx, spec.repetitions)
    }));
    let (report, code) = match outcome {
        Ok(Ok(measured)) => (ChildReport::Measured(measured), 0),
        Ok(Err(reason)) => (ChildReport::Failed(reason), 1),
        Err(payload) => (ChildReport::Panicked(panic_message(payload.as_ref())), 101),
    };
    let bytes = serde_json::to_vec(&report).unwrap_or_else(|e| {
        format!(r#"{{"failed":"cannot encode the report: {e}"}}"#).into_bytes()
    });
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: rest is valid for its length; the descriptor is ours.
        let n = unsafe { libc::write(report_fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        done += n as usize;
    }
    // SAFETY: leaving the child without running the parent's atexit handlers or destructors.
    unsafe { libc::_exit(code) }
}

/// The message of a panic payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(workload: &str, timeout_s: f64, params: serde_json::Value) -> ResolvedWorkload {
        ResolvedWorkload {
            name: workload.to_owned(),
            workload: workload.to_owned(),
            repetitions: 2,
            timeout_s,
            params,
        }
    }

    const OPTS: RunnerOptions = RunnerOptions { reap_all: false };

    #[test]
    fn crypto_in_a_child_reports_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let params = serde_json::json!({"seconds": 0.001, "algorithms": ["sha256"],
            "block_sizes": [64], "threads": ["single"]});
        let r = run_workload(&spec("crypto", 30.0, params), dir.path(), 1, OPTS);
        assert_eq!(r.status, Status::Ok, "{:?}", r.reason);
        assert_eq!(r.metrics.len(), 1);
        assert_eq!(r.metrics[0].values.len(), 2);
        assert!(r.metrics[0].median > 0.0);
        assert!(r.end_s >= r.start_s);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "workdir not removed"
        );
    }

    #[test]
    fn segfault_is_contained_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_workload(
            &spec("fault-segv", 30.0, serde_json::json!({})),
            dir.path(),
            1,
            OPTS,
        );
        assert_eq!(r.status, Status::Failed);
        assert!(
            r.reason.as_deref().unwrap_or("").contains("SIGSEGV"),
            "{:?}",
            r.reason
        );
    }

    #[test]
    fn hang_is_killed_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let t = Instant::now();
        let r = run_workload(
            &spec("fault-hang", 0.3, serde_json::json!({})),
            dir.path(),
            1,
            OPTS,
        );
        assert_eq!(r.status, Status::Timeout);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(r.duration_s >= 0.3);
    }

    #[test]
    fn unknown_workload_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let r = run_workload(
            &spec("nope", 1.0, serde_json::json!({})),
            dir.path(),
            1,
            OPTS,
        );
        assert_eq!(r.status, Status::Skipped);
    }

    #[test]
    fn reports_are_interpreted() {
        assert!(
            matches!(interpret(0, b"garbage"), Outcome::Failed(m) if m.contains("valid report"))
        );
        let panicked = serde_json::to_vec(&ChildReport::Panicked("boom".into())).unwrap();
        assert!(matches!(interpret(101 << 8, &panicked), Outcome::Failed(m) if m.contains("boom")));
    }
}
