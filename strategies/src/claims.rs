//! The batch log: every batch published to the output is first *claimed* here, by number.
//!
//! # Design
//!
//! Batches are numbered `n = 1, 2, …` across all nodes and epochs. Before a node renames a staged
//! batch into the output it writes `create_if_absent(batches/<n:020>, claim)`; the claim names the
//! epoch, the node, the batch time (and so the output directory `<prefix>-<batch ms>`) and the
//! members `(source, seq)`. Create-if-absent is atomic in every shared backend, so exactly one node
//! owns each `n`.
//!
//! A node that starts or takes over ([`crate::takeover`]) reads the claims above the newest
//! checkpoint, writes a [`ClaimKind::Takeover`] claim right after the last one (so no node of an
//! older epoch can claim anything after it: its next claim collides and it learns it is fenced),
//! and resolves each batch claim: it publishes an empty *void* batch under the claimed name. The
//! output's rename never replaces, so either the void lands (the claimant never published; its
//! members are not committed and will be stored again) or the claimant's batch is there (its
//! members are committed). A claimant that later finds its name taken by a void stops: it was
//! fenced. Either way no member is ever in two published batches.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::snapshot::SeqSet;
use crate::store::{CheckpointStore, StoreError};

/// Why reading or writing the batch log failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A claim object is not valid claim JSON.
    #[error("batch claim {key} does not decode: {source}")]
    Decode {
        /// The claim's key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A claim could not be encoded.
    #[error("batch claim {key} could not be encoded: {source}")]
    Encode {
        /// The key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// What a claim is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ClaimKind {
    /// A batch about to be published at batch time `batch_ms` with exactly these members.
    Batch {
        batch_ms: u64,
        members: BTreeMap<String, SeqSet>,
        /// The batch directory the claimant publishes, relative to the output root (absent in
        /// claims written before output layouts: `<prefix>-<batch_ms>` then). A node that resolves
        /// the claim voids this path, whatever its own layout computes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dir: Option<String>,
    },
    /// A node took over here: every older epoch's claim is below this number.
    Takeover,
}

/// One entry of the batch log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchClaim {
    /// The epoch of the claimant.
    pub epoch: u64,
    /// The claimant's node name.
    pub node: String,
    /// When, in milliseconds since the Unix epoch.
    pub claimed_unix_ms: u64,
    /// What it claims.
    #[serde(flatten)]
    pub kind: ClaimKind,
}

impl BatchClaim {
    /// The batch directory a batch claim recorded, if it recorded one.
    pub fn batch_dir(&self) -> Option<&str> {
        match &self.kind {
            ClaimKind::Batch { dir, .. } => dir.as_deref(),
            ClaimKind::Takeover => None,
        }
    }

    /// The batch time of a batch claim.
    pub fn batch_ms(&self) -> Option<u64> {
        match &self.kind {
            ClaimKind::Batch { batch_ms, .. } => Some(*batch_ms),
            ClaimKind::Takeover => None,
        }
    }
}

/// The result of [`claim`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// The claim is ours.
    Won,
    /// Someone (possibly an earlier attempt of ours) holds `n` with this claim.
    Held(BatchClaim),
}

/// Claims batch `n` with `claim`, never replacing an existing claim.
pub async fn claim(
    store: &dyn CheckpointStore,
    n: u64,
    claim: &BatchClaim,
) -> Result<ClaimOutcome, ClaimError> {
    let key = paths::batch(n);
    let body = serde_json::to_vec(claim).map_err(|source| ClaimError::Encode {
        key: key.clone(),
        source,
    })?;
    if store.create_if_absent(&key, Bytes::from(body)).await? {
        return Ok(ClaimOutcome::Won);
    }
    match read(store, n).await? {
        Some(held) => Ok(ClaimOutcome::Held(held)),
        // Deleted between the two calls: only garbage collection deletes claims, and only far below
        // the checkpoint. Treat as held by an unknown newer claimant: the caller stops.
        None => Err(ClaimError::Store(StoreError::backend(
            store.describe(),
            "get",
            key,
            "the claim vanished right after create-if-absent found it",
        ))),
    }
}

/// The claim of batch `n`, if any.
pub async fn read(store: &dyn CheckpointStore, n: u64) -> Result<Option<BatchClaim>, ClaimError> {
    let key = paths::batch(n);
    let Some(raw) = store.get(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|source| ClaimError::Decode { key, source })
}

/// Every claim numbered `>= from`, in order.
pub async fn list_from(
    store: &dyn CheckpointStore,
    from: u64,
) -> Result<Vec<(u64, BatchClaim)>, ClaimError> {
    let mut numbers: Vec<u64> = store
        .list(paths::BATCHES)
        .await?
        .iter()
        .filter_map(|k| paths::parse_batch(k))
        .filter(|n| *n >= from)
        .collect();
    numbers.sort_unstable();
    let mut out = Vec::with_capacity(numbers.len());
    for n in numbers {
        if let Some(c) = read(store, n).await? {
            out.push((n, c));
        }
    }
    Ok(out)
}

/// Deletes claims numbered `< below` (covered by a checkpoint); returns how many.
pub async fn delete_below(store: &dyn CheckpointStore, below: u64) -> Result<usize, ClaimError> {
    let mut deleted = 0;
    for key in store.list(paths::BATCHES).await? {
        if paths::parse_batch(&key).is_some_and(|n| n < below) {
            store.delete(&key).await?;
            deleted += 1;
        }
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::object::ObjectStoreBackend;

    fn batch(epoch: u64, ms: u64) -> BatchClaim {
        let mut s = SeqSet::new();
        s.insert(3);
        BatchClaim {
            epoch,
            node: format!("n{epoch}"),
            claimed_unix_ms: 1,
            kind: ClaimKind::Batch {
                batch_ms: ms,
                members: BTreeMap::from([("cam".to_string(), s)]),
                dir: None,
            },
        }
    }

    #[tokio::test]
    async fn the_first_claim_of_a_number_wins_and_the_second_learns_who_holds_it() {
        let store = ObjectStoreBackend::memory();
        assert_eq!(
            claim(&store, 1, &batch(1, 10)).await.unwrap(),
            ClaimOutcome::Won
        );
        assert_eq!(
            claim(&store, 1, &batch(2, 20)).await.unwrap(),
            ClaimOutcome::Held(batch(1, 10))
        );
        assert_eq!(
            claim(&store, 2, &batch(2, 20)).await.unwrap(),
            ClaimOutcome::Won
        );
        let listed = list_from(&store, 2).await.unwrap();
        assert_eq!(listed, vec![(2, batch(2, 20))]);
        assert_eq!(delete_below(&store, 2).await.unwrap(), 1);
        assert_eq!(read(&store, 1).await.unwrap(), None);
    }

    #[test]
    fn a_claim_reads_back_as_written_in_json() {
        let c = batch(4, 99);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"kind\":\"batch\""), "{json}");
        assert_eq!(serde_json::from_str::<BatchClaim>(&json).unwrap(), c);
        let t = BatchClaim {
            kind: ClaimKind::Takeover,
            ..c
        };
        assert_eq!(
            serde_json::from_str::<BatchClaim>(&serde_json::to_string(&t).unwrap()).unwrap(),
            t
        );
    }
}
