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
        address: n.addresses[0].clone(),
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
