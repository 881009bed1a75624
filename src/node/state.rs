//! The node's in-memory ingest state: which `(source, seq)` are durable, committed, in flight or
//! not yet committed, and which connection gets a source's acknowledgements; and the snapshot of it
//! that a checkpoint writes (after a batch commit, or a `passive-standby` carried-block checkpoint).
//!
//! Held under one `std::sync::Mutex`; nothing awaits while holding it.
//!
//! # Bounds (docs/PROTOCOL.md, "Sequence numbers and state")
//!
//! A source's sets are a contiguous prefix plus the sparse seqs above it ([`SeqSet`]). Framed blocks
//! are admitted ([`State::admit_block`]) only within `dedup.window` of the first seq not received yet,
//! with at most `dedup.max_gaps` sparse seqs per source, `dedup.gap_budget` over all sources and
//! `dedup.max_sources` sources; the bounds are checked when a block is read, so blocks already in
//! flight at that moment may pass them by that many. A source idle past `dedup.source_retention` with
//! nothing uncommitted, no block in flight and no connection is forgotten ([`State::forget_idle`])
//! before each checkpoint, unless it is a configured raw source (its counter must go on). Framed
//! clients may not use a raw source's name ([`State::admit_source`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use strategies::snapshot::{CarriedRef, SeqSet, Snapshot};
use tokio::sync::{mpsc, watch};

use super::{now_ms, Node};
use crate::config::{Config, DedupConfig};
use crate::protocol::{ErrorCode, ProtocolError, ServerFrame};
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
    /// When a block of it last arrived, in milliseconds since the Unix epoch.
    pub last_seen_ms: u64,
    /// Its images came in over the raw protocol: framed clients may not use its name.
    pub raw: bool,
    /// The first missing seq when a block carrying it was last admitted (it may not be in flight yet).
    pub filling: Option<u64>,
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
    /// The members of the batch sealed at this LSN, once they are marked committed here and until a
    /// checkpoint that says so is written: a retry after a failed or abandoned checkpoint write finds
    /// them committed in the scan, and takes them from here instead, for its checkpoint and its acks.
    pub retry_members: Option<(Lsn, Vec<(String, u64)>)>,
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
    /// The sparse seqs of every source's durable set, summed (bounded by `dedup.gap_budget`).
    pub gaps: usize,
}

fn refused(code: ErrorCode, message: String) -> ProtocolError {
    ProtocolError::Refused { code, message }
}

impl State {
    pub fn entry(&mut self, source: &str) -> &mut SourceEntry {
        if !self.sources.contains_key(source) {
            self.sources
                .insert(source.to_string(), SourceEntry::default());
        }
        self.sources.get_mut(source).expect("inserted above")
    }

    /// Adds `seq` to a source's durable set, keeping [`State::gaps`] right.
    fn insert_durable(&mut self, source: &str, seq: u64) -> &mut SourceEntry {
        self.entry(source);
        let e = self.sources.get_mut(source).expect("inserted above");
        let before = e.durable.sparse_len();
        e.durable.insert(seq);
        self.gaps = (self.gaps + e.durable.sparse_len()).saturating_sub(before);
        e.next_raw = e.next_raw.max(seq.saturating_add(1));
        e
    }

    /// Counts the sparse seqs again (after sets were replaced or sources dropped).
    pub fn recount_gaps(&mut self) {
        self.gaps = self.sources.values().map(|e| e.durable.sparse_len()).sum();
    }

    /// Counts `set` as committed (and durable) for `source`, which was last seen at `seen_ms` and is
    /// raw if `raw`: what a checkpoint or the batch log says.
    pub fn load_committed(&mut self, source: &str, set: &SeqSet, seen_ms: u64, raw: bool) {
        let e = self.entry(source);
        e.committed.union_with(set);
        e.durable.union_with(set);
        e.next_raw = e.next_raw.max(set.next_after_highest());
        e.last_seen_ms = e.last_seen_ms.max(seen_ms);
        e.raw |= raw;
        let committed = &e.committed;
        e.uncommitted.retain(|seq, _| !committed.contains(*seq));
    }

    /// Records a durable block found by replay or just appended; true if it is committed already.
    pub fn mark_durable(&mut self, source: &str, seq: u64, lsn: Lsn) -> bool {
        let e = self.insert_durable(source, seq);
        e.last_seen_ms = e.last_seen_ms.max(now_ms());
        if e.committed.contains(seq) {
            true
        } else {
            e.uncommitted.entry(seq).or_insert(lsn);
            false
        }
    }

    /// Counts `seq` as committed.
    pub fn mark_committed(&mut self, source: &str, seq: u64) {
        let e = self.insert_durable(source, seq);
        e.committed.insert(seq);
        e.uncommitted.remove(&seq);
    }

    /// Whether a framed connection may call itself `source`: not if it names a raw source of this
    /// node (configured, or one whose images this state holds). The two protocols share the output's
    /// file names (`<source>-<seq>.<ext>`) and the node's `(source, seq)` set, so a framed client
    /// under a raw name would have its blocks taken for raw images (or move the raw counter).
    pub fn admit_source(&self, source: &str, cfg: &Config) -> Result<(), ProtocolError> {
        if cfg.is_raw_source(source) || self.sources.get(source).is_some_and(|e| e.raw) {
            return Err(refused(
                ErrorCode::InvalidSource,
                format!(
                    "source `{source}` is a raw source of this node (its images are numbered by the \
                     node); a framed client must use another name"
                ),
            ));
        }
        Ok(())
    }

