//! The batch log and fencing, in process: two nodes over one shared store and output.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::*;
use crate::config::{Config, SourceConfig, StoreConfig};
use crate::protocol::ServerFrame;
use crate::sink::{self, BatchBlock, PublishOutcome};
use strategies::claims::{self, BatchClaim, ClaimKind, ClaimOutcome};
use strategies::SeqSet;

/// A node named `name` under `root`: one framed listener on a free port, output, and a local
/// checkpoint store shared by every node under `root`; no analysis.
pub(crate) fn config(root: &Path, name: &str, strategy: Strategy) -> Config {
    let mut cfg = Config::default();
    cfg.node.name = name.into();
    cfg.node.data_dir = root.join(name);
    cfg.receiver.sources = vec![SourceConfig::FramedListen {
        address: "127.0.0.1:0".into(),
        token: None,
    }];
    cfg.output.url = Some(root.join("output").display().to_string());
    // The node's logic is tested here; batch names in these tests are `images-<ms>`.
    cfg.output.path = crate::layout::PathTemplate::FLAT.into();
    cfg.checkpoint.store = StoreConfig::Local {
        path: root.join("store"),
    };
    cfg.strategy.kind = strategy;
    cfg.analysis.enabled = false;
    cfg
}

fn batch_dirs(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("output"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('_'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn files_named(root: &Path, file: &str) -> usize {
    batch_dirs(root)
        .iter()
        .filter(|d| root.join("output").join(d).join(file).exists())
        .count()
}

async fn claim_as_old_node(store: &dyn CheckpointStore, n: u64, batch_ms: u64, seqs: &[u64]) {
    strategies::epoch::claim_next(store, "old").await.unwrap();
    let mut set = SeqSet::new();
    for q in seqs {
        set.insert(*q);
    }
    let claim = BatchClaim {
        epoch: 1,
        node: "old".into(),
        claimed_unix_ms: 0,
        kind: ClaimKind::Batch {
            batch_ms,
            members: [("cam".to_string(), set)].into(),
            dir: None,
        },
    };
    assert_eq!(
        claims::claim(store, n, &claim).await.unwrap(),
        ClaimOutcome::Won
    );
}

#[tokio::test]
async fn a_batch_claimed_by_a_replaced_node_and_never_published_is_voided_and_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "new", Strategy::UpstreamBackup);
    let store = open_store(&cfg).await.unwrap();
    claim_as_old_node(&*store, 1, 5_000, &[0, 1]).await;

    let node = Node::open(cfg).await.unwrap();
    assert_eq!(node.epoch(), 2);
    assert_eq!(batch_dirs(dir.path()), vec!["images-5000".to_string()]);
    assert_eq!(
        files_named(dir.path(), sink::VOID_FILE),
        1,
        "the claim is voided"
    );
    // Its members are not committed: the re-sent blocks are stored and published anew.
    let i = node
        .ingest("cam", Some(0), Bytes::from_static(b"img0"))
        .await
        .unwrap();
    assert!(!i.duplicate && !i.committed);
    assert!(node.seal_and_commit().await.unwrap());
    let dirs = batch_dirs(dir.path());
    assert_eq!(dirs.len(), 2, "{dirs:?}");
    let ms = |d: &str| d.trim_start_matches("images-").parse::<u64>().unwrap();
    assert!(
        dirs.iter().any(|d| ms(d) > 5_000 && d != "images-5000"),
        "new batches come after every claimed batch time: {dirs:?}"
    );
    let new_dir = dirs.iter().find(|d| *d != "images-5000").unwrap().clone();
    assert!(dir
        .path()
        .join("output")
        .join(&new_dir)
        .join("cam-0.bin")
        .exists());
}

#[tokio::test]
async fn a_batch_its_claimant_published_counts_as_committed_and_is_never_stored_again() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "new", Strategy::ActiveStandby);
    let store = open_store(&cfg).await.unwrap();
    claim_as_old_node(&*store, 1, 5_000, &[0, 1]).await;
    let output = open_output(&cfg).await.unwrap();
    let blocks = futures::stream::iter((0..2u64).map(|q| {
        Ok::<_, std::io::Error>(BatchBlock {
            source: "cam".into(),
            seq: q,
            bytes: Bytes::from(format!("img{q}")),
        })
    }));
    sink::write_batch(&*output, "images", 5_000, false, blocks)
        .await
        .unwrap();

    let node = Node::open(cfg).await.unwrap();
    assert_eq!(files_named(dir.path(), sink::VOID_FILE), 0);
    let i = node
        .ingest("cam", Some(1), Bytes::from_static(b"img1"))
        .await
        .unwrap();
    assert!(
        i.duplicate && i.committed,
        "a re-send of a published member is acknowledged as committed, not stored"
    );
    node.seal_and_commit().await.unwrap();
    assert_eq!(batch_dirs(dir.path()), vec!["images-5000".to_string()]);
}

