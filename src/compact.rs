//! `hdfs-ingest compact`: rewrites committed `files` batches older than an age into packed
//! `sequencefile` or `parquet` batches under the same partitions, exactly once.
//!
//! # Sequence, per batch
//!
//! A `files` batch `<partitions>/<prefix>-<ms>` becomes the packed batch
//! `<partitions>/packed-<prefix>-<ms>` (same partitions, same batch time, so Hive/Spark partition
//! pruning and `{batch_ms}` ordering are unchanged):
//!
//! 1. If the packed batch is already published (an earlier run died after its rename), go to 3.
//! 2. Stage it in `_temporary/compact/e0/…` (the compactor's own staging owner, which no node ever
//!    cleans), reading the images one at a time from the original; publish with the one no-replace
//!    rename every batch uses. The rename is the claim: of two compactors of one batch exactly one
//!    publishes, the other finds it `AlreadyPublished`.
//! 3. Only then remove the original batch directory.
//!
//! A crash before 3 leaves the original and perhaps a complete packed copy: the next run finishes
//! step 3. So no image is ever lost; between 2 and 3 a reader that lists both sees an image twice,
//! which is why `compact` only touches batches older than `--older-than` (default 1 h; at least
//! 1 min), long committed by their node, and why it should run while nobody reads the partitions
//! it rewrites. Void batches (`_VOID`) and packed batches are left alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;

use crate::config::Config;
use crate::layout::{Format, Layout, PathTemplate};
use crate::sink::{self, BatchBlock, Output, PublishOutcome, ANALYSIS_FILE, VOID_FILE};

/// The staging owner of compaction.
pub const OWNER: &str = "compact";
/// The prefix of a compacted batch's name.
pub const PACKED_PREFIX: &str = "packed-";
/// The shortest `--older-than`.
pub const MIN_AGE: Duration = Duration::from_secs(60);

/// What one run did.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct CompactReport {
    /// Batches rewritten into packed batches by this run.
    pub compacted: Vec<String>,
    /// Batches whose packed copy an earlier run had published; this run removed the originals.
    pub finished: Vec<String>,
    /// Images moved.
    pub images: usize,
    /// `files` batches left alone because they are younger than the age.
    pub too_young: usize,
}

/// Where the output is, for listing and removing batch directories.
enum Tree {
    Local(PathBuf),
    Hdfs {
        client: hdfs_native::Client,
        root: String,
    },
}

impl Tree {
    async fn batches(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        match self {
            Tree::Local(root) => {
                let mut out = Vec::new();
                for b in crate::layout::read::local_batch_dirs(root)? {
                    let files = std::fs::read_dir(root.join(&b))?
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect();
                    out.push((b, files));
                }
                Ok(out)
            }
            Tree::Hdfs { client, root } => {
                Ok(crate::layout::read::hdfs_batch_dirs(client, root).await?)
            }
        }
    }

    async fn read(&self, batch: &str, file: &str) -> anyhow::Result<Bytes> {
        match self {
            Tree::Local(root) => Ok(Bytes::from(std::fs::read(root.join(batch).join(file))?)),
            Tree::Hdfs { client, root } => {
                let r = client.read(&format!("{root}/{batch}/{file}")).await?;
                Ok(r.read_range(0, r.file_length()).await?)
            }
        }
    }

    async fn remove(&self, batch: &str) -> anyhow::Result<()> {
        match self {
            Tree::Local(root) => {
                let dir = root.join(batch);
                std::fs::remove_dir_all(&dir)?;
                if let Some(parent) = dir.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(())
            }
            Tree::Hdfs { client, root } => {
                client.delete(&format!("{root}/{batch}"), true).await?;
                Ok(())
            }
        }
    }
}

/// `(parent, stem, ms)` of a batch path whose last part is `<stem><ms>` (`images-` and `1700…`).
fn split_batch(batch: &str) -> Option<(&str, &str, u64)> {
    let (parent, last) = match batch.rsplit_once('/') {
        Some((p, l)) => (p, l),
        None => ("", batch),
    };
    let digits = last.len() - last.bytes().rev().take_while(u8::is_ascii_digit).count();
    let (stem, ms) = last.split_at(digits);
    Some((parent, stem, ms.parse().ok()?))
}

/// The layout whose batch at `ms` is the packed copy of `batch`.
fn packed_layout(batch: &str, format: Format) -> Option<(Layout, u64)> {
    let (parent, stem, ms) = split_batch(batch)?;
    if stem.starts_with(PACKED_PREFIX) {
        return None;
    }
    let last = format!("{PACKED_PREFIX}{stem}{{batch_ms}}");
    let template = if parent.is_empty() {
        last
    } else {
        format!("{parent}/{last}")
    };
    let path = PathTemplate::parse(&template).ok()?;
    Some((
        Layout {
            path,
            ..Layout::flat("compact").with_format(format)
        },
        ms,
    ))
}

