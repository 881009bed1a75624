//! An active-standby standby trims its WAL of what the primary's checkpoint says is committed. A block
//! whose append is durable but not yet marked in the node's state (between the fdatasync and the
//! marking) is in none of its maps; a trim then must still not release the segment that holds it.
//!
//! The failpoint `node::ingest::before_mark` holds block A there — the last record of the first
//! segment — while block B (the first record of the next segment) is made durable and the standby
//! trims by a checkpoint that covers everything before A. Then the standby takes over and commits:
//! A must be in the output. This file is its own test process, so the failpoint touches no other test.
#![cfg(feature = "failpoints")]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hdfs_ingest::node::{open_store, Node};
use hdfs_ingest::size::ByteSize;
use strategies::checkpoint::Checkpointer;
use strategies::snapshot::{SeqSet, Snapshot};
use strategies::Strategy;

/// A third of a 1 MiB segment, less room for the headers: three fit, a fourth starts a new segment.
fn block(seq: u64) -> Bytes {
    Bytes::from(vec![seq as u8 + 1; 300 * 1024])
}

fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_standby_trim_keeps_a_segment_whose_block_is_durable_but_not_yet_marked() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = it::node_config(dir.path(), "standby", Strategy::ActiveStandby);
    cfg.wal.segment_size = ByteSize::mib(1);
    let wal_dir = cfg.wal_dir();
    let store = open_store(&cfg).await.unwrap();
    let standby = Node::open_standby(cfg).await.unwrap();
    for seq in 0..2 {
        standby.ingest("cam", Some(seq), block(seq)).await.unwrap();
    }
    // The primary committed 0 and 1.
    let mut committed = SeqSet::new();
    committed.insert(0);
    committed.insert(1);
    let mut snap = Snapshot::empty(1, 1, "primary", 1);
    snap.sources.insert("cam".into(), committed);
    Checkpointer::new(store).write(&snap).await.unwrap();

    // Hold the first append that reaches the failpoint (A, seq 2) until released.
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
    let once = Arc::new(AtomicBool::new(false));
    {
        let gate = gate.clone();
        let held_tx = Mutex::new(held_tx);
        fail::cfg_callback("node::ingest::before_mark", move || {
            if once.swap(true, Ordering::SeqCst) {
                return;
            }
            let _ = held_tx.lock().unwrap().send(());
            let (lock, cv) = &*gate;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
        })
        .unwrap();
    }
    let a = {
        let standby = standby.clone();
        tokio::spawn(async move { standby.ingest("cam", Some(2), block(2)).await })
    };
    tokio::task::spawn_blocking(move || held_rx.recv_timeout(Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("A reached the failpoint");
    standby.ingest("cam", Some(3), block(3)).await.unwrap();
    assert_eq!(
        segments(&wal_dir),
        2,
        "A ends the first segment, B starts the second"
    );

    standby.refresh_committed().await.unwrap();
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    a.await.unwrap().unwrap();
    fail::remove("node::ingest::before_mark");
    assert_eq!(
        segments(&wal_dir),
        2,
        "the segment holding A was kept: A is in no committed batch"
    );

    standby.become_primary().await.unwrap();
    assert!(standby.seal_and_commit().await.unwrap());
    let out = dir.path().join("output");
    let found: Vec<String> = it::batch_paths(&out)
        .into_iter()
        .flat_map(|(_, b)| std::fs::read_dir(b).into_iter().flatten().flatten())
        .map(|f| f.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("cam-"))
        .collect();
    assert!(
        found.iter().any(|n| n.starts_with("cam-2.")),
        "A is committed after the takeover: {found:?}"
    );
    assert!(found.iter().any(|n| n.starts_with("cam-3.")), "{found:?}");
}
