//! [`SledStore`]: the embedded default checkpoint store, one sled 0.34 database on local disk.
//!
//! # Design
//!
//! * **Atomicity.** sled writes each key atomically (`insert` replaces the whole value), so
//!   `put` needs nothing more. `create_if_absent` is `compare_and_swap(key, None, value)`,
//!   which sled applies atomically against concurrent writers.
//! * **Durability.** sled buffers writes and flushes in the background; the contract wants a
//!   write durable when it returns, so `put`, `delete` and `create_if_absent` flush before
//!   returning. They call the blocking `Db::flush` on tokio's blocking pool, **not**
//!   `flush_async`: sled 0.34's `flush_async` runs the flush on sled's own small I/O
//!   threadpool, where it blocks waiting for log-buffer writes that are queued on that same
//!   pool; with a handful of concurrent flushes every pool thread waits and the process
//!   deadlocks (seen here with 8 concurrent epoch claims). Concurrent flushes are still
//!   coalesced by sled's log.
//! * **One process per database.** sled locks its directory with an exclusive file lock; a
//!   second opener (another process, or a second handle in this one) fails. [`SledStore::open`]
//!   turns that into a [`StoreError::Backend`] that says another process holds the database,
//!   which is also what makes `create_if_absent` "atomic across processes" here: there is only
//!   ever one process. Strategies that need two nodes to share a store use HDFS or an object
//!   store instead.
//! * **Ordering.** sled iterates keys in byte order, so `list` is sorted by construction;
//!   `scan_prefix(prefix + "/")` gives whole-segment prefix semantics.
//! * **Blocking.** sled's reads and writes are in-memory operations on its page cache and
//!   return quickly; only the flush touches the disk, and that is awaited asynchronously.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{is_below, validate_key, validate_prefix, CheckpointStore, StoreError};

/// The checkpoint store over one sled database directory.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    path: PathBuf,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledStore {
    /// Opens (creating if needed) the sled database in directory `path`.
    ///
    /// Fails with a [`StoreError::Backend`] naming the path when another process (or another
    /// open handle) holds the database, or on any I/O error.
    pub fn open(path: impl AsRef<Path>) -> Result<SledStore, StoreError> {
        let requested = path.as_ref();
        let absolute = std::path::absolute(requested).unwrap_or_else(|_| requested.to_path_buf());
        let store = format!("sled:{}", absolute.display());
        let db = sled::Config::new()
            .path(&absolute)
            .open()
            .map_err(|e| open_error(&store, e))?;
        let path = absolute.canonicalize().unwrap_or(absolute);
        tracing::debug!(path = %path.display(), "opened sled checkpoint store");
        Ok(SledStore { db, path })
    }

    /// The database directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error(&self, op: &'static str, key: &str, e: sled::Error) -> StoreError {
        let store = self.describe();
        match e {
            sled::Error::Corruption { at, .. } => StoreError::Corrupt {
                store,
                key: key.to_string(),
                reason: format!("sled detected corruption at {at:?}"),
            },
            other => StoreError::backend(store, op, key, other),
        }
    }

    async fn flush(&self, op: &'static str, key: &str) -> Result<(), StoreError> {
        let db = self.db.clone();
        match tokio::task::spawn_blocking(move || db.flush()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.error(op, key, e)),
            Err(join) => Err(StoreError::backend(self.describe(), op, key, join)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("another process holds the sled database (sled allows one process per database): {0}")]
struct HeldByAnotherProcess(sled::Error);

fn open_error(store: &str, e: sled::Error) -> StoreError {
    let held =
        matches!(&e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"));
    if held {
        StoreError::backend(store, "open", "", HeldByAnotherProcess(e))
    } else {
        StoreError::backend(store, "open", "", e)
    }
}

#[async_trait]
impl CheckpointStore for SledStore {
    fn describe(&self) -> String {
        format!("sled:{}", self.path.display())
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        self.db
            .insert(key.as_bytes(), value.as_ref())
            .map_err(|e| self.error("put", key, e))?;
        self.flush("put", key).await
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        validate_key(key)?;
        let value = self
            .db
            .get(key.as_bytes())
            .map_err(|e| self.error("get", key, e))?;
        Ok(value.map(|v| Bytes::copy_from_slice(&v)))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let trimmed = validate_prefix(prefix)?;
        let scan = if trimmed.is_empty() {
            String::new()
        } else {
            format!("{trimmed}/")
        };
        let mut keys = Vec::new();
        for entry in self.db.scan_prefix(scan.as_bytes()).keys() {
            let raw = entry.map_err(|e| self.error("list", prefix, e))?;
            let key = String::from_utf8(raw.to_vec()).map_err(|e| StoreError::Corrupt {
                store: self.describe(),
                key: String::from_utf8_lossy(&raw).into_owned(),
                reason: format!("stored key is not UTF-8: {e}"),
            })?;
            debug_assert!(is_below(&key, trimmed));
            keys.push(key);
        }
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        self.db
            .remove(key.as_bytes())
            .map_err(|e| self.error("delete", key, e))?;
        self.flush("delete", key).await
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<bool, StoreError> {
        validate_key(key)?;
        let swapped = self
            .db
            .compare_and_swap(key.as_bytes(), None::<&[u8]>, Some(value.as_ref()))
            .map_err(|e| self.error("create_if_absent", key, e))?;
        match swapped {
            Ok(()) => {
                self.flush("create_if_absent", key).await?;
                Ok(true)
            }
            Err(_) => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path().join("db")).unwrap();
        conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sled_keeps_its_data_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        conformance::reopened_store_keeps_its_data(|| {
            let path = path.clone();
            async move { Box::new(SledStore::open(path).unwrap()) as Box<dyn CheckpointStore> }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_concurrent_durable_writes_do_not_deadlock() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SledStore::open(dir.path().join("db")).unwrap());
        let writers: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let key = format!("w/{i}");
                    store.put(&key, Bytes::from(vec![i as u8; 4096])).await?;
                    store
                        .create_if_absent(&format!("c/{i}"), Bytes::new())
                        .await
                })
            })
            .collect();
        let all = futures::future::join_all(writers);
        // A deadlock would hang forever, and so would dropping the deadlocked database (sled
        // flushes on drop), so a panic would not end the test: abort the test binary instead.
        let Ok(results) = tokio::time::timeout(std::time::Duration::from_secs(30), all).await
        else {
            eprintln!("64 concurrent durable writes to sled deadlocked; aborting");
            std::process::abort();
        };
        for result in results {
            assert!(
                result.unwrap().unwrap(),
                "each create_if_absent key is fresh"
            );
        }
        assert_eq!(store.list("w").await.unwrap().len(), 64);
    }

    #[tokio::test]
    async fn a_second_opener_is_told_another_process_holds_the_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let _first = SledStore::open(&path).unwrap();
        let err = SledStore::open(&path).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("another process holds the sled database"),
            "{message}"
        );
        assert!(message.contains("open"), "{message}");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }

    #[tokio::test]
    async fn describe_names_the_absolute_database_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path().join("db")).unwrap();
        let described = store.describe();
        assert!(described.starts_with("sled:/"), "{described}");
        assert!(described.ends_with("/db"), "{described}");
    }
}