/// Compacts the output `cfg` names: every `files` batch older than `older_than` (by its batch
/// time) into `format`. `now_ms` is the current time (a parameter so tests can pick it).
pub async fn compact(
    cfg: &Config,
    format: Format,
    older_than: Duration,
    now_ms: u64,
) -> anyhow::Result<CompactReport> {
    anyhow::ensure!(
        format != Format::Files,
        "compact writes a packed format: --format sequencefile or parquet"
    );
    anyhow::ensure!(
        older_than >= MIN_AGE,
        "--older-than {} is too short: at least {} (a batch that young may still be retried or voided by its node)",
        humantime::format_duration(older_than),
        humantime::format_duration(MIN_AGE)
    );
    let (output, tree): (Arc<dyn Output>, Tree) = match cfg.hdfs_output() {
        Some(url) => {
            let out = sink::hdfs::HdfsOutput::connect(url, crate::node::hdfs_options(cfg))
                .await?
                .with_owner(OWNER)?
                .with_block_size(cfg.output.block_size.map(|b| b.0));
            let root = out.root();
            let client = out.client().clone();
            (Arc::new(out), Tree::Hdfs { client, root })
        }
        None => {
            let dir = cfg.output_dir();
            (
                Arc::new(sink::LocalOutput::new(&dir)?.with_owner(OWNER)?),
                Tree::Local(dir),
            )
        }
    };
    output.clean_staging().await?;
    let cutoff = now_ms.saturating_sub(older_than.as_millis() as u64);
    let mut report = CompactReport::default();
    let batches = tree.batches().await?;
    let published: std::collections::HashSet<&str> =
        batches.iter().map(|(b, _)| b.as_str()).collect();
    for (batch, files) in &batches {
        let images: Vec<&String> = files
            .iter()
            .filter(|f| !f.starts_with(['_', '.']))
            .collect();
        if files.iter().any(|f| f == VOID_FILE)
            || images.is_empty()
            || images.iter().any(|f| Format::of_part_name(f).is_some())
        {
            continue;
        }
        let Some((mut layout, ms)) = packed_layout(batch, format) else {
            continue;
        };
        if ms > cutoff {
            report.too_young += 1;
            continue;
        }
        layout.max_file_size = cfg.output.max_file_size.0;
        layout.max_images_per_file = cfg.output.max_images_per_file;
        let packed = layout.batch_dir(ms);
        if published.contains(packed.as_str()) {
            tree.remove(batch).await?;
            tracing::info!(batch = %batch, packed = %packed, "compaction finished: original removed");
            report.finished.push(batch.clone());
            continue;
        }
        let analysis = files.iter().any(|f| f == ANALYSIS_FILE);
        let names: Vec<String> = images.iter().map(|s| s.to_string()).collect();
        let tree_ref = &tree;
        let batch_ref = batch.as_str();
        let blocks = futures::stream::iter(names).then(move |name| async move {
            let (source, seq) = crate::verify::parse_image_name(&name)
                .map(|(s, q)| (s.to_owned(), q))
                .ok_or_else(|| {
                    anyhow::anyhow!("{batch_ref}/{name} is not named <source>-<seq>.<ext>")
                })?;
            let bytes = tree_ref.read(batch_ref, &name).await?;
            Ok::<_, anyhow::Error>(BatchBlock { source, seq, bytes })
        });
        let summary =
            sink::write_batch_claimed(&*output, &layout, ms, 0, analysis, blocks, || async {
                Ok(())
            })
            .await?;
        anyhow::ensure!(
            summary.outcome.is_some(),
            "{batch}: nothing was written for its packed copy"
        );
        fail::fail_point!("compact::after_publish", |_| Err(anyhow::anyhow!(
            "failpoint compact::after_publish"
        )));
        tree.remove(batch).await?;
        if summary.outcome == Some(PublishOutcome::Published) {
            report.images += summary.files;
            report.compacted.push(batch.clone());
        } else {
            report.finished.push(batch.clone());
        }
        tracing::info!(batch = %batch, packed = %packed, images = summary.files, parts = summary.parts, "batch compacted");
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::manifest::{sha256_hex, ManifestEntry};
    use std::path::Path;

    fn blocks(batch: u64) -> Vec<BatchBlock> {
        (0..5)
            .map(|i| BatchBlock {
                source: format!("cam-{i}"),
                seq: batch * 10 + i,
                bytes: Bytes::from(crate::images::jpeg(16, 8, batch * 10 + i)),
            })
            .collect()
    }

    fn manifest(all: &[BatchBlock]) -> Vec<ManifestEntry> {
        all.iter()
            .map(|b| ManifestEntry {
                path: format!("{}-{}", b.source, b.seq),
                size: b.bytes.len() as u64,
                sha256: sha256_hex(&b.bytes),
                protocol: "framed".into(),
                source: Some(b.source.clone()),
                seq: Some(b.seq),
                acked: true,
                released_unix_ms: None,
            })
            .collect()
    }

    const HOUR: u64 = 3_600_000;
    const NOW: u64 = 1_796_236_611_000;

    async fn setup(dir: &Path) -> (Config, Vec<BatchBlock>) {
        let mut cfg = Config::default();
        cfg.output.url = Some(dir.display().to_string());
        let output = sink::LocalOutput::new(dir).unwrap();
        let layout = cfg.layout();
        let mut all = Vec::new();
        // Two batches three hours old, one ten minutes old.
        for (k, ms) in [NOW - 3 * HOUR, NOW - 3 * HOUR + 2000, NOW - 600_000]
            .into_iter()
            .enumerate()
        {
            let b = blocks(k as u64 + 1);
            all.extend(b.clone());
            let s = sink::write_batch_claimed(
                &output,
                &layout,
                ms,
                1,
                true,
                futures::stream::iter(b.into_iter().map(Ok::<_, std::convert::Infallible>)),
                || async { Ok(()) },
            )
            .await
            .unwrap();
            assert_eq!(s.outcome, Some(PublishOutcome::Published));
        }
        (cfg, all)
    }

    #[tokio::test]
    async fn old_files_batches_become_packed_batches_in_the_same_partitions_and_young_ones_stay() {
        for format in [Format::SequenceFile, Format::Parquet] {
            let dir = tempfile::tempdir().unwrap();
            let (cfg, all) = setup(dir.path()).await;
            let r = compact(&cfg, format, Duration::from_secs(3600), NOW)
                .await
                .unwrap();
            assert_eq!(r.compacted.len(), 2, "{format:?}: {r:?}");
            assert_eq!((r.images, r.too_young), (10, 1));
            let batches = crate::layout::read::local_batch_dirs(dir.path()).unwrap();
            let packed: Vec<_> = batches
                .iter()
                .filter(|b| b.contains("/packed-images-"))
                .collect();
            assert_eq!(packed.len(), 2, "{batches:?}");
            assert!(
                packed
                    .iter()
                    .all(|b| b.starts_with("dt=2026-12-02/hour=15/")),
                "{packed:?}"
            );
            assert_eq!(batches.len(), 3, "the young batch stays: {batches:?}");
            let v = crate::verify::verify(&manifest(&all), dir.path(), true).unwrap();
            assert!(
                v.ok() && v.found == 15 && v.unexpected.is_empty(),
                "{}",
                v.summary()
            );
            // Again: nothing left to do.
            let again = compact(&cfg, format, Duration::from_secs(3600), NOW)
                .await
                .unwrap();
            assert!(
                again.compacted.is_empty() && again.finished.is_empty(),
                "{again:?}"
            );
        }
    }

    #[cfg(feature = "failpoints")]
    #[tokio::test]
    async fn a_compaction_that_dies_after_publishing_is_finished_by_the_next_run_without_a_duplicate(
    ) {
        let _scenario = fail::FailScenario::setup();
        let dir = tempfile::tempdir().unwrap();
        let (cfg, all) = setup(dir.path()).await;
        fail::cfg("compact::after_publish", "return").unwrap();
        let err = compact(&cfg, Format::SequenceFile, Duration::from_secs(3600), NOW).await;
        fail::remove("compact::after_publish");
        assert!(err.is_err());
        // The packed copy and its original are both there: an image twice, none lost.
        let v = crate::verify::verify(&manifest(&all), dir.path(), true).unwrap();
        assert_eq!(
            (v.lost.len(), v.duplicated.len()),
            (0, 5),
            "{}",
            v.summary()
        );
        let r = compact(&cfg, Format::SequenceFile, Duration::from_secs(3600), NOW)
            .await
            .unwrap();
        assert_eq!((r.finished.len(), r.compacted.len()), (1, 1), "{r:?}");
        let v = crate::verify::verify(&manifest(&all), dir.path(), true).unwrap();
        assert!(v.ok() && v.found == 15, "{}", v.summary());
    }

    #[tokio::test]
    async fn compact_refuses_the_files_format_and_a_too_short_age() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, _) = setup(dir.path()).await;
        let e = compact(&cfg, Format::Files, Duration::from_secs(3600), NOW)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("packed format"), "{e}");
        let e = compact(&cfg, Format::Parquet, Duration::from_secs(5), NOW)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("at least 1m"), "{e}");
    }
}
