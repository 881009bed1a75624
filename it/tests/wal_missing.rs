//! A node whose WAL lost segments, or whose last acknowledged record is damaged, refuses to start and says
//! what is missing and what `--salvage-wal` would drop; told to salvage, it starts, says what it dropped,
//! and every image acknowledged after that is committed (new LSNs above everything the old log or its
//! checkpoint used).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hdfs_ingest::images::ImageSet;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, PushOptions};
use hdfs_ingest::verify::VerifyReport;
use it::{free_port, write_config, LoggedNode, NodeProc};

/// A node configuration: 1 MiB segments, one framed listener, batches every `interval`.
fn config(dir: &Path, port: u16, interval: &str) -> anyhow::Result<PathBuf> {
    write_config(
        dir,
        &format!("[wal]\nsegment_size = \"1 MiB\"\n[batch]\ninterval = \"{interval}\"\n[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n"),
    )
}

/// Pushes `count` images of 40 kB under `prefix`, recording them in `manifest`; all must be acked.
async fn push_images(port: u16, count: u64, prefix: &str, manifest: &Path) -> anyhow::Result<()> {
    let m = Arc::new(ManifestWriter::create(manifest)?);
    let r = push(
        PushOptions {
            targets: vec![format!("127.0.0.1:{port}")],
            count,
            concurrency: 1,
            window: 4,
            source_prefix: prefix.into(),
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 40_000,
            seed: count,
        },
        Some(m.clone()),
    )
    .await?;
    m.flush()?;
    assert_eq!(r.acked, count, "every image is acknowledged");
    Ok(())
}

fn verify(dir: &Path, manifest: &Path) -> anyhow::Result<VerifyReport> {
    Ok(hdfs_ingest::verify::verify(
        &read_manifest(manifest)?,
        &dir.join("data/output"),
        false,
    )?)
}

