//! The one conformance suite every [`CheckpointStore`] backend runs.
//!
//! # Design
//!
//! Each clause of the [contract](super) is one small `pub async fn` check that panics with
//! the store's [`describe`](CheckpointStore::describe), the operation and the key when the
//! backend breaks it. [`run_all`] runs every check that needs only a store; the durability
//! check [`reopened_store_keeps_its_data`] needs to open the store twice and takes a factory.
//! A backend's test module calls both:
//!
//! ```text
//! conformance::run_all(&store).await;
//! conformance::reopened_store_keeps_its_data(|| async { Box::new(open()) as Box<dyn CheckpointStore> }).await;
//! ```
//!
//! The suite is backend-agnostic: it uses nothing but the trait, works on a store that
//! already holds data (each check uses its own `conformance/<check>/` namespace and clears it
//! first), and never relies on two keys where one is a directory of the other. It is compiled
//! into the library (not only under `cfg(test)`) so that backends living in other crates —
//! the HDFS backend, integration tests against a real cluster — run exactly the same checks.

use std::future::Future;

use bytes::Bytes;
use futures::future::join_all;

use super::{CheckpointStore, StoreError};

/// Runs every check that needs only `store`. Panics on the first broken clause.
pub async fn run_all(store: &dyn CheckpointStore) {
    put_then_get_round_trips(store).await;
    values_are_kept_byte_for_byte(store).await;
    get_of_a_missing_key_is_none(store).await;
    an_overwrite_replaces_the_whole_value(store).await;
    readers_never_see_a_torn_overwrite(store).await;
    list_by_prefix_is_sorted_and_exact(store).await;
    list_of_an_unknown_prefix_is_empty(store).await;
    delete_is_idempotent(store).await;
    create_if_absent_returns_true_once_and_never_overwrites(store).await;
    create_if_absent_after_a_delete_creates_again(store).await;
    concurrent_create_if_absent_has_exactly_one_winner(store).await;
    large_values_round_trip(store).await;
    invalid_keys_are_rejected(store).await;
}

fn must<T>(store: &dyn CheckpointStore, op: &str, key: &str, result: Result<T, StoreError>) -> T {
    match result {
        Ok(value) => value,
        Err(e) => panic!("{}: {op} {key} failed: {e}", store.describe()),
    }
}

/// Removes every key below `root` so a check starts from nothing, and returns `root`.
async fn fresh(store: &dyn CheckpointStore, check: &str) -> String {
    let root = format!("conformance/{check}");
    for key in must(store, "list", &root, store.list(&root).await) {
        must(store, "delete", &key, store.delete(&key).await);
    }
    root
}

