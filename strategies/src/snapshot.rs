//! What a checkpoint records: [`Snapshot`] and the per-source sequence sets in it.
//!
//! # Design
//!
//! A snapshot is the whole state a node needs to resume: which epoch wrote it, up to which
//! seal record of the WAL the output is committed, from where the WAL is still needed, and per
//! source every sequence number made durable so far. It is serialized as JSON (readable
//! when debugging a stuck pipeline, and tiny next to the images) and stored as an immutable
//! object by [`crate::checkpoint::Checkpointer`].
//!
//! [`SeqSet`] keeps "every seq made durable" compact: sources send sequence numbers mostly in
//! order, so the set is a watermark `below` (every seq `< below` is present) plus the sparse
//! out-of-order seqs `above` it. `insert` compacts `above` into `below` as gaps close, so a
//! source that delivered a million blocks in order costs one integer. A deserialized set is
//! validated (no element of `above` below the watermark) and normalized.
//!
//! `format` is [`Snapshot::FORMAT`] (2: `sources` are the *committed* sets, with the batch log and the
//! carried blocks); a reader refuses other formats rather than guessing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A log sequence number in the write-ahead log; the first record has LSN 1, 0 means none.
pub type Lsn = u64;

/// A set of sequence numbers stored as a watermark plus the out-of-order ones above it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SeqSetRepr")]
pub struct SeqSet {
    /// Every seq `< below` is in the set.
    below: u64,
    /// Members `> below` (never `below` itself: that would have been compacted).
    above: BTreeSet<u64>,
}

#[derive(Deserialize)]
struct SeqSetRepr {
    below: u64,
    above: BTreeSet<u64>,
}

impl TryFrom<SeqSetRepr> for SeqSet {
    type Error = String;

    fn try_from(repr: SeqSetRepr) -> Result<Self, String> {
        if let Some(&first) = repr.above.first() {
            if first < repr.below {
                return Err(format!(
                    "seq set lists {first} above the watermark {} it is below",
                    repr.below
                ));
            }
        }
        let mut set = SeqSet {
            below: repr.below,
            above: repr.above,
        };
        set.compact();
        Ok(set)
    }
}

impl SeqSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `seq`; `true` if it was not already present.
    pub fn insert(&mut self, seq: u64) -> bool {
        if self.contains(seq) {
            return false;
        }
        self.above.insert(seq);
        self.compact();
        true
    }

    fn compact(&mut self) {
        while let Some(&first) = self.above.first() {
            // `below` cannot pass u64::MAX, so u64::MAX itself stays in `above`.
            if first != self.below || self.below == u64::MAX {
                break;
            }
            self.above.pop_first();
            self.below += 1;
        }
    }

    /// Whether `seq` is in the set.
    pub fn contains(&self, seq: u64) -> bool {
        seq < self.below || self.above.contains(&seq)
    }

    /// The largest member, if any.
    pub fn highest(&self) -> Option<u64> {
        self.above
            .last()
            .copied()
            .or_else(|| self.below.checked_sub(1))
    }

    /// The number of members (saturating at `u64::MAX`).
    pub fn len(&self) -> u64 {
        self.below.saturating_add(self.above.len() as u64)
    }

    /// Whether the set has no members.
    pub fn is_empty(&self) -> bool {
        self.below == 0 && self.above.is_empty()
    }

    /// One past the largest member, or 0 for the empty set (saturating at `u64::MAX`).
    pub fn next_after_highest(&self) -> u64 {
        self.highest().map_or(0, |h| h.saturating_add(1))
    }

    /// Adds every member of `other`.
    pub fn union_with(&mut self, other: &SeqSet) {
        if other.below > self.below {
            self.below = other.below;
            let keep = self.above.split_off(&other.below);
            self.above = keep;
        }
        for &seq in &other.above {
            if seq >= self.below {
                self.above.insert(seq);
            }
        }
        self.compact();
    }

    /// The members, in order (for small sets: a batch's members).
    pub fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.below).chain(self.above.iter().copied())
    }

    /// The smallest seq not in the set: every seq below it is present.
    pub fn first_missing(&self) -> u64 {
        self.below
    }

    /// How many members lie above [`SeqSet::first_missing`]: the sparse ones, each stored on its own.
    pub fn sparse_len(&self) -> usize {
        self.above.len()
    }
}

