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
    #[error("node failed: {0}")]
    Failed(String),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
