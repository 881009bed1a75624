//! The node's error type. Corruption (of the WAL, of a checkpoint) stays distinct from I/O all the way up,
//! so an operator can tell "the disk said no" from "the data is damaged".

use crate::wal::WalError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Wal(#[from] WalError),
    #[error(transparent)]
    Store(#[from] strategies::store::StoreError),
    #[error(transparent)]
    Checkpoint(#[from] strategies::checkpoint::CheckpointError),
    #[error(transparent)]
    Epoch(#[from] strategies::epoch::EpochError),
    #[error(transparent)]
    Claim(#[from] strategies::claims::ClaimError),
    /// A newer epoch took over: this node must not write anything more.
    #[error("{0}")]
    Fenced(String),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error("WAL record {lsn} cannot be decoded: {reason}")]
    Record { lsn: u64, reason: String },
    #[error(transparent)]
    Receiver(#[from] crate::receiver::ReceiverError),
    /// This block cannot be taken (it costs only its sender).
    #[error("block refused: {0}")]
    Refused(String),
    /// A batch commit that made no progress for `batch.commit_timeout`; retried at the next interval.
    #[error("batch {batch} made no progress for batch.commit_timeout ({}): the output {output} or the checkpoint store is not answering; the attempt is abandoned and the batch retried under the same name", humantime::format_duration(*timeout))]
    CommitTimeout {
        batch: String,
        output: String,
        timeout: std::time::Duration,
    },
    #[error("node failed: {0}")]
    Failed(String),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// An error and every source under it, `outer: inner: …`, skipping a source whose text the outer
/// message already carries: what a log line needs to say *why* (an ENOSPC under a sink error).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(src) = next {
        let text = src.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = src.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_the_os_error_under_a_wrapping_error_once() {
        let io = std::io::Error::from_raw_os_error(28);
        let wrapped = crate::sink::SinkError::Io {
            output: "file:///o".into(),
            path: "x".into(),
            op: "write",
            source: io,
        };
        let text = chain(&wrapped);
        assert!(text.contains("os error 28"), "{text}");
        assert_eq!(text.matches("os error 28").count(), 1, "{text}");
    }
}
