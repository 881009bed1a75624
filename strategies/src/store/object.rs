//! [`ObjectStoreBackend`]: the checkpoint store over any `object_store::ObjectStore` — a local
//! directory, memory, and whatever cloud store a deployment plugs in.
//!
//! # Design
//!
//! * **Mapping.** A key maps verbatim to an object path: the key rules of the
//!   [contract](super) are a subset of what `object_store::path::Path::parse` accepts and
//!   need no percent-encoding, so a key is what one sees on disk.
//! * **Atomicity.** `put` is the object store's `put`, which every implementation makes
//!   atomic (the local file system writes a staged file and renames it into place).
//!   `create_if_absent` is `put_opts` with `PutMode::Create`: `AlreadyExists` means another
//!   writer won and becomes `Ok(false)`. The local file system implements it with a hard link,
//!   which is atomic across processes on one host.
//! * **Listing.** object_store lists in no particular order and by whole-segment prefix; this
//!   backend filters to keys strictly below the prefix and sorts, as the contract demands.
//! * **Idempotent delete.** `NotFound` on delete is success.
//! * **Durability.** [`ObjectStoreBackend::local`] turns on `LocalFileSystem::with_fsync`, so
//!   a written file and its directory are synced before the call returns, as the contract
//!   demands. Remote object stores are durable when their request succeeds.

use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{is_below, validate_key, validate_prefix, CheckpointStore, StoreError};

/// The checkpoint store over an `object_store::ObjectStore`.
#[derive(Clone)]
pub struct ObjectStoreBackend {
    inner: Arc<dyn ObjectStore>,
    describe: String,
}

impl std::fmt::Debug for ObjectStoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBackend")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreBackend {
    /// Wraps `inner`; `describe` is what [`CheckpointStore::describe`] returns.
    pub fn new(inner: Arc<dyn ObjectStore>, describe: String) -> Self {
        ObjectStoreBackend { inner, describe }
    }

    /// A store in local directory `dir`, created if missing; describes itself as
    /// `file:/abs/dir`.
    pub fn local(dir: impl AsRef<FsPath>) -> Result<Self, StoreError> {
        let dir = dir.as_ref();
        let shown = format!(
            "file:{}",
            std::path::absolute(dir)
                .unwrap_or_else(|_| dir.to_path_buf())
                .display()
        );
        std::fs::create_dir_all(dir).map_err(|e| StoreError::backend(&shown, "open", "", e))?;
        let absolute = dir
            .canonicalize()
            .map_err(|e| StoreError::backend(&shown, "open", "", e))?;
        let fs = LocalFileSystem::new_with_prefix(&absolute)
            .map_err(|e| StoreError::backend(&shown, "open", "", e))?
            .with_fsync(true);
        Ok(Self::new(
            Arc::new(fs),
            format!("file:{}", absolute.display()),
        ))
    }

    /// A store in memory, for tests and single-process experiments; describes itself as
    /// `memory`.
    pub fn memory() -> Self {
        Self::new(Arc::new(InMemory::new()), "memory".to_string())
    }

    fn path(key: &str) -> Result<Path, StoreError> {
        validate_key(key)?;
        Path::parse(key).map_err(|e| StoreError::InvalidKey {
            key: key.to_string(),
            reason: e.to_string(),
        })
    }

    fn error(&self, op: &'static str, key: &str, e: object_store::Error) -> StoreError {
        StoreError::backend(self.describe.clone(), op, key, e)
    }
}

#[async_trait]
impl CheckpointStore for ObjectStoreBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        let path = Self::path(key)?;
        self.inner
            .put(&path, PutPayload::from_bytes(value))
            .await
            .map_err(|e| self.error("put", key, e))?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        let path = Self::path(key)?;
        let result = match self.inner.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", key, e)),
        };
        let expected = result.meta.size;
        let bytes = match result.bytes().await {
            Ok(bytes) => bytes,
            // Deleted between the metadata and the body: it is gone.
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", key, e)),
        };
        if bytes.len() as u64 != expected {
            return Err(StoreError::Corrupt {
                store: self.describe(),
                key: key.to_string(),
                reason: format!(
                    "object claims {expected} bytes but {} were read",
                    bytes.len()
                ),
            });
        }
        Ok(Some(bytes))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let trimmed = validate_prefix(prefix)?;
        let location = if trimmed.is_empty() {
            None
        } else {
            Some(Path::parse(trimmed).map_err(|e| StoreError::InvalidKey {
                key: prefix.to_string(),
                reason: e.to_string(),
            })?)
        };
        let metas: Vec<_> = self
            .inner
            .list(location.as_ref())
            .try_collect()
            .await
            .map_err(|e| self.error("list", prefix, e))?;
        let mut keys = Vec::with_capacity(metas.len());
        for meta in metas {
            let key = meta.location.as_ref().to_string();
            if !is_below(&key, trimmed) {
                continue;
            }
            if let Err(e) = validate_key(&key) {
                return Err(StoreError::Corrupt {
                    store: self.describe(),
                    key,
                    reason: format!("listed an object whose name is not a valid key: {e}"),
                });
            }
            keys.push(key);
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = Self::path(key)?;
        match self.inner.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error("delete", key, e)),
        }
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<bool, StoreError> {
        let path = Self::path(key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..PutOptions::default()
        };
        match self
            .inner
            .put_opts(&path, PutPayload::from_bytes(value), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.error("create_if_absent", key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_directory_passes_the_conformance_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStoreBackend::local(dir.path().join("store")).unwrap();
        conformance::run_all(&store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_local_directory_keeps_its_data_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        conformance::reopened_store_keeps_its_data(|| {
            let path = path.clone();
            async move {
                Box::new(ObjectStoreBackend::local(path).unwrap()) as Box<dyn CheckpointStore>
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_passes_the_conformance_suite() {
        let store = ObjectStoreBackend::memory();
        conformance::run_all(&store).await;
    }

    #[tokio::test]
    async fn memory_keeps_its_data_across_new_handles() {
        let shared = ObjectStoreBackend::memory();
        conformance::reopened_store_keeps_its_data(|| {
            let handle = shared.clone();
            async move { Box::new(handle) as Box<dyn CheckpointStore> }
        })
        .await;
    }

    #[tokio::test]
    async fn a_local_store_keeps_keys_verbatim_as_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = ObjectStoreBackend::local(dir.path()).unwrap();
        store
            .put("checkpoints/CURRENT", Bytes::from_static(b"x"))
            .await
            .unwrap();
        let on_disk = std::fs::read(dir.path().join("checkpoints").join("CURRENT")).unwrap();
        assert_eq!(on_disk, b"x");
        assert!(store.describe().starts_with("file:/"));
    }

    #[test]
    fn a_local_store_that_cannot_be_created_names_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"not a directory").unwrap();
        let err = ObjectStoreBackend::local(file.join("store")).unwrap_err();
        assert!(
            err.to_string().contains(&file.display().to_string()),
            "{err}"
        );
    }
}
