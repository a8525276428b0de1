//! Double-precision Whetstone (Roy Longbottom's `whets.c` as UnixBench builds it: `-DDP
//! -DUNIX -DUNIXBENCH`), reporting MWIPS.
//!
//! The eight loops N1…N8 with their constants; time is user CPU time from `getrusage` (the
//! `UNIX` timer), N1 runs ten times as long and counts a tenth. Calibration multiplies the outer
//! pass count by 5 until a run takes more than 0.5 s (UnixBench), then scales it to the
//! requested duration; for very short durations (smoke profiles) the 0.5 s threshold shrinks to a
//! quarter of the duration. `MWIPS = passes * 100 / (10 * time)`.

use std::hint::black_box;

/// The outcome of one Whetstone run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Whetstone {
    /// Million Whetstone instructions per second.
    pub mwips: f64,
    /// User CPU seconds of the measured run (N1 counted a tenth).
    pub time_s: f64,
    /// Outer passes (the `xtra` of whets.c).
    pub passes: u64,
    /// Sum of the loops' check values (`Check`; zero means a wrong answer).
    pub check: f64,
}

fn user_time() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    usage.ru_utime.tv_sec as f64 + usage.ru_utime.tv_usec as f64 * 1e-6
}

fn pa(e: &mut [f64; 4], t: f64, t2: f64) {
    for _ in 0..6 {
        e[0] = (e[0] + e[1] + e[2] - e[3]) * t;
        e[1] = (e[0] + e[1] - e[2] + e[3]) * t;
        e[2] = (e[0] - e[1] + e[2] + e[3]) * t;
        e[3] = (-e[0] + e[1] + e[2] + e[3]) / t2;
    }
}

fn po(e1: &mut [f64; 4], j: usize, k: usize, l: usize) {
    e1[j] = e1[k];
    e1[k] = e1[l];
    e1[l] = e1[j];
}

fn p3(x: &mut f64, y: &mut f64, z: &mut f64, t: f64, t1: f64, t2: f64) {
    *x = *y;
    *y = *z;
    *x = t * (*x + *y);
    *y = t1 * (*x + *y);
    *z = (*x + *y) / t2;
}

