//! `hdfs-ingest bench ingest`: end-to-end ingest through a real node process.
//!
//! Starts `hdfs-ingest run` as a child process on a scratch directory, pushes `--total` bytes of images
//! framed over loopback, and prints images/s, MB/s, ack latency p50/p99 and the node's resident memory
//! as the stream grows (sampled from /proc), so a memory leak shows as a column that keeps climbing.
//!
//! `hdfs-ingest bench recovery` (every strategy, its primary killed, side by side) is [`recovery`].

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

pub mod recovery;
pub mod stats;

use crate::images::{bmp_of_size, ImageSet};
use crate::send::push::{push, Protocol, PushOptions};
use crate::size::ByteSize;
use stats::fmt_ms;

#[derive(clap::Args, Debug, Clone)]
pub struct IngestArgs {
    /// Bytes to push in all.
    #[arg(long, default_value = "1GiB")]
    pub total: ByteSize,
    /// Image size.
    #[arg(long, default_value = "256KiB")]
    pub size: ByteSize,
    /// Framed streams at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Unacknowledged blocks per stream.
    #[arg(long, default_value_t = 64)]
    pub window: usize,
    /// Images per second over all streams (default: as fast as the node takes them). At full speed the
    /// ack latency is mostly queueing (in flight / throughput); a rate below capacity shows the
    /// latency of the WAL's group commit itself.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Scratch directory (removed afterwards unless --keep).
    #[arg(long, default_value = "./target/bench-ingest")]
    pub dir: PathBuf,
    #[arg(long)]
    pub keep: bool,
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
pub fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        s.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

pub async fn ingest(a: IngestArgs) -> anyhow::Result<ExitCode> {
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir)
            .with_context(|| format!("cannot clear {}", a.dir.display()))?;
    }
    std::fs::create_dir_all(&a.dir)?;
    let config = a.dir.join("node.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n[checkpoint.store]\nkind = \"sled\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:0\"\n",
            a.dir.join("data").display().to_string()
        ),
    )?;
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .spawn()
        .context("cannot start the node")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("node stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = loop {
        match lines.next() {
            Some(Ok(l)) if l.starts_with("ready ") => break l[6..].trim().to_string(),
            Some(Ok(_)) => continue,
            _ => {
                let _ = child.kill();
                bail!("the node exited before it was ready");
            }
        }
    };
    let size = a.size.as_usize().max(64);
    let count = (a.total.as_u64() / size as u64).max(1);
    // A pool of distinct BMPs, sent round-robin (names stay unique: every block has its own sequence number).
    let pool: Vec<(PathBuf, Bytes)> = (0..32)
        .map(|i| {
            (
                PathBuf::from(format!("pool:{i}")),
                Bytes::from(bmp_of_size(size, i)),
            )
        })
        .collect();
    let progress = Arc::new(AtomicU64::new(0));
    let opts = PushOptions {
        targets: vec![address],
        protocol: Protocol::Framed,
        count,
        concurrency: a.concurrency,
        window: a.window,
        rate: a.rate,
        source_prefix: "bench".into(),
        progress: Some(progress.clone()),
        ..PushOptions::default()
    };
    println!(
        "bench ingest: {count} images of {} ({}) over {} streams, node pid {pid}",
        ByteSize(size as u64),
        ByteSize(count * size as u64),
        a.concurrency
    );
    let total = count * size as u64;
    let sampler = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut marks = vec![0.1, 0.25, 0.5, 0.75, 1.0].into_iter().peekable();
            let mut rows = Vec::new();
            let mut peak = 0;
            loop {
                let done = progress.load(Ordering::Relaxed);
                if let Some((rss, hwm)) = rss_of(pid) {
                    peak = peak.max(hwm);
                    while let Some(&m) = marks.peek() {
                        if done as f64 >= m * total as f64 {
                            rows.push((done, rss, hwm));
                            marks.next();
                        } else {
                            break;
                        }
                    }
                }
                if marks.peek().is_none() {
                    return (rows, peak);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let started = Instant::now();
    let r = push(opts, ImageSet::Files(pool), None).await?;
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let (rows, peak) = tokio::time::timeout(Duration::from_secs(5), sampler)
        .await
        .ok()
        .and_then(|r| r.ok())
        .unwrap_or_default();
    terminate(pid);
    let status = child.wait()?;
    println!(
        "bench ingest: {} images, {:.1} MB in {secs:.2} s: {:.0} images/s, {:.1} MB/s; ack latency p50 {} p99 {}",
        r.acked,
        r.bytes as f64 / 1e6,
        r.acked as f64 / secs,
        r.bytes as f64 / 1e6 / secs,
        fmt_ms(r.percentile(0.5)),
        fmt_ms(r.percentile(0.99)),
    );
    println!("| acked so far | node RSS | node peak RSS so far |\n|---:|---:|---:|");
    for (done, rss, hwm) in &rows {
        println!(
            "| {} | {} | {} |",
            ByteSize(*done),
            ByteSize(*rss),
            ByteSize(*hwm)
        );
    }
    println!(
        "bench ingest: node peak RSS {} over {}; node exit {status}",
        ByteSize(peak),
        ByteSize(total)
    );
    if !a.keep {
        let _ = std::fs::remove_dir_all(&a.dir);
    }
    Ok(ExitCode::SUCCESS)
}

/// SIGTERM, so the node commits and exits cleanly.
fn terminate(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

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

fn percentiles(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let at = |p: f64| v[(((v.len() - 1) as f64) * p).round() as usize];
    (at(0.5), at(0.99))
}

/// `hdfs-ingest bench hdfs`: batch output to HDFS against plain hdfs-native writes of the same bytes,
/// and checkpoint write/read latency on HDFS and on sled.
pub async fn hdfs(a: HdfsArgs) -> anyhow::Result<ExitCode> {
    use crate::sink::{self, hdfs::HdfsOutput, BatchBlock};
    use strategies::checkpoint::Checkpointer;
    use strategies::snapshot::{SeqSet, Snapshot};
    use strategies::store::hdfs::{build_client, HdfsOptions, HdfsStore};
    use strategies::store::sled::SledStore;
    use strategies::store::CheckpointStore;

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
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
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
