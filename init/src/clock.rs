//! Time since boot and the boot-phase log.
//!
//! Every timestamp of a run is seconds since the kernel started, read from CLOCK_BOOTTIME: the
//! clock behind /proc/uptime, usable before /proc is mounted.

use crate::results::schema::Phase;

fn boottime() -> libc::timespec {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        // Kernels before 2.6.39 lack CLOCK_BOOTTIME; MONOTONIC differs only by suspend time.
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    }
    ts
}

/// Seconds since boot.
pub fn since_boot() -> f64 {
    let ts = boottime();
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Nanoseconds since boot.
pub fn since_boot_nanos() -> u64 {
    let ts = boottime();
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Wall clock, seconds since the Unix epoch (0 when the clock is before it).
pub fn wall_clock_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The named instants of a boot, each also announced on the console.
#[derive(Debug, Default, Clone)]
pub struct PhaseLog {
    phases: Vec<Phase>,
}

impl PhaseLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// A log continuing the phases of an earlier stage (the initramfs).
    pub fn continuing(phases: Vec<Phase>) -> Self {
        PhaseLog { phases }
    }

    /// Records phase `name` now and prints `imgbuild: phase NAME at T s`.
    pub fn mark(&mut self, name: &str) -> f64 {
        let at = since_boot();
        self.mark_at(name, at);
        at
    }

    /// Records phase `name` at `at` (seconds since boot) and prints it.
    pub fn mark_at(&mut self, name: &str, at: f64) {
        crate::say!("phase {name} at {at:.3} s");
        self.phases.push(Phase {
            name: name.to_owned(),
            at_s: at,
        });
    }

    /// The phases so far.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_clock_is_plausible_and_monotonic() {
        let a = since_boot();
        let b = since_boot();
        assert!(a > 0.0 && b >= a);
        let uptime: f64 = std::fs::read_to_string("/proc/uptime")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (uptime - a).abs() < 5.0,
            "uptime {uptime} vs CLOCK_BOOTTIME {a}"
        );
        assert!(wall_clock_unix() > 1.6e9);
    }

    #[test]
    fn phases_are_recorded_in_order() {
        let mut log = PhaseLog::new();
        log.mark("one");
        log.mark("two");
        let names: Vec<_> = log.phases().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["one", "two"]);
        assert!(log.phases()[1].at_s >= log.phases()[0].at_s);
    }
}
