//! The output layouts on a real HDFS (MiniDFSCluster, or `HDFS_URL` where a test needs no special
//! cluster): partitioned paths keep directories under the NameNode's entry limit where the flat root
//! fails, and what we write in `sequencefile` and `parquet` is read back, byte for byte, by code the
//! project did not write — Hadoop's `SequenceFile.Reader`, the `hadoop fs -text` code path and
//! parquet-mr — and by `hdfs-ingest verify`.

use std::convert::Infallible;

use bytes::Bytes;
use futures::stream;
use hdfs_ingest::layout::{Format, Layout, PathTemplate};
use hdfs_ingest::send::manifest::{sha256_hex, ManifestEntry};
use hdfs_ingest::sink::hdfs::{HdfsOptions, HdfsOutput};
use hdfs_ingest::sink::{write_batch_claimed, BatchBlock, Output, PublishOutcome};
use it::minidfs::{unique_dir, MiniDfs};
use it::readers;

fn blocks(batch: u64, n: u64) -> Vec<BatchBlock> {
    (0..n)
        .map(|i| BatchBlock {
            source: format!("cam-{}", i % 2),
            seq: batch * 1000 + i,
            // Real JPEGs of a few KB, a different one for every block.
            bytes: Bytes::from(hdfs_ingest::images::jpeg(64, 48, batch * 1000 + i)),
        })
        .collect()
}

async fn write(
    output: &dyn Output,
    layout: &Layout,
    ms: u64,
    b: Vec<BatchBlock>,
) -> Result<PublishOutcome, hdfs_ingest::sink::SinkError> {
    let s = write_batch_claimed(
        output,
        layout,
        ms,
        0,
        true,
        stream::iter(b.into_iter().map(Ok::<_, Infallible>)),
        || async { Ok(()) },
    )
    .await?;
    Ok(s.outcome.expect("a batch with blocks is published"))
}

