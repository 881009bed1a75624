//! The HDFS checkpoint store against a real HDFS: the shared conformance suite, the reopen check,
//! and what is particular to HDFS (temporary files, multi-block values, error messages).
//!
//! The cluster is the process-wide [`MiniDfs::shared`] (or `HDFS_URL`); every test works in its
//! own directory, so the tests run in parallel.

use bytes::Bytes;
use it::minidfs::{unique_dir, MiniDfs};
use strategies::store::conformance;
use strategies::store::hdfs::{HdfsOptions, HdfsStore};
use strategies::store::{CheckpointStore, StoreError};

async fn open(url: &str, root: &str) -> HdfsStore {
    HdfsStore::connect(url, root, HdfsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}{root}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hdfs_store_keeps_the_whole_checkpoint_store_contract() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("store-conformance");
    let store = open(dfs.url(), &root).await;
    assert_eq!(store.describe(), format!("{}{root}", dfs.url()));
    conformance::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_written_through_one_client_is_there_for_a_new_one() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("store-reopen");
    let url = dfs.url().to_string();
    conformance::reopened_store_keeps_its_data(|| {
        let (url, root) = (url.clone(), root.clone());
        async move { Box::new(open(&url, &root).await) as Box<dyn CheckpointStore> }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_spanning_several_blocks_lands_in_several_blocks_and_reads_back_whole() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("store-blocks");
    let store = open(dfs.url(), &root).await;
    // The harness's block size is 1 MiB: 3.5 MiB needs four blocks.
    let value: Bytes = (0..3_670_016u32)
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    store.put("big/value", value.clone()).await.unwrap();
    let status = store
        .client()
        .get_file_info(&format!("{root}/big/value"))
        .await
        .unwrap();
    assert_eq!(status.length, value.len());
    let block_size = status.blocksize.expect("a file has a block size") as usize;
    assert!(
        value.len().div_ceil(block_size) >= 2,
        "a {} byte value in {block_size} byte blocks should span several",
        value.len()
    );
    assert_eq!(store.get("big/value").await.unwrap(), Some(value));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_temporary_file_left_by_a_crashed_put_is_neither_listed_nor_read() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("store-tmp");
    let store = open(dfs.url(), &root).await;
    store
        .put("checkpoints/CURRENT", Bytes::from_static(b"1"))
        .await
        .unwrap();
    // What a put that died between create and rename leaves: a closed temporary file.
    let leftover = format!("{root}/checkpoints/CURRENT.tmp~00000000deadbeef");
    let mut w = store
        .client()
        .create(&leftover, hdfs_native::WriteOptions::default())
        .await
        .unwrap();
    w.write_bytes(Bytes::from_static(b"half")).await.unwrap();
    w.close().await.unwrap();
    drop(w);

    assert_eq!(
        store.list("checkpoints").await.unwrap(),
        vec!["checkpoints/CURRENT".to_string()]
    );
    assert_eq!(store.list("").await.unwrap().len(), 1);
    assert_eq!(
        store.get("checkpoints/CURRENT").await.unwrap(),
        Some(Bytes::from_static(b"1"))
    );
    // A put after the crash still replaces the key atomically.
    store
        .put("checkpoints/CURRENT", Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(
        store.get("checkpoints/CURRENT").await.unwrap(),
        Some(Bytes::from_static(b"2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_is_not_a_key_is_reported_as_corruption_naming_it() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("store-foreign");
    let store = open(dfs.url(), &root).await;
    let foreign = format!("{root}/epochs/has space");
    let mut w = store
        .client()
        .create(&foreign, hdfs_native::WriteOptions::default())
        .await
        .unwrap();
    w.close().await.unwrap();
    drop(w);
    match store.list("epochs").await {
        Err(StoreError::Corrupt { store: s, key, .. }) => {
            assert_eq!(s, store.describe());
            assert_eq!(key, "epochs/has space");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_namenode_is_an_error_naming_the_store_within_seconds() {
    // Nobody listens on this port: connect's mkdirs must fail fast, not retry for minutes.
    let port = it::free_port();
    let url = format!("hdfs://127.0.0.1:{port}");
    let started = std::time::Instant::now();
    let err = HdfsStore::connect(&url, "/ckpt", HdfsOptions::default())
        .await
        .expect_err("no NameNode there");
    let elapsed = started.elapsed();
    let text = err.to_string();
    assert!(
        text.starts_with(&format!("checkpoint store {url}/ckpt: open")),
        "{text}"
    );
    assert!(text.contains("mkdirs /ckpt"), "{text}");
    assert!(text.to_lowercase().contains("connection refused"), "{text}");
    assert!(
        elapsed < std::time::Duration::from_secs(10),
        "took {elapsed:?}"
    );
}
