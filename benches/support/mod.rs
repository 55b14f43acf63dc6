//! Shared by the bench binaries: milliseconds and the median/p95 summary they report.

use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// (median, p95, n) of a sample in milliseconds.
pub fn stats(samples: &[f64]) -> (f64, f64, usize) {
    let mut s = samples.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = s.len();
    assert!(n > 0);
    let median = if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    };
    let p95 = s[((0.95 * n as f64).ceil() as usize).clamp(1, n) - 1];
    (median, p95, n)
}