/// One checkpoint of a pipeline's state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The encoding version, [`Snapshot::FORMAT`].
    pub format: u32,
    /// The epoch of the node that wrote it.
    pub epoch: u64,
    /// Strictly increasing per checkpoint of a pipeline.
    pub id: u64,
    /// The node that wrote it.
    pub node: String,
    /// When it was taken, in milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// The batch time of the newest batch committed to the output, if any.
    pub last_committed_batch_ms: Option<u64>,
    /// The LSN of the seal record of the newest committed batch; 0 = nothing committed.
    pub last_committed_seal_lsn: Lsn,
    /// WAL records below this LSN are no longer needed.
    pub wal_low_water: Lsn,
    /// Per source, every seq in a committed (published) batch. A takeover node treats these as
    /// duplicates; everything else it must store and commit.
    pub sources: BTreeMap<String, SeqSet>,
    /// The number of the newest batch in the batch log ([`crate::claims`]) this snapshot covers
    /// (0: none). Claims above it are resolved by the next node that starts.
    #[serde(default)]
    pub last_batch_n: u64,
    /// `passive-standby`: the checkpointed objects of uncommitted blocks still needed, oldest first.
    #[serde(default)]
    pub carried: Vec<CarriedRef>,
    /// Per source of `sources`, when a block of it last arrived, in milliseconds since the Unix
    /// epoch: a source idle past the node's `dedup.source_retention` is dropped from the next
    /// checkpoint. Absent from checkpoints written before it existed (and for a source missing here):
    /// [`Snapshot::last_seen_ms`] counts such a source as seen when the snapshot was created.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub last_seen_ms: BTreeMap<String, u64>,
    /// The sources of `sources` whose blocks came in over the raw protocol (numbered by the node):
    /// a framed client may not use these names. Absent from older checkpoints (none known).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub raw_sources: BTreeSet<String>,
}

/// One immutable object of blocks a `passive-standby` primary checkpointed before committing them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedRef {
    /// Its key in the checkpoint store ([`crate::paths::carried`]).
    pub key: String,
    /// The epoch of the node that wrote it (its LSNs are that node's WAL's).
    pub epoch: u64,
    /// The blocks it holds came from WAL records `lo..=hi` of the writer.
    pub lo: Lsn,
    pub hi: Lsn,
    /// How many blocks and payload bytes it holds.
    pub blocks: u64,
    pub bytes: u64,
}

impl Snapshot {
    /// The only encoding version this crate writes and reads.
    pub const FORMAT: u32 = 2;

    /// The state before anything was received: epoch `epoch`, checkpoint `id`, nothing
    /// committed, the whole WAL needed.
    pub fn empty(epoch: u64, id: u64, node: impl Into<String>, created_unix_ms: u64) -> Self {
        Snapshot {
            format: Self::FORMAT,
            epoch,
            id,
            node: node.into(),
            created_unix_ms,
            last_committed_batch_ms: None,
            last_committed_seal_lsn: 0,
            wal_low_water: 0,
            sources: BTreeMap::new(),
            last_batch_n: 0,
            carried: Vec::new(),
            last_seen_ms: BTreeMap::new(),
            raw_sources: BTreeSet::new(),
        }
    }

