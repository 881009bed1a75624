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
//! `wal.salvage`), read the newest checkpoint, scan the WAL from the checkpoint's low-water mark to
//! rebuild the durable sets and find the seals, and re-commit every sealed batch the checkpoint does
//! not cover ([`strategies::recovery::plan_recovery`]). Publishing is idempotent (a batch directory
//! that exists is left alone), so a crash at any point costs a re-run, never a duplicate. Blocks after
//! the last seal go into the next batch.

mod record;
mod state;

pub use record::{decode, encode_block, encode_seal, NodeRecord, KIND_BLOCK, KIND_SEAL};

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use strategies::checkpoint::Checkpointer;
use strategies::recovery::{plan_recovery, SealInfo};
use strategies::snapshot::Snapshot;
use strategies::store::CheckpointStore;
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::{debug, error, info, warn};

use crate::config::{Config, StoreConfig};
use crate::error::NodeError;
use crate::receiver::protocol::{AckLevel, ServerFrame};
use crate::sink::{self, BatchBlock, Output, PublishOutcome};
use crate::wal::{Lsn, Wal, WalOptions};
use state::{ConnHandle, Outcome, PendingCommit, State};

/// What [`Node::ingest`] did with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub seq: u64,
    /// It was durable already (or became so through another copy in flight); nothing new was stored.
    pub duplicate: bool,
    /// It is in a committed batch already.
    pub committed: bool,
}

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
    checkpointer: Checkpointer,
    epoch: u64,
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
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The batch time of the next seal: the current interval boundary, and always after the previous batch.
pub fn next_batch_ms(now_ms: u64, interval: Duration, last_batch_ms: u64) -> u64 {
    let iv = (interval.as_millis() as u64).max(1);
    (now_ms / iv * iv).max(last_batch_ms + 1)
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
    /// Opens the WAL, the checkpoint store and the output, and recovers: after this returns, every
    /// block that was durable before a crash is durable again and every sealed batch is committed.
    pub async fn open(cfg: Config) -> Result<Node, NodeError> {
        let started = Instant::now();
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
        let snapshot = checkpointer.latest().await?;
        let epoch = strategies::epoch::claim_next(&*store, &cfg.node.name).await?;
        let output = open_output(&cfg).await?;
        let cleaned = output.clean_staging().await?;
        if cleaned > 0 {
            info!(output = %output.describe(), cleaned, "removed staging left by a crash");
        }

        let mut st = State::default();
        if let Some(s) = &snapshot {
            for (source, set) in &s.sources {
                let e = st.entry(source);
                e.durable = set.clone();
                e.next_raw = set.next_after_highest();
            }
            st.last_committed_seal = s.last_committed_seal_lsn;
            st.last_batch_ms = s.last_committed_batch_ms.unwrap_or(0);
            st.checkpoint_id = s.id;
        }
        let low_water = snapshot
            .as_ref()
            .map(|s| s.wal_low_water)
            .unwrap_or(1)
            .max(1);
        // Scan the WAL past the checkpoint: rebuild the durable sets, find the seals.
        let (st, seals, last_block) = {
            let wal = wal.clone();
            tokio::task::spawn_blocking(move || -> Result<_, NodeError> {
                let mut st = st;
                let mut seals = Vec::new();
                let mut last_block = 0;
                for rec in wal.replay(low_water)? {
                    let rec = rec?;
                    match decode(rec.kind, rec.payload).map_err(|reason| NodeError::Record {
                        lsn: rec.lsn,
                        reason,
                    })? {
                        NodeRecord::Block { source, seq, .. } => {
                            st.mark_durable(&source, seq, rec.lsn);
                            last_block = rec.lsn;
                        }
                        NodeRecord::Seal { batch_ms } => seals.push(SealInfo {
                            lsn: rec.lsn,
                            batch_ms,
                        }),
                    }
                }
                Ok((st, seals, last_block))
            })
            .await??
        };
        let plan = plan_recovery(snapshot.as_ref(), &seals);
        let (stop, _) = watch::channel(None);
        let budget_kib = (cfg.receiver.max_block_size.as_u64().max(256 << 20) >> 10) as usize;
        let node = Node {
            inner: Arc::new(Inner {
                wal,
                output,
                checkpointer,
                epoch,
                state: Mutex::new(st),
                inflight: Arc::new(Semaphore::new(budget_kib)),
                last_block_lsn: AtomicU64::new(last_block),
                next_conn_id: AtomicU64::new(1),
                stats: Stats::default(),
                stop,
                wal_freed: tokio::sync::Notify::new(),
                over_budget: std::sync::atomic::AtomicBool::new(false),
                cfg,
            }),
        };
        node.inner.wal_release(low_water).await?;
        for seal in &plan.recommit {
            let prev = node.state().last_committed_seal;
            info!(
                batch_ms = seal.batch_ms,
                seal_lsn = seal.lsn,
                "re-committing a batch sealed before the crash"
            );
            node.commit_batch(prev, seal.lsn, seal.batch_ms).await?;
        }
        {
            let mut st = node.state();
            st.last_batch_ms = st
                .last_batch_ms
                .max(plan.next_batch_ms_floor.saturating_sub(1));
        }
        info!(node = %node.inner.cfg.node.name, epoch, checkpoint = snapshot.as_ref().map(|s| s.id),
              replayed_from = low_water, recommitted = plan.recommit.len(),
              elapsed_ms = started.elapsed().as_millis() as u64, "recovered");
        Ok(node)
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
        self.inner.epoch
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

    /// Reserves room for `len` bytes in flight; the permit is released when the block is durable or refused.
    pub async fn reserve(&self, len: usize) -> tokio::sync::OwnedSemaphorePermit {
        let kib = len.div_ceil(1024).max(1) as u32;
        self.inner
            .inflight
            .clone()
            .acquire_many_owned(kib)
            .await
            .expect("the in-flight semaphore is never closed")
    }

    /// Makes a block durable, once. `seq: None` gives it the source's next sequence number (raw sources).
    /// Returns only after the fdatasync that covers it.
    pub async fn ingest(
        &self,
        source: &str,
        seq: Option<u64>,
        data: Bytes,
    ) -> Result<Ingested, NodeError> {
        enum Step {
            Done(Ingested),
            Wait(u64, watch::Receiver<Outcome>),
            Append(u64, watch::Sender<Outcome>),
        }
        let step = {
            let mut st = self.state();
            let e = st.entry(source);
            let seq = match seq {
                Some(s) => s,
                None => {
                    e.next_raw += 1;
                    e.next_raw - 1
                }
            };
            if e.durable.contains(seq) {
                Step::Done(Ingested {
                    seq,
                    duplicate: true,
                    committed: !e.uncommitted.contains(&seq),
                })
            } else if let Some(tx) = e.inflight.get(&seq) {
                Step::Wait(seq, tx.subscribe())
            } else {
                let (tx, _) = watch::channel(None);
                e.inflight.insert(seq, tx.clone());
                Step::Append(seq, tx)
            }
        };
        match step {
            Step::Done(i) => {
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                Ok(i)
            }
            Step::Wait(seq, mut rx) => {
                let outcome = rx.wait_for(|v| v.is_some()).await.map(|v| v.clone());
                match outcome {
                    Ok(Some(Ok(_))) => {
                        self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        let st = self.state();
                        let committed = st
                            .sources
                            .get(source)
                            .is_some_and(|e| !e.uncommitted.contains(&seq));
                        Ok(Ingested {
                            seq,
                            duplicate: true,
                            committed,
                        })
                    }
                    Ok(Some(Err(e))) => Err(NodeError::Failed(e)),
                    _ => Err(NodeError::Failed(
                        "the first copy of this block was abandoned".into(),
                    )),
                }
            }
            Step::Append(seq, tx) => {
                self.wait_for_wal_room().await;
                let len = data.len() as u64;
                let res = self
                    .inner
                    .wal
                    .append(KIND_BLOCK, encode_block(source, seq, &data))
                    .await;
                let mut st = self.state();
                st.entry(source).inflight.remove(&seq);
                match res {
                    Ok((lsn, _)) => {
                        let committed = st.mark_durable(source, seq, lsn);
                        drop(st);
                        self.inner.last_block_lsn.fetch_max(lsn, Ordering::AcqRel);
                        self.inner.stats.blocks.fetch_add(1, Ordering::Relaxed);
                        self.inner.stats.bytes.fetch_add(len, Ordering::Relaxed);
                        let _ = tx.send(Some(Ok(lsn)));
                        Ok(Ingested {
                            seq,
                            duplicate: false,
                            committed,
                        })
                    }
                    Err(e) => {
                        drop(st);
                        let msg = e.to_string();
                        let _ = tx.send(Some(Err(msg.clone())));
                        // A record too large is that block's problem; any other WAL error is the node's.
                        if !matches!(e, crate::wal::WalError::RecordTooLarge { .. }) {
                            self.fail(format!("WAL append failed: {msg}"));
                        }
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// Waits while the WAL is at its disk budget: the caller's block is not read further, so senders
    /// feel backpressure instead of losing anything.
    async fn wait_for_wal_room(&self) {
        let budget = self.inner.cfg.wal.disk_budget.as_u64();
        loop {
            let notified = self.inner.wal_freed.notified();
            let used = self.inner.wal.disk_bytes();
            if used < budget {
                if self.inner.over_budget.swap(false, Ordering::AcqRel) {
                    info!(
                        used,
                        budget, "WAL back under its disk budget; taking blocks again"
                    );
                }
                return;
            }
            if !self.inner.over_budget.swap(true, Ordering::AcqRel) {
                warn!(used, budget, dir = %self.inner.wal.dir().display(),
                      "WAL disk budget reached: applying backpressure to senders until a batch commits and frees segments");
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.stopped() => return,
            }
        }
    }

    /// Registers the connection that gets `source`'s committed acks (replacing an older one).
    pub fn register_conn(&self, source: &str, tx: mpsc::UnboundedSender<ServerFrame>) -> u64 {
        let id = self.inner.next_conn_id.fetch_add(1, Ordering::Relaxed);
        self.state()
            .conns
            .insert(source.to_string(), ConnHandle { id, tx });
        id
    }

    pub fn unregister_conn(&self, source: &str, id: u64) {
        let mut st = self.state();
        if st.conns.get(source).is_some_and(|c| c.id == id) {
            st.conns.remove(source);
        }
    }

    /// Seals the blocks made durable since the last seal into a batch and commits it. A batch whose
    /// commit failed (its output or checkpoint store unreachable) is retried first, under the same seal
    /// and name, before anything new is sealed; meanwhile ingest goes on into the WAL. Returns false if
    /// there was nothing to do.
    pub async fn seal_and_commit(&self) -> Result<bool, NodeError> {
        let pending = self.state().pending_commit;
        if let Some(p) = pending {
            self.commit_batch(p.prev_seal, p.seal, p.batch_ms).await?;
            self.state().pending_commit = None;
        }
        let (prev, last_ms) = {
            let st = self.state();
            (st.last_committed_seal, st.last_batch_ms)
        };
        if self.inner.last_block_lsn.load(Ordering::Acquire) <= prev {
            return Ok(pending.is_some());
        }
        let batch_ms = next_batch_ms(now_ms(), self.inner.cfg.batch.interval, last_ms);
        let (seal, _) = self
            .inner
            .wal
            .append(KIND_SEAL, encode_seal(batch_ms))
            .await?;
        {
            let mut st = self.state();
            st.last_batch_ms = batch_ms;
            st.pending_commit = Some(PendingCommit {
                prev_seal: prev,
                seal,
                batch_ms,
            });
        }
        self.commit_batch(prev, seal, batch_ms).await?;
        self.state().pending_commit = None;
        Ok(true)
    }

    /// Writes out the batch of blocks with `prev_seal < lsn < seal`, records it committed, checkpoints,
    /// trims the WAL and sends committed acks. Idempotent: a batch already published is not rewritten.
    async fn commit_batch(
        &self,
        prev_seal: Lsn,
        seal: Lsn,
        batch_ms: u64,
    ) -> Result<(), NodeError> {
        fail::fail_point!("node::commit::before", |_| std::process::abort());
        let started = Instant::now();
        let cfg = &self.inner.cfg;
        let (tx, rx) = mpsc::channel::<Result<BatchBlock, NodeError>>(4);
        let members = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
        let reader = {
            let wal = self.inner.wal.clone();
            let members = members.clone();
            tokio::task::spawn_blocking(move || {
                let send = |r| tx.blocking_send(r).is_ok();
                let mut sending = true;
                let iter = match wal.replay(prev_seal + 1) {
                    Ok(i) => i,
                    Err(e) => {
                        send(Err(e.into()));
                        return;
                    }
                };
                for rec in iter {
                    let rec = match rec {
                        Ok(r) => r,
                        Err(e) => {
                            send(Err(e.into()));
                            return;
                        }
                    };
                    if rec.lsn >= seal {
                        return;
                    }
                    match decode(rec.kind, rec.payload) {
                        Ok(NodeRecord::Block { source, seq, data }) => {
                            members
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((source.clone(), seq));
                            // The sink stops reading when the batch was published already; the
                            // scan still goes to the seal, because `members` must be the whole
                            // batch (its committed acks, its durable sets in the checkpoint).
                            if sending
                                && !send(Ok(BatchBlock {
                                    source,
                                    seq,
                                    bytes: data,
                                }))
                            {
                                sending = false;
                            }
                        }
                        Ok(NodeRecord::Seal { .. }) => {}
                        Err(reason) => {
                            send(Err(NodeError::Record {
                                lsn: rec.lsn,
                                reason,
                            }));
                            return;
                        }
                    }
                }
            })
        };
        let stream = tokio_stream_from(rx);
        let summary = sink::write_batch(
            &*self.inner.output,
            &cfg.batch.prefix,
            batch_ms,
            cfg.analysis.enabled,
            stream,
        )
        .await;
        reader
            .await
            .map_err(|e| NodeError::Failed(format!("batch reader panicked: {e}")))?;
        let summary = summary?;
        fail::fail_point!("node::commit::after_publish", |_| std::process::abort());
        let members = std::mem::take(&mut *members.lock().unwrap_or_else(|p| p.into_inner()));

        // The checkpoint first: the batch counts as committed only once a checkpoint says so.
        let snapshot = {
            let mut st = self.state();
            // A member's ingest may not have marked it durable yet (its task not resumed after the
            // fsync); the checkpoint must still cover it, or a re-send after a crash would be stored twice.
            for (source, seq) in &members {
                let e = st.entry(source);
                e.durable.insert(*seq);
                e.next_raw = e.next_raw.max(seq + 1);
            }
            st.checkpoint_id += 1;
            Snapshot {
                format: 1,
                epoch: self.inner.epoch,
                id: st.checkpoint_id,
                node: cfg.node.name.clone(),
                created_unix_ms: now_ms(),
                last_committed_batch_ms: Some(batch_ms),
                last_committed_seal_lsn: seal,
                wal_low_water: seal + 1,
                sources: st
                    .sources
                    .iter()
                    .map(|(k, v)| (k.clone(), v.durable.clone()))
                    .collect(),
            }
        };
        let key = self.inner.checkpointer.write(&snapshot).await?;
        fail::fail_point!("node::commit::after_checkpoint", |_| std::process::abort());
        let acks = {
            let mut st = self.state();
            st.last_committed_seal = st.last_committed_seal.max(seal);
            st.last_batch_ms = st.last_batch_ms.max(batch_ms);
            let mut acks = Vec::new();
            for (source, seq) in &members {
                if let Some(e) = st.sources.get_mut(source) {
                    e.uncommitted.remove(seq);
                }
                if let Some(c) = st.conns.get(source) {
                    acks.push((c.tx.clone(), *seq));
                }
            }
            acks
        };
        self.inner.wal_release(seal + 1).await?;
        if let Err(e) = self.inner.checkpointer.gc(cfg.checkpoint.keep).await {
            warn!(error = %e, "could not delete old checkpoints; will retry after the next batch");
        }
        for (tx, seq) in acks {
            let _ = tx.send(ServerFrame::Ack {
                level: AckLevel::Committed,
                seq,
            });
        }
        self.inner.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.inner
            .stats
            .committed_blocks
            .fetch_add(members.len() as u64, Ordering::Relaxed);
        let dir = sink::batch_dir_name(&cfg.batch.prefix, batch_ms);
        info!(batch = %dir, images = summary.files, bytes = summary.bytes, invalid = summary.invalid,
              already_published = summary.outcome == Some(PublishOutcome::AlreadyPublished),
              checkpoint = %key, elapsed_ms = started.elapsed().as_millis() as u64, "batch committed");
        Ok(())
    }

    /// Runs the batcher until the node is told to stop, then commits what is left.
    pub async fn run_batcher(&self) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(self.inner.cfg.batch.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = tick.tick() => match self.seal_and_commit().await {
                    Ok(_) => {}
                    Err(e @ NodeError::Wal(_)) => {
                        self.fail(format!("batch commit failed: {e}"));
                        return Err(e);
                    }
                    Err(e) => {
                        let pending = self.state().pending_commit.map(|p| p.batch_ms);
                        error!(error = %e, batch_ms = ?pending, "batch commit failed; retrying at the next interval (ingest goes on into the WAL)");
                    }
                },
                _ = &mut stopped => break,
            }
        }
        Ok(())
    }

    /// Why the node stopped, if it did.
    pub fn stop_reason(&self) -> Option<String> {
        self.inner.stop.borrow().clone()
    }

    /// Commits what is durable and closes the WAL.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let fatal = self.stop_reason().is_some_and(|r| r.starts_with("fatal"));
        let started = Instant::now();
        if fatal {
            self.inner.wal.close().await?;
            return Ok(());
        }
        loop {
            match self.seal_and_commit().await {
                Ok(_) => break,
                Err(e @ NodeError::Wal(_)) => return Err(e),
                Err(e) if started.elapsed() >= self.inner.cfg.node.shutdown_grace => {
                    warn!(error = %e, "could not commit the last batch before stopping; it stays in the WAL and is committed at the next start");
                    break;
                }
                Err(e) => {
                    debug!(error = %e, "commit at shutdown failed; retrying");
                    tokio::time::sleep(
                        self.inner
                            .cfg
                            .batch
                            .interval
                            .max(Duration::from_millis(200)),
                    )
                    .await;
                }
            }
        }
        self.inner.wal.close().await?;
        debug!("node closed");
        Ok(())
    }
}

impl Inner {
    async fn wal_release(&self, low_water: Lsn) -> Result<(), NodeError> {
        let wal = self.wal.clone();
        let n = tokio::task::spawn_blocking(move || wal.release_below(low_water)).await??;
        self.wal_freed.notify_waiters();
        if n > 0 {
            debug!(segments = n, low_water, "WAL segments released");
        }
        Ok(())
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_times_are_interval_boundaries_and_always_increase() {
        let iv = Duration::from_secs(2);
        assert_eq!(next_batch_ms(10_500, iv, 0), 10_000);
        assert_eq!(next_batch_ms(10_500, iv, 10_000), 10_001);
        assert_eq!(next_batch_ms(12_000, iv, 10_001), 12_000);
    }
}
