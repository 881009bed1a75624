//! `hdfs-ingest bench hdfs`: batch output to HDFS against plain hdfs-native writes of the same bytes,
//! and checkpoint write/read latency on HDFS and on sled.
//!
//! Output: `--rounds` rounds, each one batch of `--files` images through the node's HDFS output
//! (staging directory, one rename) and then the same bytes written the plainest way (create, write,
//! close each file; one rename), interleaved so that drift on the cluster hits both alike; the best
//! batch of each is compared. Checkpoints: `--checkpoints` snapshots of `--sources` sources written and
//! read back through each store, p50 and p99 of both.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strategies::checkpoint::Checkpointer;
use strategies::snapshot::{SeqSet, Snapshot};
use strategies::store::hdfs::{build_client, HdfsOptions, HdfsStore};
use strategies::store::sled::SledStore;
use strategies::store::CheckpointStore;

use crate::bench::stats::{fmt_ms, percentiles};
use crate::images::bmp_of_size;
use crate::sink::{self, hdfs::HdfsOutput, BatchBlock};
use crate::size::ByteSize;

#[derive(clap::Args, Debug, Clone)]
pub struct HdfsArgs {
    /// Where to write: `hdfs://namenode:port/dir` (a fresh subdirectory is used and removed).
    #[arg(long)]
    pub url: String,
    /// Rounds of (our output, plain hdfs-native), interleaved so drift hits both alike.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 100)]
    pub files: usize,
    /// Image size.
    #[arg(long, default_value = "256KiB")]
    pub size: ByteSize,
    /// Checkpoints written and read per store for the latency figures.
    #[arg(long, default_value_t = 200)]
    pub checkpoints: usize,
    /// Sources in each checkpoint (its size grows with them).
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
}

/// `hdfs-ingest bench hdfs`: batch output to HDFS against plain hdfs-native writes of the same bytes,
/// and checkpoint write/read latency on HDFS and on sled.
pub async fn hdfs(a: HdfsArgs) -> anyhow::Result<ExitCode> {
    let (base, root) = crate::config::split_hdfs_url(&a.url).map_err(anyhow::Error::msg)?;
    let run = format!("{root}/bench-{}", std::process::id());
    let opts = HdfsOptions::default();
    let client = build_client(&base, &opts)?;
    let size = a.size.as_usize().max(64);
    let images: Vec<Bytes> = (0..a.files)
        .map(|i| Bytes::from(bmp_of_size(size, i as u64)))
        .collect();
    let batch_bytes = (a.files * size) as f64;
    let output = HdfsOutput::connect(&format!("{base}{run}/ours"), opts.clone()).await?;
    println!(
        "bench hdfs: {} rounds of {} images of {} ({:.1} MB a batch) to {base}{run}",
        a.rounds,
        a.files,
        ByteSize(size as u64),
        batch_bytes / 1e6
    );

    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for round in 0..a.rounds {
        let blocks: Vec<Result<BatchBlock, std::io::Error>> = images
            .iter()
            .enumerate()
            .map(|(i, b)| {
                Ok(BatchBlock {
                    source: "bench".into(),
                    seq: i as u64,
                    bytes: b.clone(),
                })
            })
            .collect();
        let t = Instant::now();
        sink::write_batch(
            &output,
            "images",
            round as u64 + 1,
            false,
            futures::stream::iter(blocks),
        )
        .await?;
        ours.push(t.elapsed());

        // The same bytes, written the plainest way: create, write, close each file; one rename.
        let t = Instant::now();
        let staging = format!("{run}/plain/_temporary/images-{}", round + 1);
        client.mkdirs(&staging, 0o755, true).await?;
        for (i, b) in images.iter().enumerate() {
            let mut w = client
                .create(
                    &format!("{staging}/bench-{i}.bmp"),
                    hdfs_native::client::WriteOptions::default(),
                )
                .await?;
            w.write_bytes(b.clone()).await?;
            w.close().await?;
        }
        client
            .rename(
                &staging,
                &format!("{run}/plain/images-{}", round + 1),
                false,
            )
            .await?;
        plain.push(t.elapsed());
    }
    let best = |v: &[Duration]| v.iter().min().copied().unwrap_or_default();
    let mbps = |d: Duration| batch_bytes / 1e6 / d.as_secs_f64().max(1e-9);
    println!(
        "| batch output | best batch | MB/s |\n|---|---:|---:|\n| hdfs-ingest HDFS output (staging, one rename) | {:.0} ms | {:.1} |\n| plain hdfs-native (create/write/close, 16 at once, one rename) | {:.0} ms | {:.1} |",
        best(&ours).as_secs_f64() * 1e3,
        mbps(best(&ours)),
        best(&plain).as_secs_f64() * 1e3,
        mbps(best(&plain)),
    );
    println!(
        "bench hdfs: output throughput ratio ours/plain = {:.2}",
        mbps(best(&ours)) / mbps(best(&plain))
    );

    // Checkpoint latency: HDFS vs sled, the same snapshots.
    let snapshot = |id: u64| {
        let mut sources = std::collections::BTreeMap::new();
        for s in 0..a.sources {
            let mut set = SeqSet::new();
            for q in 0..1000 {
                set.insert(q);
            }
            set.insert(5000 + id);
            sources.insert(format!("source-{s}"), set);
        }
        Snapshot {
            last_committed_batch_ms: Some(id),
            last_committed_seal_lsn: id,
            wal_low_water: id + 1,
            sources,
            ..Snapshot::empty(1, id, "bench", 0)
        }
    };
    let sled_dir = tempfile::tempdir()?;
    let stores: Vec<(&str, Arc<dyn CheckpointStore>)> = vec![
        (
            "hdfs",
            Arc::new(HdfsStore::connect(&base, &format!("{run}/ckpt"), opts.clone()).await?),
        ),
        (
            "sled",
            Arc::new(SledStore::open(sled_dir.path().join("ckpt.sled"))?),
        ),
    ];
    println!("| checkpoint store | write p50 | write p99 | read p50 | read p99 |\n|---|---:|---:|---:|---:|");
    for (name, store) in stores {
        let ck = Checkpointer::new(store);
        let (mut w, mut r) = (Vec::new(), Vec::new());
        for id in 1..=a.checkpoints as u64 {
            let s = snapshot(id);
            let t = Instant::now();
            ck.write(&s).await?;
            w.push(t.elapsed());
            let t = Instant::now();
            let got = ck.latest().await?;
            r.push(t.elapsed());
            anyhow::ensure!(
                got.as_ref().map(|g| g.id) == Some(id),
                "{name}: read back the wrong checkpoint"
            );
            if id % 16 == 0 {
                ck.gc(3).await?;
            }
        }
        let ((w50, w99), (r50, r99)) = (percentiles(w), percentiles(r));
        let ms = |d: Duration| fmt_ms(Some(d));
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(w50),
            ms(w99),
            ms(r50),
            ms(r99)
        );
    }
    client.delete(&run, true).await?;
    Ok(ExitCode::SUCCESS)
}
