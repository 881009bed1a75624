//! The checkpoint store: where checkpoints, the pointer to the newest one and epoch claims live.
//!
//! # Design
//!
//! Modeled on apache/arrow-rs-object-store: a deliberately small, byte-level, async and
//! object-safe trait, so that the embedded default (sled), HDFS and any object store can
//! implement it without bending, and so that strategies hold an `Arc<dyn CheckpointStore>`
//! chosen at run time from configuration. Everything richer (checkpoint encoding, the moving
//! pointer, epochs) is built on top of it in [`crate::checkpoint`] and [`crate::epoch`].
//!
//! # Contract
//!
//! Every implementation must satisfy all of the following; [`conformance`] checks each one and
//! every backend runs it.
//!
//! * **Keys** are `/`-separated paths validated by [`validate_key`]: non-empty segments of at
//!   most 255 bytes made of ASCII letters, digits and `. _ - = @ +`, no `.` or `..` segment,
//!   no leading or trailing `/`, at most 1024 bytes in all. The character set is chosen so
//!   that every backend (sled, a file system, HDFS, object stores) stores a key verbatim,
//!   without escaping. An invalid key is refused with [`StoreError::InvalidKey`] before the
//!   backend is touched.
//! * **A key is a leaf.** A key must not also be used as a directory of other keys (`a` and
//!   `a/b` at once): file-system-like backends cannot hold both. The keys built by
//!   [`crate::paths`] never do.
//! * **`put` is atomic**: a concurrent or later reader sees the old value or the new one,
//!   never a mix, never a prefix. Once `put` returns, the value is durable (survives a crash
//!   of the process, and of the machine where the backend can promise it).
//! * **`get`** of a missing key is `Ok(None)`, not an error.
//! * **`list(prefix)`** returns the full keys strictly below `prefix`, sorted ascending by
//!   byte order. The prefix is whole segments: `list("a")` and `list("a/")` both return
//!   `a/x` but never `ab/x`. The empty prefix lists every key.
//! * **`delete` is idempotent**: deleting a missing key succeeds.
//! * **`create_if_absent` is atomic across processes**: of any number of concurrent callers on
//!   one key, exactly one gets `true` and its value is stored; every other gets `false` and
//!   the stored value is never overwritten. It is durable when it returns, like `put`.
//! * **Checkpoint objects are immutable.** The store does not enforce this;
//!   [`crate::checkpoint::Checkpointer`] does, by creating every object with `create_if_absent` and
//!   never moving a pointer: the newest checkpoint is the greatest key.
//!
//! # Errors
//!
//! [`StoreError`] keeps corruption (the backend returned bytes or keys it should not have)
//! apart from backend failures (I/O, network, a lock held by another process) and from the
//! caller's mistakes (an invalid key). Every variant names the store and the key.

pub mod conformance;
pub mod hdfs;
pub mod object;
pub mod sled;

use async_trait::async_trait;
use bytes::Bytes;

/// The longest key accepted, in bytes.
pub const MAX_KEY_LEN: usize = 1024;
/// The longest key segment accepted, in bytes (a file name on most file systems).
pub const MAX_SEGMENT_LEN: usize = 255;

/// A small, byte-level, async key/value store for checkpoints. See the [module
/// documentation](self) for the contract every implementation keeps.
#[async_trait]
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Where this store keeps its data, for logs and errors: `sled:/abs/path`,
    /// `file:/abs/dir`, `memory`, ...
    fn describe(&self) -> String;

    /// Stores `value` under `key`, replacing any previous value atomically and durably.
    async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError>;

    /// Returns the value under `key`, or `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;

    /// Returns every key strictly below `prefix` (whole segments), sorted ascending.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;

    /// Removes `key`; removing a missing key succeeds.
    async fn delete(&self, key: &str) -> Result<(), StoreError>;

    /// Stores `value` under `key` only if `key` holds nothing; `true` when this call created
    /// it. Atomic across processes and durable when it returns.
    async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<bool, StoreError>;
}

