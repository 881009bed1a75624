//! What happened to every block of a push, and when: for benchmarks (recovery time, release latency
//! per strategy) and for tests that need more than totals.
//!
//! Per `(source, seq)` it keeps the instant the block was first sent (to any node), released (the
//! sender let it go: the release condition of its mode held) and first acknowledged *committed* by any
//! node (committed acks often arrive after the release, and are recorded then too). Per target address
//! it counts the bytes written to that node's socket: hellos and block frames, re-sends included, so
//! mirror mode's 2x network cost shows up as such; and it keeps when that node acknowledged anything
//! (any level), so a failover's first ack from the new primary can be timed.
//!
//! Recording takes a lock per block; a push only records when it was given a timeline.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Instant;

/// One block's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimelineEntry {
    pub source: String,
    pub seq: u64,
    /// First sent, to any node.
    pub sent: Instant,
    /// Let go by the sender.
    pub released: Option<Instant>,
    /// First committed ack, from any node.
    pub committed: Option<Instant>,
}

#[derive(Clone, Copy, Debug)]
struct Times {
    sent: Instant,
    released: Option<Instant>,
    committed: Option<Instant>,
}

/// Shared by the workers of one push; read it after the run with [`Timeline::entries`] and
/// [`Timeline::bytes_by_target`].
#[derive(Debug, Default)]
pub struct Timeline {
    blocks: Mutex<HashMap<String, BTreeMap<u64, Times>>>,
    bytes: Mutex<BTreeMap<String, u64>>,
    /// Every ack instant per target address, in arrival order.
    acks: Mutex<BTreeMap<String, Vec<Instant>>>,
}

impl Timeline {
    pub fn new() -> Timeline {
        Timeline::default()
    }

    /// Records the first send of a block; later calls (re-sends) change nothing.
    pub fn sent(&self, source: &str, seq: u64, at: Instant) {
        let mut b = lock(&self.blocks);
        let per = match b.get_mut(source) {
            Some(p) => p,
            None => b.entry(source.to_string()).or_default(),
        };
        per.entry(seq).or_insert(Times {
            sent: at,
            released: None,
            committed: None,
        });
    }

    /// Records the release of a block that was recorded as sent; the first call wins.
    pub fn released(&self, source: &str, seq: u64, at: Instant) {
        if let Some(t) = lock(&self.blocks)
            .get_mut(source)
            .and_then(|p| p.get_mut(&seq))
        {
            t.released.get_or_insert(at);
        }
    }

    /// Records an ack of any level from `target`.
    pub fn acked(&self, target: &str, at: Instant) {
        let mut a = lock(&self.acks);
        match a.get_mut(target) {
            Some(v) => v.push(at),
            None => {
                a.insert(target.to_string(), vec![at]);
            }
        }
    }

    /// The first ack from `target` at or after `from`.
    pub fn first_ack_from(&self, target: &str, from: Instant) -> Option<Instant> {
        lock(&self.acks)
            .get(target)
            .and_then(|v| v.iter().copied().filter(|t| *t >= from).min())
    }

    /// Records the first committed ack of a block that was recorded as sent.
    pub fn committed(&self, source: &str, seq: u64, at: Instant) {
        if let Some(t) = lock(&self.blocks)
            .get_mut(source)
            .and_then(|p| p.get_mut(&seq))
        {
            t.committed.get_or_insert(at);
        }
    }

    /// Counts `n` bytes written to `target`.
    pub fn add_bytes(&self, target: &str, n: u64) {
        let mut b = lock(&self.bytes);
        match b.get_mut(target) {
            Some(v) => *v += n,
            None => {
                b.insert(target.to_string(), n);
            }
        }
    }

    /// Every block recorded, sorted by source then sequence number.
    pub fn entries(&self) -> Vec<TimelineEntry> {
        let b = lock(&self.blocks);
        let mut sources: Vec<&String> = b.keys().collect();
        sources.sort();
        sources
            .into_iter()
            .flat_map(|s| {
                b[s].iter().map(move |(seq, t)| TimelineEntry {
                    source: s.clone(),
                    seq: *seq,
                    sent: t.sent,
                    released: t.released,
                    committed: t.committed,
                })
            })
            .collect()
    }

    /// Bytes written to each target address (network bytes, re-sends included).
    pub fn bytes_by_target(&self) -> BTreeMap<String, u64> {
        lock(&self.bytes).clone()
    }

    /// Bytes written to all targets.
    pub fn bytes_total(&self) -> u64 {
        lock(&self.bytes).values().sum()
    }
}

/// A panic while holding the lock cannot leave these maps inconsistent (every update is one insert),
/// so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_first_send_release_and_commit_of_a_block_are_kept_and_later_ones_ignored() {
        let t = Timeline::new();
        let t0 = Instant::now();
        let later = |ms| t0 + Duration::from_millis(ms);
        t.sent("b", 1, t0);
        t.sent("a", 2, later(1));
        t.sent("a", 2, later(50)); // a re-send
        t.released("a", 2, later(3));
        t.released("a", 2, later(60));
        t.committed("a", 2, later(9));
        t.committed("a", 2, later(70));
        t.committed("zzz", 0, later(9)); // never sent: not recorded
        let e = t.entries();
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].source.as_str(), e[0].seq), ("a", 2));
        assert_eq!(e[0].sent, later(1));
        assert_eq!(e[0].released, Some(later(3)));
        assert_eq!(e[0].committed, Some(later(9)));
        assert_eq!((e[1].source.as_str(), e[1].released), ("b", None));
    }

    #[test]
    fn bytes_are_counted_per_target_and_in_total() {
        let t = Timeline::new();
        t.add_bytes("n1:1", 10);
        t.add_bytes("n2:2", 5);
        t.add_bytes("n1:1", 7);
        assert_eq!(t.bytes_by_target()["n1:1"], 17);
        assert_eq!(t.bytes_by_target()["n2:2"], 5);
        assert_eq!(t.bytes_total(), 22);
    }
}
