//! The node's in-memory ingest state: which `(source, seq)` are durable, committed, in flight or
//! not yet committed, and which connection gets a source's acknowledgements; and the snapshot of it
//! that a checkpoint writes (after a batch commit, or a `passive-standby` carried-block checkpoint).
//!
//! Held under one `std::sync::Mutex`; nothing awaits while holding it.

use std::collections::{BTreeMap, HashMap};

use strategies::snapshot::{CarriedRef, SeqSet, Snapshot};
use tokio::sync::{mpsc, watch};

use super::{now_ms, Node};
use crate::protocol::ServerFrame;
use crate::wal::Lsn;

/// The outcome of an append others are waiting on: `Ok(lsn)` or the error text.
pub type Outcome = Option<Result<Lsn, String>>;

#[derive(Default)]
pub struct SourceEntry {
    /// Every seq in the WAL or committed: a block arriving again is acknowledged without a second copy.
    pub durable: SeqSet,
    /// Every seq in a published batch (by any node): never published again.
    pub committed: SeqSet,
    /// Appends in flight: a duplicate arriving meanwhile waits for the first one's outcome.
    pub inflight: HashMap<u64, watch::Sender<Outcome>>,
    /// Durable but not yet in a committed batch, with the LSN of its WAL record.
    pub uncommitted: HashMap<u64, Lsn>,
    /// The next sequence number a raw image of this source gets.
    pub next_raw: u64,
}

/// A framed connection that receives a source's later acks (committed, checkpointed).
pub struct ConnHandle {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<ServerFrame>,
}

/// A sealed batch whose commit has not succeeded yet; retried under the same seal, name and number.
#[derive(Clone, Copy, Debug)]
pub struct PendingCommit {
    pub prev_seal: Lsn,
    pub seal: Lsn,
    pub batch_ms: u64,
    pub n: u64,
    /// When it was sealed (a retry keeps it): a passive checkpoint leaves a fresh batch's blocks to it.
    pub sealed_at: std::time::Instant,
}

#[derive(Default)]
pub struct State {
    pub sources: HashMap<String, SourceEntry>,
    pub conns: HashMap<String, ConnHandle>,
    /// Every WAL record up to here is in a committed batch or not needed (0: none).
    pub last_committed_seal: Lsn,
    /// The batch time of the newest seal (committed or being committed).
    pub last_batch_ms: u64,
    pub checkpoint_id: u64,
    pub pending_commit: Option<PendingCommit>,
    /// The number the next batch claims in the batch log.
    pub next_batch_n: u64,
    /// Every claim up to here is published and counted in `committed`, or resolved.
    pub last_batch_n: u64,
    /// `passive-standby`: the checkpointed block objects still needed, and the last LSN they cover.
    pub carried: Vec<CarriedRef>,
    pub carried_hi: Lsn,
    /// Appends between their start and the marking of their block: for each, the WAL's next LSN
    /// when it started, which its record's LSN is at or above. Such a block is in no other map (not
    /// in flight any more, not yet uncommitted), so a standby trimming its WAL must stay below these.
    pub appending: BTreeMap<Lsn, usize>,
}

impl State {
    pub fn entry(&mut self, source: &str) -> &mut SourceEntry {
        if !self.sources.contains_key(source) {
            self.sources
                .insert(source.to_string(), SourceEntry::default());
        }
        self.sources.get_mut(source).expect("inserted above")
    }

    /// Records a durable block found by replay or just appended; true if it is committed already.
    pub fn mark_durable(&mut self, source: &str, seq: u64, lsn: Lsn) -> bool {
        let e = self.entry(source);
        e.durable.insert(seq);
        e.next_raw = e.next_raw.max(seq + 1);
        if e.committed.contains(seq) {
            true
        } else {
            e.uncommitted.entry(seq).or_insert(lsn);
            false
        }
    }

    /// Counts `seq` as committed.
    pub fn mark_committed(&mut self, source: &str, seq: u64) {
        let e = self.entry(source);
        e.committed.insert(seq);
        e.durable.insert(seq);
        e.next_raw = e.next_raw.max(seq + 1);
        e.uncommitted.remove(&seq);
    }

    pub fn is_committed(&self, source: &str, seq: u64) -> bool {
        self.sources
            .get(source)
            .is_some_and(|e| e.committed.contains(seq))
    }

    /// The committed sets, for a snapshot.
    pub fn committed_sets(&self) -> std::collections::BTreeMap<String, SeqSet> {
        self.sources
            .iter()
            .filter(|(_, e)| !e.committed.is_empty())
            .map(|(k, e)| (k.clone(), e.committed.clone()))
            .collect()
    }

    /// The lowest LSN of a block not committed, if any.
    pub fn lowest_uncommitted(&self) -> Option<Lsn> {
        self.sources
            .values()
            .filter_map(|e| e.uncommitted.values().min().copied())
            .min()
    }

    /// The lowest LSN a block not yet committed may have: uncommitted blocks, and appends whose block
    /// is not marked yet.
    pub fn lowest_needed(&self) -> Option<Lsn> {
        let appending = self.appending.keys().next().copied();
        match (self.lowest_uncommitted(), appending) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// An append starts; its record's LSN will be at or above `floor`.
    pub fn start_append(&mut self, floor: Lsn) {
        *self.appending.entry(floor).or_default() += 1;
    }

    /// The append that started at `floor` has marked its block (or failed).
    pub fn end_append(&mut self, floor: Lsn) {
        if let Some(n) = self.appending.get_mut(&floor) {
            *n -= 1;
            if *n == 0 {
                self.appending.remove(&floor);
            }
        }
    }
}

impl Node {
    /// A snapshot of the state (under the state lock), with the next checkpoint id.
    pub(super) fn snapshot_of(&self, st: &mut State, batch_ms: Option<u64>) -> Snapshot {
        st.checkpoint_id += 1;
        Snapshot {
            format: Snapshot::FORMAT,
            epoch: self.epoch(),
            id: st.checkpoint_id,
            node: self.inner.cfg.node.name.clone(),
            created_unix_ms: now_ms(),
            last_committed_batch_ms: batch_ms.or(Some(st.last_batch_ms)).filter(|ms| *ms > 0),
            last_committed_seal_lsn: st.last_committed_seal,
            wal_low_water: st.last_committed_seal + 1,
            sources: st.committed_sets(),
            last_batch_n: st.last_batch_n,
            carried: st.carried.clone(),
        }
    }
}