/// A value whose bytes depend on `seed` and position, so a mix of two values is detectable.
fn pattern(seed: u8, len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// A value put under a key is returned by get.
pub async fn put_then_get_round_trips(store: &dyn CheckpointStore) {
    let root = fresh(store, "round-trip").await;
    let key = format!("{root}/a/b/value.json");
    let value = Bytes::from_static(b"{\"hello\":\"world\"}");
    must(store, "put", &key, store.put(&key, value.clone()).await);
    let got = must(store, "get", &key, store.get(&key).await);
    assert_eq!(
        got,
        Some(value),
        "{}: get {key} after put",
        store.describe()
    );
}

/// The empty value and values holding every byte are stored exactly.
pub async fn values_are_kept_byte_for_byte(store: &dyn CheckpointStore) {
    let root = fresh(store, "bytes").await;
    let every_byte: Bytes = (0..=255u8)
        .rev()
        .chain(0..=255u8)
        .collect::<Vec<_>>()
        .into();
    for (name, value) in [("empty", Bytes::new()), ("every-byte", every_byte)] {
        let key = format!("{root}/{name}");
        must(store, "put", &key, store.put(&key, value.clone()).await);
        let got = must(store, "get", &key, store.get(&key).await);
        assert_eq!(got, Some(value), "{}: get {key}", store.describe());
    }
}

/// Getting a key that was never written is `None`, not an error.
pub async fn get_of_a_missing_key_is_none(store: &dyn CheckpointStore) {
    let root = fresh(store, "missing").await;
    for key in [
        format!("{root}/never-written"),
        format!("{root}/no/such/dir"),
    ] {
        let got = must(store, "get", &key, store.get(&key).await);
        assert_eq!(got, None, "{}: get {key}", store.describe());
    }
}

/// A second put replaces the first value entirely, also when the new one is shorter.
pub async fn an_overwrite_replaces_the_whole_value(store: &dyn CheckpointStore) {
    let root = fresh(store, "overwrite").await;
    let key = format!("{root}/pointer");
    let long = pattern(1, 4096);
    let short = Bytes::from_static(b"short");
    must(store, "put", &key, store.put(&key, long).await);
    must(store, "put", &key, store.put(&key, short.clone()).await);
    let got = must(store, "get", &key, store.get(&key).await);
    assert_eq!(
        got,
        Some(short),
        "{}: get {key} after overwrite",
        store.describe()
    );
}

/// While one task overwrites a key back and forth between two values of different lengths,
/// every concurrent read returns one of the two whole values.
pub async fn readers_never_see_a_torn_overwrite(store: &dyn CheckpointStore) {
    let root = fresh(store, "torn").await;
    let key = format!("{root}/pointer");
    let a = pattern(7, 256 * 1024);
    let b = pattern(99, 64 * 1024 + 7);
    must(store, "put", &key, store.put(&key, a.clone()).await);
    const ROUNDS: usize = 24;
    let writer = async {
        for round in 0..ROUNDS {
            let value = if round % 2 == 0 { b.clone() } else { a.clone() };
            must(store, "put", &key, store.put(&key, value).await);
            tokio::task::yield_now().await;
        }
    };
    let reader = async {
        let mut seen = 0;
        for _ in 0..ROUNDS {
            let got = must(store, "get", &key, store.get(&key).await);
            let whole = got.as_ref() == Some(&a) || got.as_ref() == Some(&b);
            assert!(
                whole,
                "{}: get {key} during overwrites returned {} bytes that are neither value",
                store.describe(),
                got.map_or(0, |g| g.len())
            );
            seen += 1;
            tokio::task::yield_now().await;
        }
        seen
    };
    let ((), seen) = tokio::join!(writer, reader);
    assert_eq!(seen, ROUNDS);
}

/// `list` returns full keys strictly below the prefix, whole segments only, sorted.
pub async fn list_by_prefix_is_sorted_and_exact(store: &dyn CheckpointStore) {
    let root = fresh(store, "list").await;
    let written = ["a/z", "ab/x", "a/b/c", "a/a", "b/a", "a/y.json", "a-b/c"];
    for leaf in written {
        let key = format!("{root}/{leaf}");
        must(store, "put", &key, store.put(&key, Bytes::from(leaf)).await);
    }
    let expected_a: Vec<String> = ["a/a", "a/b/c", "a/y.json", "a/z"]
        .iter()
        .map(|leaf| format!("{root}/{leaf}"))
        .collect();
    for prefix in [format!("{root}/a/"), format!("{root}/a")] {
        let listed = must(store, "list", &prefix, store.list(&prefix).await);
        assert_eq!(listed, expected_a, "{}: list {prefix}", store.describe());
    }
    let mut everything: Vec<String> = written.iter().map(|l| format!("{root}/{l}")).collect();
    everything.sort();
    let listed = must(store, "list", &root, store.list(&root).await);
    assert_eq!(listed, everything, "{}: list {root}", store.describe());

    let all = must(store, "list", "", store.list("").await);
    assert!(
        all.windows(2).all(|w| w[0] < w[1]),
        "{}: list \"\" is not sorted: {all:?}",
        store.describe()
    );
    for key in &everything {
        assert!(
            all.contains(key),
            "{}: list \"\" misses {key}",
            store.describe()
        );
    }
}

/// Listing a prefix nothing was written under is empty, not an error.
pub async fn list_of_an_unknown_prefix_is_empty(store: &dyn CheckpointStore) {
    let root = fresh(store, "list-empty").await;
    let prefix = format!("{root}/nothing/here");
    let listed = must(store, "list", &prefix, store.list(&prefix).await);
    assert!(
        listed.is_empty(),
        "{}: list {prefix} = {listed:?}",
        store.describe()
    );
}

/// Deleting removes the key from get and list; deleting again, or a missing key, succeeds.
pub async fn delete_is_idempotent(store: &dyn CheckpointStore) {
    let root = fresh(store, "delete").await;
    let key = format!("{root}/doomed");
    let keep = format!("{root}/kept");
    must(store, "delete", &key, store.delete(&key).await);
    must(
        store,
        "put",
        &key,
        store.put(&key, Bytes::from_static(b"x")).await,
    );
    must(
        store,
        "put",
        &keep,
        store.put(&keep, Bytes::from_static(b"y")).await,
    );
    must(store, "delete", &key, store.delete(&key).await);
    let got = must(store, "get", &key, store.get(&key).await);
    assert_eq!(got, None, "{}: get {key} after delete", store.describe());
    must(store, "delete", &key, store.delete(&key).await);
    let listed = must(store, "list", &root, store.list(&root).await);
    assert_eq!(
        listed,
        vec![keep],
        "{}: list {root} after delete",
        store.describe()
    );
}

/// `create_if_absent` creates a missing key once; later calls return false and leave the
/// first value in place.
pub async fn create_if_absent_returns_true_once_and_never_overwrites(store: &dyn CheckpointStore) {
    let root = fresh(store, "create").await;
    let key = format!("{root}/claim");
    let first = Bytes::from_static(b"first");
    let created = must(
        store,
        "create_if_absent",
        &key,
        store.create_if_absent(&key, first.clone()).await,
    );
    assert!(
        created,
        "{}: first create_if_absent {key}",
        store.describe()
    );
    for attempt in 0..3 {
        let again = must(
            store,
            "create_if_absent",
            &key,
            store
                .create_if_absent(&key, Bytes::from(format!("attempt {attempt}")))
                .await,
        );
        assert!(
            !again,
            "{}: create_if_absent {key} on an existing key",
            store.describe()
        );
    }
    let got = must(store, "get", &key, store.get(&key).await);
    assert_eq!(got, Some(first), "{}: get {key}", store.describe());

    let put_first = format!("{root}/put-first");
    must(
        store,
        "put",
        &put_first,
        store.put(&put_first, Bytes::from_static(b"put")).await,
    );
    let created = must(
        store,
        "create_if_absent",
        &put_first,
        store
            .create_if_absent(&put_first, Bytes::from_static(b"create"))
            .await,
    );
    assert!(
        !created,
        "{}: create_if_absent {put_first} after put",
        store.describe()
    );
    let got = must(store, "get", &put_first, store.get(&put_first).await);
    assert_eq!(got, Some(Bytes::from_static(b"put")));
}

/// A deleted key can be created again.
pub async fn create_if_absent_after_a_delete_creates_again(store: &dyn CheckpointStore) {
    let root = fresh(store, "recreate").await;
    let key = format!("{root}/claim");
    for round in 0..2 {
        let value = Bytes::from(format!("round {round}"));
        let created = must(
            store,
            "create_if_absent",
            &key,
            store.create_if_absent(&key, value.clone()).await,
        );
        assert!(
            created,
            "{}: create_if_absent {key} round {round}",
            store.describe()
        );
        let got = must(store, "get", &key, store.get(&key).await);
        assert_eq!(got, Some(value));
        must(store, "delete", &key, store.delete(&key).await);
    }
}

/// 16 concurrent `create_if_absent` calls on one key: exactly one wins and its value is
/// the one stored.
pub async fn concurrent_create_if_absent_has_exactly_one_winner(store: &dyn CheckpointStore) {
    let root = fresh(store, "race").await;
    let key = format!("{root}/claim");
    let contenders = (0..16).map(|i| {
        let key = key.clone();
        async move {
            let value = Bytes::from(format!("contender {i}"));
            let won = must(
                store,
                "create_if_absent",
                &key,
                store.create_if_absent(&key, value.clone()).await,
            );
            (won, value)
        }
    });
    let results = join_all(contenders).await;
    let winners: Vec<&Bytes> = results
        .iter()
        .filter(|(won, _)| *won)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        winners.len(),
        1,
        "{}: concurrent create_if_absent {key} winners",
        store.describe()
    );
    let got = must(store, "get", &key, store.get(&key).await);
    assert_eq!(
        got.as_ref(),
        Some(winners[0]),
        "{}: {key} holds the winner's value",
        store.describe()
    );
}

