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

mod carried;
mod commit;
mod error;
mod fence;
mod ingest;
mod intake;
mod record;
mod run;
mod state;
mod takeover;

pub use commit::next_batch_ms;
pub use error::NodeError;
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
use tracing::{error, info};

use crate::config::{Config, StoreConfig};
use crate::protocol::{Role, RoleInfo};
use crate::sink::{self, Output};
use crate::wal::{Lsn, Wal, WalOptions};
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

/// The HDFS client settings of a configuration.
pub fn hdfs_options(cfg: &Config) -> strategies::store::hdfs::HdfsOptions {
    strategies::store::hdfs::HdfsOptions {
        user: cfg.hdfs.user.clone(),
        hadoop_conf_dir: cfg.hdfs.hadoop_conf_dir.clone(),
        config: cfg
            .hdfs
            .client
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Opens the checkpoint store a configuration names.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn CheckpointStore>, NodeError> {
    use strategies::store::{hdfs::HdfsStore, object::ObjectStoreBackend, sled::SledStore};
    let store: Arc<dyn CheckpointStore> = match &cfg.checkpoint.store {
        StoreConfig::Sled { .. } => {
            let path = cfg.sled_path().expect("sled store has a path");
            Arc::new(tokio::task::spawn_blocking(move || SledStore::open(&path)).await??)
        }
        StoreConfig::Local { path } => Arc::new(ObjectStoreBackend::local(path)?),
        StoreConfig::Memory => Arc::new(ObjectStoreBackend::memory()),
        StoreConfig::Hdfs { url } => {
            let (base, root) = crate::config::split_hdfs_url(url).map_err(|reason| {
                NodeError::Config(crate::config::ConfigError::Invalid {
                    key: "checkpoint.store.url".into(),
                    reason,
                })
            })?;
            Arc::new(HdfsStore::connect(&base, &root, hdfs_options(cfg)).await?)
        }
    };
    Ok(store)
}

/// Opens the output a configuration names: a local directory, or a directory on HDFS.
pub async fn open_output(cfg: &Config) -> Result<Arc<dyn Output>, NodeError> {
    Ok(match cfg.hdfs_output() {
        Some(url) => Arc::new(sink::hdfs::HdfsOutput::connect(url, hdfs_options(cfg)).await?),
        None => Arc::new(sink::local::LocalOutput::new(cfg.output_dir())?),
    })
}

impl Node {
    /// Opens the node as the primary: recovers and becomes the committer (see [`Node::become_primary`]).
    pub async fn open(cfg: Config) -> Result<Node, NodeError> {
        let node = Node::open_standby(cfg).await?;
        node.become_primary().await?;
        Ok(node)
    }

    /// Opens the WAL, the checkpoint store and the output without claiming anything: the state of an
    /// `active-standby` standby, which receives blocks and never commits until [`Node::become_primary`].
    pub async fn open_standby(cfg: Config) -> Result<Node, NodeError> {
        let opts = WalOptions {
            dir: cfg.wal_dir(),
            segment_size: cfg.wal.segment_size.as_u64(),
            salvage: cfg.wal.salvage,
        };
        let (wal, report) = tokio::task::spawn_blocking(move || Wal::open(opts)).await??;
        info!(dir = %wal.dir().display(), segments = report.segments, records = report.records,
              truncated_bytes = report.truncated_bytes, "WAL opened");
        let store = open_store(&cfg).await?;
        let checkpointer = Checkpointer::new(store.clone());
        let output = open_output(&cfg).await?;
        let (stop, _) = watch::channel(None);
        let (role, _) = watch::channel(RoleInfo {
            role: Role::Standby,
            epoch: 0,
        });
        let budget_kib = (cfg.receiver.max_block_size.as_u64().max(256 << 20) >> 10) as usize;
        let node = Node {
            inner: Arc::new(Inner {
                wal,
                output,
                store,
                checkpointer,
                strategy: cfg.strategy.kind,
                epoch: AtomicU64::new(0),
                role,
                state: Mutex::new(State::default()),
                inflight: Arc::new(Semaphore::new(budget_kib)),
                last_block_lsn: AtomicU64::new(0),
                next_conn_id: AtomicU64::new(1),
                stats: Stats::default(),
                stop,
                wal_freed: tokio::sync::Notify::new(),
                over_budget: std::sync::atomic::AtomicBool::new(false),
                ckpt_lock: tokio::sync::Mutex::new(None),
                cfg,
            }),
        };
        let (st, last_block) = node.scan_wal(State::default(), 1).await?;
        *node.state() = st;
        node.inner
            .last_block_lsn
            .fetch_max(last_block, Ordering::AcqRel);
        node.refresh_committed().await?;
        Ok(node)
    }

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

    /// Why the node stopped, if it did.
    pub fn stop_reason(&self) -> Option<String> {
        self.inner.stop.borrow().clone()
    }
}

#[cfg(test)]
pub(crate) mod tests;
