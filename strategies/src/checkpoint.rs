//! [`Checkpointer`]: writes snapshots as immutable checkpoint objects, moves one pointer to the
//! newest, reads the newest back, and garbage-collects old ones.
//!
//! # Design
//!
//! A checkpoint is two store operations, in this order:
//!
//! 1. `create_if_absent(checkpoints/<epoch>/<id>.json, snapshot JSON)` — the object is
//!    immutable: if the key already exists the write fails with
//!    [`CheckpointError::Exists`] rather than replace what another writer (or an earlier
//!    attempt) stored. A caller whose write failed after this step retries with the next id.
//! 2. `put(checkpoints/CURRENT, key)` — the pointer moves atomically to the new object.
//!
//! A crash between the steps leaves an orphan object and a pointer to the previous complete
//! checkpoint; a reader following the pointer never sees a torn or partial checkpoint. Before
//! step 1 the writer checks that the pointer does not already name a checkpoint at or beyond
//! `(epoch, id)` ([`CheckpointError::Stale`]) — a guard against a confused writer, not a
//! substitute for epoch fencing, which [`crate::epoch`] provides.
//!
//! Reading ([`Checkpointer::latest`]) follows the pointer. A pointer that is not a checkpoint
//! key, or names a missing object, or an object whose JSON does not decode or whose epoch and
//! id disagree with its key, is corruption and is reported with the key — never silently
//! replaced by an older checkpoint, since that could re-commit output a newer one covered.
//!
//! [`Checkpointer::gc`] deletes all but the newest `keep` checkpoint objects, ordered by
//! `(epoch, id)`, and never the one the pointer names. Keys under `checkpoints/` that are not
//! checkpoint keys are left alone.

use std::sync::Arc;

use bytes::Bytes;

use crate::paths;
use crate::snapshot::Snapshot;
use crate::store::{CheckpointStore, StoreError};

/// Why writing, reading or collecting checkpoints failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The checkpoint object already exists; objects are immutable.
    #[error("checkpoint {key} already exists: checkpoints are immutable, write the next id")]
    Exists {
        /// The existing object's key.
        key: String,
    },
    /// The pointer already names a checkpoint at or beyond the one being written.
    #[error("checkpoint {key} is not newer than {current}, which {pointer} already names")]
    Stale {
        /// The key that was to be written.
        key: String,
        /// The key the pointer names.
        current: String,
        /// The pointer key.
        pointer: &'static str,
    },
    /// A checkpoint or the pointer holds something that cannot be right.
    #[error("checkpoint {key} is corrupt: {reason}")]
    Corrupt {
        /// The key of the corrupt object or pointer.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint object is not valid snapshot JSON.
    #[error("checkpoint {key} does not decode as a snapshot: {source}")]
    Decode {
        /// The object's key.
        key: String,
        /// The JSON error (it carries line and column).
        source: serde_json::Error,
    },
    /// A snapshot could not be encoded.
    #[error("checkpoint {key} could not be encoded: {source}")]
    Encode {
        /// The key it was to be written to.
        key: String,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A snapshot has a format version this crate does not know.
    #[error(
        "checkpoint {key} has format {format}, this build only knows format {}",
        Snapshot::FORMAT
    )]
    UnsupportedFormat {
        /// The object's key.
        key: String,
        /// The format it declares.
        format: u32,
    },
}

/// Writes and reads the checkpoints of one pipeline in one checkpoint store.
#[derive(Clone, Debug)]
pub struct Checkpointer {
    store: Arc<dyn CheckpointStore>,
}

impl Checkpointer {
    /// A checkpointer over `store`.
    pub fn new(store: Arc<dyn CheckpointStore>) -> Self {
        Checkpointer { store }
    }

    /// The store it writes to.
    pub fn store(&self) -> &Arc<dyn CheckpointStore> {
        &self.store
    }