fn segments(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut segs: Vec<_> = std::fs::read_dir(dir.join("data/wal"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segs.sort();
    Ok(segs)
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// A WAL of several segments holding `count` acknowledged images and no commit (batches every hour),
/// left by a SIGKILL.
async fn killed_with_uncommitted(dir: &Path, port: u16, count: u64) -> anyhow::Result<PathBuf> {
    let cfg = config(dir, port, "1h")?;
    let node = NodeProc::start(&cfg, &[])?;
    push_images(port, count, "w", &dir.join("m.jsonl")).await?;
    node.kill9()?;
    Ok(cfg)
}

/// A node that committed `committed` images (checkpoints exist), then took `uncommitted` more that no
/// batch committed before a SIGKILL.
async fn killed_after_checkpoints(
    dir: &Path,
    port: u16,
    committed: u64,
    uncommitted: u64,
) -> anyhow::Result<PathBuf> {
    let cfg = config(dir, port, "200ms")?;
    let node = NodeProc::start(&cfg, &[])?;
    push_images(port, committed, "c", &dir.join("committed.jsonl")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    node.stop()?;
    let v = verify(dir, &dir.join("committed.jsonl"))?;
    assert!(v.ok() && v.found == committed as usize, "{}", v.summary());
    let cfg = config(dir, port, "1h")?;
    let node = NodeProc::start(&cfg, &[])?;
    push_images(port, uncommitted, "u", &dir.join("m.jsonl")).await?;
    node.kill9()?;
    Ok(cfg)
}

/// The node's log once it holds every one of `needles`, or after 10 s: `ready` and an exit are seen
/// on stdout and by `wait`, the log comes on stderr through a reader thread that may lag behind.
fn log_with(node: &LoggedNode, needles: &[&str]) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = node.log();
        if needles.iter().all(|n| log.contains(n)) || std::time::Instant::now() >= deadline {
            return log;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the node and expects a refusal; returns its log.
fn refused(cfg: &Path) -> anyhow::Result<String> {
    let mut node = LoggedNode::spawn(cfg, &[])?;
    let ready = node.wait_ready(Duration::from_secs(30));
    assert!(
        !ready,
        "the node started on a WAL that lost acknowledged images, without refusing; it logged:\n{}",
        node.log()
    );
    let st = node.wait_exit(Duration::from_secs(5));
    assert!(st.is_some_and(|s| !s.success()), "a refusal exits non-zero");
    let log = log_with(&node, &["--salvage-wal"]);
    assert!(
        log.contains("--salvage-wal"),
        "the refusal says what --salvage-wal would do: {log}"
    );
    Ok(log)
}

/// Starts with `--salvage-wal`: it must start and log at ERROR what it dropped; then `count` new images
/// pushed and a clean stop must commit every one of them.
async fn salvaged_then_serves(
    dir: &Path,
    cfg: &Path,
    port: u16,
    count: u64,
) -> anyhow::Result<String> {
    let mut node = LoggedNode::spawn(cfg, &["--salvage-wal"])?;
    assert!(
        node.wait_ready(Duration::from_secs(60)),
        "--salvage-wal starts the node: {}",
        node.log()
    );
    let log = log_with(&node, &["ERROR", "salvage"]);
    assert!(
        log.contains("ERROR") && log.contains("salvage"),
        "salvage logs what it dropped at ERROR: {log}"
    );
    let after = dir.join("after.jsonl");
    push_images(port, count, "after", &after).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.stop()?;
    let v = verify(dir, &after)?;
    assert!(
        v.ok() && v.found == count as usize,
        "every image acknowledged after the salvage is committed once: {}",
        v.summary()
    );
    Ok(log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_last_segment_stops_the_start_naming_it_until_salvage_accepts_the_loss(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = killed_with_uncommitted(dir.path(), port, 120).await?;
    let segs = segments(dir.path())?;
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    let last = segs.last().unwrap().clone();
    std::fs::remove_file(&last)?;

    let log = refused(&cfg)?;
    assert!(
        log.contains(&name(&last)),
        "the refusal names the missing segment: {log}"
    );

    salvaged_then_serves(dir.path(), &cfg, port, 30).await?;
    let v = verify(dir.path(), &dir.path().join("m.jsonl"))?;
    assert!(
        v.duplicated.is_empty() && !v.lost.is_empty() && v.lost.len() < 120,
        "only the deleted segment's images are lost: {}",
        v.summary()
    );
    let newest = segments(dir.path())?.pop().unwrap();
    assert!(
        name(&newest) > name(&last),
        "new records get LSNs above the lost segment's: {newest:?} after {last:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_first_segment_stops_the_start_naming_it_until_salvage_accepts_the_loss(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = killed_with_uncommitted(dir.path(), port, 120).await?;
    let segs = segments(dir.path())?;
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    std::fs::remove_file(&segs[0])?;

    let log = refused(&cfg)?;
    assert!(
        log.contains(&name(&segs[0])),
        "the refusal names the missing segment: {log}"
    );

    salvaged_then_serves(dir.path(), &cfg, port, 30).await?;
    let v = verify(dir.path(), &dir.path().join("m.jsonl"))?;
    assert!(
        v.duplicated.is_empty() && !v.lost.is_empty() && v.lost.len() < 120,
        "only the deleted segment's images are lost: {}",
        v.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_segment_deleted_while_checkpoints_exist_stops_the_start_until_salvage(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = killed_after_checkpoints(dir.path(), port, 60, 40).await?;
    for s in segments(dir.path())? {
        std::fs::remove_file(s)?;
    }

    let log = refused(&cfg)?;
    assert!(
        log.contains("missing"),
        "the refusal says what is missing: {log}"
    );

    salvaged_then_serves(dir.path(), &cfg, port, 30).await?;
    let v = verify(dir.path(), &dir.path().join("committed.jsonl"))?;
    assert!(
        v.ok(),
        "what was committed stays committed: {}",
        v.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_wal_directory_with_its_checkpoints_kept_stops_the_start_and_salvage_continues_above_the_low_water_mark(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = killed_after_checkpoints(dir.path(), port, 60, 40).await?;
    std::fs::remove_dir_all(dir.path().join("data/wal"))?;

    let log = refused(&cfg)?;
    assert!(
        log.contains("missing"),
        "the refusal says what is missing: {log}"
    );

    // Before, every new block got an LSN below the checkpoint's low-water mark and none was committed.
    salvaged_then_serves(dir.path(), &cfg, port, 40).await?;
    // And across a restart without salvage too.
    let node = NodeProc::start(&cfg, &[])?;
    push_images(port, 20, "again", &dir.path().join("again.jsonl")).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    node.stop()?;
    let v = verify(dir.path(), &dir.path().join("again.jsonl"))?;
    assert!(v.ok() && v.found == 20, "{}", v.summary());
    Ok(())
}

/// The offset of the last record in a segment file (records: len u32 | crc u32 | lsn u64 | kind u8 |
/// payload, after a 32-byte header).
fn last_record_offset(bytes: &[u8]) -> (usize, usize) {
    let mut at = 32;
    let mut last = (at, 0);
    while at + 17 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + 17 + len > bytes.len() {
            break;
        }
        last = (at, len);
        at += 17 + len;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_in_the_last_acknowledged_record_is_refused_not_truncated_as_a_torn_tail(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let cfg = killed_with_uncommitted(dir.path(), port, 30).await?;
    let last = segments(dir.path())?.pop().unwrap();
    let mut bytes = std::fs::read(&last)?;
    let (offset, len) = last_record_offset(&bytes);
    assert!(len > 1000, "the last record holds an image ({len} bytes)");
    bytes[offset + 17 + len / 2] ^= 0x08;
    std::fs::write(&last, &bytes)?;

    let log = refused(&cfg)?;
    assert!(
        log.contains(&name(&last)) && log.contains(&format!("offset {offset}")),
        "the refusal names the segment and offset of the damage: {log}"
    );

    salvaged_then_serves(dir.path(), &cfg, port, 10).await?;
    let v = verify(dir.path(), &dir.path().join("m.jsonl"))?;
    assert!(
        v.duplicated.is_empty() && v.lost.len() == 1,
        "salvage drops exactly the damaged image: {}",
        v.summary()
    );
    Ok(())
}
