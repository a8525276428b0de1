//! The console: where PID 1's progress lines go, and how it gets one.
//!
//! PID 1 must never die of a failed write, so output goes through [`say`], which ignores errors
//! (`println!` panics on them).

use std::ffi::CStr;
use std::fmt;
use std::io::{self, Write};

/// Writes `imgbuild: <message>` on standard error, ignoring failures.
pub fn say(args: fmt::Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = writeln!(err, "imgbuild: {args}");
    let _ = err.flush();
}

/// Prints a progress line on the console: `say!("phase {} at {} s", name, t)`.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(::std::format_args!($($arg)*))
    };
}

/// Devices tried, in order, for the console of a PID 1.
pub const CONSOLE_DEVICES: [&CStr; 5] = [
    c"/dev/console",
    c"/dev/hvc0",
    c"/dev/ttyS0",
    c"/dev/xvc0",
    c"/dev/tty0",
];

/// Points standard input, output and error at the first console device that opens; returns
/// its path. Used by a PID 1 whose kernel could not open /dev/console for it (no node in the
/// initramfs) or after /dev was mounted.
pub fn attach_console() -> io::Result<&'static str> {
    let mut last = io::Error::from_raw_os_error(libc::ENOENT);
    for device in CONSOLE_DEVICES {
        // SAFETY: device is NUL-terminated.
        let fd = unsafe {
            libc::open(
                device.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            last = io::Error::last_os_error();
            continue;
        }
        for target in 0..3 {
            // SAFETY: fd is open; dup2 onto the standard descriptors (clears O_CLOEXEC there).
            unsafe { libc::dup2(fd, target) };
        }
        if fd > 2 {
            // SAFETY: fd is ours and no longer needed.
            unsafe { libc::close(fd) };
        }
        return Ok(device.to_str().unwrap_or("console"));
    }
    Err(last)
}

/// True when standard error is an open descriptor.
pub fn has_stderr() -> bool {
    // SAFETY: F_GETFD on any descriptor number is harmless.
    unsafe { libc::fcntl(2, libc::F_GETFD) >= 0 }
}
