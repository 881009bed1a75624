//! The batcher and the commit path: every `batch.interval` a seal cuts the blocks durable since the
//! previous seal into a batch, which is streamed out of the WAL into the sink, claimed in the batch
//! log, published, checkpointed; then the WAL is trimmed, old checkpoints, claims and carried blocks
//! are deleted, and the framed connections get committed acks. At shutdown, a last commit.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strategies::claims::{BatchClaim, ClaimKind, ClaimOutcome};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::error::chain;
use super::record::{decode, encode_seal, NodeRecord, KIND_SEAL};
use super::state::PendingCommit;
use super::{now_ms, Node, NodeError};
use crate::protocol::{AckLevel, ServerFrame};
use crate::sink::{self, BatchBlock, PublishOutcome};

/// The batch time of the next seal: the current interval boundary, and always after the previous batch.
pub fn next_batch_ms(now_ms: u64, interval: Duration, last_batch_ms: u64) -> u64 {
    let iv = (interval.as_millis() as u64).max(1);
    (now_ms / iv * iv).max(last_batch_ms + 1)
}

impl Node {
    /// Seals the blocks made durable since the last seal into a batch and commits it. A batch whose
    /// commit failed (its output or checkpoint store unreachable) is retried first, under the same seal,
    /// name and batch number, before anything new is sealed; meanwhile ingest goes on into the WAL.
    /// Returns false if there was nothing to do.
    pub async fn seal_and_commit(&self) -> Result<bool, NodeError> {
        if !self.is_primary() {
            return Ok(false);
        }
        let pending = self.state().pending_commit;
        if let Some(p) = pending {
            self.commit_in_time(p).await?;
            self.state().pending_commit = None;
        }
        let (prev, last_ms, n) = {
            let st = self.state();
            (st.last_committed_seal, st.last_batch_ms, st.next_batch_n)
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
        let p = PendingCommit {
            prev_seal: prev,
            seal,
            batch_ms,
            n,
            sealed_at: Instant::now(),
        };
        {
            let mut st = self.state();
            st.last_batch_ms = batch_ms;
            st.pending_commit = Some(p);
        }
        self.commit_in_time(p).await?;
        self.state().pending_commit = None;
        Ok(true)
    }

    /// [`Node::commit_batch`], abandoned once it has made no progress for `batch.commit_timeout`:
    /// an output or store call that never answers gives up this attempt (the batch stays pending and
    /// is retried under the same seal, name and number) instead of holding up every later commit and
    /// the node's shutdown. Progress is a record read out of the WAL into the batch, or a step done
    /// (claim, publish, checkpoint), so a large batch that keeps moving is never cut short.
    async fn commit_in_time(&self, p: PendingCommit) -> Result<(), NodeError> {
        let timeout = self.inner.cfg.batch.commit_timeout;
        let progress = Arc::new(AtomicU64::new(0));
        let commit = self.commit_batch(p, progress.clone());
        tokio::pin!(commit);
        let mut seen = 0;
        loop {
            tokio::select! {
                r = &mut commit => return r,
                _ = tokio::time::sleep(timeout) => {
                    let now = progress.load(Ordering::Acquire);
                    if now == seen {
                        return Err(NodeError::CommitTimeout {
                            batch: self.inner.cfg.layout().batch_dir(p.batch_ms),
                            output: self.inner.output.describe(),
                            timeout,
                        });
                    }
                    seen = now;
                }
            }
        }
    }

    /// Writes out the batch of blocks with `prev_seal < lsn < seal` that are not committed yet: stages
    /// them, claims batch `n` in the batch log, publishes with one rename, checkpoints, trims the WAL and
    /// sends committed acks. A retry of the same batch finds its own claim and its own published
    /// directory and only finishes the steps after them.
    async fn commit_batch(
        &self,
        p: PendingCommit,
        progress: Arc<AtomicU64>,
    ) -> Result<(), NodeError> {
        fail::fail_point!("node::commit::before", |_| std::process::abort());
        let PendingCommit {
            prev_seal,
            seal,
            batch_ms,
            n,
            ..
        } = p;
        self.check_fence().await?;
        let started = Instant::now();
        let cfg = &self.inner.cfg;
        let (tx, rx) = mpsc::channel::<Result<BatchBlock, NodeError>>(4);
        // A retry whose earlier attempt marked its members committed before the checkpoint write
        // failed: the scan skips them now, so they come from the state.
        let marked = match &self.state().retry_members {
            Some((s, m)) if *s == seal => m.clone(),
            _ => Vec::new(),
        };
        let members = Arc::new(Mutex::new(marked));
        let reader = {
            let wal = self.inner.wal.clone();
            let members = members.clone();
            let node = self.clone();
            let progress = progress.clone();
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
                    // A record read counts as progress; a sink that stops taking blocks stops it
                    // (the channel fills, `send` waits).
                    progress.fetch_add(1, Ordering::Release);
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
                            // Committed by an earlier batch (or by the node this one took over from).
                            if node.state().is_committed(&source, seq) {
                                continue;
                            }
                            members
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((source.clone(), seq));
                            // The sink stops reading when the batch was published already; the
                            // scan still goes to the seal, because `members` must be the whole
                            // batch (its committed acks, its committed sets in the checkpoint).
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
        let claim_members = members.clone();
        let layout = cfg.layout();
        let dir = layout.batch_dir(batch_ms);
        let claim_dir = dir.clone();
        let claim = || async move {
            let members = claim_members
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            self.claim_batch(n, batch_ms, &claim_dir, &members)
                .await
                .map_err(|e| sink::SinkError::Blocks {
                    output: self.inner.output.describe(),
                    batch: claim_dir.clone(),
                    source: Box::new(e),
                })
        };
        let summary = sink::write_batch_claimed(
            &*self.inner.output,
            &layout,
            batch_ms,
            self.epoch(),
            cfg.analysis.enabled,
            stream,
            claim,
        )
        .await;
        reader
            .await
            .map_err(|e| NodeError::Failed(format!("batch reader panicked: {e}")))?;
        if let Some(reason) = self.stop_reason().filter(|r| r.contains("fenced")) {
            return Err(NodeError::Fenced(reason));
        }
        let summary = summary?;
        progress.fetch_add(1, Ordering::Release);
        if summary.outcome == Some(PublishOutcome::AlreadyPublished)
            && self.inner.output.is_void(&dir).await?
        {
            return Err(self.fenced(format!(
                "batch {dir} (number {n}) was voided by the node that took over"
            )));
        }
        if summary.outcome == Some(PublishOutcome::AlreadyPublished) {
            self.check_published_by_us(n, batch_ms, &dir).await?;
        }
        fail::fail_point!("node::commit::after_publish", |_| std::process::abort());
        let members = std::mem::take(&mut *members.lock().unwrap_or_else(|p| p.into_inner()));
        let claimed = summary.outcome.is_some();

        // The checkpoint first: the batch counts as committed only once a checkpoint says so.
        let key = {
            let _guard = self.inner.ckpt_lock.lock().await;
            self.check_fence().await?;
            let snapshot = {
                let mut st = self.state();
                // A member's ingest may not have marked it durable yet (its task not resumed after the
                // fsync); the checkpoint must still cover it, or a re-send after a crash would be stored twice.
                for (source, seq) in &members {
                    st.mark_committed(source, *seq);
                }
                if claimed {
                    st.last_batch_n = st.last_batch_n.max(n);
                    st.next_batch_n = st.next_batch_n.max(n + 1);
                }
                st.last_committed_seal = st.last_committed_seal.max(seal);
                st.carried_hi = st.carried_hi.max(seal);
                st.last_batch_ms = st.last_batch_ms.max(batch_ms);
                let committed_seal = st.last_committed_seal;
                st.carried.retain(|r| r.hi > committed_seal);
                st.retry_members = Some((seal, members.clone()));
                self.snapshot_of(&mut st, Some(batch_ms))
            };
            // Tests break the checkpoint store here, after the members are marked committed.
            fail::fail_point!("node::commit::before_checkpoint");
            let key = self.inner.checkpointer.write(&snapshot).await?;
            progress.fetch_add(1, Ordering::Release);
            // The fence check above and the write are two steps: a node cut off between them (its
            // write stalled in a partition, then let through) may have been replaced meanwhile. Its
            // checkpoint is inert then — an older epoch is never the newest — but it must not
            // acknowledge on it: only a node still current after its write sends committed acks.
            if let Some(reason) = self.stop_reason().filter(|r| r.contains("fenced")) {
                return Err(NodeError::Fenced(reason));
            }
            self.check_fence().await?;
            key
        };
        fail::fail_point!("node::commit::after_checkpoint", |_| std::process::abort());
        let acks = {
            let st = self.state();
            let mut acks = Vec::new();
            for (source, seq) in &members {
                if let Some(c) = st.conns.get(source) {
                    acks.push((c.tx.clone(), *seq));
                }
            }
            acks
        };
        // The acks right after the checkpoint, before the clean-up that may stall (a retry after
        // that would find the members committed and have none to acknowledge).
        for (tx, seq) in acks {
            let _ = tx.send(ServerFrame::Ack {
                level: AckLevel::Committed,
                seq,
            });
        }
        self.state().retry_members = None;
        self.inner.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.inner
            .stats
            .committed_blocks
            .fetch_add(members.len() as u64, Ordering::Relaxed);
        self.inner.wal_release(seal + 1).await?;
        progress.fetch_add(1, Ordering::Release);
        self.collect_garbage().await;
        info!(batch = %dir, n = if claimed { n } else { 0 }, images = summary.files, bytes = summary.bytes, invalid = summary.invalid,
              already_published = summary.outcome == Some(PublishOutcome::AlreadyPublished),
              checkpoint = %key, elapsed_ms = started.elapsed().as_millis() as u64, "batch committed");
        Ok(())
    }

    /// A batch directory found published is ours only if this pipeline's batch log holds claim `n`
    /// for it (an earlier attempt of this batch claimed, then published, then failed). Otherwise
    /// another writer — a pipeline with its own checkpoint store writing the same paths — published
    /// it, and counting its directory as this batch would lose this batch's blocks: refuse, naming
    /// the fix. The blocks stay durable and uncommitted, so nothing is lost while it is fixed.
    async fn check_published_by_us(
        &self,
        n: u64,
        batch_ms: u64,
        dir: &str,
    ) -> Result<(), NodeError> {
        let claim = strategies::claims::read(&*self.inner.store, n).await?;
        let ours = claim.as_ref().is_some_and(|c| {
            c.batch_ms() == Some(batch_ms) && c.batch_dir().is_none_or(|d| d == dir)
        });
        if ours {
            return Ok(());
        }
        let cfg = &self.inner.cfg;
        Err(NodeError::Failed(format!(
            "batch directory {dir} in {} was published by another writer, not by pipeline {} (its batch log has no claim {n} for it): \
             pipelines that share an output root need distinct paths — give each its own node.pipeline and put {{pipeline}} in output.path \
             (now {:?}), or give each its own batch.prefix (now {:?})",
            self.inner.output.describe(),
            cfg.pipeline(),
            cfg.output.path,
            cfg.batch.prefix
        )))
    }

    /// Claims batch `n` for `members`; a claim already held by this node and epoch for the same batch
    /// is an earlier attempt of this batch and counts as ours. Anything else means a newer node took over.
    pub(super) async fn claim_batch(
        &self,
        n: u64,
        batch_ms: u64,
        dir: &str,
        members: &[(String, u64)],
    ) -> Result<(), NodeError> {
        self.check_fence().await?;
        let mut sets: std::collections::BTreeMap<String, strategies::SeqSet> = Default::default();
        for (source, seq) in members {
            sets.entry(source.clone()).or_default().insert(*seq);
        }
        let claim = BatchClaim {
            epoch: self.epoch(),
            node: self.inner.cfg.node.name.clone(),
            claimed_unix_ms: now_ms(),
            kind: ClaimKind::Batch {
                batch_ms,
                members: sets,
                dir: Some(dir.to_owned()),
            },
        };
        match strategies::claims::claim(&*self.inner.store, n, &claim).await? {
            ClaimOutcome::Won => Ok(()),
            ClaimOutcome::Held(held)
                if held.epoch == claim.epoch
                    && held.node == claim.node
                    && held.batch_ms() == Some(batch_ms) =>
            {
                Ok(())
            }
            ClaimOutcome::Held(held) => Err(self.fenced(format!(
                "batch {n} is claimed by {} of epoch {}",
                held.node, held.epoch
            ))),
        }
    }

    /// Deletes old checkpoints, claims and checkpointed blocks the newest checkpoint no longer needs.
    async fn collect_garbage(&self) {
        let cfg = &self.inner.cfg;
        if let Err(e) = self.inner.checkpointer.gc(cfg.checkpoint.keep).await {
            warn!(error = %e, "could not delete old checkpoints; will retry after the next batch");
        }
        let (last_n, keep_refs) = {
            let st = self.state();
            (
                st.last_batch_n,
                st.carried.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
            )
        };
        let store = &*self.inner.store;
        let below = last_n.saturating_sub(16 * cfg.checkpoint.keep as u64);
        if below > 0 {
            if let Err(e) = strategies::claims::delete_below(store, below).await {
                warn!(error = %e, "could not delete old batch claims");
            }
        }
        if self.inner.strategy.policy().checkpoints_carry_blocks {
            let mine = self.epoch();
            match store.list(strategies::paths::CARRIED).await {
                Ok(keys) => {
                    for key in keys {
                        let old =
                            strategies::paths::parse_carried(&key).is_some_and(|(e, _)| e <= mine);
                        if old && !keep_refs.contains(&key) {
                            if let Err(e) = store.delete(&key).await {
                                warn!(error = %e, key, "could not delete checkpointed blocks");
                            }
                        }
                    }
                }
                Err(e) => warn!(error = %e, "could not list checkpointed blocks"),
            }
        }
    }

    /// Runs the batcher until the node is told to stop, then commits what is left. Under
    /// `passive-standby` it also checkpoints the uncommitted blocks every `checkpoint_interval`.
    pub async fn run_batcher(&self) -> Result<(), NodeError> {
        let mut tick = tokio::time::interval(self.inner.cfg.batch.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let carry = self.inner.strategy.policy().checkpoints_carry_blocks;
        let mut carry_tick = tokio::time::interval(self.inner.cfg.strategy.checkpoint_interval);
        carry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                _ = tick.tick() => match self.seal_and_commit().await {
                    Ok(_) => {}
                    Err(e) if is_fatal(&e) => {
                        self.fail(format!("batch commit failed: {}", chain(&e)));
                        return Err(e);
                    }
                    Err(e) => {
                        let pending = self.state().pending_commit.map(|p| p.batch_ms);
                        error!(error = %chain(&e), batch_ms = ?pending, "batch commit failed; retrying at the next interval (ingest goes on into the WAL)");
                    }
                },
                _ = carry_tick.tick(), if carry => match self.checkpoint_blocks().await {
                    Ok(_) => {}
                    Err(e) if is_fatal(&e) => {
                        self.fail(format!("checkpoint failed: {}", chain(&e)));
                        return Err(e);
                    }
                    Err(e) => error!(error = %chain(&e), "checkpointing uncommitted blocks failed; retrying at the next interval"),
                },
                _ = &mut stopped => break,
            }
        }
        Ok(())
    }

    /// Commits what is durable and closes the WAL.
    pub async fn shutdown(&self) -> Result<(), NodeError> {
        let fatal =
            self.stop_reason().is_some_and(|r| r.starts_with("fatal")) || !self.is_primary();
        let started = Instant::now();
        if fatal {
            self.inner.wal.close().await?;
            return Ok(());
        }
        loop {
            match self.seal_and_commit().await {
                Ok(_) => break,
                Err(e) if is_fatal(&e) => return Err(e),
                Err(e) if started.elapsed() >= self.inner.cfg.node.shutdown_grace => {
                    warn!(error = %chain(&e), "could not commit the last batch before stopping; it stays in the WAL and is committed at the next start");
                    break;
                }
                Err(e) => {
                    debug!(error = %chain(&e), "commit at shutdown failed; retrying");
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

/// Errors that stop the node: a WAL that failed (not one that only found the disk full: the seal is
/// appended again at the next interval) and a newer epoch.
fn is_fatal(e: &NodeError) -> bool {
    match e {
        NodeError::Wal(w) => !w.is_no_space(),
        NodeError::Fenced(_) => true,
        _ => false,
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
