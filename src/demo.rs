//! `hdfs-ingest demo`: the whole pipeline on the embedded defaults, in one process, with nothing to set
//! up — a node, a framed sender and a raw sender pushing real JPEG and BMP images, then a verify of the
//! output against the senders' manifest. Then one failover per strategy: `bench recovery --quick
//! --runs 1` (every strategy's primary killed with SIGKILL mid-stream, each run verified) and its
//! comparison table.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::bench::recovery::RecoveryArgs;
use crate::bench::stats::fmt_ms;
use crate::config::{Config, SourceConfig};
use crate::images::ImageSet;
use crate::node::{start_node, Node};
use crate::send::manifest::{read_manifest, ManifestWriter};
use crate::send::push::{push, Protocol, PushOptions};

pub async fn run(images: u64, dir: &Path, failover: bool) -> anyhow::Result<ExitCode> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    let mut cfg = Config::default();
    cfg.node.data_dir = dir.to_path_buf();
    // The default sources, on ports the OS picks, so the demo never collides with a running node.
    cfg.receiver.sources = vec![
        SourceConfig::RawListen {
            address: "127.0.0.1:0".into(),
            source: "raw".into(),
        },
        SourceConfig::FramedListen {
            address: "127.0.0.1:0".into(),
            token: None,
        },
    ];
    println!("demo: node on the embedded defaults (batch interval {}, WAL segments of {}, sled checkpoints), data in {}",
        humantime::format_duration(cfg.batch.interval), cfg.wal.segment_size, dir.display());
    let output = cfg.output_dir();
    let node = Node::open(cfg).await?;
    let running = start_node(node).await?;
    let (raw_addr, framed_addr) = (running.addresses[0].clone(), running.addresses[1].clone());

    let manifest_path = dir.join("manifest.jsonl");
    let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);
    let size = 64 * 1024;
    let framed = PushOptions {
        targets: vec![framed_addr.clone()],
        protocol: Protocol::Framed,
        count: images,
        concurrency: 8,
        source_prefix: "demo".into(),
        ..PushOptions::default()
    };
    let raw = PushOptions {
        targets: vec![raw_addr.clone()],
        protocol: Protocol::Raw,
        count: (images / 10).max(1),
        concurrency: 4,
        ..framed.clone()
    };
    println!("demo: pushing {} framed images to {framed_addr} and {} raw images to {raw_addr} (JPEG and BMP, ~64 KiB each)", framed.count, raw.count);
    let started = Instant::now();
    let (f, r) = tokio::join!(
        push(
            framed,
            ImageSet::Generated { size, seed: 1 },
            Some(manifest.clone())
        ),
        push(
            raw,
            ImageSet::Generated {
                size,
                seed: 1_000_000
            },
            Some(manifest.clone())
        ),
    );
    let (f, r) = (f?, r?);
    let elapsed = started.elapsed().as_secs_f64().max(1e-9);
    running.stop().await?; // commits the last batch
    manifest.flush()?;
    let n = f.sent + r.sent;
    let bytes = f.bytes + r.bytes;
    println!(
        "demo: ingested {n} images ({:.1} MB) in {elapsed:.2} s: {:.0} images/s, {:.1} MB/s; framed ack latency p50 {} p99 {}",
        bytes as f64 / 1e6,
        n as f64 / elapsed,
        bytes as f64 / 1e6 / elapsed,
        fmt_ms(f.percentile(0.5)),
        fmt_ms(f.percentile(0.99)),
    );
    let report = crate::verify::verify(&read_manifest(&manifest_path)?, &output, true)?;
    println!("demo: {}", report.summary());
    println!(
        "demo: output in {} (one directory per batch, with _analysis.jsonl); manifest {}",
        output.display(),
        manifest_path.display()
    );
    if !report.ok() {
        return Ok(ExitCode::FAILURE);
    }
    if !failover {
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "\ndemo: one failover per strategy — a primary (and a standby) as child processes, a sender at a \
         steady rate, the primary killed with SIGKILL, every run verified (`hdfs-ingest bench recovery \
         --quick --runs 1`; run `bench recovery` for p50/p99 over more runs)"
    );
    let out = dir.join("failover");
    let code = crate::bench::recovery::recovery(RecoveryArgs::quick(out.clone()))
        .await
        .context("the failover per strategy")?;
    println!(
        "demo: in the table, serving = the new primary serving after the kill, first ack = its first \
         acknowledgement of any level, new ack = the sender's first image released after it, all committed = every image acknowledged before the kill in the \
         output; the chart is {}",
        out.join("recovery.svg").display()
    );
    Ok(code)
}
