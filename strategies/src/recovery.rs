//! Recovery decisions as pure functions: from the newest snapshot and the seal records found
//! in the local WAL to what a restarting node must do.
//!
//! # Design
//!
//! The WAL holds data records and, per batch interval, one *seal* record that closes the
//! batch (its LSN and batch time). Output for a batch is committed after its seal; the
//! snapshot records the LSN of the newest committed seal and the WAL's low-water mark. On
//! restart a node must therefore:
//!
//! * replay the WAL from the snapshot's `wal_low_water` (every earlier record is covered by a
//!   committed batch), or from LSN 1 without a snapshot;
//! * re-commit every sealed batch whose seal LSN is above `last_committed_seal_lsn`, in LSN
//!   order — the sink's deterministic names make a re-commit of an already published batch a
//!   no-op, so "at least once" here yields "exactly once" in the output;
//! * start new batches strictly after every batch time already used, committed or sealed, so
//!   no new batch can collide with (and overwrite) an earlier one's directory.
//!
//! Keeping this free of I/O makes every corner (no snapshot, empty WAL, seals already
//! committed, seals out of order) a unit test.

use crate::snapshot::{Lsn, Snapshot};

/// A seal record found in the WAL: the batch with time `batch_ms` was closed at `lsn`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealInfo {
    /// The seal record's LSN.
    pub lsn: Lsn,
    /// The batch time it seals, in milliseconds since the Unix epoch.
    pub batch_ms: u64,
}

/// What a restarting node does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveryPlan {
    /// Replay WAL records from this LSN on.
    pub replay_from: Lsn,
    /// Sealed batches not known to be committed, in LSN order: commit each again.
    pub recommit: Vec<SealInfo>,
    /// New batches must use a batch time `>=` this (0 when no batch time was ever used).
    pub next_batch_ms_floor: u64,
}

/// Plans recovery from the newest snapshot (if any) and the seals found in the WAL.
pub fn plan_recovery(snapshot: Option<&Snapshot>, sealed_in_wal: &[SealInfo]) -> RecoveryPlan {
    let replay_from = snapshot.map_or(1, |s| s.wal_low_water.max(1));
    let committed = snapshot.map_or(0, |s| s.last_committed_seal_lsn);
    let mut recommit: Vec<SealInfo> = sealed_in_wal
        .iter()
        .filter(|seal| seal.lsn > committed)
        .copied()
        .collect();
    recommit.sort_by_key(|seal| seal.lsn);
    let newest_seen = sealed_in_wal
        .iter()
        .map(|seal| seal.batch_ms)
        .chain(snapshot.and_then(|s| s.last_committed_batch_ms))
        .max();
    RecoveryPlan {
        replay_from,
        recommit,
        next_batch_ms_floor: newest_seen.map_or(0, |ms| ms.saturating_add(1)),
    }
}

/// The WAL low-water mark once the batch sealed at `seal_lsn` is committed: every record up
/// to and including the seal is covered by output.
pub fn low_water_after_commit(seal_lsn: Lsn) -> Lsn {
    seal_lsn.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(lsn: Lsn, batch_ms: u64) -> SealInfo {
        SealInfo { lsn, batch_ms }
    }

    fn snapshot(committed_seal: Lsn, committed_batch: Option<u64>) -> Snapshot {
        let mut snap = Snapshot::empty(1, 1, "n", 0);
        snap.last_committed_seal_lsn = committed_seal;
        snap.last_committed_batch_ms = committed_batch;
        snap.wal_low_water = if committed_seal == 0 {
            0
        } else {
            low_water_after_commit(committed_seal)
        };
        snap
    }

    #[test]
    fn without_a_snapshot_everything_is_replayed_and_recommitted() {
        let plan = plan_recovery(None, &[seal(10, 2000), seal(5, 1000)]);
        assert_eq!(plan.replay_from, 1);
        assert_eq!(plan.recommit, vec![seal(5, 1000), seal(10, 2000)]);
        assert_eq!(plan.next_batch_ms_floor, 2001);
    }

    #[test]
    fn an_empty_wal_without_a_snapshot_starts_from_scratch() {
        let plan = plan_recovery(None, &[]);
        assert_eq!(
            plan,
            RecoveryPlan {
                replay_from: 1,
                recommit: vec![],
                next_batch_ms_floor: 0
            }
        );
    }

    #[test]
    fn replay_starts_at_the_snapshots_low_water_mark() {
        let snap = snapshot(40, Some(5000));
        let plan = plan_recovery(Some(&snap), &[]);
        assert_eq!(plan.replay_from, 41);
        assert!(plan.recommit.is_empty());
        assert_eq!(plan.next_batch_ms_floor, 5001);
    }

    #[test]
    fn a_snapshot_with_nothing_committed_replays_from_the_first_record() {
        let snap = snapshot(0, None);
        let plan = plan_recovery(Some(&snap), &[seal(3, 100)]);
        assert_eq!(plan.replay_from, 1);
        assert_eq!(plan.recommit, vec![seal(3, 100)]);
    }

    #[test]
    fn only_seals_after_the_committed_one_are_recommitted_in_lsn_order() {
        let snap = snapshot(20, Some(2000));
        let wal = [
            seal(30, 3000),
            seal(10, 1000),
            seal(20, 2000),
            seal(25, 2500),
        ];
        let plan = plan_recovery(Some(&snap), &wal);
        assert_eq!(plan.recommit, vec![seal(25, 2500), seal(30, 3000)]);
        assert_eq!(plan.next_batch_ms_floor, 3001);
    }

    #[test]
    fn the_next_batch_is_after_a_committed_batch_newer_than_any_seal_left_in_the_wal() {
        // The WAL segments holding the newest seals were already trimmed.
        let snap = snapshot(50, Some(9000));
        let plan = plan_recovery(Some(&snap), &[seal(10, 1000)]);
        assert!(plan.recommit.is_empty());
        assert_eq!(plan.next_batch_ms_floor, 9001);
    }

    #[test]
    fn the_low_water_mark_after_a_commit_is_just_past_the_seal() {
        assert_eq!(low_water_after_commit(7), 8);
        assert_eq!(low_water_after_commit(u64::MAX), u64::MAX);
    }
}