    /// Whether a framed block `(source, seq)` may be taken under the `dedup` bounds. A block already
    /// durable or in flight always may (a re-send is acknowledged again).
    pub fn admit_block(
        &mut self,
        source: &str,
        seq: u64,
        d: &DedupConfig,
    ) -> Result<(), ProtocolError> {
        // `closing`: the first missing seq was admitted or is in flight, so the gaps are about to
        // close — a sender that fills a gap and pipelines on is not refused for the gaps it fills.
        let count = self.sources.len();
        let (base, sparse, closing) = match self.sources.get_mut(source) {
            Some(e) if e.durable.contains(seq) || e.inflight.contains_key(&seq) => return Ok(()),
            Some(e) => {
                let base = e.durable.first_missing();
                if seq == base {
                    e.filling = Some(base);
                }
                let closing = e.filling == Some(base) || e.inflight.contains_key(&base);
                (base, e.durable.sparse_len(), closing)
            }
            None if count >= d.max_sources => {
                return Err(refused(
                    ErrorCode::Internal,
                    format!(
                        "the node keeps state for {} sources (dedup.max_sources); block {seq} of the \
                         new source `{source}` is refused until idle ones pass dedup.source_retention",
                        count
                    ),
                ))
            }
            None => (0, 0, false),
        };
        // Not durable, so not below the first missing seq.
        let ahead = seq - base;
        if ahead >= d.window {
            return Err(refused(
                ErrorCode::Malformed,
                format!(
                    "block {seq} of source `{source}` is {ahead} past seq {base}, the first of this \
                     source not received yet; a source's seqs must stay within dedup.window ({}) of it \
                     (count up from 0)",
                    d.window
                ),
            ));
        }
        if ahead > 0 && !closing && sparse >= d.max_gaps {
            return Err(refused(
                ErrorCode::Malformed,
                format!(
                    "source `{source}` has {sparse} blocks held out of order above seq {base}, which has \
                     not arrived (dedup.max_gaps = {}); block {seq} is refused: send seq {base} first",
                    d.max_gaps
                ),
            ));
        }
        if ahead > 0 && !closing && self.gaps >= d.gap_budget {
            return Err(refused(
                ErrorCode::Internal,
                format!(
                    "the node holds {} blocks out of order over all sources (dedup.gap_budget); block \
                     {seq} of `{source}` is refused: send seq {base} first, or try later",
                    self.gaps
                ),
            ));
        }
        Ok(())
    }

    /// Forgets every source no block arrived from for `retention` that has nothing uncommitted, no
    /// block in flight and no connection, unless `keep` says otherwise. Returns how many.
    pub fn forget_idle(
        &mut self,
        now_ms: u64,
        retention: Duration,
        keep: impl Fn(&str) -> bool,
    ) -> usize {
        let retention_ms = retention.as_millis() as u64;
        let before = self.sources.len();
        let conns = &self.conns;
        self.sources.retain(|name, e| {
            now_ms.saturating_sub(e.last_seen_ms) < retention_ms
                || !e.uncommitted.is_empty()
                || !e.inflight.is_empty()
                || conns.contains_key(name)
                || keep(name)
        });
        let forgotten = before - self.sources.len();
        if forgotten > 0 {
            self.recount_gaps();
        }
        forgotten
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
    /// Forgets the sources idle past `dedup.source_retention` (not the configured raw ones).
    pub(super) fn forget_idle_sources(&self, st: &mut State) {
        let cfg = &self.inner.cfg;
        let forgotten = st.forget_idle(now_ms(), cfg.dedup.source_retention, |s| {
            cfg.is_raw_source(s)
        });
        if forgotten > 0 {
            tracing::info!(
                forgotten,
                sources = st.sources.len(),
                retention = %humantime::format_duration(cfg.dedup.source_retention),
                "forgot sources idle past dedup.source_retention; a re-send of theirs is stored again"
            );
        }
    }

    /// A snapshot of the state (under the state lock), with the next checkpoint id; sources idle past
    /// their retention are forgotten first.
    pub(super) fn snapshot_of(&self, st: &mut State, batch_ms: Option<u64>) -> Snapshot {
        self.forget_idle_sources(st);
        st.checkpoint_id += 1;
        let sources = st.committed_sets();
        let last_seen_ms = sources
            .keys()
            .map(|k| (k.clone(), st.sources[k].last_seen_ms))
            .collect();
        let raw_sources = sources
            .keys()
            .filter(|k| st.sources[*k].raw)
            .cloned()
            .collect();
        Snapshot {
            format: Snapshot::FORMAT,
            epoch: self.epoch(),
            id: st.checkpoint_id,
            node: self.inner.cfg.node.name.clone(),
            created_unix_ms: now_ms(),
            last_committed_batch_ms: batch_ms.or(Some(st.last_batch_ms)).filter(|ms| *ms > 0),
            last_committed_seal_lsn: st.last_committed_seal,
            wal_low_water: st.last_committed_seal + 1,
            sources,
            last_batch_n: st.last_batch_n,
            carried: st.carried.clone(),
            last_seen_ms,
            raw_sources,
        }
    }
}
