//! Median and coefficient of variation over repetitions, and grouping samples into metrics.

use std::collections::BTreeMap;

use super::Sample;
use crate::results::schema::Metric;

/// Median of `values` (mean of the middle two for an even count); 0 for none.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Coefficient of variation: sample standard deviation (n - 1) over the mean; 0 with fewer than
/// two values or a zero mean.
pub fn cv(values: &[f64]) -> f64 {
    let n = values.len();
    if n < 2 {
        return 0.0;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if mean == 0.0 {
        return 0.0;
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    var.sqrt() / mean.abs()
}

/// Groups the samples of every repetition by metric name, keeping first-seen order.
pub fn aggregate(repetitions: &[Vec<Sample>]) -> Result<Vec<Metric>, String> {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut index = BTreeMap::new();
    for samples in repetitions {
        for s in samples {
            if !s.value.is_finite() {
                return Err(format!(
                    "metric {} has a non-finite value {}",
                    s.metric, s.value
                ));
            }
            match index.get(&s.metric) {
                Some(&i) => {
                    let m: &mut Metric = &mut metrics[i];
                    if m.unit != s.unit {
                        return Err(format!(
                            "metric {} changes unit from {} to {}",
                            s.metric, m.unit, s.unit
                        ));
                    }
                    m.values.push(s.value);
                }
                None => {
                    index.insert(s.metric.clone(), metrics.len());
                    metrics.push(Metric {
                        name: s.metric.clone(),
                        unit: s.unit.clone(),
                        parameters: s.parameters.clone(),
                        higher_is_better: s.higher_is_better,
                        values: vec![s.value],
                        median: 0.0,
                        cv: 0.0,
                    });
                }
            }
        }
    }
    for m in &mut metrics {
        m.median = median(&m.values);
        m.cv = cv(&m.values);
    }
    Ok(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metric: &str, value: f64) -> Sample {
        Sample {
            metric: metric.into(),
            unit: "u".into(),
            parameters: BTreeMap::new(),
            higher_is_better: true,
            value,
        }
    }

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[7.0]), 7.0);
    }

    #[test]
    fn cv_matches_hand_computation() {
        // mean 5, sample variance ((-3)^2 + 0 + 3^2) / 2 = 9, sd 3, cv 0.6
        assert!((cv(&[2.0, 5.0, 8.0]) - 0.6).abs() < 1e-12);
        assert_eq!(cv(&[5.0]), 0.0);
        assert_eq!(cv(&[0.0, 0.0]), 0.0);
        assert_eq!(cv(&[4.0, 4.0, 4.0]), 0.0);
    }

    #[test]
    fn aggregate_groups_by_name_in_order() {
        let reps = vec![
            vec![sample("b", 1.0), sample("a", 10.0)],
            vec![sample("b", 3.0), sample("a", 30.0)],
            vec![sample("b", 2.0), sample("a", 20.0)],
        ];
        let m = aggregate(&reps).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name, "b");
        assert_eq!(m[0].values, [1.0, 3.0, 2.0]);
        assert_eq!(m[0].median, 2.0);
        assert_eq!(m[1].median, 20.0);
        assert!((m[1].cv - 0.5).abs() < 1e-12);
    }

    #[test]
    fn aggregate_rejects_nan_and_unit_changes() {
        assert!(aggregate(&[vec![sample("a", f64::NAN)]]).is_err());
        let mut other = sample("a", 1.0);
        other.unit = "v".into();
        assert!(aggregate(&[vec![sample("a", 1.0)], vec![other]]).is_err());
    }
}
