//! [`HdfsStore`]: the checkpoint store on HDFS, through the native Rust client `hdfs-native`.
//!
//! # Design
//!
//! * **Mapping.** The store lives under one absolute directory, its *root*; key `a/b/c` is the
//!   file `<root>/a/b/c`. The key rules of the [contract](super) are a subset of what HDFS accepts
//!   in a path component, so a key is stored verbatim and is what `hdfs dfs -ls` shows.
//! * **Atomic `put`.** The value is written to a temporary file beside its key,
//!   `<key>.tmp~<16 hex digits>`, which is closed (the NameNode completes the last block: the data
//!   is on every DataNode of the pipeline, i.e. durable in HDFS's sense) and only then renamed over
//!   the key with `rename2(OVERWRITE)`, one atomic step at the NameNode. A reader therefore sees the
//!   old file or the new one, never a prefix. The `~` cannot appear in a key, so a temporary file
//!   (of a put in flight, or left by a crashed writer) can never be mistaken for a key or collide
//!   with one; `list` skips them.
//! * **Atomic `create_if_absent`.** Same temporary file, then `rename2` *without* overwrite: the
//!   NameNode refuses it with `FileAlreadyExistsException` if the key exists, which becomes
//!   `Ok(false)` (and the temporary file is deleted). Of concurrent callers exactly one rename
//!   succeeds. Creating the key itself with `create(overwrite = false)` would also be an atomic
//!   claim, but the file would be visible — and readable as a prefix — while it is written, and a
//!   writer dying mid-write would leave a torn value claimed forever.
//! * **`get`** reads the whole file. A key that does not exist is `None` (hdfs-native reports that
//!   as `FileNotFound` or, from `getBlockLocations`, as a `java.io.FileNotFoundException` RPC
//!   error: both are handled). A read can race a `put` that replaces the file: the old file's
//!   blocks are then deleted under the reader, so a read that fails *after* the block locations
//!   were obtained is retried (up to [`READ_ATTEMPTS`] times) before it is reported.
//! * **`list`** is one recursive listing below the prefix, keeping files whose names are valid
//!   keys, sorted by full key. A file with any other name (other than a temporary file) means
//!   someone else writes into the root: [`StoreError::Corrupt`] names it.
//! * **`delete`** is a non-recursive `delete`; a missing key is success.
//!
//! # Outages
//!
//! hdfs-native retries a call against an unreachable NameNode `dfs.client.failover.max.attempts`
//! times (default 15) with exponential backoff up to 15 s, so by default an outage shows up only
//! after tens of seconds. The store passes [`DEFAULT_CLIENT_CONFIG`] (2 attempts, 200 ms .. 1 s
//! backoff) unless the caller's [`HdfsOptions::config`] sets those keys, so a dead NameNode is an
//! error within about two seconds, and the caller (the strategy) decides when to retry. A later
//! call reconnects by itself once the NameNode is back.
//!
//! # Leases
//!
//! A writer's lease is released when the `FileWriter` is dropped. Every write path here closes or
//! drops its writer before returning; a crashed process leaves at most a temporary file under
//! lease, which no key ever depends on (the NameNode recovers it after the soft limit).
//!
//! # Errors
//!
//! Every failure is a [`StoreError::Backend`] naming the store
//! (`hdfs://127.0.0.1:9000/ckpt`), the operation and the key, with an [`HdfsStepError`] as its
//! source naming the HDFS step and path (`rename /ckpt/a.tmp~… to /ckpt/a: …`) over hdfs-native's
//! own error.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use hdfs_native::{Client, ClientBuilder, HdfsError, WriteOptions};

use super::{is_below, validate_key, validate_prefix, CheckpointStore, StoreError};

/// Client settings applied unless [`HdfsOptions::config`] sets the same key: an unreachable
/// NameNode becomes an error in about two seconds instead of after minutes of retries.
pub const DEFAULT_CLIENT_CONFIG: &[(&str, &str)] = &[
    ("dfs.client.failover.max.attempts", "2"),
    ("dfs.client.failover.sleep.base.millis", "200"),
    ("dfs.client.failover.sleep.max.millis", "1000"),
];

