//! The numbers of the benches, in one place: percentiles, and how a duration is printed (also by
//! `send push` and the demo, which report the same ack latencies).

use std::time::Duration;

/// A duration in milliseconds with two decimals (`"1.25 ms"`), `"-"` for none (no sample).
pub fn fmt_ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// p50 and p99 of latency samples: the sample at index round((n − 1) · p) of the sorted samples.
/// Panics on no samples.
pub fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    (at(0.5), at(0.99))
}
