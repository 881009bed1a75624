//! Strategy `none`: a node killed with SIGKILL at seeded random moments under load, restarted with the
//! same configuration, loses no acknowledged image and duplicates none.
//!
//! The seed is printed; set `IT_SEED` to replay a run, `IT_KILLS` for more kills.

use std::sync::Arc;
use std::time::Duration;

use hdfs_ingest::images::ImageSet;
use hdfs_ingest::layout::Format;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, Protocol, PushOptions};
use hdfs_ingest::verify::verify;
use it::{free_port, leftover_staging, write_config, NodeProc};
use rand::{Rng, SeedableRng};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_image_survives_sigkill_at_seeded_random_moments_exactly_once(
) -> anyhow::Result<()> {
    sigkills_at_random_moments(Format::Files, env_u64("IT_KILLS", 6)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_image_survives_sigkill_at_random_moments_exactly_once_in_sequencefile_parts(
) -> anyhow::Result<()> {
    sigkills_at_random_moments(Format::SequenceFile, env_u64("IT_KILLS", 6) / 2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_image_survives_sigkill_at_random_moments_exactly_once_in_parquet_parts(
) -> anyhow::Result<()> {
    sigkills_at_random_moments(Format::Parquet, env_u64("IT_KILLS", 6) / 2).await
}

async fn sigkills_at_random_moments(format: Format, kills: u64) -> anyhow::Result<()> {
    let seed = env_u64("IT_SEED", 0x5eed_2026);
    println!("seed {seed}, {kills} kills, {}", format.name());
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir()?;
    let port = free_port();
    // Short batches and small segments, so kills land in appends, seals, publishes, checkpoints and
    // segment rotation alike.
    let config = write_config(
        dir.path(),
        &format!(
            "[wal]\nsegment_size = \"1 MiB\"\n[batch]\ninterval = \"150ms\"\n\
             [output]\nformat = \"{}\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n",
            format.name()
        ),
    )?;
    let output = dir.path().join("data/output");
    let manifest_path = dir.path().join("manifest.jsonl");
    let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);

    let mut node = NodeProc::start(&config, &[])?;
    let sender = tokio::spawn(push(
        PushOptions {
            targets: vec![format!("127.0.0.1:{port}")],
            protocol: Protocol::Framed,
            count: 4000,
            concurrency: 8,
            window: 32,
            rate: Some(2000.0),
            source_prefix: "crash".into(),
            give_up_after: Duration::from_secs(60),
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 12 * 1024,
            seed,
        },
        Some(manifest.clone()),
    ));
    for k in 0..kills {
        let wait = rng.random_range(150..900);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        println!("kill {k} after {wait} ms");
        node.kill9()?;
        node = NodeProc::start(&config, &[])?;
    }
    let report = tokio::time::timeout(Duration::from_secs(120), sender).await???;
    assert_eq!(
        report.acked, 4000,
        "the sender gets every image acknowledged in the end"
    );
    assert!(
        report.reconnects >= kills,
        "the sender saw the kills: {report:?}"
    );
    // A last crash after everything was acknowledged, then a clean restart and stop: the restart
    // re-commits whatever was durable but not committed.
    node.kill9()?;
    NodeProc::start(&config, &[])?.stop()?;

    manifest.flush()?;
    let entries = read_manifest(&manifest_path)?;
    assert_eq!(entries.iter().filter(|e| e.acked).count(), 4000);
    let v = verify(&entries, &output, false)?;
    println!("{}", v.summary());
    assert!(
        v.lost.is_empty(),
        "lost: {:?}",
        &v.lost[..v.lost.len().min(10)]
    );
    assert!(
        v.duplicated.is_empty(),
        "duplicated: {:?}",
        &v.duplicated[..v.duplicated.len().min(10)]
    );
    assert!(v.corrupt.is_empty(), "corrupt: {:?}", v.corrupt);
    assert_eq!(v.found, 4000);
    assert!(
        v.unexpected.is_empty(),
        "every stored image was acknowledged in the end: {:?}",
        v.unexpected
    );
    assert!(
        leftover_staging(&output).is_empty(),
        "no staging left in the output"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_right_after_acknowledging_commits_those_images_on_restart(
) -> anyhow::Result<()> {
    // A long batch interval: the kill lands after the acks and before any batch is written.
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let config = write_config(
        dir.path(),
        &format!("[batch]\ninterval = \"1h\"\n[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n"),
    )?;
    let output = dir.path().join("data/output");
    let manifest_path = dir.path().join("manifest.jsonl");
    let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);
    let node = NodeProc::start(&config, &[])?;
    let r = push(
        PushOptions {
            targets: vec![format!("127.0.0.1:{port}")],
            count: 300,
            concurrency: 3,
            source_prefix: "k".into(),
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 20_000,
            seed: 9,
        },
        Some(manifest.clone()),
    )
    .await?;
    assert_eq!(r.acked, 300);
    node.kill9()?;
    let batches = it::batch_paths(&output).len();
    assert_eq!(batches, 0, "nothing was written out before the kill");
    NodeProc::start(&config, &[])?.stop()?;
    manifest.flush()?;
    let v = verify(&read_manifest(&manifest_path)?, &output, true)?;
    assert!(v.ok() && v.found == 300, "{}", v.summary());
    Ok(())
}
