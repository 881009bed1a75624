//! Per-source state in process: sources idle past their retention are forgotten at the next
//! checkpoint, old checkpoints load, and a node at the state's maximum still stops quickly.

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::tests::config;
use super::*;

const DAY_MS: u64 = 24 * 3600 * 1000;

/// Writes checkpoint 1 of epoch 1 (claimed by node `old`) in the format nodes wrote before sources
/// were timed: no `last_seen_ms`, no `raw_sources`.
async fn write_old_format_checkpoint(
    store: &dyn CheckpointStore,
    created_unix_ms: u64,
    sources: &str,
) {
    strategies::epoch::claim_next(store, "old").await.unwrap();
    let json = format!(
        r#"{{"format":2,"epoch":1,"id":1,"node":"old","created_unix_ms":{created_unix_ms},
            "last_committed_batch_ms":null,"last_committed_seal_lsn":0,"wal_low_water":1,
            "sources":{sources},"last_batch_n":0,"carried":[]}}"#
    );
    assert!(store
        .create_if_absent(&strategies::paths::checkpoint(1, 1), Bytes::from(json))
        .await
        .unwrap());
}

fn output_has(root: &std::path::Path, file: &str) -> bool {
    std::fs::read_dir(root.join("output"))
        .unwrap()
        .flatten()
        .any(|d| d.path().join(file).exists())
}

#[tokio::test]
async fn a_source_idle_past_its_retention_is_dropped_from_the_next_checkpoint_and_its_resends_are_stored_again(
) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "new", Strategy::None);
    let store = open_store(&cfg).await.unwrap();
    // An old-format checkpoint taken four days ago (the default retention is three days).
    write_old_format_checkpoint(
        &*store,
        now_ms() - 4 * DAY_MS,
        r#"{"idle-cam":{"below":5,"above":[]}}"#,
    )
    .await;
    let node = Node::open(cfg).await.unwrap();
    assert!(
        node.state().is_committed("idle-cam", 4),
        "the old-format checkpoint loads"
    );
    node.ingest("fresh", Some(0), Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert!(node.seal_and_commit().await.unwrap());
    let snap = node.inner.checkpointer.latest().await.unwrap().unwrap();
    assert!(snap.sources.contains_key("fresh"), "{:?}", snap.sources);
    assert!(
        !snap.sources.contains_key("idle-cam"),
        "a source idle for four days is dropped: {:?}",
        snap.sources.keys().collect::<Vec<_>>()
    );
    // What PROTOCOL.md promises such a sender: a re-send is stored again.
    let again = node
        .ingest("idle-cam", Some(4), Bytes::from_static(b"late"))
        .await
        .unwrap();
    assert!(!again.duplicate);
    assert!(node.seal_and_commit().await.unwrap());
    assert!(output_has(dir.path(), "idle-cam-4.bin"));
}

#[tokio::test]
async fn a_source_within_its_retention_keeps_its_last_seen_time_across_checkpoints_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "new", Strategy::None);
    let store = open_store(&cfg).await.unwrap();
    let a_day_ago = now_ms() - DAY_MS;
    write_old_format_checkpoint(
        &*store,
        a_day_ago,
        r#"{"quiet-cam":{"below":5,"above":[]}}"#,
    )
    .await;
    drop(store);
    let node = Node::open(cfg.clone()).await.unwrap();
    node.ingest("fresh", Some(0), Bytes::from_static(b"new"))
        .await
        .unwrap();
    assert!(node.seal_and_commit().await.unwrap());
    let snap = node.inner.checkpointer.latest().await.unwrap().unwrap();
    // Rewritten, it is still a day old: a checkpoint does not make a source young again.
    assert_eq!(snap.last_seen_ms.get("quiet-cam"), Some(&a_day_ago));
    assert!(snap.last_seen_ms["fresh"] >= a_day_ago + DAY_MS - 60_000);
    node.shutdown().await.unwrap();
    drop(node);
    let node = Node::open(cfg).await.unwrap();
    assert_eq!(node.state().sources["quiet-cam"].last_seen_ms, a_day_ago);
}

#[tokio::test]
async fn a_configured_raw_source_is_never_forgotten_and_its_counter_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "new", Strategy::None);
    cfg.receiver
        .sources
        .push(crate::config::SourceConfig::RawListen {
            address: "127.0.0.1:0".into(),
            source: "cam".into(),
        });
    let store = open_store(&cfg).await.unwrap();
    write_old_format_checkpoint(
        &*store,
        now_ms() - 4 * DAY_MS,
        r#"{"cam":{"below":3,"above":[]}}"#,
    )
    .await;
    let node = Node::open(cfg).await.unwrap();
    node.ingest("fresh", Some(0), Bytes::from_static(b"x"))
        .await
        .unwrap();
    assert!(node.seal_and_commit().await.unwrap());
    let snap = node.inner.checkpointer.latest().await.unwrap().unwrap();
    assert!(snap.sources.contains_key("cam"));
    let i = node
        .ingest("cam", None, Bytes::from_static(b"raw"))
        .await
        .unwrap();
    assert_eq!(i.seq, 3, "raw images are numbered on after the old ones");
    assert!(node.seal_and_commit().await.unwrap());
    let snap = node.inner.checkpointer.latest().await.unwrap().unwrap();
    assert!(snap.raw_sources.contains("cam"), "{:?}", snap.raw_sources);
}

