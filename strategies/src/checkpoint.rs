//! [`Checkpointer`]: writes snapshots as immutable checkpoint objects, reads the newest back, and
//! garbage-collects old ones.
//!
//! # Design
//!
//! A checkpoint is one store operation: `create_if_absent(checkpoints/<epoch>/<id>.json, snapshot
//! JSON)`. The object is immutable — if the key exists the write fails with
//! [`CheckpointError::Exists`] rather than replace what another writer (or an earlier attempt)
//! stored — and the store makes it appear whole or not at all.
//!
//! **The newest checkpoint is the greatest `(epoch, id)` among the objects**, found by listing
//! `checkpoints/`. There is no pointer to move. A pointer put after the object (what this module
//! did before) is a write that a superseded node can still make: a primary cut off from its standby,
//! alive, passes its fence check, then moves the pointer back to its own epoch after the new
//! primary has read it — and a new primary's garbage collection could meanwhile delete what that
//! pointer names. With the order derived from the immutable objects, "newest" only ever moves
//! forward, and a write of an older epoch made after a newer epoch's checkpoint exists is never the
//! newest: a superseded node's late checkpoint is inert by construction, not by a check made before
//! the write. (A node must still not *acknowledge* what such a checkpoint covers unless it is still
//! the current epoch after the write: the caller re-checks its fence then — see the node's carried
//! checkpoints.)
//!
//! Before the write the writer checks that no checkpoint at or beyond `(epoch, id)` exists already
//! ([`CheckpointError::Stale`]) — a guard against a confused writer, not a substitute for epoch
//! fencing, which [`crate::epoch`] provides.
//!
//! Reading ([`Checkpointer::latest`]) takes the newest object. One whose JSON does not decode, or
//! whose epoch and id disagree with its key, is corruption and is reported with the key — never
//! silently replaced by an older checkpoint, since that could re-commit output a newer one covered.
//! A newest object that vanishes between the listing and the read (a newer one was written and the
//! older collected meanwhile) is looked up again.
//!
//! [`Checkpointer::gc`] deletes all but the newest `keep` checkpoint objects (at least one), ordered
//! by `(epoch, id)`. Keys under `checkpoints/` that are not checkpoint keys are left alone, among
//! them `checkpoints/CURRENT`, the pointer of stores written by earlier versions, which nothing reads.

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
    /// A checkpoint at or beyond the one being written exists already.
    #[error("checkpoint {key} is not newer than {current}, which exists already")]
    Stale {
        /// The key that was to be written.
        key: String,
        /// The newest checkpoint's key.
        current: String,
    },
    /// A checkpoint holds something that cannot be right.
    #[error("checkpoint {key} is corrupt: {reason}")]
    Corrupt {
        /// The key of the corrupt object.
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

    /// Every checkpoint object's `(epoch, id)` and key, oldest first.
    async fn objects(&self) -> Result<Vec<((u64, u64), String)>, CheckpointError> {
        let mut found = Vec::new();
        for key in self.store.list(paths::CHECKPOINTS).await? {
            match paths::parse_checkpoint(&key) {
                Some(order) => found.push((order, key)),
                None if key == paths::LEGACY_POINTER => {}
                None => tracing::debug!(
                    store = %self.store.describe(),
                    key = %key,
                    "not a checkpoint key; left alone"
                ),
            }
        }
        found.sort();
        Ok(found)
    }

    /// The newest checkpoint's key with its `(epoch, id)`; `None` when none was ever written.
    pub async fn newest_key(&self) -> Result<Option<(String, u64, u64)>, CheckpointError> {
        Ok(self
            .objects()
            .await?
            .pop()
            .map(|((epoch, id), key)| (key, epoch, id)))
    }

    /// Writes `snap` as the immutable object `paths::checkpoint(snap.epoch, snap.id)`. Returns the
    /// object's key. Once this returns, `snap` is the newest checkpoint unless a newer one exists.
    pub async fn write(&self, snap: &Snapshot) -> Result<String, CheckpointError> {
        let key = paths::checkpoint(snap.epoch, snap.id);
        if snap.format != Snapshot::FORMAT {
            return Err(CheckpointError::UnsupportedFormat {
                key,
                format: snap.format,
            });
        }
        if let Some((current, epoch, id)) = self.newest_key().await? {
            if (epoch, id) >= (snap.epoch, snap.id) {
                return Err(CheckpointError::Stale { key, current });
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

    /// The newest snapshot, or `None` when no checkpoint was ever written.
    pub async fn latest(&self) -> Result<Option<Snapshot>, CheckpointError> {
        let mut vanished: Option<String> = None;
        loop {
            let Some((key, epoch, id)) = self.newest_key().await? else {
                return Ok(None);
            };
            let Some(raw) = self.store.get(&key).await? else {
                // Collected between the listing and the read: a newer one exists, look again. The
                // same key missing twice is not that.
                if vanished.as_deref() == Some(key.as_str()) {
                    return Err(CheckpointError::Corrupt {
                        key,
                        reason: "it is listed but cannot be read".into(),
                    });
                }
                vanished = Some(key);
                continue;
            };
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
            // A node taking over numbers the next batch and times it after these: u64::MAX leaves
            // no room, so such a checkpoint is damaged, not a state to resume from.
            let full = [
                ("last_batch_n", Some(snap.last_batch_n)),
                ("last_committed_batch_ms", snap.last_committed_batch_ms),
            ];
            if let Some((field, _)) = full.iter().find(|(_, v)| *v == Some(u64::MAX)) {
                return Err(CheckpointError::Corrupt {
                    reason: format!("its {field} is {}, which leaves no next batch", u64::MAX),
                    key,
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
            return Ok(Some(snap));
        }
    }

    /// Deletes every checkpoint object except the newest `keep` (at least the newest one). Returns
    /// the deleted keys, oldest first.
    pub async fn gc(&self, keep: usize) -> Result<Vec<String>, CheckpointError> {
        let checkpoints = self.objects().await?;
        let old = checkpoints.len().saturating_sub(keep.max(1));
        let mut deleted = Vec::new();
        for (_, key) in checkpoints.into_iter().take(old) {
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
    async fn a_checkpoint_whose_numbers_leave_no_room_for_the_next_batch_is_refused_as_corrupt() {
        // Found by the `checkpoint` fuzz target (fuzz/): a node taking over adds 1 to both (the next
        // batch number, the next batch time), which overflowed ("attempt to add with overflow" in
        // plan_takeover) or wrapped to 0.
        let mut last_n = snap(1, 1);
        last_n.last_batch_n = u64::MAX;
        let mut last_ms = snap(1, 2);
        last_ms.last_committed_batch_ms = Some(u64::MAX);
        for (bad, field) in [
            (last_n, "last_batch_n"),
            (last_ms, "last_committed_batch_ms"),
        ] {
            let cp = checkpointer();
            cp.write(&bad).await.unwrap();
            let err = cp.latest().await.unwrap_err();
            assert!(
                matches!(&err, CheckpointError::Corrupt { reason, .. } if reason.contains(field)),
                "{err}"
            );
        }
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
        assert_eq!(cp.newest_key().await.unwrap().unwrap().0, key);
        assert_eq!(cp.latest().await.unwrap(), Some(snap(2, 4)));
        assert_eq!(
            cp.store().get(paths::LEGACY_POINTER).await.unwrap(),
            None,
            "no pointer is written: the objects are the order"
        );
    }

    #[tokio::test]
    async fn an_existing_checkpoint_object_is_never_overwritten() {
        let shared: Arc<dyn CheckpointStore> = Arc::new(ObjectStoreBackend::memory());
        let key = paths::checkpoint(1, 5);
        // Another writer creates the same key between this writer's check and its write.
        let cp = Checkpointer::new(Arc::new(HoldBeforeCreate {
            inner: shared.clone(),
            key: key.clone(),
            meanwhile: std::sync::Mutex::new(Some(snap(1, 5))),
        }));
        let mut other = snap(1, 5);
        other.node = "node-b".into();
        match cp.write(&other).await {
            Err(CheckpointError::Exists { key: named }) => assert_eq!(named, key),
            other => panic!("expected Exists, got {other:?}"),
        }
        let stored: Snapshot =
            serde_json::from_slice(&shared.get(&key).await.unwrap().unwrap()).unwrap();
        assert_eq!(stored.node, "node-a");
        assert_eq!(
            cp.latest().await.unwrap().map(|s| s.node),
            Some("node-a".to_string()),
            "the newest is the first writer's"
        );
        // Written once already, the same key is refused before any write.
        assert!(matches!(
            cp.write(&other).await,
            Err(CheckpointError::Stale { .. })
        ));
    }

    #[tokio::test]
    async fn a_checkpoint_not_newer_than_the_newest_is_refused() {
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
    async fn a_pointer_left_by_an_earlier_version_is_neither_read_nor_collected() {
        let cp = checkpointer();
        cp.write(&snap(1, 1)).await.unwrap();
        cp.store()
            .put(
                paths::LEGACY_POINTER,
                Bytes::from_static(b"../../etc/passwd"),
            )
            .await
            .unwrap();
        assert_eq!(cp.latest().await.unwrap(), Some(snap(1, 1)));
        assert_eq!(cp.gc(0).await.unwrap(), Vec::<String>::new());
        assert!(cp
            .store()
            .get(paths::LEGACY_POINTER)
            .await
            .unwrap()
            .is_some());
    }

    /// A store that, when one given key is about to be created, first lets another writer act: the
    /// superseded primary held between its checks and its write while the new primary checkpoints.
    #[derive(Debug)]
    struct HoldBeforeCreate {
        inner: Arc<dyn CheckpointStore>,
        key: String,
        meanwhile: std::sync::Mutex<Option<Snapshot>>,
    }

    #[async_trait::async_trait]
    impl CheckpointStore for HoldBeforeCreate {
        fn describe(&self) -> String {
            self.inner.describe()
        }
        async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
            self.inner.put(key, value).await
        }
        async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
            self.inner.get(key).await
        }
        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            self.inner.list(prefix).await
        }
        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.inner.delete(key).await
        }
        async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<bool, StoreError> {
            let newer = (key == self.key)
                .then(|| self.meanwhile.lock().unwrap().take())
                .flatten();
            if let Some(newer) = newer {
                let other = Checkpointer::new(self.inner.clone());
                other.write(&newer).await.unwrap();
                // The new primary keeps only its own checkpoint.
                other.gc(1).await.unwrap();
            }
            self.inner.create_if_absent(key, value).await
        }
    }

    #[tokio::test]
    async fn a_superseded_writer_held_between_its_check_and_its_write_never_becomes_the_newest() {
        let shared: Arc<dyn CheckpointStore> = Arc::new(ObjectStoreBackend::memory());
        Checkpointer::new(shared.clone())
            .write(&snap(1, 3))
            .await
            .unwrap();
        let old = Checkpointer::new(Arc::new(HoldBeforeCreate {
            inner: shared.clone(),
            key: paths::checkpoint(1, 4),
            meanwhile: std::sync::Mutex::new(Some(snap(2, 5))),
        }));
        // The old primary's check passes ((1, 3) is the newest), the new primary writes (2, 5) and
        // collects (1, 3), then the old primary's write lands.
        old.write(&snap(1, 4)).await.unwrap();
        let reader = Checkpointer::new(shared);
        assert_eq!(
            reader.latest().await.unwrap(),
            Some(snap(2, 5)),
            "the late write of the older epoch did not move the newest back"
        );
        assert_eq!(
            reader.gc(1).await.unwrap(),
            vec![paths::checkpoint(1, 4)],
            "and it is garbage"
        );
        assert_eq!(reader.latest().await.unwrap(), Some(snap(2, 5)));
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
    async fn gc_keeps_the_newest_checkpoints_and_always_at_least_one() {
        let cp = checkpointer();
        for id in 1..=5 {
            cp.write(&snap(1, id)).await.unwrap();
        }
        cp.store()
            .put("checkpoints/README", Bytes::from_static(b"foreign"))
            .await
            .unwrap();
        let deleted = cp.gc(2).await.unwrap();
        assert_eq!(
            deleted,
            (1..=3)
                .map(|id| paths::checkpoint(1, id))
                .collect::<Vec<_>>()
        );
        let left = cp.store().list(paths::CHECKPOINTS).await.unwrap();
        assert_eq!(
            left,
            vec![
                paths::checkpoint(1, 4),
                paths::checkpoint(1, 5),
                "checkpoints/README".to_string(),
            ]
        );
        assert_eq!(cp.latest().await.unwrap(), Some(snap(1, 5)));
        assert_eq!(
            cp.gc(0).await.unwrap(),
            vec![paths::checkpoint(1, 4)],
            "keep 0 still keeps the newest"
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
