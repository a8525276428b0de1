//! The kernel-bound UnixBench tests: System Call Overhead, Pipe Throughput, Pipe-based Context
//! Switching, Process Creation and Execl Throughput.
//!
//! Each loops until its duration is over (checking the clock every few iterations rather than
//! waiting for SIGALRM) and returns the iteration count and the time it took, which is what the
//! C programs report on their COUNT and TIME lines. UnixBench 6.0 semantics where 5.1.3 and 6.0
//! differ: `syscall` dups a pipe descriptor (a guest's PID 1 may have no fd 0) and calls
//! `getpid` through the raw system call so that no library caches it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use super::score::Pass;

fn os_err(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(os_err("pipe"));
    }
    // SAFETY: two new descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn lps(count: u64, start: Instant) -> Pass {
    Pass {
        count: count as f64,
        time_s: start.elapsed().as_secs_f64(),
        timebase: 1.0,
    }
}

/// `syscall`: `close(dup(fd))`, `getpid`, `getuid`, `umask` per iteration.
pub fn syscall(duration: Duration) -> Result<Pass, String> {
    let (r, _w) = pipe()?;
    let fd = r.as_raw_fd();
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        for _ in 0..1000 {
            // SAFETY: plain system calls on our own descriptor and process.
            unsafe {
                let d = libc::dup(fd);
                if d < 0 {
                    return Err(os_err("dup"));
                }
                libc::close(d);
                libc::syscall(libc::SYS_getpid);
                libc::getuid();
                libc::umask(0o022);
            }
        }
        count += 1000;
        if start.elapsed() >= duration {
            return Ok(lps(count, start));
        }
    }
}

fn write_all(fd: libc::c_int, buf: &[u8]) -> Result<(), String> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the slice is valid for its length.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_err("pipe write"));
        }
        done += n as usize;
    }
    Ok(())
}

fn read_exact(fd: libc::c_int, buf: &mut [u8]) -> Result<bool, String> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the slice is valid for its length.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(os_err("pipe read"));
        }
        if n == 0 {
            return Ok(false);
        }
        done += n as usize;
    }
    Ok(true)
}

/// `pipe`: write 512 bytes to a pipe and read them back, per iteration.
pub fn pipe_throughput(duration: Duration) -> Result<Pass, String> {
    let (r, w) = pipe()?;
    let mut buf = [0u8; 512];
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        for _ in 0..256 {
            write_all(w.as_raw_fd(), &buf)?;
            if !read_exact(r.as_raw_fd(), &mut buf)? {
                return Err("pipe closed".into());
            }
        }
        count += 256;
        if start.elapsed() >= duration {
            return Ok(lps(count, start));
        }
    }
}

/// Forks; the child runs `body` and `_exit`s with its result (0 ok, 1 error).
fn fork_child(body: impl FnOnce() -> Result<(), String>) -> Result<libc::pid_t, String> {
    // SAFETY: the child only runs `body` and exits without unwinding into the parent's frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)) {
            Ok(Ok(())) => 0,
            _ => 1,
        };
        // SAFETY: leaving the child without running the parent's destructors.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

fn wait_child(pid: libc::pid_t) -> Result<libc::c_int, String> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got == pid {
            return Ok(status);
        }
        if got < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return Err(os_err("waitpid"));
        }
    }
}

const STOP: u64 = u64::MAX;

/// `context1`: two processes pass an incrementing counter back and forth over two pipes; one
/// round trip is one iteration. Both processes share the caller's CPU affinity (the copy's
/// CPU when pinned).
pub fn context_switch(duration: Duration) -> Result<Pass, String> {
    let (to_child_r, to_child_w) = pipe()?;
    let (to_parent_r, to_parent_w) = pipe()?;
    let child = fork_child(|| {
        // The parent's ends are not ours: close them so that the pipes see end of file when
        // either side goes away. (The child never runs destructors, so no double close.)
        // SAFETY: closing descriptors this process does not use.
        unsafe {
            libc::close(to_child_w.as_raw_fd());
            libc::close(to_parent_r.as_raw_fd());
        }
        let mut buf = [0u8; 8];
        let mut expect = 0u64;
        loop {
            if !read_exact(to_child_r.as_raw_fd(), &mut buf)? {
                return Ok(());
            }
            let got = u64::from_ne_bytes(buf);
            // An explicit stop: another process forked meanwhile may hold a copy of the write
            // end, so end of file alone could come late.
            if got == STOP {
                return Ok(());
            }
            if got != expect {
                return Err(format!("context1 child: expected {expect}, got {got}"));
            }
            write_all(to_parent_w.as_raw_fd(), &buf)?;
            expect += 1;
        }
    })?;
    let result = (|| {
        let start = Instant::now();
        let mut count = 0u64;
        let mut buf = [0u8; 8];
        loop {
            for _ in 0..64 {
                write_all(to_child_w.as_raw_fd(), &count.to_ne_bytes())?;
                if !read_exact(to_parent_r.as_raw_fd(), &mut buf)? {
                    return Err("context1: the partner process went away".to_string());
                }
                if u64::from_ne_bytes(buf) != count {
                    return Err("context1: counter out of sync".to_string());
                }
                count += 1;
            }
            if start.elapsed() >= duration {
                return Ok(lps(count, start));
            }
        }
    })();
    let _ = write_all(to_child_w.as_raw_fd(), &STOP.to_ne_bytes());
    drop(to_child_w);
    let status = wait_child(child)?;
    let pass = result?;
    if status != 0 {
        return Err(format!("context1 partner exited with status {status:#x}"));
    }
    Ok(pass)
}