#[tokio::test]
async fn a_node_replaced_by_a_newer_epoch_publishes_nothing_more_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let old = Node::open(config(dir.path(), "a", Strategy::UpstreamBackup))
        .await
        .unwrap();
    old.ingest("cam", Some(0), Bytes::from_static(b"img0"))
        .await
        .unwrap();
    assert!(old.seal_and_commit().await.unwrap());
    old.ingest("cam", Some(1), Bytes::from_static(b"img1"))
        .await
        .unwrap();

    let new = Node::open(config(dir.path(), "b", Strategy::UpstreamBackup))
        .await
        .unwrap();
    assert!(new.epoch() > old.epoch());
    let before = batch_dirs(dir.path());
    let err = old.seal_and_commit().await.unwrap_err();
    assert!(matches!(err, NodeError::Fenced(_)), "{err}");
    assert!(err.to_string().contains("fenced"), "{err}");
    assert_eq!(
        batch_dirs(dir.path()),
        before,
        "the fenced node wrote nothing"
    );
    assert!(old.stop_reason().is_some_and(|r| r.contains("fenced")));
    // The new node stores the re-sent block and commits it once.
    new.ingest("cam", Some(1), Bytes::from_static(b"img1"))
        .await
        .unwrap();
    assert!(new.seal_and_commit().await.unwrap());
    assert_eq!(batch_dirs(dir.path()).len(), 2);
}

#[tokio::test]
async fn a_fenced_node_that_already_claimed_finds_its_name_voided_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let old = Node::open(config(dir.path(), "a", Strategy::ActiveStandby))
        .await
        .unwrap();
    old.ingest("cam", Some(0), Bytes::from_static(b"img0"))
        .await
        .unwrap();
    // The old node claims its batch (as if it passed its fence check just before the takeover)...
    let n = old.state().next_batch_n;
    let dir9 = old.config().layout().batch_dir(9_000);
    old.claim_batch(n, 9_000, &dir9, &[("cam".into(), 0)])
        .await
        .unwrap();
    // ...then the new node takes over and voids that claim.
    let new = Node::open(config(dir.path(), "b", Strategy::ActiveStandby))
        .await
        .unwrap();
    assert_eq!(files_named(dir.path(), sink::VOID_FILE), 1);
    // The old node's publish lands on the void: it writes nothing and stops.
    let output = open_output(old.config()).await.unwrap();
    let blocks = futures::stream::iter([Ok::<_, std::io::Error>(BatchBlock {
        source: "cam".into(),
        seq: 0,
        bytes: Bytes::from_static(b"img0"),
    })]);
    let s = sink::write_batch(&*output, "images", 9_000, false, blocks)
        .await
        .unwrap();
    assert_eq!(s.outcome, Some(PublishOutcome::AlreadyPublished));
    assert!(output.is_void("images-9000").await.unwrap());
    assert!(!dir.path().join("output/images-9000/cam-0.bin").exists());
    drop(new);
}

#[test]
fn batch_times_are_interval_boundaries_and_always_increase() {
    let iv = Duration::from_secs(2);
    assert_eq!(next_batch_ms(10_500, iv, 0), 10_000);
    assert_eq!(next_batch_ms(10_500, iv, 10_000), 10_001);
    assert_eq!(next_batch_ms(12_000, iv, 10_001), 12_000);
}

async fn passive_node(root: &Path, carry: crate::config::Carry) -> Node {
    let mut cfg = config(root, "primary", Strategy::PassiveStandby);
    cfg.strategy.carry = carry;
    Node::open(cfg).await.unwrap()
}

async fn ingest_seqs(node: &Node, seqs: std::ops::Range<u64>) {
    for q in seqs {
        let i = node
            .ingest("cam", Some(q), Bytes::from(format!("img{q}")))
            .await
            .unwrap();
        assert!(!i.duplicate);
    }
}

#[tokio::test]
async fn a_lagging_checkpoint_carries_only_blocks_that_were_already_durable_at_the_previous_one() {
    let dir = tempfile::tempdir().unwrap();
    let node = passive_node(dir.path(), crate::config::Carry::Lagging).await;
    ingest_seqs(&node, 0..2).await;
    assert_eq!(
        node.checkpoint_blocks().await.unwrap(),
        0,
        "the first checkpoint has no previous one: nothing has waited a whole interval"
    );
    ingest_seqs(&node, 2..3).await;
    assert_eq!(
        node.checkpoint_blocks().await.unwrap(),
        2,
        "seqs 0 and 1 waited an interval; seq 2 did not"
    );
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 1, "now seq 2");
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 0);
}

#[tokio::test]
async fn a_lagging_checkpoint_carries_nothing_the_output_took_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let node = passive_node(dir.path(), crate::config::Carry::Lagging).await;
    ingest_seqs(&node, 0..3).await;
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 0);
    assert!(node.seal_and_commit().await.unwrap());
    assert_eq!(
        node.checkpoint_blocks().await.unwrap(),
        0,
        "the batch committed every block that waited"
    );
    ingest_seqs(&node, 3..5).await;
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 0);
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 2);
}

