//! A node: recovers from its WAL and checkpoint, serves the receivers, seals and commits batches.
//!
//! # Life of a block
//!
//! 1. A receiver calls [`Node::ingest`]. A `(source, seq)` that is durable already is acknowledged again
//!    without a second copy; one that is in flight waits for the first copy's outcome.
//! 2. The block is appended to the WAL; `ingest` returns once the fdatasync covering it is done, and only
//!    then does the receiver acknowledge it (*durable*).
//! 3. Every `batch.interval` the batcher appends a **seal** record. The batch is every block between the
//!    previous seal and this one, in LSN order — decided by the log, so a replay cuts the same batches.
//! 4. The batch is streamed back out of the WAL into the sink, staged and published with one rename,
//!    then a checkpoint (epoch, the committed seal, the WAL low-water mark, every source's durable
//!    sequence numbers) is written; WAL segments below the low-water mark are deleted, and the
//!    framed connections get *committed* acknowledgements.
//!
//! # Recovery
//!
//! Open the WAL (a torn tail is truncated; corruption elsewhere stops the start-up unless
//! `wal.salvage`), claim a new epoch, read the newest checkpoint and the batch log above it, fence the
//! log to older epochs and resolve each claim found there (void it, or count its members committed:
//! [`strategies::takeover::plan_takeover`], docs/STRATEGIES.md), then scan the WAL to rebuild the
//! durable and uncommitted sets. Every block not committed goes into the next batch, under a new batch
//! number and a batch time after every claimed one, so a crash at any point costs a re-run, never a
//! duplicate or an overwrite.
//!
//! # Files
//!
//! This file defines [`Node`], its shared state and its small accessors; each stage has a file, and a
//! file uses only this one and the files listed after it:
//!
//! - `run.rs`: the life cycle as a process runs it ([`start_node`], [`run_node`], [`RunningNode`]).
//! - `intake.rs`: the node as the receivers see it ([`crate::receiver::Intake`]).
//! - `open.rs`: opening the WAL, the checkpoint store and the output ([`Node::open`],
//!   [`Node::open_standby`], [`open_store`], [`open_output`]).
//! - `takeover.rs`: recovery — standing by ([`Node::refresh_committed`]) and becoming the primary
//!   ([`Node::become_primary`]).
//! - `commit.rs`: steps 3 and 4 — the batcher ([`Node::run_batcher`]), sealing and committing a batch
//!   ([`Node::seal_and_commit`]) and the last commit at [`Node::shutdown`].
//! - `carried.rs`: `passive-standby`'s carried-block checkpoints ([`Node::checkpoint_blocks`]) and
//!   their encoding.
//! - `ingest.rs`: steps 1 and 2 — [`Node::ingest`], and the WAL's disk budget.
//! - `fence.rs`: the check that stops a node a newer epoch replaced ([`Node::check_fence`]).
//! - `state.rs`: what is durable, committed, in flight and connected, and its checkpoint snapshot.
//! - `record.rs`: the WAL records, blocks and seals ([`NodeRecord`]).
//! - `error.rs`: [`NodeError`].

mod carried;
mod commit;
mod error;
mod fence;
mod ingest;
mod intake;
mod open;
mod record;
mod run;
mod state;
mod takeover;

/// `passive-standby`'s checkpointed-block objects, public only for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub use carried::{decode as decode_carried, CarriedBlock, Encoder as CarriedEncoder};
pub use commit::next_batch_ms;
pub use error::NodeError;
pub use open::{hdfs_options, open_output, open_store};
pub use record::{decode, encode_block, encode_seal, NodeRecord, KIND_BLOCK, KIND_SEAL};
pub use run::{run_node, start_node, RunningNode};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use strategies::checkpoint::Checkpointer;
use strategies::store::CheckpointStore;
use strategies::Strategy;
use tokio::sync::{watch, Semaphore};
use tracing::error;

use crate::config::Config;
use crate::protocol::{Role, RoleInfo};
use crate::sink::Output;
use crate::wal::{Lsn, Wal};
use state::State;

/// Counters for logs, the demo and the benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    pub blocks: AtomicU64,
    pub bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    pub committed_blocks: AtomicU64,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: Config,
    wal: Wal,
    output: Arc<dyn Output>,
    store: Arc<dyn CheckpointStore>,
    checkpointer: Checkpointer,
    strategy: Strategy,
    epoch: AtomicU64,
    /// Primary (commits output) or standby (only makes blocks durable), and the epoch it claimed (0
    /// before it ever became primary): the framed receiver announces it to protocol-v2 senders.
    role: watch::Sender<RoleInfo>,
    state: Mutex<State>,
    /// Bytes of blocks read off sockets and not yet durable, over all connections (in KiB permits).
    inflight: Arc<Semaphore>,
    last_block_lsn: AtomicU64,
    next_conn_id: AtomicU64,
    stats: Stats,
    /// Set when the node must stop: a shutdown request or a fatal error.
    stop: watch::Sender<Option<String>>,
    /// Signalled when WAL segments are released (room under the disk budget).
    wal_freed: tokio::sync::Notify,
    over_budget: std::sync::atomic::AtomicBool,
    /// Set while a disk of the WAL or the local output is under `wal.min_free` (backpressure).
    low_disk: std::sync::atomic::AtomicBool,
    /// Serializes checkpoint writes (batch commits and carried-block checkpoints); holds the previous
    /// carried-block checkpoint's instant and WAL position (`strategy.carry = "lagging"`).
    ckpt_lock: tokio::sync::Mutex<Option<(Instant, Lsn)>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Node {
    pub fn is_primary(&self) -> bool {
        self.inner.role.borrow().role == Role::Primary
    }

    pub fn strategy(&self) -> Strategy {
        self.inner.strategy
    }

    /// The id of the newest checkpoint this node wrote or started from.
    pub fn checkpoint_id(&self) -> u64 {
        self.state().checkpoint_id
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn config(&self) -> &Config {
        &self.inner.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Acquire)
    }

    pub fn output_dir(&self) -> PathBuf {
        self.inner.cfg.output_dir()
    }

    /// A receiver that stops on this resolves when the node is told to stop.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.stop.subscribe();
        async move {
            let _ = rx.wait_for(|v| v.is_some()).await;
        }
    }

    /// Asks the node to stop (receivers close, the last batch is committed).
    pub fn request_stop(&self, why: &str) {
        self.inner.stop.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(why.to_string());
                true
            } else {
                false
            }
        });
    }

    fn fail(&self, why: String) {
        error!(reason = %why, "node failed; stopping");
        self.request_stop(&format!("fatal: {why}"));
    }

    /// Like [`Node::fail`], also when a stop was requested already: what failed while stopping
    /// (a panic in the commit the stop waits for) must not be finished as a clean stop.
    fn fail_even_if_stopping(&self, why: String) {
        error!(reason = %why, "node failed; stopping");
        self.inner
            .stop
            .send_modify(|v| *v = Some(format!("fatal: {why}")));
    }

    /// Why the node stopped, if it did.
    pub fn stop_reason(&self) -> Option<String> {
        self.inner.stop.borrow().clone()
    }
}

#[cfg(test)]
mod state_tests;
#[cfg(test)]
pub(crate) mod tests;