#[tokio::test]
async fn a_source_with_uncommitted_blocks_or_a_connection_is_kept_however_idle() {
    let mut st = State::default();
    st.mark_durable("waiting", 0, 7);
    st.mark_committed("connected", 0);
    st.mark_committed("idle", 0);
    st.conns.insert(
        "connected".into(),
        state::ConnHandle {
            id: 1,
            tx: tokio::sync::mpsc::unbounded_channel().0,
        },
    );
    let later = now_ms() + 10 * DAY_MS;
    let forgotten = st.forget_idle(later, Duration::from_secs(3600), |_| false);
    assert_eq!(forgotten, 1);
    let mut left: Vec<_> = st.sources.keys().cloned().collect();
    left.sort();
    assert_eq!(left, vec!["connected", "waiting"]);
}

#[test]
fn framed_blocks_are_admitted_only_within_the_window_and_the_gap_bounds() {
    let d = crate::config::DedupConfig {
        window: 100,
        max_gaps: 3,
        gap_budget: 4,
        max_sources: 3,
        ..Default::default()
    };
    let mut st = State::default();
    assert!(st.admit_block("a", 99, &d).is_ok());
    let far = st.admit_block("a", 100, &d).unwrap_err().to_string();
    assert!(
        far.contains("dedup.window") && far.contains("block 100"),
        "{far}"
    );
    for seq in [0, 1, 5, 6, 7] {
        st.admit_block("a", seq, &d).unwrap();
        st.mark_durable("a", seq, seq + 1);
    }
    assert_eq!(st.gaps, 3);
    // Seq 2 fills the prefix; anything else above it is a fourth gap.
    let gap = st.admit_block("a", 9, &d).unwrap_err().to_string();
    assert!(
        gap.contains("dedup.max_gaps") && gap.contains("seq 2"),
        "{gap}"
    );
    assert!(st.admit_block("a", 2, &d).is_ok());
    assert!(
        st.admit_block("a", 6, &d).is_ok(),
        "a re-send is always taken"
    );
    // With seq 2 in flight the gaps are closing: a sender pipelining on behind it is not refused.
    let (tx, _) = tokio::sync::watch::channel(None);
    st.entry("a").inflight.insert(2, tx);
    assert!(st.admit_block("a", 9, &d).is_ok());
    st.entry("a").inflight.clear();
    // The node-wide budget: one more gap anywhere, then none.
    st.admit_block("b", 1, &d).unwrap();
    st.mark_durable("b", 1, 9);
    let budget = st.admit_block("c", 1, &d).unwrap_err().to_string();
    assert!(budget.contains("dedup.gap_budget"), "{budget}");
    assert!(st.admit_block("c", 0, &d).is_ok(), "in order costs no gap");
    st.mark_durable("c", 0, 10);
    let full = st.admit_block("d", 0, &d).unwrap_err().to_string();
    assert!(full.contains("dedup.max_sources"), "{full}");
    // Filling a gap gives its room back.
    for (seq, lsn) in [(2, 11), (4, 12), (3, 13)] {
        st.mark_durable("a", seq, lsn);
    }
    assert_eq!(st.gaps, 1, "5, 6, 7 joined the prefix; b's 1 is left");
    assert_eq!(st.sources["a"].durable.first_missing(), 8);
}

#[test]
fn a_framed_client_may_not_use_a_raw_sources_name() {
    let mut cfg = Config::default();
    cfg.receiver
        .sources
        .push(crate::config::SourceConfig::RawListen {
            address: "127.0.0.1:0".into(),
            source: "cam".into(),
        });
    let mut st = State::default();
    let err = st.admit_source("cam", &cfg).unwrap_err();
    assert_eq!(err.code(), crate::protocol::ErrorCode::InvalidSource);
    assert!(st.admit_source("cam-2", &cfg).is_ok());
    // A raw source no longer configured keeps its name while the node remembers it.
    st.entry("old-raw").raw = true;
    assert!(st.admit_source("old-raw", &cfg).is_err());
}

/// The state at the default bounds' maximum: `max_sources` sources, `gap_budget` gaps among them.
fn fill_to_the_maximum(st: &mut State, d: &crate::config::DedupConfig) {
    let per = d.max_gaps as u64;
    let gapped = d.gap_budget as u64 / per;
    for s in 0..d.max_sources as u64 {
        let name = format!("source-{s:06}-with-a-longish-name");
        st.mark_committed(&name, 0);
        if s < gapped {
            for g in 0..per {
                st.mark_committed(&name, d.window - 1 - 2 * g);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_at_its_maximum_state_commits_and_stops_well_within_its_shutdown_grace() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "new", Strategy::None);
    let grace = cfg.node.shutdown_grace;
    let d = cfg.dedup.clone();
    let node = Node::open(cfg).await.unwrap();
    {
        let mut st = node.state();
        fill_to_the_maximum(&mut st, &d);
        let now = now_ms();
        for e in st.sources.values_mut() {
            e.last_seen_ms = now;
        }
        st.recount_gaps();
        assert_eq!(st.gaps, d.gap_budget);
    }
    node.ingest("last", Some(0), Bytes::from_static(b"x"))
        .await
        .unwrap();
    let started = Instant::now();
    node.request_stop("test");
    node.shutdown().await.unwrap();
    let took = started.elapsed();
    let key = node
        .inner
        .checkpointer
        .newest_key()
        .await
        .unwrap()
        .unwrap()
        .0;
    let bytes = node.inner.store.get(&key).await.unwrap().unwrap().len();
    println!(
        "{} sources, {} gaps: last commit and stop in {took:?}, checkpoint {bytes} bytes",
        d.max_sources, d.gap_budget
    );
    assert!(
        took < grace / 3,
        "stopping took {took:?}, against a shutdown grace of {grace:?}"
    );
}
