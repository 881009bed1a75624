//! An HDFS outage, for real: the NameNode of a MiniDFSCluster is stopped under the checkpoint
//! store and started again. Proves the harness's control works end to end and that the store
//! reports an outage quickly and recovers from it without losing what it had.
//!
//! This test starts its own cluster (it stops the NameNode, which would break tests sharing one).
//! With `HDFS_URL` set there is nothing it can stop, so it says so and skips.

use std::time::{Duration, Instant};

use bytes::Bytes;
use it::minidfs::{MiniDfs, MiniDfsOptions};
use strategies::store::hdfs::{HdfsOptions, HdfsStore};
use strategies::store::{CheckpointStore, StoreError};

/// Well above the ~1-2 s the store's retry settings allow, well below hdfs-native's default
/// behaviour against a dead NameNode (still retrying after 20 s).
const FAST_FAILURE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namenode_outage_fails_a_put_within_seconds_and_a_restart_loses_nothing() {
    if MiniDfs::external().is_some() {
        eprintln!(
            "skipped: HDFS_URL names an external cluster, and this test must stop its NameNode"
        );
        return;
    }
    let dfs = MiniDfs::start(MiniDfsOptions {
        datanodes: 1,
        ..MiniDfsOptions::default()
    })
    .unwrap();
    let store = HdfsStore::connect(dfs.url(), "/ckpt", HdfsOptions::default())
        .await
        .unwrap();
    let first = Bytes::from_static(b"{\"checkpoint\":1}");
    store.put("checkpoints/1", first.clone()).await.unwrap();
    store
        .put("checkpoints/CURRENT", Bytes::from_static(b"1"))
        .await
        .unwrap();

    dfs.stop_namenode().unwrap();
    let started = Instant::now();
    let err = store
        .put("checkpoints/2", Bytes::from_static(b"{\"checkpoint\":2}"))
        .await
        .expect_err("a put with the NameNode down must fail");
    let elapsed = started.elapsed();
    eprintln!("put during the outage failed after {elapsed:?}: {err}");
    assert!(
        elapsed < FAST_FAILURE,
        "the put took {elapsed:?} to fail; an outage must be an error within {FAST_FAILURE:?}"
    );
    assert!(
        matches!(err, StoreError::Backend { op: "put", .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "checkpoint store {}/ckpt: put checkpoints/2: ",
            dfs.url()
        )),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("connection refused"),
        "the error should say why: {text}"
    );

    dfs.restart_namenode().unwrap();
    store
        .put("checkpoints/2", Bytes::from_static(b"{\"checkpoint\":2}"))
        .await
        .expect("the same put succeeds once the NameNode is back");
    store
        .put("checkpoints/CURRENT", Bytes::from_static(b"2"))
        .await
        .unwrap();
    assert_eq!(store.get("checkpoints/1").await.unwrap(), Some(first));
    assert_eq!(
        store.get("checkpoints/CURRENT").await.unwrap(),
        Some(Bytes::from_static(b"2"))
    );
    assert_eq!(
        store.list("checkpoints").await.unwrap(),
        vec![
            "checkpoints/1".to_string(),
            "checkpoints/2".to_string(),
            "checkpoints/CURRENT".to_string()
        ]
    );
    // A fresh client (a standby taking over) sees the same.
    let reopened = HdfsStore::connect(dfs.url(), "/ckpt", HdfsOptions::default())
        .await
        .unwrap();
    assert_eq!(
        reopened.get("checkpoints/2").await.unwrap(),
        Some(Bytes::from_static(b"{\"checkpoint\":2}"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_datanode_leaves_the_store_working_and_comes_back() {
    if MiniDfs::external().is_some() {
        eprintln!(
            "skipped: HDFS_URL names an external cluster, and this test must stop a DataNode"
        );
        return;
    }
    // Three DataNodes, two replicas: with one DataNode down every block still has a home.
    let dfs = MiniDfs::start(MiniDfsOptions {
        datanodes: 3,
        replication: Some(2),
        ..MiniDfsOptions::default()
    })
    .unwrap();
    let store = HdfsStore::connect(dfs.url(), "/ckpt", HdfsOptions::default())
        .await
        .unwrap();
    let value = |i: usize| Bytes::from(format!("checkpoint {i}").repeat(1000));
    for i in 0..5 {
        store.put(&format!("c/{i}"), value(i)).await.unwrap();
    }

    dfs.stop_datanode(1).unwrap();
    let err = dfs.stop_datanode(1).expect_err("already stopped");
    assert!(err.to_string().contains("already stopped"), "{err}");
    let err = dfs.stop_datanode(7).expect_err("no such DataNode");
    assert!(err.to_string().contains("out of range"), "{err}");
    // Every value written before the stop has a replica on a live DataNode: reads go on.
    for i in 0..5 {
        assert_eq!(
            store.get(&format!("c/{i}")).await.unwrap(),
            Some(value(i)),
            "c/{i}"
        );
    }
    // hdfs-native 0.14 does not exclude a dead DataNode when it sets up a write pipeline (the Java
    // client abandons the block and asks again with the node excluded), so until the NameNode has
    // declared the DataNode dead (heartbeat expiry: ~14 s with the harness's settings, 10.5 min
    // with stock Hadoop's) a write whose pipeline includes it may fail. Once declared dead, the
    // NameNode places blocks on the live ones only and every put succeeds.
    let stopped = Instant::now();
    dfs.wait_datanode_dead(1).unwrap();
    eprintln!(
        "the NameNode declared DataNode 1 dead after {:?}",
        stopped.elapsed()
    );
    for i in 5..10 {
        store.put(&format!("c/{i}"), value(i)).await.unwrap();
    }
    for i in 0..10 {
        assert_eq!(
            store.get(&format!("c/{i}")).await.unwrap(),
            Some(value(i)),
            "c/{i}"
        );
    }

    dfs.restart_datanode(1).unwrap();
    for i in 10..15 {
        store.put(&format!("c/{i}"), value(i)).await.unwrap();
    }
    assert_eq!(store.list("c").await.unwrap().len(), 15);
    for i in 0..15 {
        assert_eq!(
            store.get(&format!("c/{i}")).await.unwrap(),
            Some(value(i)),
            "c/{i}"
        );
    }
}