/// An 8 MiB value goes through put, get and create_if_absent intact.
pub async fn large_values_round_trip(store: &dyn CheckpointStore) {
    let root = fresh(store, "large").await;
    let value = pattern(3, 8 * 1024 * 1024);
    let key = format!("{root}/put");
    must(store, "put", &key, store.put(&key, value.clone()).await);
    let got = must(store, "get", &key, store.get(&key).await);
    assert!(
        got.as_ref() == Some(&value),
        "{}: get {key} returned {:?} bytes, not the 8 MiB put",
        store.describe(),
        got.map(|g| g.len())
    );
    let key = format!("{root}/created");
    let created = must(
        store,
        "create_if_absent",
        &key,
        store.create_if_absent(&key, value.clone()).await,
    );
    assert!(created);
    let got = must(store, "get", &key, store.get(&key).await);
    assert!(
        got.as_ref() == Some(&value),
        "{}: get {key}",
        store.describe()
    );
}

/// Keys that break the key rules are refused by every operation with
/// [`StoreError::InvalidKey`] naming the key, and nothing is written.
pub async fn invalid_keys_are_rejected(store: &dyn CheckpointStore) {
    let root = fresh(store, "invalid").await;
    let bad = [
        String::new(),
        format!("/{root}/a"),
        format!("{root}/a/"),
        format!("{root}//a"),
        format!("{root}/../escape"),
        format!("{root}/./a"),
        format!("{root}/with space"),
        format!("{root}/back\\slash"),
        format!("{root}/hash#1"),
        format!("{root}/ümlaut"),
        format!("{root}/new\nline"),
        format!("{root}/{}", "x".repeat(super::MAX_SEGMENT_LEN + 1)),
    ];
    for key in &bad {
        let results = [
            ("put", store.put(key, Bytes::from_static(b"x")).await.err()),
            ("get", store.get(key).await.err()),
            ("delete", store.delete(key).await.err()),
            (
                "create_if_absent",
                store
                    .create_if_absent(key, Bytes::from_static(b"x"))
                    .await
                    .err(),
            ),
        ];
        for (op, err) in results {
            match err {
                Some(StoreError::InvalidKey { key: named, .. }) => {
                    assert_eq!(&named, key, "{}: {op} names the key", store.describe())
                }
                other => panic!(
                    "{}: {op} {key:?} should be InvalidKey, got {other:?}",
                    store.describe()
                ),
            }
        }
    }
    for prefix in ["/", "a//", "../x", "a b/"] {
        match store.list(prefix).await {
            Err(StoreError::InvalidKey { key, .. }) => assert_eq!(key, prefix),
            other => panic!(
                "{}: list {prefix:?} should be InvalidKey, got {other:?}",
                store.describe()
            ),
        }
    }
    let listed = must(store, "list", &root, store.list(&root).await);
    assert!(
        listed.is_empty(),
        "{}: invalid keys left {listed:?}",
        store.describe()
    );
}

