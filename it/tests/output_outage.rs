//! While the output cannot be written, ingest goes on into the WAL and the batch is retried under the same
//! name; once the output is back, everything acknowledged lands, once.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hdfs_ingest::config::SourceConfig;
use hdfs_ingest::images::ImageSet;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, PushOptions};
use hdfs_ingest::verify::verify;
use it::start_in_process;

async fn wait_committed(node: &hdfs_ingest::node::Node, n: u64) -> anyhow::Result<()> {
    tokio::time::timeout(Duration::from_secs(20), async {
        while node.stats().committed_blocks.load(Ordering::Relaxed) < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unwritable_output_delays_commits_but_loses_and_duplicates_nothing() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let n = start_in_process(
        dir.path(),
        vec![SourceConfig::FramedListen {
            address: "127.0.0.1:0".into(),
            token: None,
        }],
        |_| {},
    )
    .await?;
    let output = n.output.clone();
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let opts = PushOptions {
        targets: vec![n.addresses[0].clone()],
        count: 200,
        concurrency: 4,
        source_prefix: "o".into(),
        ..PushOptions::default()
    };
    let first = push(
        PushOptions {
            count: 100,
            ..opts.clone()
        },
        ImageSet::Generated {
            size: 4096,
            seed: 1,
        },
        Some(m.clone()),
    )
    .await?;
    assert_eq!(first.acked, 100);
    wait_committed(&n.node, 100).await?;
    let committed_before = n.node.stats().committed_blocks.load(Ordering::Relaxed);
    assert_eq!(committed_before, 100, "the first 100 are committed");

    // Break the output: its directory is replaced by a file, so staging fails.
    let aside = dir.path().join("output-aside");
    std::fs::rename(&output, &aside)?;
    std::fs::write(&output, b"not a directory")?;
    let second = push(
        PushOptions {
            source_prefix: "p".into(),
            ..opts.clone()
        },
        ImageSet::Generated {
            size: 4096,
            seed: 2,
        },
        Some(m.clone()),
    )
    .await?;
    assert_eq!(second.acked, 200, "ingest goes on while the output is down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        n.node.stats().committed_blocks.load(Ordering::Relaxed),
        committed_before,
        "nothing commits while the output is down"
    );

    // Repair: the pending batch is retried and everything lands.
    std::fs::remove_file(&output)?;
    std::fs::rename(&aside, &output)?;
    wait_committed(&n.node, 300).await?;
    let output = n.stop().await?;
    m.flush()?;
    let v = verify(&read_manifest(&mpath)?, &output, true)?;
    assert!(
        v.ok() && v.found == 300 && v.unexpected.is_empty(),
        "{}",
        v.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn at_its_disk_budget_the_wal_applies_backpressure_instead_of_failing_or_dropping(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = start_in_process(
        dir.path(),
        vec![SourceConfig::FramedListen {
            address: "127.0.0.1:0".into(),
            token: None,
        }],
        |c| {
            c.wal.segment_size = hdfs_ingest::size::ByteSize::mib(1);
            c.wal.disk_budget = hdfs_ingest::size::ByteSize::mib(3);
        },
    )
    .await?;
    let output = n.output.clone();
    // The output is down from the start, so nothing can commit and the WAL only grows.
    std::fs::create_dir_all(output.parent().unwrap())?;
    if output.exists() {
        std::fs::remove_dir_all(&output)?;
    }
    std::fs::write(&output, b"not a directory")?;
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sender = tokio::spawn(push(
        PushOptions {
            targets: vec![n.addresses[0].clone()],
            count: 400,
            concurrency: 2,
            window: 8,
            source_prefix: "b".into(),
            give_up_after: Duration::from_secs(120),
            progress: Some(progress.clone()),
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 16 * 1024,
            seed: 4,
        },
        Some(m.clone()),
    ));
    // ~6.5 MB to send, 3 MiB allowed: the sender must stall, and the node must not fail.
    // Wait for the sender to stall (no progress for 1.5 s), which it must do well before it is done.
    let mut last = u64::MAX;
    let mut same_since = std::time::Instant::now();
    let stalled_at = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = progress.load(Ordering::Relaxed);
        if now != last {
            last = now;
            same_since = std::time::Instant::now();
        } else if same_since.elapsed() > Duration::from_millis(1500) {
            break now;
        }
        assert!(
            !sender.is_finished(),
            "the sender finished although the WAL budget is far below what it sends"
        );
    };
    assert!(
        stalled_at > 0 && stalled_at < 400 * 16 * 1024,
        "stalled part-way: {stalled_at} bytes acked"
    );
    assert!(n.node.stop_reason().is_none(), "the node is still running");
    let wal_bytes: u64 = std::fs::read_dir(dir.path().join("data/wal"))?
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(
        wal_bytes <= 4 << 20,
        "the WAL stayed near its budget: {wal_bytes}"
    );

    std::fs::remove_file(&output)?;
    let r = tokio::time::timeout(Duration::from_secs(60), sender).await???;
    assert_eq!(r.acked, 400);
    let output = n.stop().await?;
    m.flush()?;
    let v = verify(&read_manifest(&mpath)?, &output, true)?;
    assert!(v.ok() && v.found == 400, "{}", v.summary());
    Ok(())
}
