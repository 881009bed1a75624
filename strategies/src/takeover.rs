//! What a node does before it commits anything: as a restart (`none`) or as a takeover (the
//! standby strategies). Pure functions over what was read from the checkpoint store.
//!
//! # Design
//!
//! A node that starts claims a new epoch, then reads the newest checkpoint and the batch log
//! ([`crate::claims`]) above it. [`plan_takeover`] turns that into a [`TakeoverPlan`]:
//!
//! * **committed**: the checkpoint's committed sets; each batch claim above the checkpoint is
//!   resolved by the node (a void publish under its name) and, if the claimant had published it,
//!   its members are added with [`TakeoverPlan::committed_with`];
//! * **fence**: the number at which the node writes its [`crate::claims::ClaimKind::Takeover`]
//!   claim — one past every claim seen — so that no older epoch can claim anything after it;
//! * **batch times**: new batches use times strictly after every batch time in the log, so no
//!   new output directory can collide with an old one (a void included);
//! * **where the blocks come from**: its own WAL (replayed from the checkpoint's low-water mark
//!   if the checkpoint is its own, else from the start), and under `passive-standby` the
//!   checkpointed block objects the snapshot lists.
//!
//! Keeping this free of I/O makes every corner (no checkpoint, a tombstone already there, a claim
//! of our own earlier life, a zombie's claim) a unit test.

use std::collections::BTreeMap;

use crate::claims::{BatchClaim, ClaimKind};
use crate::snapshot::{CarriedRef, Lsn, SeqSet, Snapshot};
use crate::strategy::Strategy;

/// What a starting node does, decided from the checkpoint and the batch log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakeoverPlan {
    /// Per source, every seq committed according to the checkpoint.
    pub committed: BTreeMap<String, SeqSet>,
    /// Batch claims above the checkpoint, in order: void each, or learn it was published.
    pub resolve: Vec<(u64, BatchClaim)>,
    /// Where this node writes its takeover claim.
    pub fence_at: u64,
    /// New batches must use a batch time `>=` this.
    pub batch_ms_floor: u64,
    /// Replay the node's own WAL from this LSN.
    pub replay_own_wal_from: Lsn,
    /// `passive-standby`: load these checkpointed blocks (those not committed) into the WAL.
    pub load_carried: Vec<CarriedRef>,
}

/// Plans a start. `claims` are the batch claims numbered above the checkpoint's `last_batch_n`
/// (any order); `me` is this node's name (its own checkpoint's low-water mark applies to its WAL).
pub fn plan_takeover(
    strategy: Strategy,
    snapshot: Option<&Snapshot>,
    claims: &[(u64, BatchClaim)],
    me: &str,
) -> TakeoverPlan {
    let last_n = snapshot.map_or(0, |s| s.last_batch_n);
    let mut claims: Vec<(u64, BatchClaim)> = claims
        .iter()
        .filter(|(n, _)| *n > last_n)
        .cloned()
        .collect();
    claims.sort_by_key(|(n, _)| *n);
    let fence_at = claims.last().map_or(last_n, |(n, _)| *n) + 1;
    let newest_ms = claims
        .iter()
        .filter_map(|(_, c)| c.batch_ms())
        .chain(snapshot.and_then(|s| s.last_committed_batch_ms))
        .max();
    let resolve = claims
        .into_iter()
        .filter(|(_, c)| matches!(c.kind, ClaimKind::Batch { .. }))
        .collect();
    let replay_own_wal_from = match snapshot {
        Some(s) if s.node == me => s.wal_low_water.max(1),
        _ => 1,
    };
    let load_carried = match snapshot {
        Some(s) if strategy.policy().checkpoints_carry_blocks => s.carried.clone(),
        _ => Vec::new(),
    };
    TakeoverPlan {
        committed: snapshot.map(|s| s.sources.clone()).unwrap_or_default(),
        resolve,
        fence_at,
        batch_ms_floor: newest_ms.map_or(0, |ms| ms + 1),
        replay_own_wal_from,
        load_carried,
    }
}

