//! The numbers of the benches, in one place: percentiles, ratios, and how a figure is printed (`send
//! push` and the demo print their ack latencies with [`fmt_ms`] too).
//!
//! Two percentile rules, one per kind of figure, kept apart because changing either would change a
//! published table:
//!
//! - [`percentiles`]: p50 and p99 of many latency samples (`bench hdfs`'s checkpoint writes and
//!   reads): the sample at index round((n − 1) · p) of the sorted samples.
//! - `spread`: p50 and p99 of one figure over a handful of runs (`bench recovery`): nearest rank,
//!   the smallest value with at least p · n of the runs at or below it — so p99 over 5 runs is the
//!   worst run, not an interpolation between runs that never happened.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

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

/// p50 and p99 of one figure over runs (nearest rank).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Spread {
    pub p50: f64,
    pub p99: f64,
}

/// The [`Spread`] of the finite values (nearest rank); none without one.
pub(crate) fn spread(mut v: Vec<f64>) -> Option<Spread> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
    Some(Spread {
        p50: at(0.5),
        p99: at(0.99),
    })
}

/// `x`'s p50 ÷ `base`'s p50, when both were measured and `base`'s is above 0.
pub(crate) fn p50_ratio(x: Option<Spread>, base: Option<Spread>) -> Option<f64> {
    match (x, base) {
        (Some(x), Some(y)) if y.p50 > 0.0 => Some(x.p50 / y.p50),
        _ => None,
    }
}

/// A table cell `p50 / p99` with `digits` decimals, `-` when not measured.
pub(crate) fn spread_cell(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) => format!("{:.d$} / {:.d$}", s.p50, s.p99, d = digits),
        None => "-".into(),
    }
}

/// What follows a cell that has a ratio: ` (×1.23)`; nothing without one.
pub(crate) fn ratio_cell(r: Option<f64>) -> String {
    r.map_or(String::new(), |r| format!(" (×{r:.2})"))
}

/// Milliseconds from `from` to `to`, negative when `to` came first.
pub(crate) fn ms_between(from: Instant, to: Instant) -> f64 {
    if to >= from {
        to.duration_since(from).as_secs_f64() * 1e3
    } else {
        -(from.duration_since(to).as_secs_f64() * 1e3)
    }
}

/// Cores, CPU, kernel, date: what a reader needs to compare figures across machines.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub date: String,
}

pub(crate) fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel,
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_over_runs_are_nearest_rank() {
        let s = spread(vec![5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((s.p50, s.p99), (3.0, 5.0));
        let s = spread(vec![7.0]).unwrap();
        assert_eq!((s.p50, s.p99), (7.0, 7.0));
        assert!(spread(vec![]).is_none());
    }
}
