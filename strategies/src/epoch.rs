//! Fencing by epoch: every node that takes over claims a new, higher epoch; a node that sees
//! an epoch newer than its own stops.
//!
//! # Design
//!
//! An epoch is claimed by creating the key `epochs/<n:010>` with `create_if_absent`, which the
//! [store contract](crate::store) makes atomic across processes: of any number of nodes
//! claiming the same `n`, exactly one succeeds. [`claim_next`] lists the existing epochs, tries
//! the one after the highest, and on losing the race tries the next, so concurrent claimers
//! all end up with distinct epochs and the last to finish holds the highest. Nothing else is
//! needed: no leases, no home-made consensus. Epochs start at 1; 0 means "no epoch".
//!
//! A claim object holds [`EpochClaim`] (who claimed it and when) as JSON, for operators and
//! logs; correctness depends only on the key existing.
//!
//! Fencing itself is the pure [`is_fenced`]: a node with epoch `e` that observes a latest
//! epoch `> e` must stop committing output and writing checkpoints. Nodes check it before
//! each commit ([`latest`] is one `list`).

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::paths;
use crate::store::{CheckpointStore, StoreError};

/// How many successive epochs [`claim_next`] tries before giving up.
pub const MAX_CLAIM_ATTEMPTS: u32 = 1000;

