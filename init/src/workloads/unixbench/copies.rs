//! Running a test as N identical processes at once, as `Run` does for its N-copy pass.
//!
//! Every copy is a forked process (the single copy too, so each pass starts from a fresh
//! process like Run's). The copies block on a start pipe until all exist, so they start
//! together; each may be pinned to one CPU of the caller's affinity mask (copy i on the i-th
//! allowed CPU); each sends its [`Pass`] back over its own pipe.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::score::Pass;

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: two new descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is valid for its size.
    let ok =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if ok != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: i is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect()
}

/// Pins the calling process (and what it forks later) to `cpu`.
pub fn pin_to(cpu: usize) -> Result<(), String> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: cpu is checked against the set size.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} out of range"));
        }
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(format!(
                "sched_setaffinity to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn read_to_end(fd: &OwnedFd, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 || out.len() > limit {
            return out;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

/// Runs `body(copy)` in `n` processes started together; `pin` gives each copy's CPU. Returns
/// the passes in copy order, or the first copy's error.
pub fn run_copies(
    n: usize,
    pin: &[usize],
    body: &dyn Fn(usize) -> Result<Pass, String>,
) -> Result<Vec<Pass>, String> {
    let (start_r, start_w) = pipe()?;
    let mut children = Vec::new();
    let mut failure = None;
    for copy in 0..n {
        let (res_r, res_w) = match pipe() {
            Ok(p) => p,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        // SAFETY: the child runs the test body and _exits; it never returns into our frames.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            failure = Some(format!("fork: {}", std::io::Error::last_os_error()));
            break;
        }
        if pid == 0 {
            drop(start_w);
            drop(res_r);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                if let Some(&cpu) = pin.get(copy) {
                    pin_to(cpu)?;
                }
                // Wait for the start signal: one byte per copy. Not end of file: a process
                // forked meanwhile elsewhere may hold a copy of the write end.
                let mut go = [0u8; 1];
                // SAFETY: reading one byte into a valid buffer.
                while unsafe { libc::read(start_r.as_raw_fd(), go.as_mut_ptr().cast(), 1) } < 0
                    && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
                {
                }
                body(copy)
            }))
            .unwrap_or_else(|_| Err("the test panicked".into()));
            let bytes = serde_json::to_vec(&outcome).unwrap_or_default();
            // SAFETY: writing our own buffer to our pipe, then leaving without destructors.
            unsafe {
                libc::write(res_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                libc::_exit(0);
            }
        }
        drop(res_w);
        children.push((pid, res_r));
    }
    let go = vec![1u8; children.len()];
    // SAFETY: writing our own buffer; at most a few hundred bytes, far below the pipe's size.
    unsafe { libc::write(start_w.as_raw_fd(), go.as_ptr().cast(), go.len()) };
    drop(start_w);
    drop(start_r);
    let mut passes = Vec::new();
    for (copy, (pid, res_r)) in children.into_iter().enumerate() {
        let bytes = read_to_end(&res_r, 1 << 16);
        let mut status = 0;
        // SAFETY: waiting for our own child.
        while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
            && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
        {}
        match serde_json::from_slice::<Result<Pass, String>>(&bytes) {
            Ok(Ok(pass)) => passes.push(pass),
            Ok(Err(e)) => {
                failure.get_or_insert(format!("copy {copy}: {e}"));
            }
            Err(_) => {
                failure.get_or_insert(format!(
                    "copy {copy} died without a result (wait status {status:#x})"
                ));
            }
        }
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(passes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_run_in_separate_processes_and_report_in_order() {
        let parent = std::process::id();
        let passes = run_copies(3, &[], &|copy| {
            assert_ne!(std::process::id(), parent);
            Ok(Pass {
                count: copy as f64 + 1.0,
                time_s: 1.0,
                timebase: 1.0,
            })
        })
        .unwrap();
        let counts: Vec<f64> = passes.iter().map(|p| p.count).collect();
        assert_eq!(counts, [1.0, 2.0, 3.0]);
    }

    #[test]
    fn a_failing_or_crashing_copy_is_reported() {
        let err = run_copies(2, &[], &|copy| {
            if copy == 1 {
                Err("boom".into())
            } else {
                Ok(Pass {
                    count: 1.0,
                    time_s: 1.0,
                    timebase: 1.0,
                })
            }
        })
        .unwrap_err();
        assert!(err.contains("copy 1: boom"), "{err}");
        let err = run_copies(1, &[], &|_| {
            // SAFETY: the copy process dies on purpose.
            unsafe { libc::_exit(3) }
        })
        .unwrap_err();
        assert!(err.contains("without a result"), "{err}");
    }

    #[test]
    fn pinned_copies_run_on_their_cpu() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        let passes = run_copies(1, &cpus[..1], &|_| {
            Ok(Pass {
                count: allowed_cpus().len() as f64,
                time_s: 1.0,
                timebase: 1.0,
            })
        })
        .unwrap();
        assert_eq!(passes[0].count, 1.0);
    }
}
