//! Standing by and taking over: a standby counts what the newest checkpoint says is committed and
//! trims its WAL of it; becoming primary claims a new epoch, fences older epochs out of the batch log,
//! resolves the batches they claimed, rebuilds the committed and uncommitted sets (checkpoint, batch
//! log, own WAL) and, under `passive-standby`, loads the carried blocks into its WAL.

use std::sync::atomic::Ordering;
use std::time::Instant;

use strategies::claims::{BatchClaim, ClaimKind, ClaimOutcome};
use strategies::plan_takeover;
use tracing::info;

use super::carried;
use super::record::{decode, NodeRecord};
use super::state::State;
use super::{now_ms, Node, NodeError};
use crate::protocol::{Role, RoleInfo};
use crate::sink::{self, PublishOutcome};
use crate::wal::Lsn;

impl Node {
    /// Rebuilds the durable and uncommitted sets from the WAL records from `from` on.
    pub(super) async fn scan_wal(&self, st: State, from: Lsn) -> Result<(State, Lsn), NodeError> {
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
                let raw = snap.raw_sources.contains(source);
                st.load_committed(source, set, snap.last_seen_ms(source), raw);
            }
            st.recount_gaps();
            // A standby forgets what the primary forgot (and its own idle sources) by the same rule.
            self.forget_idle_sources(&mut st);
            st.lowest_needed()
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
        // Tests make a takeover fail right after its claim: the older primary is fenced now, so the
        // caller must try again rather than leave the pipeline without one.
        fail::fail_point!("node::takeover::after_claim", |_| Err(NodeError::Failed(
            "failpoint node::takeover::after_claim".into()
        )));
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
        // Resolve every batch claimed above the checkpoint: void it, or learn it was published.
        let mut published = Vec::new();
        for (n, claim) in &plan.resolve {
            let Some(ms) = claim.batch_ms() else { continue };
            // The directory the claimant recorded (its layout, not ours); a claim from before
            // layouts published the flat `<prefix>-<batch ms>`.
            let dir = claim
                .batch_dir()
                .map(str::to_owned)
                .unwrap_or_else(|| sink::batch_dir_name(&cfg.batch.prefix, ms));
            let why = format!(
                "batch {n} was claimed by {} (epoch {}) and not published before {me} (epoch {epoch}) took over",
                claim.node, claim.epoch
            );
            let outcome = sink::void_batch(&*self.inner.output, &dir, epoch, &why).await?;
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
            // Sources only in the batch log were seen when it was read.
            let (seen, raw) = match &snapshot {
                Some(s) if s.sources.contains_key(source) => {
                    (s.last_seen_ms(source), s.raw_sources.contains(source))
                }
                _ => (now_ms(), false),
            };
            st.load_committed(source, set, seen, raw);
        }
        let replay_from = plan.replay_own_wal_from;
        let (mut st, last_block) = self.scan_wal(st, replay_from).await?;
        st.recount_gaps();
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
}