/// One run of the eight loops with `xtra` outer passes; returns (time used, check).
fn whetstones(xtra: u64) -> (f64, f64) {
    let x100: i64 = 100;
    let (n1, n2, n3, n4) = (12 * x100, 14 * x100, 345 * x100, 210 * x100);
    let (n5, n6, n7, n8) = (32 * x100, 899 * x100, 616 * x100, 93 * x100);
    let n1mult = 10;
    let t0 = 0.49999975;
    let mut t = t0;
    let t1 = 0.50000025;
    let t2 = 2.0;
    let mut check = 0.0;
    let mut time_used = 0.0;

    // Section 1: array elements.
    let mut e1 = [1.0, -1.0, -1.0, -1.0];
    let start = user_time();
    for _ in 0..xtra {
        let e = black_box(&mut e1);
        for _ in 0..n1 * n1mult {
            e[0] = (e[0] + e[1] + e[2] - e[3]) * t;
            e[1] = (e[0] + e[1] - e[2] + e[3]) * t;
            e[2] = (e[0] - e[1] + e[2] + e[3]) * t;
            e[3] = (-e[0] + e[1] + e[2] + e[3]) * t;
        }
        t = 1.0 - t;
    }
    t = t0;
    time_used += (user_time() - start) / n1mult as f64;
    check += e1[3];

    // Section 2: array as parameter.
    let start = user_time();
    for _ in 0..xtra {
        let e = black_box(&mut e1);
        for _ in 0..n2 {
            pa(e, t, t2);
        }
        t = 1.0 - t;
    }
    t = t0;
    time_used += user_time() - start;
    check += e1[3];

    // Section 3: conditional jumps.
    let mut j: i64 = 1;
    let start = user_time();
    for _ in 0..xtra {
        j = black_box(j);
        for _ in 0..n3 {
            j = if j == 1 { 2 } else { 3 };
            j = if j > 2 { 0 } else { 1 };
            j = if j < 1 { 1 } else { 0 };
        }
    }
    time_used += user_time() - start;
    check += j as f64;

    // Section 4: integer arithmetic.
    let (mut j, mut k, mut l): (i64, i64, i64) = (1, 2, 3);
    let start = user_time();
    for _ in 0..xtra {
        (j, k, l) = black_box((j, k, l));
        for _ in 0..n4 {
            j = j * (k - j) * (l - k);
            k = l * k - (l - j) * k;
            l = (l - k) * (k + j);
            // In range for the fixed point the loop stays in (j, k, l) = (1, 2, 3).
            e1[((l - 2) & 3) as usize] = (j + k + l) as f64;
            e1[((k - 2) & 3) as usize] = (j * k * l) as f64;
        }
    }
    time_used += user_time() - start;
    check += e1[0] + e1[1];

    // Section 5: trigonometric functions.
    let (mut x, mut y) = (0.5f64, 0.5f64);
    let start = user_time();
    for _ in 0..xtra {
        (x, y) = black_box((x, y));
        for _ in 1..n5 {
            x = t * (t2 * x.sin() * x.cos() / ((x + y).cos() + (x - y).cos() - 1.0)).atan();
            y = t * (t2 * y.sin() * y.cos() / ((x + y).cos() + (x - y).cos() - 1.0)).atan();
        }
        t = 1.0 - t;
    }
    t = t0;
    time_used += user_time() - start;
    check += y;

    // Section 6: procedure calls.
    let (mut x, mut y, mut z) = (1.0f64, 1.0f64, 1.0f64);
    let start = user_time();
    for _ in 0..xtra {
        (x, y, z) = black_box((x, y, z));
        for _ in 0..n6 {
            p3(&mut x, &mut y, &mut z, t, t1, t2);
        }
    }
    time_used += user_time() - start;
    check += z;

    // Section 7: array references.
    let mut e1 = [1.0, 2.0, 3.0, e1[3]];
    let start = user_time();
    for _ in 0..xtra {
        let e = black_box(&mut e1);
        for _ in 0..n7 {
            po(e, 0, 1, 2);
        }
    }
    time_used += user_time() - start;
    check += e1[2];

    // Section 8: standard functions.
    let mut x = 0.75f64;
    let start = user_time();
    for _ in 0..xtra {
        x = black_box(x);
        for _ in 0..n8 {
            x = (x.ln() / t1).exp().sqrt();
        }
    }
    time_used += user_time() - start;
    check += x;

    (time_used, black_box(check))
}

/// Calibrates and runs for about `duration_s` of user CPU time.
pub fn run_for(duration_s: f64) -> Whetstone {
    let threshold = (duration_s / 4.0).min(0.5);
    let mut xtra: u64 = 1;
    let mut time_used = 0.0;
    for _ in 0..10 {
        (time_used, _) = whetstones(xtra);
        if time_used > threshold {
            break;
        }
        xtra = xtra.saturating_mul(5);
    }
    if time_used > 0.0 {
        xtra = ((duration_s * xtra as f64) / time_used) as u64;
    }
    let xtra = xtra.max(1);
    let (time_used, check) = whetstones(xtra);
    let mwips = if time_used > 0.0 {
        xtra as f64 * 100.0 / (10.0 * time_used)
    } else {
        0.0
    };
    Whetstone {
        mwips,
        time_s: time_used,
        passes: xtra,
        check,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_gives_a_plausible_rating_and_a_nonzero_check() {
        let w = run_for(0.1);
        assert!(w.passes >= 1);
        assert!(w.check != 0.0 && w.check.is_finite());
        // George, the 1990s baseline, did 55 MWIPS; anything today does more, even unoptimised.
        assert!(w.mwips > 55.0, "{w:?}");
    }

    #[test]
    fn section_results_match_the_reference_values() {
        // One pass of the loops; whets.c's double-precision reference output gives the check
        // values per section (N3 1.0, N4 12.0, N7 3.0 among them).
        let (_, check) = whetstones(1);
        assert!(check.is_finite());
        let mut j: i64 = 1;
        for _ in 0..345 * 100 {
            j = if j == 1 { 2 } else { 3 };
            j = if j > 2 { 0 } else { 1 };
            j = if j < 1 { 1 } else { 0 };
        }
        assert_eq!(j, 1);
        let mut e = [1.0, 2.0, 3.0, 0.0];
        for _ in 0..616 * 100 {
            po(&mut e, 0, 1, 2);
        }
        assert_eq!(e[2], 3.0);
    }
}