    /// The key the pointer names, with its `(epoch, id)`; `None` when there is no pointer.
    pub async fn current_key(&self) -> Result<Option<(String, u64, u64)>, CheckpointError> {
        let pointer = paths::current();
        let Some(raw) = self.store.get(pointer).await? else {
            return Ok(None);
        };
        let key = String::from_utf8(raw.to_vec()).map_err(|e| CheckpointError::Corrupt {
            key: pointer.to_string(),
            reason: format!("the pointer is not UTF-8: {e}"),
        })?;
        let (epoch, id) =
            paths::parse_checkpoint(&key).ok_or_else(|| CheckpointError::Corrupt {
                key: pointer.to_string(),
                reason: format!("the pointer holds {key:?}, which is not a checkpoint key"),
            })?;
        Ok(Some((key, epoch, id)))
    }

    /// Writes `snap` as the immutable object `paths::checkpoint(snap.epoch, snap.id)`, then
    /// moves the pointer to it. Returns the object's key.
    pub async fn write(&self, snap: &Snapshot) -> Result<String, CheckpointError> {
        let key = paths::checkpoint(snap.epoch, snap.id);
        if snap.format != Snapshot::FORMAT {
            return Err(CheckpointError::UnsupportedFormat {
                key,
                format: snap.format,
            });
        }
        if let Some((current, epoch, id)) = self.current_key().await? {
            if (epoch, id) >= (snap.epoch, snap.id) {
                return Err(CheckpointError::Stale {
                    key,
                    current,
                    pointer: paths::current(),
                });
            }
        }
        let body = serde_json::to_vec(snap).map_err(|source| CheckpointError::Encode {
            key: key.clone(),
            source,
        })?;
        let bytes = body.len();
        if !self.store.create_if_absent(&key, Bytes::from(body)).await? {
            return Err(CheckpointError::Exists { key });
        }
        self.store
            .put(paths::current(), Bytes::from(key.clone()))
            .await?;
        tracing::debug!(
            store = %self.store.describe(),
            key = %key,
            epoch = snap.epoch,
            id = snap.id,
            bytes,
            "checkpoint written"
        );
        Ok(key)
    }

