//! `hdfs-ingest bench ingest`: end-to-end ingest through a real node process.
//!
//! Starts `hdfs-ingest run` as a child process on a scratch directory, pushes `--total` bytes of images
//! framed over loopback, and prints images/s, MB/s, ack latency p50/p99 and the node's resident memory
//! as the stream grows (sampled from /proc), so a memory leak shows as a column that keeps climbing.
//!
//! # Output
//!
//! The node's output is `<dir>/data/output` unless `--output` names another: a local directory, or
//! `hdfs://namenode:port/dir`, where the node writes into a fresh subdirectory `bench-ingest-<pid>`
//! that is removed afterwards (unless `--keep`). `--format` sets `output.format` (the node's default:
//! `sequencefile` on HDFS, `files` in a directory) and `--block-size` `output.block_size`.
//!
//! By default the sender releases a block once the node has it durable in its WAL, so images/s is
//! what the WAL takes. With `--until-committed` a block is released only when the batch holding it
//! is published in the output (the `upstream-backup` release level): the push ends when the last
//! image is in the output, and images/s and MB/s are end to end, output included. The sender keeps
//! the unreleased blocks (at most 1 GiB), so a slow output slows the push down instead of piling up
//! in the node's WAL.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;

use crate::bench::child::{rss_of, terminate};
use crate::bench::stats::fmt_ms;
use crate::images::{bmp_of_size, ImageSet};
use crate::layout::Format;
use crate::protocol::AckLevel;
use crate::send::push::{push, Protocol, PushOptions};
use crate::size::ByteSize;

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
    /// The node's output: a directory or `hdfs://namenode:port/dir` (a fresh subdirectory is used).
    /// Default: `<dir>/data/output`.
    #[arg(long)]
    pub output: Option<String>,
    /// `output.format`: files, sequencefile or parquet (default: the node's for the output).
    #[arg(long)]
    pub format: Option<Format>,
    /// `output.block_size`: the HDFS block size of part files (default: the cluster's).
    #[arg(long)]
    pub block_size: Option<ByteSize>,
    /// Release a block only once it is in the published output, so the figures are end to end.
    #[arg(long)]
    pub until_committed: bool,
    /// Scratch directory (removed afterwards unless --keep).
    #[arg(long, default_value = "./target/bench-ingest")]
    pub dir: PathBuf,
    #[arg(long)]
    pub keep: bool,
}

pub async fn ingest(a: IngestArgs) -> anyhow::Result<ExitCode> {
    if a.dir.exists() {
        std::fs::remove_dir_all(&a.dir)
            .with_context(|| format!("cannot clear {}", a.dir.display()))?;
    }
    std::fs::create_dir_all(&a.dir)?;
    let config = a.dir.join("node.toml");
    // On HDFS, a subdirectory of our own, removed at the end.
    let (output_url, hdfs_run) = match a.output.as_deref() {
        Some(url) if url.starts_with("hdfs://") || url.starts_with("viewfs://") => {
            let (base, root) = crate::config::split_hdfs_url(url).map_err(anyhow::Error::msg)?;
            let run = format!("{root}/bench-ingest-{}", std::process::id());
            (Some(format!("{base}{run}")), Some((base, run)))
        }
        Some(dir) => (Some(dir.to_owned()), None),
        None => (None, None),
    };
    let mut output = String::new();
    if let Some(url) = &output_url {
        output.push_str(&format!("url = {url:?}\n"));
    }
    if let Some(f) = a.format {
        output.push_str(&format!("format = {:?}\n", f.name()));
    }
    if let Some(b) = a.block_size {
        output.push_str(&format!("block_size = {}\n", b.as_u64()));
    }
    std::fs::write(
        &config,
        format!(
            "[node]\ndata_dir = {:?}\n[checkpoint.store]\nkind = \"sled\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:0\"\n\
             [output]\n{output}",
            a.dir.join("data").display().to_string()
        ),
    )?;
    let cfg = crate::config::Config::load(&config)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    let format = cfg.output_format();
    let shown_output =
        output_url.unwrap_or_else(|| a.dir.join("data/output").display().to_string());
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
        release: if a.until_committed {
            AckLevel::Committed
        } else {
            AckLevel::Durable
        },
        ..PushOptions::default()
    };
    println!(
        "bench ingest: {count} images of {} ({}) over {} streams, node pid {pid}; output {shown_output} as {}; released when {}",
        ByteSize(size as u64),
        ByteSize(count * size as u64),
        a.concurrency,
        format.name(),
        if a.until_committed { "in the output" } else { "durable in the WAL" },
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
        if let Some((base, run)) = hdfs_run {
            let client = strategies::store::hdfs::build_client(&base, &Default::default())?;
            if let Err(e) = client.delete(&run, true).await {
                tracing::warn!(path = %run, error = %e, "could not remove the bench's HDFS output");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
