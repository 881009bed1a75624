//! The node with its output and checkpoints on a real HDFS (a MiniDFSCluster, or `HDFS_URL`): SIGKILL
//! recovery, a NameNode outage mid-stream, a DataNode killed while batches are written. Every test ends
//! with a verify of the HDFS output against the sender's manifest.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdfs_ingest::images::ImageSet;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, PushOptions};
use hdfs_ingest::verify::verify_hdfs;
use it::minidfs::{unique_dir, MiniDfs, MiniDfsOptions};
use it::{free_port, write_config, NodeProc};
use rand::{Rng, SeedableRng};
use strategies::store::hdfs::HdfsOptions;

/// A node configuration with output and checkpoints under a fresh directory of `dfs`.
fn hdfs_config(
    dir: &std::path::Path,
    dfs: &MiniDfs,
    port: u16,
    interval: &str,
) -> anyhow::Result<(std::path::PathBuf, String)> {
    let base = format!("{}{}", dfs.url(), unique_dir("node"));
    let output = format!("{base}/out");
    let config = write_config(
        dir,
        &format!(
            "[batch]\ninterval = \"{interval}\"\n[output]\nurl = \"{output}\"\n\
             [checkpoint.store]\nkind = \"hdfs\"\nurl = \"{base}/ckpt\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n"
        ),
    )?;
    Ok((config, output))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_on_hdfs_killed_at_seeded_moments_keeps_every_acknowledged_image_exactly_once(
) -> anyhow::Result<()> {
    let dfs = MiniDfs::shared()?;
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let (config, output) = hdfs_config(dir.path(), dfs, port, "300ms")?;
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let seed = 0x4df5;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut node = NodeProc::start(&config, &[])?;
    let sender = tokio::spawn(push(
        PushOptions {
            targets: vec![format!("127.0.0.1:{port}")],
            count: 1500,
            concurrency: 4,
            window: 32,
            rate: Some(500.0),
            source_prefix: "h".into(),
            ..PushOptions::default()
        },
        ImageSet::Generated { size: 10_000, seed },
        Some(m.clone()),
    ));
    for k in 0..3 {
        let wait = rng.random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        println!("kill {k} after {wait} ms");
        node.kill9()?;
        node = NodeProc::start(&config, &[])?;
    }
    let r = tokio::time::timeout(Duration::from_secs(120), sender).await???;
    assert_eq!(r.acked, 1500);
    node.kill9()?;
    NodeProc::start(&config, &[])?.stop()?;
    m.flush()?;
    let v = verify_hdfs(
        &read_manifest(&mpath)?,
        &output,
        &HdfsOptions::default(),
        false,
    )
    .await?;
    println!("{}", v.summary());
    assert!(
        v.ok() && v.found == 1500 && v.unexpected.is_empty(),
        "{}",
        v.summary()
    );
    Ok(())
}

/// Waits until `progress` has moved by at least `by` since `from`, or fails after `within`.
async fn wait_progress(
    progress: &AtomicU64,
    from: u64,
    by: u64,
    within: Duration,
) -> anyhow::Result<u64> {
    let start = Instant::now();
    loop {
        let now = progress.load(Ordering::Relaxed);
        if now >= from + by {
            return Ok(now);
        }
        anyhow::ensure!(
            start.elapsed() < within,
            "no progress: {now} bytes acked, wanted {}",
            from + by
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node process on `dfs` with a paced framed sender pushing `count` images at it.
struct PushRun {
    _dir: tempfile::TempDir,
    node: NodeProc,
    sender: tokio::task::JoinHandle<
        Result<hdfs_ingest::send::push::PushReport, hdfs_ingest::send::push::PushError>,
    >,
    progress: Arc<AtomicU64>,
    manifest: Arc<ManifestWriter>,
    manifest_path: std::path::PathBuf,
    output: String,
    count: u64,
}

impl PushRun {
    fn start(
        dfs: &MiniDfs,
        interval: &str,
        count: u64,
        rate: f64,
        prefix: &str,
        size: usize,
        seed: u64,
    ) -> anyhow::Result<PushRun> {
        let dir = tempfile::tempdir()?;
        let port = free_port();
        let (config, output) = hdfs_config(dir.path(), dfs, port, interval)?;
        let manifest_path = dir.path().join("m.jsonl");
        let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);
        let node = NodeProc::start(&config, &[])?;
        let progress = Arc::new(AtomicU64::new(0));
        let sender = tokio::spawn(push(
            PushOptions {
                targets: vec![format!("127.0.0.1:{port}")],
                count,
                concurrency: 4,
                rate: Some(rate),
                source_prefix: prefix.into(),
                progress: Some(progress.clone()),
                ..PushOptions::default()
            },
            ImageSet::Generated { size, seed },
            Some(manifest.clone()),
        ));
        Ok(PushRun {
            _dir: dir,
            node,
            sender,
            progress,
            manifest,
            manifest_path,
            output,
            count,
        })
    }

    /// Waits for the sender, stops the node cleanly, and verifies the HDFS output: every image sent is
    /// there once, nothing else.
    async fn finish(self) -> anyhow::Result<()> {
        let r = tokio::time::timeout(Duration::from_secs(120), self.sender).await???;
        assert_eq!(r.acked, self.count);
        self.node.stop()?;
        self.manifest.flush()?;
        let v = verify_hdfs(
            &read_manifest(&self.manifest_path)?,
            &self.output,
            &HdfsOptions::default(),
            true,
        )
        .await?;
        assert!(
            v.ok() && v.found as u64 == self.count && v.unexpected.is_empty(),
            "{}",
            v.summary()
        );
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namenode_down_for_ten_seconds_mid_stream_stops_no_ingest_and_loses_nothing(
) -> anyhow::Result<()> {
    if MiniDfs::external().is_some() {
        eprintln!(
            "skipped: HDFS_URL names an external cluster, and this test must stop its NameNode"
        );
        return Ok(());
    }
    let dfs = MiniDfs::start(MiniDfsOptions {
        datanodes: 1,
        ..MiniDfsOptions::default()
    })?;
    let run = PushRun::start(&dfs, "500ms", 2400, 120.0, "nn", 8_000, 10)?;
    wait_progress(&run.progress, 0, 200_000, Duration::from_secs(30)).await?;
    dfs.stop_namenode()?;
    let down = Instant::now();
    // Ingest goes on into the WAL while HDFS is away.
    let at = run.progress.load(Ordering::Relaxed);
    wait_progress(&run.progress, at, 400_000, Duration::from_secs(9)).await?;
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(down.elapsed())).await;
    dfs.restart_namenode()?;
    run.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_datanode_killed_while_batches_are_written_loses_nothing() -> anyhow::Result<()> {
    if MiniDfs::external().is_some() {
        eprintln!(
            "skipped: HDFS_URL names an external cluster, and this test must stop a DataNode"
        );
        return Ok(());
    }
    let dfs = MiniDfs::start(MiniDfsOptions {
        datanodes: 3,
        replication: Some(2),
        ..MiniDfsOptions::default()
    })?;
    let run = PushRun::start(&dfs, "200ms", 1500, 300.0, "dn", 20_000, 12)?;
    wait_progress(&run.progress, 0, 2_000_000, Duration::from_secs(30)).await?;
    dfs.stop_datanode(1)?;
    run.finish().await
}
