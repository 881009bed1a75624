//! A primary that is replaced while it is between the fence check and the write of a carried-block
//! checkpoint (passive-standby) — alive, cut off from its standby — must not send *checkpointed*
//! acks for that checkpoint: its successor read the checkpoints before the write landed and never
//! loads those blocks, so a sender that released them on the ack would lose them.
//!
//! The hold is the failpoint `node::checkpoint::before_write` with a callback that runs the whole
//! takeover of a second node while the first waits there. This file is its own test process, so the
//! failpoint touches no other test.
#![cfg(feature = "failpoints")]

use std::path::Path;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use hdfs_ingest::config::{Carry, Config};
use hdfs_ingest::node::{Node, NodeError};
use hdfs_ingest::protocol::{AckLevel, ServerFrame};
use hdfs_ingest::receiver::Intake;
use strategies::Strategy;

fn config(root: &Path, name: &str) -> Config {
    let mut cfg = it::node_config(root, name, Strategy::PassiveStandby);
    cfg.strategy.carry = Carry::All;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_replaced_between_its_fence_check_and_its_checkpoint_sends_no_checkpointed_ack() {
    let dir = tempfile::tempdir().unwrap();
    let old = Node::open(config(dir.path(), "old")).await.unwrap();
    let (tx, mut acks) = tokio::sync::mpsc::unbounded_channel();
    old.register_conn("cam", tx);
    for seq in 0..3 {
        old.ingest("cam", Some(seq), Bytes::from(format!("img{seq}")))
            .await
            .unwrap();
    }

    let took_over: Arc<Mutex<Option<u64>>> = Arc::default();
    let slot = took_over.clone();
    let new_cfg = config(dir.path(), "new");
    fail::cfg_callback("node::checkpoint::before_write", move || {
        if slot.lock().unwrap().is_some() {
            return;
        }
        let cfg = new_cfg.clone();
        let epoch = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                let new = Node::open(cfg).await.expect("the standby takes over");
                let epoch = new.epoch();
                new.shutdown().await.unwrap();
                epoch
            })
        })
        .join()
        .unwrap();
        *slot.lock().unwrap() = Some(epoch);
    })
    .unwrap();
    let outcome = old.checkpoint_blocks().await;
    fail::remove("node::checkpoint::before_write");

    assert_eq!(
        *took_over.lock().unwrap(),
        Some(2),
        "the standby took over while the primary was held"
    );
    assert!(
        matches!(outcome, Err(NodeError::Fenced(_))),
        "the held primary learns it was replaced: {outcome:?}"
    );
    while let Ok(frame) = acks.try_recv() {
        assert!(
            !matches!(
                frame,
                ServerFrame::Ack {
                    level: AckLevel::Checkpointed,
                    ..
                }
            ),
            "a checkpointed ack for a checkpoint the new primary never loaded: {frame:?}"
        );
    }
}