/// How often `get` tries to read a file whose blocks vanished under it (replaced by a `put`).
pub const READ_ATTEMPTS: u32 = 3;

/// Marks temporary files: `<key>.tmp~<hex>`. `~` is not allowed in keys.
const TMP_MARK: &str = ".tmp~";

/// How to reach an HDFS cluster; shared by the checkpoint store and the HDFS output.
#[derive(Debug, Clone, Default)]
pub struct HdfsOptions {
    /// The user to act as (simple authentication); otherwise `HADOOP_USER_NAME` or the login user.
    pub user: Option<String>,
    /// A directory with `core-site.xml` / `hdfs-site.xml` (HA name services, ...); otherwise
    /// `HADOOP_CONF_DIR`, then `HADOOP_HOME/etc/hadoop`.
    pub hadoop_conf_dir: Option<PathBuf>,
    /// Client settings that override the files, e.g. `dfs.client.failover.max.attempts`. Keys of
    /// [`DEFAULT_CLIENT_CONFIG`] not set here get those defaults.
    pub config: HashMap<String, String>,
}

impl HdfsOptions {
    /// The effective client settings: [`DEFAULT_CLIENT_CONFIG`] overridden by [`Self::config`].
    pub fn client_config(&self) -> HashMap<String, String> {
        let mut config: HashMap<String, String> = DEFAULT_CLIENT_CONFIG
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        config.extend(self.config.iter().map(|(k, v)| (k.clone(), v.clone())));
        config
    }
}

/// Builds an hdfs-native client for `url` (`hdfs://host:port` or a name service) with `options`.
/// Nothing is sent yet: the first call connects.
pub fn build_client(url: &str, options: &HdfsOptions) -> Result<Client, HdfsError> {
    let mut builder = ClientBuilder::new()
        .with_url(url)
        .with_config(options.client_config());
    if let Some(dir) = &options.hadoop_conf_dir {
        builder = builder.with_config_dir(dir.display().to_string());
    }
    if let Some(user) = &options.user {
        builder = builder.with_user(user.clone());
    }
    builder.build()
}

/// Whether `e` says the path does not exist (both ways hdfs-native reports it).
pub fn is_not_found(e: &HdfsError) -> bool {
    match e {
        HdfsError::FileNotFound(_) => true,
        HdfsError::RPCError(class, _) => class == "java.io.FileNotFoundException",
        _ => false,
    }
}

/// An HDFS call that failed: which step, on which path, and hdfs-native's error.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {source}")]
pub struct HdfsStepError {
    /// `create`, `write`, `close`, `rename`, `read`, `list`, `delete`, `mkdirs`.
    pub step: &'static str,
    /// The HDFS path (for a rename: `<from> to <to>`).
    pub path: String,
    #[source]
    pub source: HdfsError,
}

/// The checkpoint store in one HDFS directory. Cheap to clone (the client is shared).
#[derive(Clone)]
pub struct HdfsStore {
    client: Client,
    /// Absolute, without a trailing `/`; empty for the file system's root.
    root: String,
    describe: String,
}

impl std::fmt::Debug for HdfsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HdfsStore")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

/// Checks an absolute HDFS directory and returns it without a trailing `/` (`""` for `/`).
fn normalize_root(root: &str) -> Result<String, String> {
    if !root.starts_with('/') {
        return Err(format!("the root {root:?} must be an absolute path"));
    }
    let trimmed = root.trim_end_matches('/');
    if trimmed
        .split('/')
        .skip(1)
        .any(|s| s.is_empty() || s == "." || s == ".." || s.contains(':'))
    {
        return Err(format!(
            "the root {root:?} has an empty, '.', '..' or ':' component"
        ));
    }
    Ok(trimmed.to_string())
}

