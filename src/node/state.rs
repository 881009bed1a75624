//! The node's in-memory ingest state: which `(source, seq)` are durable, in flight or not yet committed,
//! and which connection gets a source's committed acknowledgements.
//!
//! Held under one `std::sync::Mutex`; nothing awaits while holding it.

use std::collections::{HashMap, HashSet};

use strategies::snapshot::SeqSet;
use tokio::sync::{mpsc, watch};

use crate::receiver::protocol::ServerFrame;
use crate::wal::Lsn;

/// The outcome of an append others are waiting on: `Ok(lsn)` or the error text.
pub type Outcome = Option<Result<Lsn, String>>;

#[derive(Default)]
pub struct SourceEntry {
    /// Every seq in the WAL (or below the checkpoint's low-water mark).
    pub durable: SeqSet,
    /// Appends in flight: a duplicate arriving meanwhile waits for the first one's outcome.
    pub inflight: HashMap<u64, watch::Sender<Outcome>>,
    /// Durable but not yet in a committed batch.
    pub uncommitted: HashSet<u64>,
    /// The next sequence number a raw image of this source gets.
    pub next_raw: u64,
}

/// A framed connection that receives a source's committed acks.
pub struct ConnHandle {
    pub id: u64,
    pub tx: mpsc::UnboundedSender<ServerFrame>,
}

/// A sealed batch whose commit has not succeeded yet; retried under the same seal and name.
#[derive(Clone, Copy, Debug)]
pub struct PendingCommit {
    pub prev_seal: Lsn,
    pub seal: Lsn,
    pub batch_ms: u64,
}

#[derive(Default)]
pub struct State {
    pub sources: HashMap<String, SourceEntry>,
    pub conns: HashMap<String, ConnHandle>,
    /// The LSN of the newest seal whose batch is published and checkpointed (0: none).
    pub last_committed_seal: Lsn,
    /// The batch time of the newest seal (committed or being committed).
    pub last_batch_ms: u64,
    pub checkpoint_id: u64,
    pub pending_commit: Option<PendingCommit>,
}

impl State {
    pub fn entry(&mut self, source: &str) -> &mut SourceEntry {
        if !self.sources.contains_key(source) {
            self.sources
                .insert(source.to_string(), SourceEntry::default());
        }
        self.sources.get_mut(source).expect("inserted above")
    }

    /// Records a durable block found by replay or just appended.
    pub fn mark_durable(&mut self, source: &str, seq: u64, lsn: Lsn) -> bool {
        let last_committed = self.last_committed_seal;
        let e = self.entry(source);
        e.durable.insert(seq);
        e.next_raw = e.next_raw.max(seq + 1);
        if lsn > last_committed {
            e.uncommitted.insert(seq);
            false
        } else {
            true
        }
    }
}
