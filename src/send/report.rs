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
}

impl PushReport {
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
    }
}