fn layout(format: Format, template: &str) -> Layout {
    Layout {
        path: PathTemplate::parse(template).unwrap(),
        ..Layout::flat("images").with_format(format)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_batches_commit_under_partitions_where_the_flat_root_fails_at_the_entry_limit(
) -> anyhow::Result<()> {
    let dfs = tokio::task::spawn_blocking(|| {
        MiniDfs::start_with(1, &[("dfs.namenode.fs-limits.max-directory-items", "32")])
    })
    .await??;
    // Batches two minutes apart: 30 per hour directory, 300 over ten hours.
    let ms = |i: u64| 1_796_169_600_000 + i * 120_000;
    let one = |i: u64| {
        vec![BatchBlock {
            source: "cam".into(),
            seq: i,
            bytes: Bytes::from(vec![i as u8; 100]),
        }]
    };
    let partitioned = HdfsOutput::connect(
        &format!("{}/partitioned", dfs.url()),
        HdfsOptions::default(),
    )
    .await?;
    let hive = layout(Format::SequenceFile, PathTemplate::DEFAULT);
    for i in 0..300 {
        let outcome = write(&partitioned, &hive, ms(i), one(i))
            .await
            .map_err(|e| anyhow::anyhow!("partitioned batch {i}: {e:#}"))?;
        assert_eq!(outcome, PublishOutcome::Published, "batch {i}");
    }
    let flat = HdfsOutput::connect(&format!("{}/flat", dfs.url()), HdfsOptions::default()).await?;
    let flat_layout = layout(Format::SequenceFile, PathTemplate::FLAT);
    let mut failed_at = None;
    for i in 0..300 {
        if let Err(e) = write(&flat, &flat_layout, ms(i), one(i)).await {
            let chain = format!("{:?}", anyhow::Error::new(e));
            assert!(
                chain.contains("MaxDirectoryItemsExceeded"),
                "batch {i}: {chain}"
            );
            failed_at = Some(i);
            break;
        }
    }
    // 32 entries: `_temporary` is one of them while a batch is staged.
    let failed_at = failed_at.expect("the flat root must hit the entry limit");
    assert!(
        (30..=32).contains(&failed_at),
        "the flat root failed at batch {failed_at}"
    );
    println!("flat root: batch {failed_at} refused; partitioned: 300 of 300 published");
    Ok(())
}

/// `(name, length, crc32)` of SequenceFile records as Hadoop's reader returned them, after checking
/// that each key records the format, the length and the CRC-32 of the value Hadoop read.
fn named_records(records: &[readers::SeqRecord]) -> Vec<(String, u64, u32)> {
    records
        .iter()
        .map(|r| {
            let key = hdfs_ingest::layout::RecordKey::parse(&r.name)
                .unwrap_or_else(|e| panic!("{}: {e}", r.file));
            assert_eq!(key.format, Some("jpeg"), "{}: key {}", r.file, r.name);
            assert_eq!(key.size, Some(r.length), "{}: key {}", r.file, r.name);
            assert_eq!(key.crc32, Some(r.crc32), "{}: key {}", r.file, r.name);
            (key.name.to_owned(), r.length, r.crc32)
        })
        .collect()
}

/// The part files of every batch under `root` (an HDFS path), as URLs.
async fn part_urls(dfs: &MiniDfs, out: &HdfsOutput, root: &str, ext: &str) -> Vec<String> {
    let mut urls: Vec<String> = out
        .client()
        .list_status(root, true)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| !s.isdir && s.path.ends_with(ext) && !s.path.contains("/_temporary/"))
        .map(|s| format!("{}{}", dfs.url(), s.path))
        .collect();
    urls.sort();
    urls
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hadoops_own_readers_and_parquet_mr_read_every_packed_image_back_byte_for_byte(
) -> anyhow::Result<()> {
    let dfs = MiniDfs::shared()?;
    let root = unique_dir("layouts-readers");
    let out = HdfsOutput::connect(&format!("{}{root}", dfs.url()), HdfsOptions::default()).await?;
    let mut sent = Vec::new();
    for (k, format) in [Format::SequenceFile, Format::Parquet]
        .into_iter()
        .enumerate()
    {
        // Rolled parts: 7 images per part, two batches.
        let l = Layout {
            max_images_per_file: 7,
            ..layout(format, PathTemplate::DEFAULT)
        };
        for b in 0..2u64 {
            let batch = blocks(10 * k as u64 + b + 1, 16);
            sent.extend(batch.iter().map(|x| (format, x.clone())));
            let ms = 1_796_236_611_000 + b * 2000 + k as u64 * 10_000;
            assert_eq!(write(&out, &l, ms, batch).await?, PublishOutcome::Published);
        }
    }
    let want = |f: Format| -> Vec<(String, u64, u32)> {
        let mut v: Vec<_> = sent
            .iter()
            .filter(|(g, _)| *g == f)
            .map(|(_, b)| {
                (
                    format!("{}-{}.jpg", b.source, b.seq),
                    b.bytes.len() as u64,
                    crc32fast::hash(&b.bytes),
                )
            })
            .collect();
        v.sort();
        v
    };

    let seq = part_urls(dfs, &out, &root, ".seq").await;
    assert_eq!(
        seq.len(),
        6,
        "16 images at 7 per part, two batches: {seq:?}"
    );
    let urls = seq.clone();
    let read = tokio::task::spawn_blocking(move || readers::read_sequence_files(&urls)).await??;
    let mut got = named_records(&read);
    got.sort();
    assert_eq!(got, want(Format::SequenceFile), "SequenceFile.Reader");
    let urls = seq.clone();
    let text = tokio::task::spawn_blocking(move || readers::read_with_fs_text(&urls)).await??;
    let mut got = named_records(&text);
    got.sort();
    assert_eq!(got, want(Format::SequenceFile), "hadoop fs -text");
    let urls = seq.clone();
    let info = tokio::task::spawn_blocking(move || readers::sequence_file_info(&urls)).await??;
    for i in &info {
        assert_eq!(i.compression, "none", "{}", i.file);
        assert!(
            i.metadata.contains_key("hdfs-ingest.batch"),
            "{:?}",
            i.metadata
        );
    }

    let pq = part_urls(dfs, &out, &root, ".parquet").await;
    assert_eq!(pq.len(), 6, "{pq:?}");
    let rows = tokio::task::spawn_blocking(move || readers::read_parquet_files(&pq)).await??;
    let mut got: Vec<_> = rows
        .iter()
        .map(|r| (r.name.clone(), r.length, r.crc32))
        .collect();
    got.sort();
    assert_eq!(got, want(Format::Parquet), "parquet-mr");
    for r in &rows {
        assert_eq!(
            r.crc32_column,
            i64::from(r.crc32),
            "{}: the crc32 column",
            r.name
        );
        assert_eq!(r.format, "jpeg", "{}", r.name);
        assert!(
            r.width.is_some() && r.height.is_some(),
            "{}: dimensions",
            r.name
        );
        assert_eq!(format!("{}-{}.jpg", r.source, r.seq), r.name);
        assert!(r.batch_ms >= 1_796_236_611_000, "{}", r.batch_ms);
    }

    // And verify reads both layouts on HDFS.
    let manifest: Vec<ManifestEntry> = sent
        .iter()
        .map(|(_, b)| ManifestEntry {
            path: format!("{}-{}", b.source, b.seq),
            size: b.bytes.len() as u64,
            sha256: sha256_hex(&b.bytes),
            protocol: "framed".into(),
            source: Some(b.source.clone()),
            seq: Some(b.seq),
            acked: true,
            released_unix_ms: None,
        })
        .collect();
    let url = format!("{}{root}", dfs.url());
    let v =
        hdfs_ingest::verify::verify_hdfs(&manifest, &url, &HdfsOptions::default(), true).await?;
    assert!(
        v.ok() && v.found == 64 && v.unexpected.is_empty(),
        "{}",
        v.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_packs_old_files_batches_on_hdfs_and_hadoops_reader_reads_every_image_back(
) -> anyhow::Result<()> {
    let dfs = MiniDfs::shared()?;
    let root = unique_dir("layouts-compact");
    let url = format!("{}{root}", dfs.url());
    let out = HdfsOutput::connect(&url, HdfsOptions::default()).await?;
    let files = layout(Format::Files, PathTemplate::DEFAULT);
    let now = 1_796_236_611_000;
    let mut sent = Vec::new();
    for b in 0..3u64 {
        let batch = blocks(b + 1, 12);
        sent.extend(batch.clone());
        // Two hours old.
        write(&out, &files, now - 7_200_000 + b * 2000, batch).await?;
    }
    let mut cfg = hdfs_ingest::config::Config::default();
    cfg.output.url = Some(url.clone());
    let r = hdfs_ingest::compact::compact(
        &cfg,
        Format::SequenceFile,
        std::time::Duration::from_secs(3600),
        now,
    )
    .await?;
    assert_eq!((r.compacted.len(), r.images), (3, 36), "{r:?}");
    // The originals are gone; only packed part files hold images now.
    let listing = out.client().list_status(&root, true).await?;
    assert!(
        listing
            .iter()
            .all(|s| s.isdir || s.path.ends_with(".seq") || s.path.ends_with("_analysis.jsonl")),
        "{:?}",
        listing.iter().map(|s| &s.path).collect::<Vec<_>>()
    );
    let seq = part_urls(dfs, &out, &root, ".seq").await;
    assert_eq!(seq.len(), 3);
    assert!(
        seq.iter()
            .all(|u| u.contains("/dt=2026-12-02/hour=16/packed-images-")),
        "{seq:?}"
    );
    let read = tokio::task::spawn_blocking(move || readers::read_sequence_files(&seq)).await??;
    let mut got = named_records(&read);
    got.sort();
    let mut want: Vec<_> = sent
        .iter()
        .map(|b| {
            (
                format!("{}-{}.jpg", b.source, b.seq),
                b.bytes.len() as u64,
                crc32fast::hash(&b.bytes),
            )
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    Ok(())
}
