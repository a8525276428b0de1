//! UnixBench 5.1.3 scoring: how `Run` turns passes into a test score and scores into indexes.
//!
//! A pass reports `COUNT|count|timebase|unit` and a time. Its rate is `count / (time /
//! timebase)`, or `count` itself when the timebase is 0 (fstime, whetstone report rates). `Run`
//! sorts the passes by COUNT, drops the lowest `floor(n / 3)` and takes the geometric mean of
//! the rates of the rest. An N-copy pass sums the copies' COUNTs and averages their times. The
//! index of a test is `10 * score / baseline` with the baselines of `pgms/index.base` (George, a
//! SPARCstation 20-61); the system index is the geometric mean of the test indexes.

use serde::{Deserialize, Serialize};

/// What one pass (of one copy, or merged over copies) reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Pass {
    /// The COUNT field.
    pub count: f64,
    /// Seconds the pass took (the TIME line).
    pub time_s: f64,
    /// The timebase field: 0 when `count` is already a rate, else seconds per unit of the rate
    /// (1 for per second, 60 for per minute).
    pub timebase: f64,
}

impl Pass {
    /// The pass's rate in the test's unit.
    pub fn rate(&self) -> f64 {
        if self.timebase > 0.0 {
            self.count / (self.time_s / self.timebase)
        } else {
            self.count
        }
    }
}

/// Merges the copies of one N-copy pass as `Run` does: COUNTs summed, times averaged.
pub fn merge_copies(copies: &[Pass]) -> Result<Pass, String> {
    let first = copies.first().ok_or("no copies to merge")?;
    if copies.iter().any(|c| c.timebase != first.timebase) {
        return Err("copies report different timebases".into());
    }
    let n = copies.len() as f64;
    Ok(Pass {
        count: copies.iter().map(|c| c.count).sum(),
        time_s: copies.iter().map(|c| c.time_s).sum::<f64>() / n,
        timebase: first.timebase,
    })
}

/// A test's score over its passes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TestScore {
    /// Geometric mean of the kept rates.
    pub score: f64,
    /// Passes kept.
    pub kept: usize,
    /// Passes dropped (the lowest third by COUNT).
    pub dropped: usize,
    /// Total time of the kept passes, seconds.
    pub time_s: f64,
}

/// Sorts by COUNT, drops the lowest `floor(n/3)`, and takes the geometric mean of the rates of
/// the rest. Passes with a non-positive count or time cannot enter a geometric mean: an error.
pub fn combine_passes(passes: &[Pass]) -> Result<TestScore, String> {
    if passes.is_empty() {
        return Err("no passes".into());
    }
    for p in passes {
        if !(p.count.is_finite() && p.count > 0.0) {
            return Err(format!("a pass counted {} (must be positive)", p.count));
        }
        if p.timebase > 0.0 && !(p.time_s.is_finite() && p.time_s > 0.0) {
            return Err(format!("a pass took {} s (must be positive)", p.time_s));
        }
    }
    let mut sorted = passes.to_vec();
    sorted.sort_by(|a, b| a.count.total_cmp(&b.count));
    let dropped = sorted.len() / 3;
    let kept = &sorted[dropped..];
    let log_sum: f64 = kept.iter().map(|p| p.rate().ln()).sum();
    Ok(TestScore {
        score: (log_sum / kept.len() as f64).exp(),
        kept: kept.len(),
        dropped,
        time_s: kept.iter().map(|p| p.time_s).sum(),
    })
}

/// The index of a score against its baseline: 10 at the baseline.
pub fn index(score: f64, baseline: f64) -> f64 {
    10.0 * score / baseline
}

/// The system index: `10 * exp(mean(ln(score / baseline)))` over the tests given as
/// `(score, baseline)`; `None` for no tests.
pub fn system_index(scores: &[(f64, f64)]) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let mean = scores.iter().map(|(s, b)| (s / b).ln()).sum::<f64>() / scores.len() as f64;
    Some(10.0 * mean.exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lps(count: f64, time_s: f64) -> Pass {
        Pass {
            count,
            time_s,
            timebase: 1.0,
        }
    }

    #[test]
    fn ten_passes_keep_seven_and_three_keep_two() {
        let passes: Vec<Pass> = (1..=10).map(|c| lps(c as f64, 1.0)).collect();
        let s = combine_passes(&passes).unwrap();
        assert_eq!((s.kept, s.dropped), (7, 3));
        // Geometric mean of 4..=10.
        let expect = ((4..=10).map(|c| (c as f64).ln()).sum::<f64>() / 7.0).exp();
        assert!((s.score - expect).abs() < 1e-9, "{} vs {expect}", s.score);
        let s = combine_passes(&passes[..3]).unwrap();
        assert_eq!((s.kept, s.dropped), (2, 1));
        assert!((s.score - (2.0f64 * 3.0).sqrt()).abs() < 1e-12);
        let s = combine_passes(&passes[..2]).unwrap();
        assert_eq!((s.kept, s.dropped), (2, 0));
        assert_eq!(combine_passes(&passes[..1]).unwrap().score, 1.0);
    }

    #[test]
    fn the_drop_is_by_count_not_by_rate() {
        // Lowest count but fastest rate: Run drops it anyway.
        let passes = [lps(10.0, 0.1), lps(20.0, 1.0), lps(30.0, 1.0)];
        let s = combine_passes(&passes).unwrap();
        assert!((s.score - (600.0f64).sqrt()).abs() < 1e-9);
    }

    #[test]
    fn rates_use_the_timebase() {
        assert_eq!(lps(100.0, 2.0).rate(), 50.0);
        let lpm = Pass {
            count: 10.0,
            time_s: 30.0,
            timebase: 60.0,
        };
        assert_eq!(lpm.rate(), 20.0);
        let kbps = Pass {
            count: 5000.0,
            time_s: 3.0,
            timebase: 0.0,
        };
        assert_eq!(kbps.rate(), 5000.0);
    }

    #[test]
    fn copies_sum_counts_and_average_times() {
        let m = merge_copies(&[lps(100.0, 1.0), lps(300.0, 3.0)]).unwrap();
        assert_eq!((m.count, m.time_s), (400.0, 2.0));
        assert_eq!(m.rate(), 200.0);
        assert!(merge_copies(&[]).is_err());
        let other = Pass {
            timebase: 60.0,
            ..lps(1.0, 1.0)
        };
        assert!(merge_copies(&[lps(1.0, 1.0), other]).is_err());
    }

    #[test]
    fn index_is_ten_at_the_baseline_and_the_system_index_is_a_geometric_mean() {
        assert_eq!(index(116700.0, 116700.0), 10.0);
        assert_eq!(index(233400.0, 116700.0), 20.0);
        let sys = system_index(&[(20.0, 10.0), (80.0, 10.0)]).unwrap();
        // Indexes 20 and 80: geometric mean 40.
        assert!((sys - 40.0).abs() < 1e-9);
        assert_eq!(system_index(&[]), None);
    }

    #[test]
    fn zero_or_negative_passes_are_errors() {
        assert!(combine_passes(&[]).is_err());
        assert!(combine_passes(&[lps(0.0, 1.0)]).is_err());
        assert!(combine_passes(&[lps(1.0, 0.0)]).is_err());
        assert!(combine_passes(&[lps(f64::NAN, 1.0)]).is_err());
    }
}
