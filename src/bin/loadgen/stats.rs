//! Percentiles, drift and the linear fit of round-trip samples.

use serde::{Deserialize, Serialize};

/// The `q`-th quantile (0..=1) of sorted values, interpolating linearly between ranks.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    quantile(&v, 0.5)
}

/// Least-squares slope of `y` over `x`; `None` with fewer than two distinct `x`.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// Round trips of one run step, in milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RttStats {
    /// Markers timed.
    pub count: usize,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Length of each end window the drift compares, in seconds.
    pub edge_secs: f64,
    /// Median over the first `edge_secs` of the window.
    pub first_ms: Option<f64>,
    /// Median over the last `edge_secs` of the window.
    pub last_ms: Option<f64>,
    /// `last_ms - first_ms`.
    pub drift_ms: Option<f64>,
    /// Slope of the least-squares line through every sample, in ms per minute.
    pub slope_ms_per_min: Option<f64>,
}

impl RttStats {
    /// Statistics of `(seconds since the window opened, round trip ms)` samples taken over a
    /// window of `window_secs`. Drift compares the first and last 10 s (a third of the window
    /// if it is shorter than 30 s).
    pub fn from_samples(samples: &[(f64, f64)], window_secs: f64) -> Option<RttStats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted: Vec<f64> = samples.iter().map(|s| s.1).collect();
        sorted.sort_by(f64::total_cmp);
        let q = |p| quantile(&sorted, p).unwrap_or(f64::NAN);
        let edge = 10f64.min(window_secs / 3.0);
        let first: Vec<f64> = samples.iter().filter(|s| s.0 < edge).map(|s| s.1).collect();
        let last: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 >= window_secs - edge)
            .map(|s| s.1)
            .collect();
        let first_ms = median(&first);
        let last_ms = median(&last);
        let per_min: Vec<(f64, f64)> = samples.iter().map(|s| (s.0 / 60.0, s.1)).collect();
        Some(RttStats {
            count: sorted.len(),
            min_ms: sorted[0],
            p50_ms: q(0.5),
            p90_ms: q(0.9),
            p99_ms: q(0.99),
            max_ms: sorted[sorted.len() - 1],
            edge_secs: edge,
            first_ms,
            last_ms,
            drift_ms: first_ms.zip(last_ms).map(|(a, b)| b - a),
            slope_ms_per_min: slope(&per_min),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        let v: Vec<f64> = (1..=101).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(51.0));
        assert_eq!(quantile(&v, 0.9), Some(91.0));
        assert_eq!(quantile(&v, 0.99), Some(100.0));
        assert_eq!(quantile(&[1.0, 2.0], 0.5), Some(1.5));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
    }

    #[test]
    fn slope_of_a_line() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 1.0)).collect();
        assert!((slope(&pts).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0)]), None);
    }

    #[test]
    fn flat_round_trips_have_no_drift() {
        let samples: Vec<(f64, f64)> = (0..600).map(|i| (i as f64 * 0.1, 40.0)).collect();
        let s = RttStats::from_samples(&samples, 60.0).unwrap();
        assert_eq!(s.p50_ms, 40.0);
        assert_eq!(s.drift_ms, Some(0.0));
        assert_eq!(s.slope_ms_per_min, Some(0.0));
        assert_eq!(s.edge_secs, 10.0);
    }

    #[test]
    fn climbing_round_trips_show_drift_and_slope() {
        // 2 ms more every second: 120 ms per minute; the end windows' medians are 50 s apart.
        let samples: Vec<(f64, f64)> = (0..60).map(|i| (i as f64, 40.0 + 2.0 * i as f64)).collect();
        let s = RttStats::from_samples(&samples, 60.0).unwrap();
        assert!((s.slope_ms_per_min.unwrap() - 120.0).abs() < 1e-6);
        assert!((s.drift_ms.unwrap() - 100.0).abs() < 1e-6);
        assert_eq!(s.min_ms, 40.0);
        assert_eq!(s.max_ms, 158.0);
    }

    #[test]
    fn short_windows_compare_thirds() {
        let samples = [(0.5, 10.0), (5.0, 20.0), (9.5, 30.0)];
        let s = RttStats::from_samples(&samples, 10.0).unwrap();
        assert!((s.edge_secs - 10.0 / 3.0).abs() < 1e-9);
        assert_eq!(s.first_ms, Some(10.0));
        assert_eq!(s.last_ms, Some(30.0));
        assert_eq!(RttStats::from_samples(&[], 10.0), None);
    }
}