/// `spawn`: fork, the child exits at once, the parent waits.
pub fn spawn(duration: Duration) -> Result<Pass, String> {
    let start = Instant::now();
    let mut count = 0u64;
    loop {
        // SAFETY: the child does nothing but _exit.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(os_err("fork"));
        }
        if pid == 0 {
            // SAFETY: immediate exit of the child.
            unsafe { libc::_exit(0) };
        }
        let status = wait_child(pid)?;
        if status != 0 {
            return Err(format!("spawned child exited with status {status:#x}"));
        }
        count += 1;
        if start.elapsed() >= duration {
            return Ok(lps(count, start));
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The helper argument naming the execl chain.
pub const EXECL_HELPER: &str = "execl";

/// `execl`: re-executes `exe` (the init binary itself) in helper mode; each new image counts
/// one, checks the clock and executes itself again until the duration is over, then writes the
/// count to a pipe. The chain runs in a forked child so the caller survives it.
pub fn execl(duration: Duration, exe: &std::path::Path) -> Result<Pass, String> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (r, w) = pipe()?;
    // The write end must survive the exec chain: a copy without CLOEXEC.
    // SAFETY: dup of our own descriptor.
    let w_inherit = unsafe { libc::dup(w.as_raw_fd()) };
    if w_inherit < 0 {
        return Err(os_err("dup"));
    }
    // SAFETY: the new descriptor is ours alone.
    let w_inherit = unsafe { OwnedFd::from_raw_fd(w_inherit) };
    let exe_c = CString::new(exe.as_os_str().as_bytes()).map_err(|_| "bad exe path")?;
    let start_ns = monotonic_ns();
    let args: Vec<CString> = [
        "imgbuild-execl".to_string(),
        super::super::HELPER_ARG.to_string(),
        EXECL_HELPER.to_string(),
        start_ns.to_string(),
        (duration.as_nanos() as u64).to_string(),
        "0".to_string(),
        w_inherit.as_raw_fd().to_string(),
    ]
    .into_iter()
    .map(|a| CString::new(a).map_err(|_| "bad argument".to_string()))
    .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let start = Instant::now();
    // SAFETY: the child only calls execv (async-signal-safe) and _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(os_err("fork"));
    }
    if pid == 0 {
        // SAFETY: argv is a null-terminated array of valid C strings that outlive the call.
        unsafe {
            libc::execv(exe_c.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    drop(w);
    drop(w_inherit);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64];
    loop {
        // SAFETY: chunk is valid for its length.
        let n = unsafe { libc::read(r.as_raw_fd(), chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 || buf.len() > 64 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    let status = wait_child(pid)?;
    let time_s = start.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&buf);
    let count: u64 = text.trim().parse().map_err(|_| {
        format!(
            "execl chain of {} reported {text:?} (exit status {status:#x}); is it the init binary?",
            exe.display()
        )
    })?;
    Ok(Pass {
        count: count as f64,
        time_s,
        timebase: 1.0,
    })
}

/// One link of the execl chain: `args` are start_ns, duration_ns, count, fd.
pub fn execl_link(args: &[String]) -> i32 {
    let parsed = (|| -> Option<(u64, u64, u64, libc::c_int)> {
        Some((
            args.first()?.parse().ok()?,
            args.get(1)?.parse().ok()?,
            args.get(2)?.parse().ok()?,
            args.get(3)?.parse().ok()?,
        ))
    })();
    let Some((start_ns, duration_ns, count, fd)) = parsed else {
        eprintln!("imgbuild-init: bad execl helper arguments {args:?}");
        return 2;
    };
    let count = count + 1;
    if monotonic_ns().saturating_sub(start_ns) >= duration_ns {
        let text = count.to_string();
        // SAFETY: writing our own bytes to the inherited descriptor.
        unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
        return 0;
    }
    let exe = c"/proc/self/exe";
    let next: Vec<std::ffi::CString> = [
        "imgbuild-execl".to_string(),
        super::super::HELPER_ARG.to_string(),
        EXECL_HELPER.to_string(),
        start_ns.to_string(),
        duration_ns.to_string(),
        count.to_string(),
        fd.to_string(),
    ]
    .into_iter()
    .filter_map(|a| std::ffi::CString::new(a).ok())
    .collect();
    let mut argv: Vec<*const libc::c_char> = next.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: argv is a null-terminated array of valid C strings.
    unsafe { libc::execv(exe.as_ptr(), argv.as_ptr()) };
    eprintln!("imgbuild-init: execl helper: {}", os_err("execv"));
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORT: Duration = Duration::from_millis(30);

    #[test]
    fn loops_count_iterations() {
        for (name, pass) in [
            ("syscall", syscall(SHORT).unwrap()),
            ("pipe", pipe_throughput(SHORT).unwrap()),
            ("context1", context_switch(SHORT).unwrap()),
            ("spawn", spawn(SHORT).unwrap()),
        ] {
            assert!(pass.count >= 1.0, "{name}: {pass:?}");
            assert!(pass.time_s >= 0.03, "{name}: {pass:?}");
            assert_eq!(pass.timebase, 1.0);
        }
    }

    #[test]
    fn execl_of_a_binary_without_the_helper_mode_is_a_clear_error() {
        // The test harness is not the init: the chain's first exec fails to report.
        let err = execl(SHORT, std::path::Path::new("/bin/true")).unwrap_err();
        assert!(err.contains("init binary"), "{err}");
    }

    #[test]
    fn bad_link_arguments_are_refused() {
        assert_eq!(execl_link(&["x".into()]), 2);
    }
}