/// Why claiming or reading epochs failed.
#[derive(Debug, thiserror::Error)]
pub enum EpochError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Other nodes kept claiming every epoch this node tried.
    #[error(
        "could not claim an epoch in {store}: lost the race for {attempts} epochs up to {last_tried}"
    )]
    Contended {
        /// [`CheckpointStore::describe`] of the store.
        store: String,
        /// How many epochs were tried.
        attempts: u32,
        /// The last epoch tried.
        last_tried: u64,
    },
    /// The highest epoch is `u64::MAX`; there is no next one.
    #[error("epoch {key} is the largest possible; no further epoch can be claimed")]
    Exhausted {
        /// The key of the highest epoch.
        key: String,
    },
    /// A claim could not be encoded.
    #[error("epoch claim {key} could not be encoded: {source}")]
    Encode {
        /// The claim's key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A claim object is not valid claim JSON.
    #[error("epoch claim {key} does not decode: {source}")]
    Decode {
        /// The claim's key.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
}

/// What a claim object records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochClaim {
    /// The epoch claimed.
    pub epoch: u64,
    /// The node that claimed it.
    pub node: String,
    /// When, in milliseconds since the Unix epoch.
    pub claimed_unix_ms: u64,
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The highest claimed epoch, or `None` when no epoch was ever claimed.
pub async fn latest(store: &dyn CheckpointStore) -> Result<Option<u64>, EpochError> {
    let keys = store.list(paths::EPOCHS).await?;
    let mut highest = None;
    for key in keys {
        match paths::parse_epoch(&key) {
            Some(n) => highest = highest.max(Some(n)),
            None => tracing::warn!(
                store = %store.describe(),
                key = %key,
                "not an epoch key; ignored"
            ),
        }
    }
    Ok(highest)
}

/// Claims a new epoch, higher than every epoch claimed before, for `node`.
pub async fn claim_next(store: &dyn CheckpointStore, node: &str) -> Result<u64, EpochError> {
    let start = latest(store).await?.unwrap_or(0);
    let mut candidate = start;
    for attempt in 1..=MAX_CLAIM_ATTEMPTS {
        candidate = candidate
            .checked_add(1)
            .ok_or_else(|| EpochError::Exhausted {
                key: paths::epoch(u64::MAX),
            })?;
        let key = paths::epoch(candidate);
        let claim = EpochClaim {
            epoch: candidate,
            node: node.to_string(),
            claimed_unix_ms: now_unix_ms(),
        };
        let body = serde_json::to_vec(&claim).map_err(|source| EpochError::Encode {
            key: key.clone(),
            source,
        })?;
        if store.create_if_absent(&key, Bytes::from(body)).await? {
            tracing::info!(
                store = %store.describe(),
                node,
                epoch = candidate,
                attempt,
                "claimed epoch"
            );
            return Ok(candidate);
        }
        tracing::debug!(
            node,
            epoch = candidate,
            "epoch already claimed; trying the next"
        );
    }
    Err(EpochError::Contended {
        store: store.describe(),
        attempts: MAX_CLAIM_ATTEMPTS,
        last_tried: candidate,
    })
}

/// Who claimed `epoch`, or `None` when nobody did.
pub async fn claim_of(
    store: &dyn CheckpointStore,
    epoch: u64,
) -> Result<Option<EpochClaim>, EpochError> {
    let key = paths::epoch(epoch);
    let Some(raw) = store.get(&key).await? else {
        return Ok(None);
    };
    serde_json::from_slice(&raw)
        .map(Some)
        .map_err(|source| EpochError::Decode { key, source })
}

/// Whether a node holding `my_epoch` must stop because `latest` is newer.
pub fn is_fenced(my_epoch: u64, latest: u64) -> bool {
    latest > my_epoch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::object::ObjectStoreBackend;
    use crate::store::sled::SledStore;
    use std::collections::BTreeSet;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_first_claim_is_epoch_one_and_records_the_node() {
        let store = ObjectStoreBackend::memory();
        assert_eq!(latest(&store).await.unwrap(), None);
        assert_eq!(claim_next(&store, "node-a").await.unwrap(), 1);
        assert_eq!(latest(&store).await.unwrap(), Some(1));
        let claim = claim_of(&store, 1).await.unwrap().unwrap();
        assert_eq!(claim.node, "node-a");
        assert_eq!(claim.epoch, 1);
        assert_eq!(claim_of(&store, 2).await.unwrap(), None);
    }

    #[tokio::test]
    async fn each_claim_is_higher_than_every_earlier_one() {
        let store = ObjectStoreBackend::memory();
        // Epochs may have gaps (e.g. claims deleted by hand); the next is above the highest.
        store
            .put(&paths::epoch(41), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(claim_next(&store, "a").await.unwrap(), 42);
        assert_eq!(claim_next(&store, "b").await.unwrap(), 43);
        assert_eq!(latest(&store).await.unwrap(), Some(43));
    }

    #[tokio::test]
    async fn foreign_keys_under_epochs_are_ignored() {
        let store = ObjectStoreBackend::memory();
        store
            .put("epochs/notes", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(latest(&store).await.unwrap(), None);
        assert_eq!(claim_next(&store, "a").await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn eight_concurrent_claimers_get_eight_distinct_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> =
            Arc::new(ObjectStoreBackend::local(dir.path()).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { claim_next(store.as_ref(), &format!("node-{i}")).await })
            })
            .collect();
        let mut epochs = BTreeSet::new();
        for task in tasks {
            epochs.insert(task.await.unwrap().unwrap());
        }
        assert_eq!(epochs, (1..=8).collect::<BTreeSet<u64>>());
        assert_eq!(latest(store.as_ref()).await.unwrap(), Some(8));
        let mut holders = BTreeSet::new();
        for epoch in 1..=8 {
            holders.insert(claim_of(store.as_ref(), epoch).await.unwrap().unwrap().node);
        }
        assert_eq!(holders.len(), 8, "every claim names a different node");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claimers_on_sled_get_distinct_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn CheckpointStore> = Arc::new(SledStore::open(dir.path()).unwrap());
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move { claim_next(store.as_ref(), &format!("node-{i}")).await })
            })
            .collect();
        let mut epochs = BTreeSet::new();
        for task in tasks {
            assert!(epochs.insert(task.await.unwrap().unwrap()));
        }
        assert_eq!(epochs.len(), 8);
    }

    #[test]
    fn only_a_newer_epoch_fences() {
        assert!(is_fenced(3, 4));
        assert!(!is_fenced(3, 3));
        assert!(!is_fenced(3, 2));
        assert!(!is_fenced(0, 0));
    }

    #[tokio::test]
    async fn the_largest_epoch_has_no_successor() {
        let store = ObjectStoreBackend::memory();
        store
            .put(&paths::epoch(u64::MAX), Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert!(matches!(
            claim_next(&store, "a").await,
            Err(EpochError::Exhausted { .. })
        ));
    }
}
