//! A node that dies at a named point of a batch commit — before it starts, after the publish, after the
//! checkpoint — loses nothing acknowledged and duplicates nothing once restarted. The node aborts through
//! a failpoint (`--features failpoints`), which is as abrupt as SIGKILL but lands exactly where named.
#![cfg(feature = "failpoints")]

use std::sync::Arc;
use std::time::Duration;

use hdfs_ingest::images::ImageSet;
use hdfs_ingest::layout::Format;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, PushOptions};
use hdfs_ingest::verify::verify;
use it::{free_port, leftover_staging, write_config, NodeProc};

/// [`crash_at_in`] in every output format.
async fn crash_at(point: &str) -> anyhow::Result<()> {
    for format in Format::ALL {
        crash_at_in(point, format).await?;
    }
    Ok(())
}

async fn crash_at_in(point: &str, format: Format) -> anyhow::Result<()> {
    println!("{point} in {}", format.name());
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!("[batch]\ninterval = \"200ms\"\n[output]\nformat = \"{}\"\n[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n", format.name()),
    )?;
    let output = dir.path().join("data/output");
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let mut node = NodeProc::start(&config, &[("FAILPOINTS", &format!("{point}=return"))])?;
    let sender = tokio::spawn(push(
        PushOptions {
            targets: vec![format!("127.0.0.1:{port}")],
            count: 600,
            concurrency: 4,
            rate: Some(1500.0),
            source_prefix: "fp".into(),
            // Committed acks: the sender lets a block go only once it is in a committed batch, so a
            // batch whose commit was interrupted must be finished, and acknowledged, after the restart.
            release: hdfs_ingest::protocol::AckLevel::Committed,
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 8192,
            seed: 11,
        },
        Some(m.clone()),
    ));
    // The first commit aborts the process.
    let st = tokio::task::spawn_blocking(move || {
        let st = node.child.wait();
        (node, st)
    });
    let (n, st) = tokio::time::timeout(Duration::from_secs(30), st).await??;
    node = n;
    let st = st?;
    assert!(!st.success(), "the node died at {point}: {st}");
    drop(node);
    let node = NodeProc::start(&config, &[])?;
    let r = tokio::time::timeout(Duration::from_secs(60), sender).await???;
    assert_eq!(r.acked, 600);
    node.stop()?;
    m.flush()?;
    let v = verify(&read_manifest(&mpath)?, &output, false)?;
    assert!(
        v.ok() && v.found == 600 && v.unexpected.is_empty(),
        "{point} in {}: {}",
        format.name(),
        v.summary()
    );
    assert!(leftover_staging(&output).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_a_batch_is_written_loses_nothing() -> anyhow::Result<()> {
    crash_at("node::commit::before").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_publish_and_before_the_checkpoint_duplicates_nothing(
) -> anyhow::Result<()> {
    crash_at("node::commit::after_publish").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_the_checkpoint_and_before_the_wal_is_trimmed_duplicates_nothing(
) -> anyhow::Result<()> {
    crash_at("node::commit::after_checkpoint").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_in_the_middle_of_a_part_file_publishes_nothing_and_loses_nothing(
) -> anyhow::Result<()> {
    for format in [Format::SequenceFile, Format::Parquet] {
        crash_at_in("sink::part::after_write", format).await?;
    }
    Ok(())
}
