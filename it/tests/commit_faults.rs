//! Faults in the middle of a batch commit, held at named points of a node in this process: a
//! checkpoint store that refuses the write after the batch is published, an output whose file system
//! stops answering (a loop-mounted ext4 frozen with `fsfreeze`, so its writes block in the kernel),
//! and a panic in the batcher. Each must end with every acknowledged block committed once, or a node
//! that stops and says why — never a node that goes on without committing.
//!
//! The failpoints are process-wide, so this file is its own test process and its tests take turns.
#![cfg(feature = "failpoints")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdfs_ingest::config::StoreConfig;
use hdfs_ingest::node::{start_node, Node, NodeError};
use hdfs_ingest::protocol::{AckLevel, ServerFrame};
use hdfs_ingest::receiver::Intake;
use strategies::Strategy;
use tokio::sync::mpsc::UnboundedReceiver;

/// The failpoints are global: one test at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The seqs acknowledged as committed so far.
fn committed_acks(acks: &mut UnboundedReceiver<ServerFrame>) -> Vec<u64> {
    let mut seqs = Vec::new();
    while let Ok(frame) = acks.try_recv() {
        if let ServerFrame::Ack {
            level: AckLevel::Committed,
            seq,
        } = frame
        {
            seqs.push(seq);
        }
    }
    seqs.sort();
    seqs
}

/// A node of `cfg` in this process with a connection of source `cam` registered for its acks, and
/// blocks `0..n` (`img<seq>`) made durable.
async fn node_with_blocks(
    cfg: hdfs_ingest::config::Config,
    n: u64,
) -> (Node, UnboundedReceiver<ServerFrame>) {
    let node = Node::open(cfg).await.unwrap();
    let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
    node.register_conn("cam", tx);
    for seq in 0..n {
        node.ingest("cam", Some(seq), Bytes::from(format!("img{seq}")))
            .await
            .unwrap();
    }
    (node, acks)
}

