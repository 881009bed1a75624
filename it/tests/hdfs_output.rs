//! The HDFS batch output against a real HDFS: publish, re-run, crash mid-staging, never overwrite,
//! the analysis file; plus the measured comparison that chose hdfs-native over object_store for
//! the staged writes (ignored by default: it measures, it does not test speed).
//!
//! The cluster is the process-wide [`MiniDfs::shared`] (or `HDFS_URL`); every test publishes into
//! its own directory, so the tests run in parallel.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use futures::stream;
use hdfs_ingest::images;
use hdfs_ingest::sink::hdfs::{HdfsOptions, HdfsOutput};
use hdfs_ingest::sink::{
    batch_dir_name, image_file_name, write_batch, BatchBlock, ImageFormat, Output, PublishOutcome,
    SinkError, ANALYSIS_FILE, STAGING_DIR,
};
use hdfs_native::Client;
use it::minidfs::{unique_dir, MiniDfs};

async fn output(name: &str) -> (HdfsOutput, String) {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir(name);
    let url = format!("{}{root}", dfs.url());
    let out = HdfsOutput::connect(&url, HdfsOptions::default())
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    assert_eq!(out.describe(), url);
    (out, root)
}

fn block(source: &str, seq: u64, bytes: Vec<u8>) -> BatchBlock {
    BatchBlock {
        source: source.to_string(),
        seq,
        bytes: Bytes::from(bytes),
    }
}

fn blocks(
    list: Vec<BatchBlock>,
) -> impl futures::Stream<Item = Result<BatchBlock, std::io::Error>> {
    stream::iter(list.into_iter().map(Ok))
}

fn file_name(b: &BatchBlock) -> String {
    image_file_name(&b.source, b.seq, ImageFormat::sniff(&b.bytes).ext())
}

/// Every file below `dir`, by path relative to `dir`, with its bytes.
async fn files_under(client: &Client, dir: &str) -> BTreeMap<String, Bytes> {
    let mut files = BTreeMap::new();
    for status in client.list_status(dir, true).await.unwrap() {
        if status.isdir {
            continue;
        }
        let reader = client.read(&status.path).await.unwrap();
        let bytes = reader.read_range(0, reader.file_length()).await.unwrap();
        let rel = status.path[dir.len() + 1..].to_string();
        files.insert(rel, bytes);
    }
    files
}

async fn exists(client: &Client, path: &str) -> bool {
    match client.get_file_info(path).await {
        Ok(_) => true,
        Err(e) if strategies::store::hdfs::is_not_found(&e) => false,
        Err(e) => panic!("stat {path}: {e}"),
    }
}