    /// When a block of `source` last arrived: its entry in `last_seen_ms`, else the snapshot's
    /// creation time (a checkpoint written before sources were timed).
    pub fn last_seen_ms(&self, source: &str) -> u64 {
        self.last_seen_ms
            .get(source)
            .copied()
            .unwrap_or(self.created_unix_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_union_holds_exactly_the_members_of_both_sets() {
        let mut a = SeqSet::new();
        let mut b = SeqSet::new();
        for q in [0, 1, 2, 7, 9] {
            a.insert(q);
        }
        for q in [0, 1, 2, 3, 4, 5, 8, 12] {
            b.insert(q);
        }
        let mut u = a.clone();
        u.union_with(&b);
        let members: Vec<u64> = u.iter().collect();
        assert_eq!(members, vec![0, 1, 2, 3, 4, 5, 7, 8, 9, 12]);
        let mut v = b.clone();
        v.union_with(&a);
        assert_eq!(u, v);
        assert_eq!(u.first_missing(), 6);
    }
    use proptest::prelude::*;

    #[test]
    fn in_order_inserts_collapse_into_the_watermark() {
        let mut set = SeqSet::new();
        for seq in 0..1000 {
            assert!(set.insert(seq));
        }
        assert_eq!(set.first_missing(), 1000);
        assert_eq!(set.len(), 1000);
        let json = serde_json::to_string(&set).unwrap();
        assert_eq!(json, r#"{"below":1000,"above":[]}"#);
    }

    #[test]
    fn a_closed_gap_is_compacted() {
        let mut set = SeqSet::new();
        assert!(set.insert(1));
        assert!(set.insert(2));
        assert_eq!(set.first_missing(), 0);
        assert!(!set.contains(0));
        assert!(set.insert(0));
        assert_eq!(set.first_missing(), 3);
        assert!(!set.insert(1));
        assert_eq!(set.highest(), Some(2));
        assert_eq!(set.next_after_highest(), 3);
    }

    #[test]
    fn the_empty_set_has_no_highest() {
        let set = SeqSet::new();
        assert!(set.is_empty());
        assert_eq!(set.highest(), None);
        assert_eq!(set.next_after_highest(), 0);
        assert_eq!(set.len(), 0);
    }

    #[test]
    fn the_largest_seq_can_be_inserted_without_overflow() {
        let mut set = SeqSet::new();
        assert!(set.insert(u64::MAX));
        assert!(set.contains(u64::MAX));
        assert_eq!(set.highest(), Some(u64::MAX));
        assert_eq!(set.next_after_highest(), u64::MAX);
        assert!(!set.insert(u64::MAX));
    }

    #[test]
    fn a_seq_set_with_members_below_its_watermark_is_refused() {
        let err = serde_json::from_str::<SeqSet>(r#"{"below":5,"above":[3]}"#).unwrap_err();
        assert!(err.to_string().contains("watermark"), "{err}");
    }

    #[test]
    fn a_decoded_seq_set_is_normalized() {
        let set: SeqSet = serde_json::from_str(r#"{"below":2,"above":[2,3,7]}"#).unwrap();
        assert_eq!(set.first_missing(), 4);
        let mut expected = SeqSet::new();
        for seq in [0, 1, 2, 3, 7] {
            expected.insert(seq);
        }
        assert_eq!(set, expected);
    }

    #[test]
    fn a_snapshot_round_trips_through_json() {
        let mut snap = Snapshot::empty(3, 42, "node-a", 1_700_000_000_000);
        snap.last_committed_batch_ms = Some(1_700_000_000_000);
        snap.last_committed_seal_lsn = 17;
        snap.wal_low_water = 18;
        let mut seqs = SeqSet::new();
        for seq in [0, 1, 2, 9] {
            seqs.insert(seq);
        }
        snap.sources.insert("camera-1".into(), seqs);
        let json = serde_json::to_vec(&snap).unwrap();
        let back: Snapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, snap);
        assert_eq!(back.format, Snapshot::FORMAT);
    }

    #[test]
    fn a_snapshot_written_before_sources_were_timed_still_decodes() {
        // A format 2 checkpoint as nodes wrote it before `last_seen_ms` and `raw_sources` existed.
        let old = r#"{"format":2,"epoch":1,"id":7,"node":"node-a","created_unix_ms":1700000000000,
            "last_committed_batch_ms":1699999999000,"last_committed_seal_lsn":40,"wal_low_water":41,
            "sources":{"cam-1":{"below":12,"above":[20]}},"last_batch_n":3,"carried":[]}"#;
        let snap: Snapshot = serde_json::from_str(old).unwrap();
        assert_eq!(snap.sources["cam-1"].first_missing(), 12);
        assert!(snap.last_seen_ms.is_empty() && snap.raw_sources.is_empty());
        assert_eq!(snap.last_seen_ms("cam-1"), 1_700_000_000_000);
        // Written again, it has no new keys while they are empty: older readers read it too.
        let json = serde_json::to_string(&snap).unwrap();
        assert!(
            !json.contains("last_seen_ms") && !json.contains("raw_sources"),
            "{json}"
        );
    }

    proptest! {
        #[test]
        fn a_seq_set_behaves_like_a_btree_set(
            seqs in proptest::collection::vec(
                prop_oneof![0u64..64, 0u64..4096, Just(u64::MAX), (u64::MAX - 3)..=u64::MAX],
                0..200,
            ),
            probes in proptest::collection::vec(0u64..4200, 0..50),
        ) {
            let mut set = SeqSet::new();
            let mut model = BTreeSet::new();
            for seq in &seqs {
                prop_assert_eq!(set.insert(*seq), model.insert(*seq));
                prop_assert_eq!(set.len(), model.len() as u64);
                prop_assert_eq!(set.highest(), model.last().copied());
                prop_assert_eq!(set.is_empty(), model.is_empty());
            }
            for seq in seqs.iter().chain(probes.iter()) {
                prop_assert_eq!(set.contains(*seq), model.contains(seq));
            }
            prop_assert_eq!(
                set.next_after_highest(),
                model.last().map_or(0, |h| h.saturating_add(1))
            );
            let first_missing = (0..).find(|s| !model.contains(s)).unwrap();
            prop_assert_eq!(set.first_missing(), first_missing);
            let back: SeqSet = serde_json::from_str(&serde_json::to_string(&set).unwrap()).unwrap();
            prop_assert_eq!(back, set);
        }
    }
}
