//! What being PID 1 demands: a panic hook that reports on the console, and a power-off that
//! never returns (PID 1 exiting would make the kernel panic with "Attempted to kill init").

use std::time::Duration;

use crate::say;

/// Prints every panic on the console; the message is also what catch_unwind hands back.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        say!("PANIC: {info}");
    }));
}

/// Remounts `/` read-only so that the filesystem is clean (journal flushed, no recovery
/// needed) when the machine goes off without unmounting it.
pub fn remount_root_readonly() {
    // SAFETY: sync takes nothing.
    unsafe { libc::sync() };
    let flags = libc::MS_REMOUNT | libc::MS_RDONLY;
    if let Err(e) = crate::mounts::mount("none", std::path::Path::new("/"), None, flags, None) {
        say!("{e}");
    }
}

/// Syncs and powers the machine off; never returns. If the kernel refuses (no permission in a
/// namespace, say), halts; if that fails too, sleeps forever rather than exit.
pub fn power_off() -> ! {
    say!("powering off");
    // SAFETY: sync and reboot take no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    say!(
        "power off failed: {}; halting",
        std::io::Error::last_os_error()
    );
    // SAFETY: as above.
    unsafe { libc::reboot(libc::RB_HALT_SYSTEM) };
    say!(
        "halt failed: {}; sleeping forever",
        std::io::Error::last_os_error()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