/// Data written through one handle is there after the handle is dropped and the store is
/// opened again with `open` — including the result of a delete and of a create_if_absent.
pub async fn reopened_store_keeps_its_data<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Box<dyn CheckpointStore>>,
{
    let value = pattern(5, 100_000);
    let (kept, deleted, created) = {
        let store = open().await;
        let root = fresh(store.as_ref(), "reopen").await;
        let kept = format!("{root}/kept");
        let deleted = format!("{root}/deleted");
        let created = format!("{root}/created");
        let s = store.as_ref();
        must(s, "put", &kept, s.put(&kept, value.clone()).await);
        must(s, "put", &deleted, s.put(&deleted, value.clone()).await);
        must(s, "delete", &deleted, s.delete(&deleted).await);
        let won = must(
            s,
            "create_if_absent",
            &created,
            s.create_if_absent(&created, Bytes::from_static(b"claimed"))
                .await,
        );
        assert!(won);
        (kept, deleted, created)
    };
    let store = open().await;
    let s = store.as_ref();
    assert_eq!(
        must(s, "get", &kept, s.get(&kept).await),
        Some(value),
        "{}: {kept} after reopen",
        s.describe()
    );
    assert_eq!(
        must(s, "get", &deleted, s.get(&deleted).await),
        None,
        "{}: {deleted} after reopen",
        s.describe()
    );
    let again = must(
        s,
        "create_if_absent",
        &created,
        s.create_if_absent(&created, Bytes::from_static(b"second"))
            .await,
    );
    assert!(
        !again,
        "{}: {created} is still claimed after reopen",
        s.describe()
    );
    assert_eq!(
        must(s, "get", &created, s.get(&created).await),
        Some(Bytes::from_static(b"claimed"))
    );
}

