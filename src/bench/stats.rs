//! The numbers of the benches, in one place: how a duration is printed (also by `send push` and the
//! demo, which report the same ack latencies).

use std::time::Duration;

/// A duration in milliseconds with two decimals (`"1.25 ms"`), `"-"` for none (no sample).
pub fn fmt_ms(d: Option<Duration>) -> String {
    d.map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}
