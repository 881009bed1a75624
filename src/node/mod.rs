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

pub use commit::next_batch_ms;
pub use error::NodeError;
pub use record::{decode, encode_block, encode_seal, NodeRecord, KIND_BLOCK, KIND_SEAL};
pub use run::{run_node, start_node, RunningNode};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use strategies::checkpoint::Checkpointer;
use strategies::claims::{BatchClaim, ClaimKind, ClaimOutcome};
use strategies::store::CheckpointStore;
use strategies::{plan_takeover, Strategy};
use tokio::sync::{watch, Semaphore};
use tracing::{error, info};

use crate::config::{Config, StoreConfig};
use crate::protocol::{Role, RoleInfo};
use crate::sink::{self, Output, PublishOutcome};
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

    /// Rebuilds the durable and uncommitted sets from the WAL records from `from` on.
    async fn scan_wal(&self, st: State, from: Lsn) -> Result<(State, Lsn), NodeError> {
        let wal = self.inner.wal.clone();
        tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
            let mut st = st;
            let mut last_block = 0;
            for rec in wal.replay(from)? {
                let rec = rec?;
                match decode(rec.kind, rec.payload).map_err(|reason| NodeError::Record {
                    lsn: rec.lsn,
                    reason,
                })? {
                    NodeRecord::Block { source, seq, .. } => {
                        st.mark_durable(&source, seq, rec.lsn);
                        last_block = rec.lsn;
                    }
                    NodeRecord::Seal { .. } => {}
                }
            }
            Ok((st, last_block))
        })
        .await?
    }

    /// Standby: counts everything the newest checkpoint says is committed, and trims the WAL of it.
    pub async fn refresh_committed(&self) -> Result<(), NodeError> {
        let Some(snap) = self.inner.checkpointer.latest().await? else {
            return Ok(());
        };
        let low = {
            let mut st = self.state();
            for (source, set) in &snap.sources {
                let e = st.entry(source);
                e.committed.union_with(set);
                e.durable.union_with(set);
                e.next_raw = e.next_raw.max(set.next_after_highest());
                let committed = e.committed.clone();
                e.uncommitted.retain(|seq, _| !committed.contains(*seq));
            }
            st.lowest_uncommitted()
                .unwrap_or_else(|| self.inner.last_block_lsn.load(Ordering::Acquire))
        };
        if low > 1 && !self.is_primary() {
            self.inner.wal_release(low).await?;
        }
        Ok(())
    }

    /// Becomes the node that commits: claims a new epoch, fences older epochs out of the batch log,
    /// resolves the batches they may have been publishing, rebuilds what is committed and what is not
    /// (from the checkpoint, the batch log, its own WAL and, under `passive-standby`, the checkpointed
    /// blocks), and turns its role to primary. After this returns every block durable here or carried
    /// by a checkpoint is durable in this node's WAL, and the batcher commits what is not committed.
    pub async fn become_primary(&self) -> Result<(), NodeError> {
        let started = Instant::now();
        let cfg = &self.inner.cfg;
        let store = &*self.inner.store;
        let me = cfg.node.name.clone();
        let epoch = strategies::epoch::claim_next(store, &me).await?;
        self.inner.epoch.store(epoch, Ordering::Release);
        let snapshot = self.inner.checkpointer.latest().await?;
        let last_n = snapshot.as_ref().map_or(0, |s| s.last_batch_n);
        let claims = strategies::claims::list_from(store, last_n + 1).await?;
        let mut plan = plan_takeover(self.inner.strategy, snapshot.as_ref(), &claims, &me);
        // Close the batch log to older epochs: a claim of theirs can only land below this one.
        let mut fence = plan.fence_at;
        loop {
            let claim = BatchClaim {
                epoch,
                node: me.clone(),
                claimed_unix_ms: now_ms(),
                kind: ClaimKind::Takeover,
            };
            match strategies::claims::claim(store, fence, &claim).await? {
                ClaimOutcome::Won => break,
                ClaimOutcome::Held(held) if held.epoch > epoch => {
                    return Err(self.fenced(format!(
                        "batch {fence} is claimed by {} of epoch {}",
                        held.node, held.epoch
                    )));
                }
                ClaimOutcome::Held(held) => {
                    if let Some(ms) = held.batch_ms() {
                        plan.batch_ms_floor = plan.batch_ms_floor.max(ms + 1);
                        plan.resolve.push((fence, held));
                    }
                    fence += 1;
                }
            }
        }
        let cleaned = self.inner.output.clean_staging().await?;
        if cleaned > 0 {
            info!(output = %self.inner.output.describe(), cleaned, "removed staging left by a crash");
        }
        // Resolve every batch claimed above the checkpoint: void it, or learn it was published.
        let mut published = Vec::new();
        for (n, claim) in &plan.resolve {
            let Some(ms) = claim.batch_ms() else { continue };
            let dir = sink::batch_dir_name(&cfg.batch.prefix, ms);
            let why = format!(
                "batch {n} was claimed by {} (epoch {}) and not published before {me} (epoch {epoch}) took over",
                claim.node, claim.epoch
            );
            let outcome = sink::void_batch(&*self.inner.output, &dir, &why).await?;
            let by_claimant = outcome == PublishOutcome::AlreadyPublished
                && !self.inner.output.is_void(&dir).await?;
            info!(batch = %dir, n, claimant = %claim.node, claimant_epoch = claim.epoch,
                  published = by_claimant, "resolved a batch claimed before this start");
            if by_claimant {
                published.push(*n);
            }
        }
        let committed = plan.committed_with(&published);
        let mut st = State::default();
        for (source, set) in &committed {
            let e = st.entry(source);
            e.committed = set.clone();
            e.durable = set.clone();
            e.next_raw = set.next_after_highest();
        }
        let replay_from = plan.replay_own_wal_from;
        let (mut st, last_block) = self.scan_wal(st, replay_from).await?;
        st.last_committed_seal = replay_from - 1;
        st.carried_hi = replay_from - 1;
        st.last_batch_ms = plan.batch_ms_floor.saturating_sub(1);
        st.checkpoint_id = snapshot.as_ref().map_or(0, |s| s.id);
        st.last_batch_n = fence;
        st.next_batch_n = fence + 1;
        {
            let mut cur = self.state();
            // Connections registered while standing by keep their registration.
            st.conns = std::mem::take(&mut cur.conns);
            *cur = st;
        }
        self.inner
            .last_block_lsn
            .fetch_max(last_block, Ordering::AcqRel);
        let carried = self.load_carried(&plan.load_carried).await?;
        self.inner.role.send_replace(RoleInfo {
            role: Role::Primary,
            epoch,
        });
        info!(node = %me, epoch, strategy = %self.inner.strategy,
              checkpoint = snapshot.as_ref().map(|s| s.id), resolved = plan.resolve.len(),
              published_by_claimant = published.len(), replayed_from = replay_from, carried_blocks = carried,
              elapsed_ms = started.elapsed().as_millis() as u64, "primary: recovered and serving");
        Ok(())
    }

    /// `passive-standby`: stores the checkpointed blocks that are not committed into this node's WAL.
    async fn load_carried(&self, refs: &[strategies::CarriedRef]) -> Result<u64, NodeError> {
        use futures::StreamExt;
        let mut loaded = 0u64;
        for r in refs {
            let Some(raw) = self.inner.store.get(&r.key).await? else {
                return Err(NodeError::Failed(format!(
                    "checkpointed blocks {} are listed by the newest checkpoint but missing from {}",
                    r.key,
                    self.inner.store.describe()
                )));
            };
            let blocks = carried::decode(&raw).map_err(|reason| {
                NodeError::Failed(format!("checkpointed blocks {}: {reason}", r.key))
            })?;
            let todo: Vec<_> = blocks
                .into_iter()
                .filter(|b| !self.state().is_committed(&b.source, b.seq))
                .collect();
            loaded += todo.len() as u64;
            let results: Vec<_> = futures::stream::iter(todo)
                .map(|b| async move { self.ingest(&b.source, Some(b.seq), b.bytes).await })
                .buffer_unordered(64)
                .collect()
                .await;
            for r in results {
                r?;
            }
        }
        Ok(loaded)
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