#[cfg(test)]
mod tests {
    //! The suite must fail a store that breaks the contract: each mutant below breaks one
    //! clause of an otherwise correct store, and the suite has to notice.

    use super::*;
    use crate::store::object::ObjectStoreBackend;
    use async_trait::async_trait;

    #[derive(Debug, Clone, Copy)]
    enum Flaw {
        CreateOverwrites,
        ListUnsorted,
        ListByStringPrefix,
        DeleteOfMissingFails,
        GetOfMissingFails,
        TruncatesLargeValues,
        AcceptsAnyKey,
    }

    #[derive(Debug)]
    struct Mutant {
        inner: ObjectStoreBackend,
        flaw: Flaw,
    }

    #[async_trait]
    impl CheckpointStore for Mutant {
        fn describe(&self) -> String {
            format!("mutant {:?}", self.flaw)
        }

        async fn put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
            let value = match self.flaw {
                Flaw::TruncatesLargeValues if value.len() > 1024 * 1024 => {
                    value.slice(..1024 * 1024)
                }
                _ => value,
            };
            match self.flaw {
                Flaw::AcceptsAnyKey if crate::store::validate_key(key).is_err() => Ok(()),
                _ => self.inner.put(key, value).await,
            }
        }

        async fn get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
            match (self.flaw, self.inner.get(key).await?) {
                (Flaw::GetOfMissingFails, None) => Err(StoreError::backend(
                    self.describe(),
                    "get",
                    key,
                    "not found",
                )),
                (_, value) => Ok(value),
            }
        }

        async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
            match self.flaw {
                Flaw::ListUnsorted => {
                    let mut keys = self.inner.list(prefix).await?;
                    keys.reverse();
                    Ok(keys)
                }
                Flaw::ListByStringPrefix => {
                    let all = self.inner.list("").await?;
                    Ok(all.into_iter().filter(|k| k.starts_with(prefix)).collect())
                }
                _ => self.inner.list(prefix).await,
            }
        }

        async fn delete(&self, key: &str) -> Result<(), StoreError> {
            if matches!(self.flaw, Flaw::DeleteOfMissingFails)
                && self.inner.get(key).await?.is_none()
            {
                return Err(StoreError::backend(
                    self.describe(),
                    "delete",
                    key,
                    "not found",
                ));
            }
            self.inner.delete(key).await
        }

        async fn create_if_absent(&self, key: &str, value: Bytes) -> Result<bool, StoreError> {
            match self.flaw {
                Flaw::CreateOverwrites => {
                    self.inner.put(key, value).await?;
                    Ok(true)
                }
                _ => self.inner.create_if_absent(key, value).await,
            }
        }
    }

    #[tokio::test]
    async fn every_broken_clause_fails_the_suite() {
        for flaw in [
            Flaw::CreateOverwrites,
            Flaw::ListUnsorted,
            Flaw::ListByStringPrefix,
            Flaw::DeleteOfMissingFails,
            Flaw::GetOfMissingFails,
            Flaw::TruncatesLargeValues,
            Flaw::AcceptsAnyKey,
        ] {
            let outcome = tokio::spawn(async move {
                let store = Mutant {
                    inner: ObjectStoreBackend::memory(),
                    flaw,
                };
                run_all(&store).await;
            })
            .await;
            assert!(
                outcome.is_err_and(|e| e.is_panic()),
                "the suite passed a store with flaw {flaw:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_store_that_forgets_on_reopen_fails_the_durability_check() {
        let outcome = tokio::spawn(reopened_store_keeps_its_data(|| async {
            Box::new(ObjectStoreBackend::memory()) as Box<dyn CheckpointStore>
        }))
        .await;
        assert!(outcome.is_err_and(|e| e.is_panic()));
    }
}