impl HdfsStore {
    /// Connects to the cluster at `url` (`hdfs://namenode:port`, or a name service configured in
    /// `options.hadoop_conf_dir`) and opens the store in the absolute directory `root`, creating
    /// it if needed. Fails if the NameNode cannot be reached.
    pub async fn connect(
        url: &str,
        root: &str,
        options: HdfsOptions,
    ) -> Result<HdfsStore, StoreError> {
        let base = url.trim_end_matches('/');
        let describe = format!("{base}{}", if root.is_empty() { "/" } else { root });
        let root = normalize_root(root)
            .map_err(|reason| StoreError::backend(&describe, "open", "", reason))?;
        let client = build_client(base, &options)
            .map_err(|source| StoreError::backend(&describe, "open", "", source))?;
        let store = HdfsStore {
            client,
            describe: format!("{base}{}", if root.is_empty() { "/" } else { &root }),
            root,
        };
        let dir = store.dir_path();
        store
            .client
            .mkdirs(&dir, 0o755, true)
            .await
            .map_err(|source| store.error("open", "", "mkdirs", &dir, source))?;
        tracing::debug!(store = %store.describe, "HDFS checkpoint store open");
        Ok(store)
    }

    /// The hdfs-native client (shared with clones of this store).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The store's absolute root directory.
    pub fn root(&self) -> &str {
        if self.root.is_empty() {
            "/"
        } else {
            &self.root
        }
    }

    fn dir_path(&self) -> String {
        if self.root.is_empty() {
            "/".to_string()
        } else {
            self.root.clone()
        }
    }

    fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.root)
    }

    fn tmp_path(&self, key: &str) -> String {
        format!(
            "{}/{key}{TMP_MARK}{:016x}",
            self.root,
            rand::random::<u64>()
        )
    }

    fn error(
        &self,
        op: &'static str,
        key: &str,
        step: &'static str,
        path: &str,
        source: HdfsError,
    ) -> StoreError {
        StoreError::backend(
            self.describe.clone(),
            op,
            key,
            HdfsStepError {
                step,
                path: path.to_string(),
                source,
            },
        )
    }

    /// Writes `value` to a new temporary file beside `key` and closes it (durable). Returns its path.
    async fn write_tmp(
        &self,
        op: &'static str,
        key: &str,
        value: Bytes,
    ) -> Result<String, StoreError> {
        let tmp = self.tmp_path(key);
        let options = WriteOptions::default().overwrite(false).create_parent(true);
        let mut writer = self
            .client
            .create(&tmp, options)
            .await
            .map_err(|e| self.error(op, key, "create", &tmp, e))?;
        let written = async {
            writer.write_bytes(value).await.map_err(|e| ("write", e))?;
            writer.close().await.map_err(|e| ("close", e))
        }
        .await;
        // Dropping the writer (closed or not) releases its lease.
        drop(writer);
        if let Err((step, e)) = written {
            self.remove_tmp(&tmp).await;
            return Err(self.error(op, key, step, &tmp, e));
        }
        Ok(tmp)
    }

    /// Best-effort removal of a temporary file; a failure only leaves a file `list` ignores.
    async fn remove_tmp(&self, tmp: &str) {
        if let Err(e) = self.client.delete(tmp, false).await {
            tracing::warn!(store = %self.describe, path = tmp, error = %e, "could not remove a temporary file");
        }
    }

    async fn read_once(&self, path: &str) -> Result<Option<Bytes>, (bool, HdfsError)> {
        let reader = match self.client.read(path).await {
            Ok(reader) => reader,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err((false, e)),
        };
        let len = reader.file_length();
        reader
            .read_range(0, len)
            .await
            .map(Some)
            .map_err(|e| (true, e))
    }
}