#[tokio::test]
async fn an_all_checkpoint_carries_every_uncommitted_block_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = passive_node(dir.path(), crate::config::Carry::All).await;
    ingest_seqs(&node, 0..3).await;
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 3);
    assert_eq!(node.checkpoint_blocks().await.unwrap(), 0);
    ingest_seqs(&node, 3..4).await;
    assert!(node.seal_and_commit().await.unwrap());
    assert_eq!(
        node.checkpoint_blocks().await.unwrap(),
        0,
        "committed blocks are never carried"
    );
}

#[tokio::test]
async fn the_nodes_role_watch_is_announced_as_primary_or_standby_with_its_epoch() {
    use crate::protocol::VERSION_2;
    use crate::receiver::{framed::announce_roles, Intake};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open_standby(config(dir.path(), "b", Strategy::ActiveStandby))
        .await
        .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let _announcer = announce_roles(VERSION_2, node.roles(), &tx).unwrap();
    assert_eq!(
        rx.try_recv().ok(),
        Some(ServerFrame::Role {
            role: Role::Standby,
            epoch: 0
        })
    );
    node.become_primary().await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    assert_eq!(
        next.unwrap(),
        Some(ServerFrame::Role {
            role: Role::Primary,
            epoch: node.epoch()
        })
    );
    assert!(node.epoch() > 0, "becoming primary claims an epoch");
}

/// Files under `dir`, at any depth.
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    files_under(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

/// The old primary, alive but replaced (a false takeover), is held between staging a claimed batch
/// and publishing it while the new primary takes over: the takeover must neither delete nor wait for
/// the old node's staging, and the old node's late publish must find the name voided.
#[tokio::test]
async fn a_takeover_leaves_a_live_replaced_nodes_staging_alone_and_its_late_publish_lands_nowhere()
{
    let dir = tempfile::tempdir().unwrap();
    let old_cfg = config(dir.path(), "old", Strategy::UpstreamBackup);
    let store = open_store(&old_cfg).await.unwrap();
    claim_as_old_node(&*store, 1, 5_000, &[0]).await;
    let old_output = open_output(&old_cfg).await.unwrap();
    let mut held = old_output.stage("images-5000", 1).await.unwrap();
    held.put("cam-0.bin", Bytes::from_static(b"img0"))
        .await
        .unwrap();
    let staging = dir.path().join("output").join(sink::STAGING_DIR);
    assert_eq!(files_under(&staging), 1);

    let new = Node::open(config(dir.path(), "new", Strategy::UpstreamBackup))
        .await
        .expect("the takeover goes through with the old node's staging in place");
    assert_eq!(new.epoch(), 2);
    assert_eq!(
        files_under(&staging),
        1,
        "the takeover left the old node's staging alone"
    );
    assert_eq!(
        held.publish().await.unwrap(),
        PublishOutcome::AlreadyPublished,
        "the old node's publish finds the name taken by the void"
    );
    assert_eq!(files_named(dir.path(), sink::VOID_FILE), 1);
    assert_eq!(files_named(dir.path(), "cam-0.bin"), 0);
    assert_eq!(
        files_under(&staging),
        0,
        "the old node discarded its staging"
    );
}

#[tokio::test]
async fn a_pipeline_that_finds_its_batch_directory_published_by_another_pipeline_refuses_to_count_it(
) {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("output");
    let mut nodes = Vec::new();
    for name in ["east", "west"] {
        let root = dir.path().join(name);
        let mut cfg = config(&root, name, Strategy::None);
        // Both write the same paths into one root: the mistake the check exists for.
        cfg.output.url = Some(shared.display().to_string());
        cfg.batch.interval = std::time::Duration::from_secs(3600);
        nodes.push(Node::open(cfg).await.unwrap());
    }
    for (i, node) in nodes.iter().enumerate() {
        node.ingest("cam", Some(i as u64), Bytes::from(vec![i as u8; 10]))
            .await
            .unwrap();
    }
    assert!(nodes[0].seal_and_commit().await.unwrap());
    let err = match nodes[1].seal_and_commit().await {
        Err(e) => e.to_string(),
        Ok(_) => {
            // Only if the two batches fell on either side of an hour boundary: nothing collided.
            assert_eq!(batch_dirs(&dir.path().join("east")).len(), 0);
            let published = crate::layout::read::local_batch_dirs(&shared).unwrap();
            assert_eq!(
                published.len(),
                2,
                "a collision must not pass: {published:?}"
            );
            return;
        }
    };
    assert!(
        err.contains("pipeline west") && err.contains("{pipeline}") && err.contains("batch.prefix"),
        "{err}"
    );
    // West's block is not counted as committed: it is still pending for the retry.
    assert!(!nodes[1].state().is_committed("cam", 1));
}