/// Why a checkpoint store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed: I/O, network, a lock held by another process, ...
    #[error("checkpoint store {store}: {op} {key}: {source}")]
    Backend {
        /// [`CheckpointStore::describe`] of the failing store.
        store: String,
        /// The key (or prefix) the operation was about; empty when none.
        key: String,
        /// The operation: `open`, `put`, `get`, `list`, `delete`, `create_if_absent`.
        op: &'static str,
        /// The backend's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The backend holds or returned data that breaks the store's invariants.
    #[error("checkpoint store {store}: {key} is corrupt: {reason}")]
    Corrupt {
        /// [`CheckpointStore::describe`] of the store.
        store: String,
        /// The key whose data is corrupt.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller passed a key (or prefix) that the contract does not allow.
    #[error("invalid checkpoint store key {key:?}: {reason}")]
    InvalidKey {
        /// The key as passed.
        key: String,
        /// Which rule it breaks.
        reason: String,
    },
}

impl StoreError {
    /// A [`StoreError::Backend`] from any error type.
    pub fn backend(
        store: impl Into<String>,
        op: &'static str,
        key: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            store: store.into(),
            key: key.into(),
            op,
            source: source.into(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> StoreError {
    StoreError::InvalidKey {
        key: key.to_string(),
        reason: reason.into(),
    }
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'=' | b'@' | b'+')
}

/// Checks `key` against the key rules of the [contract](self).
pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(invalid(key, "a key must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(invalid(
            key,
            format!(
                "a key must be at most {MAX_KEY_LEN} bytes, this one has {}",
                key.len()
            ),
        ));
    }
    for (index, segment) in key.split('/').enumerate() {
        if segment.is_empty() {
            return Err(invalid(
                key,
                format!("segment {index} is empty (leading, trailing or doubled '/')"),
            ));
        }
        if segment == "." || segment == ".." {
            return Err(invalid(
                key,
                format!("segment {index} is {segment:?}, which is not allowed"),
            ));
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(invalid(
                key,
                format!("segment {index} is longer than {MAX_SEGMENT_LEN} bytes"),
            ));
        }
        if let Some(offset) = segment.bytes().position(|b| !is_key_char(b)) {
            let bad = segment[offset..].chars().next().unwrap_or('?');
            return Err(invalid(
                key,
                format!(
                    "segment {index} has {bad:?} at offset {offset}; allowed are ASCII letters, digits and . _ - = @ +"
                ),
            ));
        }
    }
    Ok(())
}

/// Checks a `list` prefix and returns it without a trailing `/`: the empty prefix (every key)
/// or a valid key, optionally followed by one `/`.
pub fn validate_prefix(prefix: &str) -> Result<&str, StoreError> {
    if prefix.is_empty() {
        return Ok(prefix);
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    validate_key(trimmed).map_err(|e| match e {
        StoreError::InvalidKey { reason, .. } => invalid(prefix, format!("as a prefix: {reason}")),
        other => other,
    })?;
    Ok(trimmed)
}

/// Whether `key` lies strictly below the already validated and trimmed `prefix`.
pub(crate) fn is_below(key: &str, trimmed_prefix: &str) -> bool {
    trimmed_prefix.is_empty()
        || key
            .strip_prefix(trimmed_prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_made_of_allowed_segments_are_accepted() {
        for key in [
            "a",
            "checkpoints/CURRENT",
            "epochs/0000000001",
            "a.b/c_d-e=f@g+h",
        ] {
            assert!(validate_key(key).is_ok(), "{key} should be valid");
        }
    }

    #[test]
    fn keys_breaking_a_rule_are_refused_with_the_key_named() {
        let long_segment = "x".repeat(MAX_SEGMENT_LEN + 1);
        let long_key = vec!["abcdefgh"; MAX_KEY_LEN / 8].join("/") + "/z";
        for key in [
            "",
            "/a",
            "a/",
            "a//b",
            "a/../b",
            "./a",
            "a b",
            "a\\b",
            "a#1",
            "ü",
            "a\nb",
            long_segment.as_str(),
            long_key.as_str(),
        ] {
            match validate_key(key) {
                Err(StoreError::InvalidKey { key: named, reason }) => {
                    assert_eq!(named, key);
                    assert!(!reason.is_empty());
                }
                other => panic!("{key:?} should be invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_prefix_may_be_empty_or_end_in_one_slash() {
        assert_eq!(validate_prefix("").unwrap(), "");
        assert_eq!(validate_prefix("a/").unwrap(), "a");
        assert_eq!(validate_prefix("a/b").unwrap(), "a/b");
        assert!(validate_prefix("a//").is_err());
        assert!(validate_prefix("/").is_err());
    }

    #[test]
    fn below_means_whole_segments() {
        assert!(is_below("a/x", "a"));
        assert!(!is_below("ab/x", "a"));
        assert!(!is_below("a", "a"));
        assert!(is_below("anything", ""));
    }

    #[test]
    fn backend_errors_name_the_store_the_operation_and_the_key() {
        let e = StoreError::backend("memory", "put", "a/b", "disk on fire");
        assert_eq!(
            e.to_string(),
            "checkpoint store memory: put a/b: disk on fire"
        );
    }
}
