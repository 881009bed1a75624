//! What a push did, and why one failed.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("node {address} refused the stream: {reason}")]
    Refused { address: String, reason: String },
    #[error("gave up on {} after {after:?} without progress: {last_error}", targets.join(", "))]
    GaveUp {
        targets: Vec<String>,
        after: Duration,
        last_error: String,
    },
    /// A node said it already held blocks of this stream that this run had never sent before: the
    /// source id was used by an earlier run (or another sender), so nothing of them was stored.
    #[error(
        "source {source_id} was used before: {address} already held {seqs} when this run first sent \
         them, so it stored nothing new of them (a node takes (source, seq) for the identity of an \
         image). Run again with another --source-prefix (without one, every run gets a fresh \
         send-<unix ms>), or with --resume if this run continues that one with the same images"
    )]
    SourceReused {
        source_id: String,
        address: String,
        /// The seqs, as `seq 3` or `seqs 0-12, 15`.
        seqs: String,
    },
    #[error("push options: {0}")]
    Options(String),
    #[error("manifest: {0}")]
    Manifest(#[from] std::io::Error),
}

/// What a push did.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    /// Images sent (each once, however often re-sent).
    pub sent: u64,
    /// Images released (framed) — each exactly once.
    pub acked: u64,
    /// Image bytes sent (each image once).
    pub bytes: u64,
    /// Bytes written to all nodes: hellos and frames, re-sends and mirror copies included.
    pub bytes_sent_total: u64,
    /// Blocks sent again (after a reconnect or a failover).
    pub resent: u64,
    /// Connections lost or refused (framed), failed sends (raw).
    pub reconnects: u64,
    /// Times a failover stream moved on to another target.
    pub failovers: u64,
    /// The most blocks and bytes kept at once, over all streams (framed).
    pub peak_retained_blocks: u64,
    pub peak_retained_bytes: u64,
    pub elapsed: Duration,
    /// Ack latency of every released block (framed): from its last send to the first ack from the node
    /// that counts (failover: the one talked to; mirror: the primary).
    pub latencies: Vec<Duration>,
    /// Images sent and not released when the push ended early (a stop, a failure): in the manifest
    /// as not acknowledged.
    pub unreleased: u64,
    /// The push was told to stop (SIGINT, SIGTERM) before it sent every image.
    pub interrupted: bool,
}

impl PushReport {
    /// One line: what was pushed and how fast (what `send push` prints).
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let ms = |d: Option<Duration>| {
            d.map_or("-".to_string(), |d| {
                format!("{:.2} ms", d.as_secs_f64() * 1e3)
            })
        };
        format!(
            "pushed {} images ({} acked, {} re-sent, {} reconnects, {} failovers), {:.1} MB in {:.2} s: {:.0} images/s, {:.1} MB/s, {:.1} MB on the wire, ack p50 {} p99 {}",
            self.sent,
            self.acked,
            self.resent,
            self.reconnects,
            self.failovers,
            self.bytes as f64 / 1e6,
            secs,
            self.sent as f64 / secs,
            self.bytes as f64 / 1e6 / secs,
            self.bytes_sent_total as f64 / 1e6,
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
        )
    }

    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    pub(super) fn merge(&mut self, o: PushReport) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.bytes += o.bytes;
        self.resent += o.resent;
        self.reconnects += o.reconnects;
        self.failovers += o.failovers;
        self.latencies.extend(o.latencies);
        self.unreleased += o.unreleased;
    }
}

/// `seq 3`, or `seqs 0-12, 15` (sorted, runs joined).
pub(super) fn seq_ranges(seqs: &[u64]) -> String {
    let mut v = seqs.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for s in v {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == s => *end = s,
            _ => runs.push((s, s)),
        }
    }
    let text: Vec<String> = runs
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let word = if seqs.len() == 1 { "seq" } else { "seqs" };
    format!("{word} {}", text.join(", "))
}

#[cfg(test)]
mod tests {
    #[test]
    fn seqs_are_named_as_sorted_runs() {
        assert_eq!(super::seq_ranges(&[3]), "seq 3");
        assert_eq!(super::seq_ranges(&[2, 0, 1, 5, 7, 6]), "seqs 0-2, 5-7");
    }
}