impl TakeoverPlan {
    /// The committed sets once the claims in `published` (numbers from [`TakeoverPlan::resolve`]
    /// whose batch the claimant had published) are counted.
    pub fn committed_with(&self, published: &[u64]) -> BTreeMap<String, SeqSet> {
        let mut committed = self.committed.clone();
        for (n, claim) in &self.resolve {
            if !published.contains(n) {
                continue;
            }
            if let ClaimKind::Batch { members, .. } = &claim.kind {
                for (source, set) in members {
                    committed.entry(source.clone()).or_default().union_with(set);
                }
            }
        }
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(seqs: &[u64]) -> SeqSet {
        let mut s = SeqSet::new();
        for q in seqs {
            s.insert(*q);
        }
        s
    }

    fn batch(epoch: u64, ms: u64, seqs: &[u64]) -> BatchClaim {
        BatchClaim {
            epoch,
            node: "a".into(),
            claimed_unix_ms: 0,
            kind: ClaimKind::Batch {
                batch_ms: ms,
                members: BTreeMap::from([("cam".to_string(), set(seqs))]),
                dir: None,
            },
        }
    }

    fn snapshot(node: &str, last_n: u64, committed: &[u64]) -> Snapshot {
        let mut s = Snapshot::empty(1, 4, node, 0);
        s.last_batch_n = last_n;
        s.last_committed_batch_ms = Some(1000);
        s.wal_low_water = 57;
        s.sources.insert("cam".into(), set(committed));
        s.carried.push(CarriedRef {
            key: "carried/0000000001/00000000000000000056".into(),
            epoch: 1,
            lo: 40,
            hi: 56,
            blocks: 2,
            bytes: 10,
        });
        s
    }

    #[test]
    fn a_first_start_has_nothing_to_resolve_and_fences_at_batch_one() {
        let p = plan_takeover(Strategy::None, None, &[], "a");
        assert!(p.resolve.is_empty() && p.committed.is_empty() && p.load_carried.is_empty());
        assert_eq!(
            (p.fence_at, p.batch_ms_floor, p.replay_own_wal_from),
            (1, 0, 1)
        );
    }

    #[test]
    fn claims_above_the_checkpoint_are_resolved_in_order_and_the_fence_goes_after_them() {
        let snap = snapshot("a", 5, &[0, 1]);
        let claims = vec![
            (7, batch(2, 3000, &[4])),
            (3, batch(1, 500, &[0])), // below the checkpoint: already covered
            (6, batch(1, 2000, &[2, 3])),
        ];
        let p = plan_takeover(Strategy::ActiveStandby, Some(&snap), &claims, "b");
        assert_eq!(
            p.resolve.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            vec![6, 7]
        );
        assert_eq!(p.fence_at, 8);
        assert_eq!(p.batch_ms_floor, 3001);
        // Another node's checkpoint: its low-water mark says nothing about our WAL.
        assert_eq!(p.replay_own_wal_from, 1);
        assert!(
            p.load_carried.is_empty(),
            "only passive-standby loads blocks"
        );
    }

    #[test]
    fn only_published_claims_count_as_committed() {
        let snap = snapshot("a", 5, &[0, 1]);
        let claims = vec![(6, batch(1, 2000, &[2, 3])), (7, batch(1, 3000, &[4]))];
        let p = plan_takeover(Strategy::UpstreamBackup, Some(&snap), &claims, "b");
        let c = p.committed_with(&[6]);
        let cam = &c["cam"];
        assert!((0..4).all(|q| cam.contains(q)));
        assert!(
            !cam.contains(4),
            "batch 7 was voided: its member is not committed"
        );
    }

    #[test]
    fn a_takeover_claim_moves_the_fence_but_is_not_resolved() {
        let snap = snapshot("a", 5, &[]);
        let takeover = BatchClaim {
            epoch: 2,
            node: "b".into(),
            claimed_unix_ms: 0,
            kind: ClaimKind::Takeover,
        };
        let p = plan_takeover(Strategy::PassiveStandby, Some(&snap), &[(6, takeover)], "a");
        assert!(p.resolve.is_empty());
        assert_eq!(p.fence_at, 7);
        assert_eq!(p.batch_ms_floor, 1001);
    }

    #[test]
    fn a_restart_replays_its_own_wal_from_its_checkpoint_and_passive_loads_carried_blocks() {
        let snap = snapshot("a", 5, &[]);
        let p = plan_takeover(Strategy::PassiveStandby, Some(&snap), &[], "a");
        assert_eq!(p.replay_own_wal_from, 57);
        assert_eq!(p.load_carried.len(), 1);
        assert_eq!(p.fence_at, 6);
    }
}
