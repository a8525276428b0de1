//! The loopback interface: a PID 1 must bring `lo` up itself (nothing else will), and the
//! network workloads talk to servers on 127.0.0.1. The kernel assigns 127.0.0.1/8 when `lo`
//! goes up.

use std::io;

/// Sets `lo` up; Ok when it already was.
pub fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: plain socket call; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let result = set_up(fd);
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    result
}

// ioctl's request is a c_ulong in glibc and a c_int in musl (`libc::Ioctl` either way): the
// casts keep the musl build of the init compiling.
fn set_up(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: ifreq is plain data; zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: fd is a socket, req a valid ifreq naming an interface.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as libc::Ioctl, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | up;
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as libc::Ioctl, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets a usable `PATH` when the kernel started us without one, for workloads that run tools.
pub fn default_path() {
    if std::env::var_os("PATH").is_none() {
        std::env::set_var(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_up_or_the_error_is_permission() {
        // Unprivileged test hosts cannot change flags, but lo is up there anyway.
        match bring_up_loopback() {
            Ok(()) => {}
            Err(e) => assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENODEV)
                ),
                "{e}"
            ),
        }
    }
}