/// Commits until exactly `want` are acknowledged as committed (a retry may need a round or two), or
/// fails the test after 20 s.
async fn commit_until_acknowledged(
    node: &Node,
    acks: &mut UnboundedReceiver<ServerFrame>,
    want: &[u64],
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while seen != want {
        assert!(
            Instant::now() < deadline,
            "only {seen:?} of {want:?} acknowledged as committed"
        );
        if let Err(e) = node.seal_and_commit().await {
            eprintln!("commit failed, retrying: {e}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        seen.extend(committed_acks(acks));
        seen.sort();
    }
}

/// The image files in published batch directories of `output` (staging left out).
fn published_images(output: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for (_, dir) in it::batch_paths(output) {
        for f in std::fs::read_dir(dir).unwrap().flatten() {
            out.push(f.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_write_that_fails_after_the_publish_still_sends_the_committed_acks_at_the_retry(
) {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = it::node_config(dir.path(), "p", Strategy::None);
    let StoreConfig::Local { path: store } = cfg.checkpoint.store.clone() else {
        unreachable!("node_config uses a local store")
    };
    let output = cfg.output_dir();
    let (node, mut acks) = node_with_blocks(cfg, 3).await;

    // Once the batch is published (and the fence checked), the store's checkpoint directory is
    // replaced by a file: the checkpoint write that follows fails for real.
    let checkpoints = store.join(strategies::paths::CHECKPOINTS);
    let aside = dir.path().join("checkpoints.aside");
    let broken = Arc::new(AtomicBool::new(false));
    {
        let (checkpoints, aside, broken) = (checkpoints.clone(), aside.clone(), broken.clone());
        fail::cfg_callback("node::commit::before_checkpoint", move || {
            if !broken.swap(true, Ordering::SeqCst) {
                std::fs::create_dir_all(&checkpoints).unwrap();
                std::fs::rename(&checkpoints, &aside).unwrap();
                std::fs::write(&checkpoints, b"not a directory").unwrap();
            }
        })
        .unwrap();
    }
    let first = node.seal_and_commit().await;
    fail::remove("node::commit::before_checkpoint");
    assert!(broken.load(Ordering::SeqCst), "the failpoint was not hit");
    let err = first.expect_err("the checkpoint write should have failed");
    assert!(
        committed_acks(&mut acks).is_empty(),
        "nothing is acknowledged as committed before a checkpoint says so ({err})"
    );

    assert!(
        err.to_string().contains("checkpoints"),
        "the checkpoint write is what failed: {err}"
    );
    std::fs::remove_file(&checkpoints).unwrap();
    std::fs::rename(&aside, &checkpoints).unwrap();
    node.seal_and_commit().await.unwrap();
    assert_eq!(
        committed_acks(&mut acks),
        vec![0, 1, 2],
        "the retry of the batch must acknowledge its members as committed"
    );
    assert_eq!(
        published_images(&output),
        vec!["cam-0.bin", "cam-1.bin", "cam-2.bin"],
        "each image published once"
    );
}

/// The race a primary that is alive but cut off runs into: it passes its fence check, is held at the
/// checkpoint write while another node takes over (and counts the batch, published already, as
/// committed), then writes its checkpoint. That late checkpoint is inert (an older epoch is never the
/// newest), but the old node must not acknowledge anything on it: it re-checks its fence after the
/// write and stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_replaced_while_it_writes_its_checkpoint_acknowledges_nothing_and_stops_fenced() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = it::node_config(&root, "old", Strategy::UpstreamBackup);
    let output = cfg.output_dir();
    let (old, mut acks) = node_with_blocks(cfg, 3).await;

    // Held after its fence check, the old node waits while the new node opens: a takeover in a
    // thread of its own (the failpoint's callback is synchronous).
    let new_node: Arc<std::sync::Mutex<Option<(Node, tokio::runtime::Runtime)>>> = Arc::default();
    {
        let (root, new_node) = (root.clone(), new_node.clone());
        fail::cfg_callback("node::commit::before_checkpoint", move || {
            let root = root.clone();
            let opened = std::thread::spawn(move || {
                let rt = tokio::runtime::Runtime::new().unwrap();
                let node = rt
                    .block_on(Node::open(it::node_config(
                        &root,
                        "new",
                        Strategy::UpstreamBackup,
                    )))
                    .expect("the takeover goes through while the old node is held");
                (node, rt)
            })
            .join()
            .unwrap();
            *new_node.lock().unwrap() = Some(opened);
        })
        .unwrap();
    }
    let outcome = old.seal_and_commit().await;
    fail::remove("node::commit::before_checkpoint");
    let (new, rt) = new_node
        .lock()
        .unwrap()
        .take()
        .expect("the failpoint was not hit");
    assert!(new.epoch() > old.epoch());

    let err = outcome.expect_err("the replaced node's commit must not succeed");
    assert!(matches!(err, NodeError::Fenced(_)), "{err}");
    assert_eq!(
        committed_acks(&mut acks),
        Vec::<u64>::new(),
        "nothing is acknowledged on a checkpoint written after a newer epoch was claimed"
    );
    assert!(old.stop_reason().is_some_and(|r| r.contains("fenced")));
    // The new node counted the published batch as committed; each image is in the output once.
    let resent = std::thread::scope(|s| {
        s.spawn(|| {
            rt.block_on(async {
                let mut out = Vec::new();
                for seq in 0..3 {
                    out.push(
                        new.ingest("cam", Some(seq), Bytes::from(format!("img{seq}")))
                            .await,
                    );
                }
                out
            })
        })
        .join()
        .unwrap()
    });
    for (seq, r) in resent.into_iter().enumerate() {
        let r = r.unwrap();
        assert!(
            r.duplicate && r.committed,
            "seq {seq}: the new node counts the claimant's published batch as committed"
        );
    }
    assert_eq!(
        published_images(&output),
        vec!["cam-0.bin", "cam-1.bin", "cam-2.bin"]
    );
    drop(new);
    drop(old);
    rt.shutdown_background();
}

/// An ext4 image on a loop device, mounted for one test, that the test can freeze (`fsfreeze -f`:
/// every write into it blocks in the kernel until thawed). Thawed and unmounted when dropped.
struct Freezable {
    dir: PathBuf,
    image: PathBuf,
}

impl Freezable {
    /// None, with the reason printed, where the test cannot mount (not root, no loop devices).
    fn mount(root: &Path) -> Option<Freezable> {
        let require = std::env::var_os("CI").is_some();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert!(!require, "CI runs this test as root");
            eprintln!("SKIPPED: mounting a loop file system needs root (CI runs this as root)");
            return None;
        }
        let image = root.join("output.ext4");
        let dir = root.join("output");
        std::fs::create_dir_all(&dir).unwrap();
        let run = |cmd: &mut Command| {
            let out = cmd.output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        for (ok, err) in [
            run(Command::new("truncate").arg("-s").arg("64M").arg(&image)),
            run(Command::new("mkfs.ext4").arg("-q").arg(&image)),
            run(Command::new("mount")
                .arg("-o")
                .arg("loop")
                .arg(&image)
                .arg(&dir)),
        ] {
            if !ok {
                assert!(!require, "cannot make a loop-mounted ext4: {err}");
                eprintln!("SKIPPED: cannot make a loop-mounted ext4: {err}");
                return None;
            }
        }
        Some(Freezable { dir, image })
    }

    fn freeze(&self, frozen: bool) {
        let flag = if frozen { "-f" } else { "-u" };
        let st = Command::new("fsfreeze")
            .arg(flag)
            .arg(&self.dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "fsfreeze {flag} {} failed",
            self.dir.display()
        );
    }
}

impl Drop for Freezable {
    fn drop(&mut self) {
        let _ = Command::new("fsfreeze").arg("-u").arg(&self.dir).status();
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_into_an_output_that_stops_answering_is_abandoned_at_the_commit_timeout_and_retried(
) {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Freezable::mount(dir.path()) else {
        return;
    };
    let mut cfg = it::node_config(dir.path(), "p", Strategy::None);
    cfg.batch.commit_timeout = Duration::from_secs(1);
    // The 64 MiB output is under the default reserve, which would hold every block back.
    cfg.wal.min_free = hdfs_ingest::size::ByteSize(1 << 20);
    let output = cfg.output_dir();
    assert_eq!(output, fs.dir);
    let (node, mut acks) = node_with_blocks(cfg, 3).await;

    fs.freeze(true);
    let started = Instant::now();
    let attempt = tokio::time::timeout(Duration::from_secs(20), node.seal_and_commit()).await;
    let took = started.elapsed();
    let Ok(result) = attempt else {
        fs.freeze(false);
        panic!("a commit into a frozen output was still running after {took:?}: batch.commit_timeout (1 s) is not applied");
    };
    let err = result.expect_err("a commit into a frozen output cannot succeed");
    assert!(
        matches!(err, NodeError::CommitTimeout { .. }),
        "expected a commit timeout, got: {err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("batch.commit_timeout") && text.contains(&output.display().to_string()),
        "the error names the setting and the output: {text}"
    );
    assert!(took < Duration::from_secs(5), "abandoned after {took:?}");
    // Ingest goes on into the WAL meanwhile.
    node.ingest("cam", Some(3), Bytes::from_static(b"img3"))
        .await
        .unwrap();
    assert!(committed_acks(&mut acks).is_empty());

    fs.freeze(false);
    // The retried batch, then the block ingested meanwhile: a round or two.
    commit_until_acknowledged(&node, &mut acks, &[0, 1, 2, 3]).await;
    assert_eq!(
        published_images(&output),
        vec!["cam-0.bin", "cam-1.bin", "cam-2.bin", "cam-3.bin"],
        "each image published once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_takes_longer_than_the_commit_timeout_but_keeps_moving_is_not_cut_short() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = it::node_config(dir.path(), "p", Strategy::None);
    cfg.batch.commit_timeout = Duration::from_secs(1);
    let output = cfg.output_dir();
    let (node, mut acks) = node_with_blocks(cfg, 40).await;
    // Every image file takes 100 ms to write: about 4 s for the batch, every step well inside 1 s.
    fail::cfg("sink::put::fault", "sleep(100)").unwrap();
    let started = Instant::now();
    let result = node.seal_and_commit().await;
    fail::remove("sink::put::fault");
    let took = started.elapsed();
    result.unwrap_or_else(|e| panic!("a moving commit was abandoned after {took:?}: {e}"));
    assert!(
        took > Duration::from_secs(2),
        "the commit was meant to outlast the 1 s timeout, took {took:?}"
    );
    assert_eq!(committed_acks(&mut acks), (0..40).collect::<Vec<_>>());
    assert_eq!(published_images(&output).len(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_leaves_the_staging_of_an_abandoned_attempt_alone_while_its_rename_is_still_running(
) {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = it::node_config(dir.path(), "p", Strategy::None);
    cfg.batch.commit_timeout = Duration::from_secs(1);
    let output = cfg.output_dir();
    let staging = output.join(hdfs_ingest::sink::STAGING_DIR);
    let (node, mut acks) = node_with_blocks(cfg, 3).await;
    // The first publish is held before its rename (files synced) until the test's retry is done,
    // and then counts what is left of its staging: the rename that follows publishes exactly that.
    let retried = Arc::new(AtomicBool::new(false));
    let left = Arc::new(std::sync::Mutex::new(None::<usize>));
    {
        let (retried, left, staging) = (retried.clone(), left.clone(), staging.clone());
        let entered = AtomicBool::new(false);
        fail::cfg_callback("sink::publish::fault", move || {
            if entered.swap(true, Ordering::SeqCst) {
                return;
            }
            let until = Instant::now() + Duration::from_secs(15);
            while !retried.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            *left.lock().unwrap() = Some(it::files_under(&staging));
        })
        .unwrap();
    }
    let first = node.seal_and_commit().await;
    assert!(
        matches!(first, Err(NodeError::CommitTimeout { .. })),
        "the held publish is abandoned: {first:?}"
    );
    let retry = node.seal_and_commit().await;
    retried.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(15);
    while left.lock().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the held publish never resumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fail::remove("sink::publish::fault");
    assert_eq!(
        *left.lock().unwrap(),
        Some(3),
        "the retry ({retry:?}) deleted the staged files of a publish that was about to rename them"
    );
    commit_until_acknowledged(&node, &mut acks, &[0, 1, 2]).await;
    assert_eq!(
        published_images(&output),
        vec!["cam-0.bin", "cam-1.bin", "cam-2.bin"],
        "each image published once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_batcher_stops_the_node_with_a_fatal_error_that_names_it() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = it::node_config(dir.path(), "p", Strategy::None);
    cfg.batch.interval = Duration::from_millis(100);
    let running = start_node(Node::open(cfg).await.unwrap()).await.unwrap();
    fail::cfg("node::commit::before", "1*panic(injected batcher fault)").unwrap();
    running
        .node
        .ingest("cam", Some(0), Bytes::from_static(b"img0"))
        .await
        .unwrap();
    let stopped = tokio::time::timeout(Duration::from_secs(10), running.node.stopped()).await;
    fail::remove("node::commit::before");
    assert!(
        stopped.is_ok(),
        "the batcher panicked and the node kept running without committing"
    );
    let reason = running.node.stop_reason().unwrap_or_default();
    assert!(
        reason.starts_with("fatal")
            && reason.contains("batcher panicked")
            && reason.contains("injected batcher fault"),
        "{reason}"
    );
    let err = running
        .stop()
        .await
        .expect_err("a node whose batcher panicked fails");
    assert!(err.to_string().contains("batcher panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_commit_a_stop_waits_for_fails_the_stop_instead_of_finishing_it_cleanly() {
    let _turn = TURN.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = it::node_config(dir.path(), "p", Strategy::None);
    cfg.batch.interval = Duration::from_millis(100);
    let running = start_node(Node::open(cfg).await.unwrap()).await.unwrap();
    // The batcher's commit waits at its start until the stop is requested, then panics.
    let entered = Arc::new(AtomicBool::new(false));
    {
        let (node, entered) = (running.node.clone(), entered.clone());
        fail::cfg_callback("node::commit::before", move || {
            if entered.swap(true, Ordering::SeqCst) {
                return;
            }
            let until = Instant::now() + Duration::from_secs(10);
            while node.stop_reason().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("injected fault while stopping");
        })
        .unwrap();
    }
    running
        .node
        .ingest("cam", Some(0), Bytes::from_static(b"img0"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !entered.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the batcher never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped = running.stop().await;
    fail::remove("node::commit::before");
    let err = stopped.expect_err("a stop whose commit panicked must fail");
    assert!(
        err.to_string().contains("injected fault while stopping"),
        "{err}"
    );
}