#[async_trait]
impl CheckpointStore for HdfsStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        validate_key(key)?;
        let tmp = self.write_tmp("put", key, value).await?;
        let path = self.path(key);
        if let Err(e) = self.client.rename(&tmp, &path, true).await {
            self.remove_tmp(&tmp).await;
            return Err(self.error("put", key, "rename", &format!("{tmp} to {path}"), e));
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        validate_key(key)?;
        let path = self.path(key);
        let mut attempt = 1;
        loop {
            match self.read_once(&path).await {
                Ok(value) => return Ok(value),
                Err((true, e)) if attempt < READ_ATTEMPTS => {
                    tracing::debug!(store = %self.describe, key, attempt, error = %e,
                        "read failed after the block locations were known (file replaced?); retrying");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
                    attempt += 1;
                }
                Err((_, e)) => return Err(self.error("get", key, "read", &path, e)),
            }
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let trimmed = validate_prefix(prefix)?;
        let dir = if trimmed.is_empty() {
            self.dir_path()
        } else {
            self.path(trimmed)
        };
        let statuses = match self.client.list_status(&dir, true).await {
            Ok(statuses) => statuses,
            Err(e) if is_not_found(&e) => return Ok(Vec::new()),
            Err(e) => return Err(self.error("list", prefix, "list", &dir, e)),
        };
        let root_slash = format!("{}/", self.root);
        let mut keys = Vec::with_capacity(statuses.len());
        for status in statuses {
            if status.isdir {
                continue;
            }
            let Some(key) = status.path.strip_prefix(&root_slash) else {
                return Err(StoreError::Corrupt {
                    store: self.describe(),
                    key: status.path,
                    reason: "listed a file outside the store's root".to_string(),
                });
            };
            if key.contains(TMP_MARK) {
                continue;
            }
            if !is_below(key, trimmed) {
                continue;
            }
            if let Err(e) = validate_key(key) {
                return Err(StoreError::Corrupt {
                    store: self.describe(),
                    key: key.to_string(),
                    reason: format!("listed a file whose name is not a valid key: {e}"),
                });
            }
            keys.push(key.to_string());
        }
        keys.sort_unstable();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        validate_key(key)?;
        let path = self.path(key);
        match self.client.delete(&path, false).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(self.error("delete", key, "delete", &path, e)),
        }
    }

    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<bool, StoreError> {
        validate_key(key)?;
        let tmp = self.write_tmp("create_if_absent", key, value).await?;
        let path = self.path(key);
        match self.client.rename(&tmp, &path, false).await {
            Ok(()) => Ok(true),
            Err(HdfsError::AlreadyExists(_)) => {
                self.remove_tmp(&tmp).await;
                Ok(false)
            }
            Err(e) => {
                self.remove_tmp(&tmp).await;
                Err(self.error(
                    "create_if_absent",
                    key,
                    "rename",
                    &format!("{tmp} to {path}"),
                    e,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Only what needs no cluster; the store itself is tested against a real MiniDFSCluster in
    //! `it/tests/hdfs_store.rs` (this crate cannot depend on the harness).

    use super::*;

    #[test]
    fn a_root_must_be_absolute_and_clean() {
        assert_eq!(normalize_root("/ckpt/").unwrap(), "/ckpt");
        assert_eq!(normalize_root("/").unwrap(), "");
        assert_eq!(normalize_root("/a/b").unwrap(), "/a/b");
        for bad in ["ckpt", "", "/a//b", "/a/../b", "/a/./b", "/a:b"] {
            assert!(normalize_root(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn caller_settings_override_the_fast_failure_defaults() {
        let mut options = HdfsOptions::default();
        assert_eq!(
            options.client_config()["dfs.client.failover.max.attempts"],
            "2"
        );
        options
            .config
            .insert("dfs.client.failover.max.attempts".into(), "9".into());
        options.config.insert("other.key".into(), "x".into());
        let config = options.client_config();
        assert_eq!(config["dfs.client.failover.max.attempts"], "9");
        assert_eq!(config["dfs.client.failover.sleep.max.millis"], "1000");
        assert_eq!(config["other.key"], "x");
    }

    #[test]
    fn a_temporary_name_can_never_be_a_key() {
        // validate_key refuses '~', so list can skip temporaries without ever hiding a key.
        let tmp = format!("checkpoints/CURRENT{TMP_MARK}0123456789abcdef");
        assert!(validate_key(&tmp).is_err());
    }

    #[test]
    fn both_shapes_of_file_not_found_are_recognized() {
        assert!(is_not_found(&HdfsError::FileNotFound("/x".into())));
        assert!(is_not_found(&HdfsError::RPCError(
            "java.io.FileNotFoundException".into(),
            "File does not exist: /x".into()
        )));
        assert!(!is_not_found(&HdfsError::RPCError(
            "org.apache.hadoop.ipc.StandbyException".into(),
            String::new()
        )));
    }
}