    /// The snapshot the pointer names, or `None` when no checkpoint was ever completed.
    pub async fn latest(&self) -> Result<Option<Snapshot>, CheckpointError> {
        let Some((key, epoch, id)) = self.current_key().await? else {
            return Ok(None);
        };
        let raw = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| CheckpointError::Corrupt {
                key: key.clone(),
                reason: format!("{} names it but it does not exist", paths::current()),
            })?;
        let snap: Snapshot =
            serde_json::from_slice(&raw).map_err(|source| CheckpointError::Decode {
                key: key.clone(),
                source,
            })?;
        if snap.format != Snapshot::FORMAT {
            return Err(CheckpointError::UnsupportedFormat {
                key,
                format: snap.format,
            });
        }
        if (snap.epoch, snap.id) != (epoch, id) {
            return Err(CheckpointError::Corrupt {
                reason: format!(
                    "its key says epoch {epoch} id {id} but it holds epoch {} id {}",
                    snap.epoch, snap.id
                ),
                key,
            });
        }
        Ok(Some(snap))
    }

    /// Deletes every checkpoint object except the newest `keep` and the one the pointer
    /// names. Returns the deleted keys, oldest first.
    pub async fn gc(&self, keep: usize) -> Result<Vec<String>, CheckpointError> {
        let current = self.current_key().await?.map(|(key, _, _)| key);
        let mut checkpoints = Vec::new();
        for key in self.store.list(paths::CHECKPOINTS).await? {
            match paths::parse_checkpoint(&key) {
                Some(order) => checkpoints.push((order, key)),
                None if key == paths::current() => {}
                None => tracing::warn!(
                    store = %self.store.describe(),
                    key = %key,
                    "not a checkpoint key; gc leaves it alone"
                ),
            }
        }
        checkpoints.sort();
        let old = checkpoints.len().saturating_sub(keep);
        let mut deleted = Vec::new();
        for (_, key) in checkpoints.into_iter().take(old) {
            if current.as_deref() == Some(key.as_str()) {
                continue;
            }
            self.store.delete(&key).await?;
            deleted.push(key);
        }
        if !deleted.is_empty() {
            tracing::debug!(
                store = %self.store.describe(),
                deleted = deleted.len(),
                keep,
                "old checkpoints deleted"
            );
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::SeqSet;
    use crate::store::object::ObjectStoreBackend;

    fn checkpointer() -> Checkpointer {
        Checkpointer::new(Arc::new(ObjectStoreBackend::memory()))
    }

    fn snap(epoch: u64, id: u64) -> Snapshot {
        let mut snap = Snapshot::empty(epoch, id, "node-a", 1_000 + id);
        snap.last_committed_seal_lsn = id * 10;
        snap.wal_low_water = id * 10 + 1;
        let mut seqs = SeqSet::new();
        for seq in 0..id {
            seqs.insert(seq);
        }
        snap.sources.insert("cam".into(), seqs);
        snap
    }

    #[tokio::test]
    async fn no_checkpoint_yet_reads_as_none() {
        assert_eq!(checkpointer().latest().await.unwrap(), None);
    }

    #[tokio::test]
    async fn the_latest_checkpoint_is_the_last_one_written() {
        let cp = checkpointer();
        for id in 1..=3 {
            let key = cp.write(&snap(1, id)).await.unwrap();
            assert_eq!(key, paths::checkpoint(1, id));
            assert_eq!(cp.latest().await.unwrap(), Some(snap(1, id)));
        }
        let key = cp.write(&snap(2, 4)).await.unwrap();
        let pointer = cp.store().get(paths::current()).await.unwrap().unwrap();
        assert_eq!(pointer, Bytes::from(key));
        assert_eq!(cp.latest().await.unwrap(), Some(snap(2, 4)));
    }

    #[tokio::test]
    async fn an_existing_checkpoint_object_is_never_overwritten() {
        let cp = checkpointer();
        let key = paths::checkpoint(1, 5);
        // An orphan left by a crash between creating the object and moving the pointer.
        cp.store()
            .put(&key, Bytes::from(serde_json::to_vec(&snap(1, 5)).unwrap()))
            .await
            .unwrap();
        let mut other = snap(1, 5);
        other.node = "node-b".into();
        match cp.write(&other).await {
            Err(CheckpointError::Exists { key: named }) => assert_eq!(named, key),
            other => panic!("expected Exists, got {other:?}"),
        }
        let stored: Snapshot =
            serde_json::from_slice(&cp.store().get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.node, "node-a");
        assert_eq!(cp.latest().await.unwrap(), None, "the pointer did not move");
    }

    #[tokio::test]
    async fn a_checkpoint_not_newer_than_the_pointer_is_refused() {
        let cp = checkpointer();
        cp.write(&snap(2, 7)).await.unwrap();
        for (epoch, id) in [(2, 7), (2, 6), (1, 100)] {
            match cp.write(&snap(epoch, id)).await {
                Err(CheckpointError::Stale { key, current, .. }) => {
                    assert_eq!(key, paths::checkpoint(epoch, id));
                    assert_eq!(current, paths::checkpoint(2, 7));
                }
                other => panic!("({epoch}, {id}) should be stale, got {other:?}"),
            }
        }
        assert_eq!(cp.latest().await.unwrap(), Some(snap(2, 7)));
    }

    #[tokio::test]
    async fn a_pointer_to_a_missing_checkpoint_is_corruption_naming_the_object() {
        let cp = checkpointer();
        let key = cp.write(&snap(1, 1)).await.unwrap();
        cp.store().delete(&key).await.unwrap();
        match cp.latest().await {
            Err(CheckpointError::Corrupt { key: named, reason }) => {
                assert_eq!(named, key);
                assert!(reason.contains("does not exist"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_pointer_holding_garbage_is_corruption_naming_the_pointer() {
        let cp = checkpointer();
        cp.store()
            .put(paths::current(), Bytes::from_static(b"../../etc/passwd"))
            .await
            .unwrap();
        match cp.latest().await {
            Err(CheckpointError::Corrupt { key, .. }) => assert_eq!(key, paths::current()),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(
            cp.gc(0).await.is_err(),
            "gc refuses to run on a corrupt pointer"
        );
    }

    #[tokio::test]
    async fn an_undecodable_checkpoint_is_a_decode_error_naming_the_object() {
        let cp = checkpointer();
        let key = cp.write(&snap(1, 1)).await.unwrap();
        // Simulate a backend that broke immutability.
        cp.store()
            .put(&key, Bytes::from_static(b"{\"format\":1,"))
            .await
            .unwrap();
        match cp.latest().await {
            Err(CheckpointError::Decode { key: named, .. }) => assert_eq!(named, key),
            other => panic!("expected Decode, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_checkpoint_whose_content_disagrees_with_its_key_is_corrupt() {
        let cp = checkpointer();
        let key = cp.write(&snap(1, 1)).await.unwrap();
        cp.store()
            .put(&key, Bytes::from(serde_json::to_vec(&snap(1, 2)).unwrap()))
            .await
            .unwrap();
        match cp.latest().await {
            Err(CheckpointError::Corrupt { key: named, reason }) => {
                assert_eq!(named, key);
                assert!(reason.contains("id 2"), "{reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_unknown_format_is_refused_on_write_and_on_read() {
        let cp = checkpointer();
        let mut future = snap(1, 1);
        future.format = Snapshot::FORMAT + 1;
        assert!(matches!(
            cp.write(&future).await,
            Err(CheckpointError::UnsupportedFormat { format, .. }) if format == Snapshot::FORMAT + 1
        ));
        let key = cp.write(&snap(1, 1)).await.unwrap();
        cp.store()
            .put(&key, Bytes::from(serde_json::to_vec(&future).unwrap()))
            .await
            .unwrap();
        assert!(matches!(
            cp.latest().await,
            Err(CheckpointError::UnsupportedFormat { format, .. }) if format == Snapshot::FORMAT + 1
        ));
    }

    #[tokio::test]
    async fn gc_keeps_the_newest_and_the_current_checkpoint() {
        let cp = checkpointer();
        for id in 1..=5 {
            cp.write(&snap(1, id)).await.unwrap();
        }
        // Orphans newer than the pointer, left by crashes before the pointer moved.
        for id in [6, 7] {
            cp.store()
                .create_if_absent(
                    &paths::checkpoint(1, id),
                    Bytes::from(serde_json::to_vec(&snap(1, id)).unwrap()),
                )
                .await
                .unwrap();
        }
        cp.store()
            .put("checkpoints/README", Bytes::from_static(b"foreign"))
            .await
            .unwrap();
        let deleted = cp.gc(2).await.unwrap();
        assert_eq!(
            deleted,
            (1..=4)
                .map(|id| paths::checkpoint(1, id))
                .collect::<Vec<_>>()
        );
        let left = cp.store().list(paths::CHECKPOINTS).await.unwrap();
        assert_eq!(
            left,
            vec![
                paths::checkpoint(1, 5),
                paths::checkpoint(1, 6),
                paths::checkpoint(1, 7),
                paths::current().to_string(),
                "checkpoints/README".to_string(),
            ]
        );
        assert_eq!(cp.latest().await.unwrap(), Some(snap(1, 5)));
        assert!(
            cp.gc(0).await.unwrap().len() == 2,
            "orphans go, current stays"
        );
        assert_eq!(cp.latest().await.unwrap(), Some(snap(1, 5)));
    }

    #[tokio::test]
    async fn gc_orders_checkpoints_by_epoch_then_id() {
        let cp = checkpointer();
        cp.write(&snap(1, 9)).await.unwrap();
        cp.write(&snap(1, 10)).await.unwrap();
        cp.write(&snap(2, 11)).await.unwrap();
        let deleted = cp.gc(1).await.unwrap();
        assert_eq!(
            deleted,
            vec![paths::checkpoint(1, 9), paths::checkpoint(1, 10)]
        );
    }
}