/// Six images from two sources, one of them larger than the cluster's 1 MiB block.
fn sample_batch() -> Vec<BatchBlock> {
    vec![
        block("cam-a", 1, images::jpeg(64, 48, 1)),
        block("cam-a", 2, images::jpeg(80, 60, 2)),
        block("cam-b", 1, images::jpeg(32, 32, 3)),
        block("cam-b", 2, images::bmp(40, 30, 4)),
        block("cam-a", 3, images::bmp_of_size(2_500_000, 5)),
        block("cam-b", 3, images::jpeg(50, 50, 6)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_published_as_one_directory_with_every_image_and_the_analysis() {
    let (out, root) = output("out-publish").await;
    let batch = sample_batch();
    let summary = write_batch(&out, "images", 1_000, true, blocks(batch.clone()))
        .await
        .unwrap();
    assert_eq!(summary.outcome, Some(PublishOutcome::Published));
    assert_eq!(summary.files, batch.len());
    assert_eq!(
        summary.bytes,
        batch.iter().map(|b| b.bytes.len() as u64).sum::<u64>()
    );

    let dir = format!("{root}/{}", batch_dir_name("images", 1_000));
    let files = files_under(out.client(), &dir).await;
    let mut expected: BTreeMap<String, Bytes> = batch
        .iter()
        .map(|b| (file_name(b), b.bytes.clone()))
        .collect();
    let analysis = files
        .get(ANALYSIS_FILE)
        .expect("the analysis file is published with the batch")
        .clone();
    expected.insert(ANALYSIS_FILE.to_string(), analysis.clone());
    assert_eq!(
        files, expected,
        "the batch directory holds exactly the images and the analysis"
    );

    let lines: Vec<serde_json::Value> = analysis
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    let analysed: Vec<String> = lines
        .iter()
        .map(|v| v["file"].as_str().unwrap().to_string())
        .collect();
    let in_order: Vec<String> = batch.iter().map(file_name).collect();
    assert_eq!(
        analysed, in_order,
        "one analysis line per image, in block order"
    );
    assert!(
        !exists(out.client(), &format!("{root}/{STAGING_DIR}")).await,
        "no staging is left after a publish"
    );
    assert!(out
        .is_published(&batch_dir_name("images", 1_000))
        .await
        .unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn re_running_a_published_batch_rewrites_nothing() {
    let (out, root) = output("out-rerun").await;
    let batch = sample_batch();
    write_batch(&out, "images", 2_000, true, blocks(batch.clone()))
        .await
        .unwrap();
    let dir = format!("{root}/{}", batch_dir_name("images", 2_000));
    let before = files_under(out.client(), &dir).await;
    let mtimes_before: Vec<u64> = out
        .client()
        .list_status(&dir, false)
        .await
        .unwrap()
        .iter()
        .map(|s| s.modification_time)
        .collect();

    // The re-run brings different bytes under the same names: none of them may land.
    let rerun: Vec<BatchBlock> = batch
        .iter()
        .map(|b| block(&b.source, b.seq, images::jpeg(16, 16, b.seq + 100)))
        .collect();
    let summary = write_batch(&out, "images", 2_000, true, blocks(rerun))
        .await
        .unwrap();
    assert_eq!(summary.outcome, Some(PublishOutcome::AlreadyPublished));
    assert_eq!(summary.files, 0);
    assert_eq!(files_under(out.client(), &dir).await, before);
    let mtimes_after: Vec<u64> = out
        .client()
        .list_status(&dir, false)
        .await
        .unwrap()
        .iter()
        .map(|s| s.modification_time)
        .collect();
    assert_eq!(mtimes_after, mtimes_before, "no file was rewritten");
    assert!(!exists(out.client(), &format!("{root}/{STAGING_DIR}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_staging_shows_nothing_and_the_rerun_publishes_a_clean_batch() {
    let (out, root) = output("out-crash").await;
    let name = batch_dir_name("images", 3_000);
    // The crashed run: two files staged (one that the re-run will not write), never published.
    {
        let mut staged = out.stage(&name, 0).await.unwrap();
        staged
            .put("cam-a-1.jpg", Bytes::from_static(b"partial"))
            .await
            .unwrap();
        staged
            .put("cam-z-9.jpg", Bytes::from(images::jpeg(8, 8, 9)))
            .await
            .unwrap();
        // Dropped without publish, as a crash would leave it.
    }
    assert!(!out.is_published(&name).await.unwrap());
    assert!(!exists(out.client(), &format!("{root}/{name}")).await);
    // Each attempt stages in a directory of its own, `<owner>/e<epoch>/<batch>~<random>`.
    let staged: Vec<String> = out
        .client()
        .list_status(
            &format!(
                "{root}/{STAGING_DIR}/{}/{}",
                hdfs_ingest::sink::DEFAULT_STAGING_OWNER,
                hdfs_ingest::sink::staging_epoch_dir(0)
            ),
            false,
        )
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.path.rsplit('/').next().unwrap().to_string())
        .collect();
    assert!(
        staged.iter().any(|n| n.starts_with(&format!("{name}~"))),
        "the crashed attempt's staging is there: {staged:?}"
    );

    let batch = sample_batch();
    let summary = write_batch(&out, "images", 3_000, false, blocks(batch.clone()))
        .await
        .unwrap();
    assert_eq!(summary.outcome, Some(PublishOutcome::Published));
    let expected: BTreeMap<String, Bytes> = batch
        .iter()
        .map(|b| (file_name(b), b.bytes.clone()))
        .collect();
    assert_eq!(
        files_under(out.client(), &format!("{root}/{name}")).await,
        expected,
        "exactly the re-run's files, nothing of the crashed staging"
    );
    assert!(!exists(out.client(), &format!("{root}/{STAGING_DIR}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_staging_removes_every_leftover_of_a_crash() {
    let (out, root) = output("out-clean").await;
    for ms in [4_000, 4_100] {
        let mut staged = out.stage(&batch_dir_name("images", ms), 0).await.unwrap();
        staged
            .put("cam-a-1.jpg", Bytes::from(images::jpeg(8, 8, ms)))
            .await
            .unwrap();
    }
    assert_eq!(out.clean_staging().await.unwrap(), 2);
    assert!(!exists(out.client(), &format!("{root}/{STAGING_DIR}")).await);
    assert_eq!(out.clean_staging().await.unwrap(), 0);
}

/// A replaced node that is still alive may be writing its staging while its successor starts: the
/// successor's clean-up leaves it alone, and the old node's publish still works on what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_staging_leaves_another_owners_staging_alone() {
    let (out, root) = output("out-clean-owners").await;
    let old = out.clone().with_owner("old").unwrap();
    let new = out.with_owner("new").unwrap();
    let name = batch_dir_name("images", 4_200);
    let mut staged = old.stage(&name, 0).await.unwrap();
    let image = Bytes::from(images::jpeg(8, 8, 42));
    staged.put("cam-a-1.jpg", image.clone()).await.unwrap();
    let leftover = new
        .stage(&batch_dir_name("images", 4_100), 0)
        .await
        .unwrap();
    drop(leftover);

    assert_eq!(
        new.clean_staging().await.unwrap(),
        1,
        "only its own leftover"
    );
    assert_eq!(staged.publish().await.unwrap(), PublishOutcome::Published);
    let reader = old
        .client()
        .read(&format!("{root}/{name}/cam-a-1.jpg"))
        .await
        .unwrap();
    let got = reader.read_range(0, reader.file_length()).await.unwrap();
    assert_eq!(&got[..], &image[..]);
    assert!(!exists(old.client(), &format!("{root}/{STAGING_DIR}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_never_overwrites_an_existing_batch() {
    let (out, root) = output("out-never-overwrite").await;
    let name = batch_dir_name("images", 5_000);
    let first = Bytes::from(images::jpeg(20, 20, 1));
    let mut staged = out.stage(&name, 0).await.unwrap();
    staged.put("cam-a-1.jpg", first.clone()).await.unwrap();
    assert_eq!(staged.publish().await.unwrap(), PublishOutcome::Published);

    // A second writer that skipped the is_published check stages and publishes the same batch.
    let mut staged = out.stage(&name, 0).await.unwrap();
    staged
        .put("cam-a-1.jpg", Bytes::from(images::jpeg(20, 20, 2)))
        .await
        .unwrap();
    staged
        .put("cam-a-2.jpg", Bytes::from(images::jpeg(20, 20, 3)))
        .await
        .unwrap();
    assert_eq!(
        staged.publish().await.unwrap(),
        PublishOutcome::AlreadyPublished
    );
    assert_eq!(
        files_under(out.client(), &format!("{root}/{name}")).await,
        BTreeMap::from([("cam-a-1.jpg".to_string(), first)]),
        "the published batch is untouched"
    );
    assert!(
        !exists(out.client(), &format!("{root}/{STAGING_DIR}")).await,
        "the losing staging is discarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_in_place_of_a_batch_directory_is_refused_naming_it() {
    let (out, root) = output("out-not-dir").await;
    let name = batch_dir_name("images", 6_000);
    let path = format!("{root}/{name}");
    let mut w = out
        .client()
        .create(&path, hdfs_native::WriteOptions::default())
        .await
        .unwrap();
    w.close().await.unwrap();
    drop(w);
    match out.is_published(&name).await {
        Err(SinkError::NotADirectory { path: named, .. }) => assert_eq!(named, path),
        other => panic!("expected NotADirectory, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_output_url_without_a_namenode_is_refused_naming_the_url() {
    let err = HdfsOutput::connect("hdfs:///images", HdfsOptions::default())
        .await
        .expect_err("no NameNode in the URL");
    let text = err.to_string();
    assert!(text.contains("hdfs:///images"), "{text}");
    let source = std::error::Error::source(&err)
        .map(|s| s.to_string())
        .unwrap_or_default();
    assert!(source.contains("names no NameNode"), "{source}");
}

/// The measurement behind the choice in `src/sink/hdfs.rs`: the same batch (200 files of 64 KiB)
/// staged through hdfs-native directly (create, write, close) and through object_store over
/// hdfs-native-object-store (`put`: tmp file, close, rename, head). Prints both times; asserts
/// only that both ways stored the same bytes.
///
/// `cargo test -p it --test hdfs_output -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn staged_writes_direct_and_through_object_store_compared() {
    use object_store::{path::Path as ObjectPath, ObjectStoreExt, PutPayload};

    const FILES: usize = 200;
    const SIZE: usize = 64 * 1024;
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("out-compare");
    let client = strategies::store::hdfs::build_client(dfs.url(), &HdfsOptions::default()).unwrap();
    let payloads: Vec<Bytes> = (0..FILES)
        .map(|i| Bytes::from(images::bmp_of_size(SIZE, i as u64)))
        .collect();

    let mut direct_times = Vec::new();
    let mut store_times = Vec::new();
    for round in 0..3 {
        let dir = format!("{root}/direct-{round}");
        client.mkdirs(&dir, 0o755, true).await.unwrap();
        let started = Instant::now();
        for (i, bytes) in payloads.iter().enumerate() {
            let mut w = client
                .create(
                    &format!("{dir}/f-{i}.bmp"),
                    hdfs_native::WriteOptions::default().overwrite(true),
                )
                .await
                .unwrap();
            w.write_bytes(bytes.clone()).await.unwrap();
            w.close().await.unwrap();
        }
        direct_times.push(started.elapsed());

        let store = hdfs_native_object_store::HdfsObjectStore::new(client.clone());
        let dir = format!("{root}/object-store-{round}");
        client.mkdirs(&dir, 0o755, true).await.unwrap();
        let started = Instant::now();
        for (i, bytes) in payloads.iter().enumerate() {
            let location = ObjectPath::from(format!("{dir}/f-{i}.bmp"));
            store
                .put(&location, PutPayload::from(bytes.clone()))
                .await
                .unwrap();
        }
        store_times.push(started.elapsed());

        let direct = files_under(&client, &format!("{root}/direct-{round}")).await;
        let via_store = files_under(&client, &format!("{root}/object-store-{round}")).await;
        assert_eq!(direct.len(), FILES);
        assert_eq!(direct, via_store, "both ways store the same files");
    }
    let mib = (FILES * SIZE) as f64 / (1024.0 * 1024.0);
    for (name, times) in [
        ("hdfs-native direct", &direct_times),
        ("object_store put", &store_times),
    ] {
        let secs: Vec<String> = times
            .iter()
            .map(|t| format!("{:.2}", t.as_secs_f64()))
            .collect();
        let best = times.iter().min().unwrap().as_secs_f64();
        println!(
            "{name:>20}: {FILES} files x {} KiB, rounds {} s; best {:.1} ms/file, {:.1} MiB/s",
            SIZE / 1024,
            secs.join(" / "),
            best * 1000.0 / FILES as f64,
            mib / best
        );
    }
}
