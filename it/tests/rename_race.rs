//! A primary cut off from its standby is alive, and may be in the middle of publishing a batch —
//! its files staged and durable, its batch claimed, its rename not yet done — when the standby takes
//! over. The takeover must not depend on the old primary's staging (a takeover that deleted every
//! node's `_temporary` failed with "Directory not empty" while the old primary still wrote, and
//! emptied a directory the old primary's rename published a moment later), the old primary's late
//! rename must land nowhere visible (the name is voided), and the old primary must stop fenced without
//! acknowledging the batch as committed.
//!
//! The hold is the failpoint `sink::publish::fault` (after the staged files are durable, before the
//! rename) with a callback that runs the whole takeover of a second node while the first waits there.
//! This file is its own test process, so the failpoint touches no other test.
#![cfg(feature = "failpoints")]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hdfs_ingest::config::Config;
use hdfs_ingest::node::{Node, NodeError};
use hdfs_ingest::protocol::{AckLevel, ServerFrame};
use hdfs_ingest::receiver::Intake;
use hdfs_ingest::sink::{STAGING_DIR, VOID_FILE};
use strategies::Strategy;

fn config(root: &Path, name: &str) -> Config {
    it::node_config(root, name, Strategy::UpstreamBackup)
}

/// Every published batch directory and the files in it (staging left out).
fn published(output: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (name, entry) in it::batch_paths(output) {
        let mut files: Vec<String> = std::fs::read_dir(entry)
            .unwrap()
            .flatten()
            .map(|f| f.file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        out.insert(name, files);
    }
    out
}

/// What the callback saw while the old primary was held before its rename.
#[derive(Debug, Default)]
struct DuringHold {
    new_epoch: Option<u64>,
    old_staging_files: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_while_the_old_primary_is_mid_rename_and_nothing_is_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let old_cfg = config(dir.path(), "old");
    let output: PathBuf = old_cfg.output_dir();
    let old_staging = output.join(STAGING_DIR).join("old");
    let old = Node::open(old_cfg).await.unwrap();
    assert_eq!(old.epoch(), 1);
    let (tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    old.register_conn("cam", tx);
    for seq in 0..3 {
        old.ingest("cam", Some(seq), Bytes::from(format!("img{seq}")))
            .await
            .unwrap();
    }

    let seen: Arc<Mutex<DuringHold>> = Arc::default();
    let slot = seen.clone();
    let new_cfg = config(dir.path(), "new");
    let staging = old_staging.clone();
    // The first publish to reach the failpoint is the old primary's; the takeover run inside the
    // callback publishes a void through the same failpoint, which must pass straight through.
    let entered = Arc::new(AtomicBool::new(false));
    fail::cfg_callback("sink::publish::fault", move || {
        if entered.swap(true, Ordering::SeqCst) {
            return;
        }
        let cfg = new_cfg.clone();
        let epoch = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let new = Node::open(cfg)
                    .await
                    .expect("the takeover goes through while the old primary is mid-publish");
                let epoch = new.epoch();
                new.shutdown().await.unwrap();
                epoch
            })
        })
        .join()
        .unwrap();
        let mut seen = slot.lock().unwrap();
        seen.new_epoch = Some(epoch);
        seen.old_staging_files = it::files_under(&staging);
    })
    .unwrap();
    let outcome = old.seal_and_commit().await;
    fail::remove("sink::publish::fault");

    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(
        seen.new_epoch,
        Some(2),
        "the standby took over while the old primary was held before its rename"
    );
    assert_eq!(
        seen.old_staging_files, 3,
        "the takeover left the old primary's staged batch whole"
    );
    assert!(
        matches!(outcome, Err(NodeError::Fenced(_))),
        "the held primary learns its batch was voided: {outcome:?}"
    );
    while let Ok(frame) = acks.try_recv() {
        assert!(
            !matches!(
                frame,
                ServerFrame::Ack {
                    level: AckLevel::Committed,
                    ..
                }
            ),
            "a committed ack for a batch that was voided: {frame:?}"
        );
    }
    let batches = published(&output);
    assert_eq!(batches.len(), 1, "only the void: {batches:?}");
    assert!(
        batches
            .values()
            .all(|files| files == &[VOID_FILE.to_owned()]),
        "the late rename published nothing over the void: {batches:?}"
    );
    old.shutdown().await.ok();
    drop(old);

    // The sender re-sends to the node serving now; every image lands once.
    let again = Node::open(config(dir.path(), "new")).await.unwrap();
    assert_eq!(again.epoch(), 3);
    for seq in 0..3 {
        again
            .ingest("cam", Some(seq), Bytes::from(format!("img{seq}")))
            .await
            .unwrap();
    }
    assert!(again.seal_and_commit().await.unwrap(), "a batch committed");
    again.shutdown().await.unwrap();
    let images: Vec<String> = published(&output)
        .into_values()
        .flatten()
        .filter(|f| f != VOID_FILE)
        .collect();
    assert_eq!(
        images,
        vec!["cam-0.bin", "cam-1.bin", "cam-2.bin"],
        "every image once"
    );
}
