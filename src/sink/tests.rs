//! Tests of `write_batch` over the local output: names, analysis, re-runs, crashes, memory.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream;

use super::test_images as img;
use super::*;

fn block(source: &str, seq: u64, bytes: Vec<u8>) -> BatchBlock {
    BatchBlock {
        source: source.to_owned(),
        seq,
        bytes: Bytes::from(bytes),
    }
}

fn blocks_of(blocks: Vec<BatchBlock>) -> impl Stream<Item = Result<BatchBlock, Infallible>> + Send {
    stream::iter(blocks.into_iter().map(Ok))
}

fn sample_blocks() -> Vec<BatchBlock> {
    vec![
        block("cam1", 0, img::png_1x1()),
        block("cam1", 1, img::jpeg_1x1()),
        block("cam2", 5, b"definitely not an image".to_vec()),
        block("cam2", 6, img::gif_1x1()),
    ]
}

/// Every regular file under `dir`, by path relative to `dir`, with its contents.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path
                    .strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn top_level(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn expected_images(batch: &str) -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([
        (format!("{batch}/cam1-0.png"), img::png_1x1()),
        (format!("{batch}/cam1-1.jpg"), img::jpeg_1x1()),
        (
            format!("{batch}/cam2-5.bin"),
            b"definitely not an image".to_vec(),
        ),
        (format!("{batch}/cam2-6.gif"), img::gif_1x1()),
    ])
}

#[test]
fn names_follow_the_spark_convention() {
    assert_eq!(
        batch_dir_name("images", 1_700_000_000_000),
        "images-1700000000000"
    );
    assert_eq!(image_file_name("cam-1", 42, "jpg"), "cam-1-42.jpg");
}

#[test]
fn only_safe_path_components_are_accepted_as_names() {
    for good in ["cam1", "Cam_1.north-2", "a", &"x".repeat(MAX_NAME_LEN)] {
        assert!(validate_name("source id", good).is_ok(), "{good}");
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "_temporary",
        "a/b",
        "../etc",
        "a b",
        "caméra",
        "a\0b",
        &"x".repeat(MAX_NAME_LEN + 1),
    ] {
        let err = validate_name("source id", bad).expect_err(bad);
        assert!(
            matches!(&err, SinkError::InvalidName { kind: "source id", name, .. } if name == bad),
            "{bad}: {err:?}"
        );
    }
}

#[tokio::test]
async fn a_batch_is_published_with_the_right_names_bytes_and_one_analysis_line_per_image() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path().join("out")).unwrap();

    let summary = write_batch(&output, "images", 1000, true, blocks_of(sample_blocks()))
        .await
        .unwrap();

    assert_eq!(summary.outcome, Some(PublishOutcome::Published));
    assert_eq!(summary.files, 4);
    assert_eq!(summary.invalid, 1);
    let image_bytes: u64 = sample_blocks().iter().map(|b| b.bytes.len() as u64).sum();
    assert_eq!(summary.bytes, image_bytes);

    let mut files = tree(output.root());
    let analysis = files
        .remove("images-1000/_analysis.jsonl")
        .expect("the analysis file is published with the batch");
    assert_eq!(files, expected_images("images-1000"));
    assert_eq!(top_level(output.root()), vec!["images-1000".to_owned()]);

    let text = String::from_utf8(analysis).unwrap();
    let reports: Vec<ImageReport> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(reports.len(), 4);
    let names: Vec<&str> = reports.iter().map(|r| r.file.as_str()).collect();
    assert_eq!(
        names,
        ["cam1-0.png", "cam1-1.jpg", "cam2-5.bin", "cam2-6.gif"]
    );
    for (report, block) in reports.iter().zip(sample_blocks()) {
        assert_eq!(
            (report.source.as_str(), report.seq),
            (block.source.as_str(), block.seq)
        );
        assert_eq!(report.crc32, crc32fast::hash(&block.bytes));
    }
    assert_eq!(
        reports.iter().map(|r| r.valid).collect::<Vec<_>>(),
        [true, true, false, true]
    );
}

#[tokio::test]
async fn without_analysis_only_the_images_are_published() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();

    let summary = write_batch(&output, "images", 7, false, blocks_of(sample_blocks()))
        .await
        .unwrap();

    assert_eq!(summary.invalid, 0);
    assert_eq!(tree(output.root()), expected_images("images-7"));
}

#[tokio::test]
async fn a_retry_that_finds_its_batch_published_fsyncs_the_output_root_before_it_reports_so() {
    // The run that renamed the batch may have died before its fsync of the output root; the retry
    // that finds the directory is what gets acknowledged, so it must make the rename durable.
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let root = output.root().to_path_buf();
    write_batch(&output, "images", 3000, false, blocks_of(sample_blocks()))
        .await
        .unwrap();
    let synced_root = || {
        super::local::SYNCED_DIRS
            .lock()
            .unwrap()
            .iter()
            .filter(|d| **d == root)
            .count()
    };
    let before = synced_root();
    let summary = write_batch(&output, "images", 3000, false, blocks_of(sample_blocks()))
        .await
        .unwrap();
    assert_eq!(summary.outcome, Some(PublishOutcome::AlreadyPublished));
    assert!(
        synced_root() > before,
        "the output root {} was not fsynced by the retry that reported AlreadyPublished",
        root.display()
    );
}

#[tokio::test]
async fn rerunning_a_published_batch_writes_nothing_and_reports_already_published() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    write_batch(&output, "images", 2000, true, blocks_of(sample_blocks()))
        .await
        .unwrap();
    let before = tree(output.root());
    let mtimes = |root: &Path| -> Vec<std::time::SystemTime> {
        before
            .keys()
            .map(|f| std::fs::metadata(root.join(f)).unwrap().modified().unwrap())
            .collect()
    };
    let mtimes_before = mtimes(output.root());

    // The re-run brings different bytes under the same names: they must not land.
    let polled = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&polled);
    let rerun = stream::poll_fn(move |_| {
        flag.store(true, Ordering::SeqCst);
        std::task::Poll::Ready(Some(Ok::<_, Infallible>(block("cam1", 0, vec![0; 10]))))
    });
    let summary = write_batch(&output, "images", 2000, true, rerun)
        .await
        .unwrap();

    assert_eq!(summary.outcome, Some(PublishOutcome::AlreadyPublished));
    assert_eq!((summary.files, summary.bytes, summary.invalid), (0, 0, 0));
    assert!(
        !polled.load(Ordering::SeqCst),
        "no block is read for a published batch"
    );
    assert_eq!(tree(output.root()), before);
    assert_eq!(mtimes(output.root()), mtimes_before);
    assert_eq!(top_level(output.root()), vec!["images-2000".to_owned()]);
}

#[tokio::test]
async fn a_crash_mid_staging_is_repaired_by_the_rerun_with_no_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();

    // The crashed run staged a wrong version of one file and a file the batch does not contain.
    let mut staged = output.stage("images-3000", 0).await.unwrap();
    staged
        .put("cam1-0.png", Bytes::from_static(b"torn"))
        .await
        .unwrap();
    staged
        .put("stray-9.bin", Bytes::from_static(b"not in this batch"))
        .await
        .unwrap();
    drop(staged);
    let staged_dirs: Vec<String> = std::fs::read_dir(
        dir.path()
            .join(STAGING_DIR)
            .join(super::DEFAULT_STAGING_OWNER)
            .join(staging_epoch_dir(0)),
    )
    .unwrap()
    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
    .collect();
    assert!(
        staged_dirs.len() == 1 && staged_dirs[0].starts_with("images-3000--"),
        "{staged_dirs:?}"
    );
    assert!(!output.is_published("images-3000").await.unwrap());

    let summary = write_batch(&output, "images", 3000, false, blocks_of(sample_blocks()))
        .await
        .unwrap();

    assert_eq!(summary.outcome, Some(PublishOutcome::Published));
    assert_eq!(tree(output.root()), expected_images("images-3000"));
    assert_eq!(top_level(output.root()), vec!["images-3000".to_owned()]);
}

#[tokio::test]
async fn clean_staging_removes_every_leftover_staging_directory() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    assert_eq!(output.clean_staging().await.unwrap(), 0, "nothing to clean");

    for batch in ["images-1", "images-2"] {
        let mut staged = output.stage(batch, 0).await.unwrap();
        staged
            .put("cam-1.bin", Bytes::from_static(b"partial"))
            .await
            .unwrap();
        drop(staged);
    }
    std::fs::write(
        dir.path()
            .join(STAGING_DIR)
            .join(super::DEFAULT_STAGING_OWNER)
            .join("junk"),
        b"x",
    )
    .unwrap();
    // A published batch is not staging and must survive the clean-up.
    write_batch(&output, "images", 0, false, blocks_of(sample_blocks()))
        .await
        .unwrap();

    assert_eq!(output.clean_staging().await.unwrap(), 3);
    assert_eq!(top_level(output.root()), vec!["images-0".to_owned()]);
    assert_eq!(tree(output.root()), expected_images("images-0"));
    assert_eq!(output.clean_staging().await.unwrap(), 0);
}

/// The same owner at a newer epoch (a node primary again while a superseded writer of its older
/// epoch may still be finishing) stages the same batch name without touching the older epoch's
/// staging; only the owner's start-up clean-up, when nothing of it can be in flight, clears both.
#[tokio::test]
async fn staging_at_a_newer_epoch_leaves_the_older_epochs_staging_of_the_same_batch_alone() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path())
        .unwrap()
        .with_owner("a")
        .unwrap();
    let mut older = output.stage("images-8000", 1).await.unwrap();
    older
        .put("cam-1.bin", Bytes::from_static(b"epoch 1, mid-batch"))
        .await
        .unwrap();
    let owner_dir = dir.path().join(STAGING_DIR).join("a");

    let mut newer = output.stage("images-8000", 2).await.unwrap();
    newer
        .put("cam-2.bin", Bytes::from_static(b"epoch 2"))
        .await
        .unwrap();
    drop(newer);

    assert_eq!(
        older.publish().await.unwrap(),
        PublishOutcome::Published,
        "the older epoch's writer still finds its staging whole after the newer epoch staged the batch"
    );
    let epochs: Vec<String> = std::fs::read_dir(&owner_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        epochs,
        vec!["e2".to_owned()],
        "epoch 1's emptied staging is gone"
    );
    let files: Vec<String> = tree(output.root()).into_keys().collect();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        files[0].starts_with("_temporary/a/e2/images-8000--") && files[0].ends_with("/cam-2.bin"),
        "{files:?}"
    );
    assert_eq!(files[1], "images-8000/cam-1.bin");
    assert_eq!(
        output.clean_staging().await.unwrap(),
        1,
        "epoch 2's leftover"
    );
    assert_eq!(top_level(output.root()), vec!["images-8000".to_owned()]);
}

/// A node that was replaced but is still alive (cut off, not killed) may be writing or renaming its
/// staging while its successor starts: the successor's clean-up must not touch it.
#[tokio::test]
async fn clean_staging_leaves_another_owners_staging_alone_and_that_owner_still_publishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let old = LocalOutput::new(dir.path())
        .unwrap()
        .with_owner("old")
        .unwrap();
    let new = LocalOutput::new(dir.path())
        .unwrap()
        .with_owner("new")
        .unwrap();
    let mut staged = old.stage("images-7000", 0).await.unwrap();
    staged
        .put("cam-1.bin", Bytes::from_static(b"old primary, mid-batch"))
        .await
        .unwrap();
    let mut own_leftover = new.stage("images-6000", 0).await.unwrap();
    own_leftover
        .put("cam-0.bin", Bytes::from_static(b"crashed"))
        .await
        .unwrap();
    drop(own_leftover);

    assert_eq!(
        new.clean_staging().await.unwrap(),
        1,
        "only its own leftover"
    );
    assert_eq!(
        staged.publish().await.unwrap(),
        PublishOutcome::Published,
        "the other owner's staging was left whole"
    );
    assert_eq!(
        tree(old.root()).into_keys().collect::<Vec<_>>(),
        vec!["images-7000/cam-1.bin".to_owned()],
        "the batch and nothing else; the emptied staging is gone"
    );
    assert_eq!(top_level(old.root()), vec!["images-7000".to_owned()]);
}

#[tokio::test]
async fn each_block_is_on_disk_before_the_next_one_is_pulled() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let staging_root = dir
        .path()
        .join(STAGING_DIR)
        .join(super::DEFAULT_STAGING_OWNER)
        .join(staging_epoch_dir(0));
    let staged_when_pulled = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&staged_when_pulled);

    // A lazy producer: block k is made only when the sink asks for it, and it records how many
    // images were already in the staging directory at that moment.
    let blocks = stream::unfold(0u64, move |k| {
        let seen = Arc::clone(&seen);
        let staging_root = staging_root.clone();
        async move {
            if k == 20 {
                return None;
            }
            // This attempt's staging directory: `_temporary/<owner>/e0/images-4000--<random>`.
            let on_disk: usize = std::fs::read_dir(&staging_root)
                .map(|d| {
                    d.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with("images-4000--"))
                        .map(|e| std::fs::read_dir(e.path()).map(|f| f.count()).unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0);
            seen.lock().unwrap().push(on_disk);
            Some((
                Ok::<_, Infallible>(block("cam", k, vec![k as u8; 4096])),
                k + 1,
            ))
        }
    });
    let summary = write_batch(&output, "images", 4000, false, blocks)
        .await
        .unwrap();

    assert_eq!(summary.files, 20);
    let expected: Vec<usize> = (0..20).collect();
    assert_eq!(*staged_when_pulled.lock().unwrap(), expected);
}

#[tokio::test]
async fn publishing_never_replaces_an_existing_destination_even_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let mut staged = output.stage("images-5000", 0).await.unwrap();
    staged
        .put("cam-1.png", Bytes::from(img::png_1x1()))
        .await
        .unwrap();
    // Another writer published (an empty batch) between our check and our rename.
    std::fs::create_dir(dir.path().join("images-5000")).unwrap();

    let outcome = staged.publish().await.unwrap();

    assert_eq!(outcome, PublishOutcome::AlreadyPublished);
    assert!(tree(output.root()).is_empty(), "the empty batch was kept");
    assert_eq!(top_level(output.root()), vec!["images-5000".to_owned()]);
}

#[tokio::test]
async fn a_file_in_the_way_of_a_batch_directory_is_an_error_not_an_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    std::fs::write(dir.path().join("images-6000"), b"precious").unwrap();

    let err = write_batch(&output, "images", 6000, false, blocks_of(sample_blocks()))
        .await
        .expect_err("a file occupies the batch name");

    assert!(
        matches!(err, SinkError::NotADirectory { ref path, .. } if path.ends_with("images-6000")),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("images-6000")).unwrap(),
        b"precious"
    );
}

#[tokio::test]
async fn an_invalid_source_id_is_rejected_and_nothing_is_published() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path().join("out")).unwrap();
    let blocks = vec![
        block("cam1", 0, img::png_1x1()),
        block("../evil", 1, img::png_1x1()),
    ];

    let err = write_batch(&output, "images", 7000, false, blocks_of(blocks))
        .await
        .expect_err("the second source id is a path");

    assert!(
        matches!(err, SinkError::InvalidName { ref name, .. } if name == "../evil"),
        "{err:?}"
    );
    assert!(!output.is_published("images-7000").await.unwrap());
    assert!(!dir.path().join("evil-1.png").exists());
    let bad_prefix = write_batch(&output, "../up", 1, false, blocks_of(Vec::new())).await;
    assert!(matches!(
        bad_prefix,
        Err(SinkError::InvalidName { kind: "prefix", .. })
    ));
}

#[tokio::test]
async fn a_block_that_reaches_the_batch_twice_lands_once() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let mut blocks = sample_blocks();
    blocks.insert(2, block("cam1", 0, img::png_1x1()));

    let summary = write_batch(&output, "images", 8000, true, blocks_of(blocks))
        .await
        .unwrap();

    assert_eq!(summary.files, 4);
    let mut files = tree(output.root());
    let analysis = files.remove("images-8000/_analysis.jsonl").unwrap();
    assert_eq!(files, expected_images("images-8000"));
    assert_eq!(String::from_utf8(analysis).unwrap().lines().count(), 4);
}

#[tokio::test]
async fn a_failing_block_stream_publishes_nothing_and_a_rerun_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let failing = stream::iter(vec![
        Ok(block("cam1", 0, img::png_1x1())),
        Err(std::io::Error::other("WAL read failed")),
    ]);

    let err = write_batch(&output, "images", 9000, false, failing)
        .await
        .expect_err("the stream failed");

    assert!(
        matches!(err, SinkError::Blocks { ref batch, .. } if batch == "images-9000"),
        "{err:?}"
    );
    assert!(!output.is_published("images-9000").await.unwrap());

    write_batch(&output, "images", 9000, false, blocks_of(sample_blocks()))
        .await
        .unwrap();
    assert_eq!(tree(output.root()), expected_images("images-9000"));
    assert_eq!(top_level(output.root()), vec!["images-9000".to_owned()]);
}

#[tokio::test]
async fn an_empty_batch_stages_claims_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let claimed = std::sync::atomic::AtomicBool::new(false);

    let summary = write_batch_claimed(
        &output,
        &Layout::flat("images"),
        10,
        0,
        true,
        blocks_of(Vec::new()),
        || async {
            claimed.store(true, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        },
    )
    .await
    .unwrap();

    assert_eq!(summary.outcome, None);
    assert_eq!(summary.files, 0);
    assert!(!claimed.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(tree(output.root()), BTreeMap::new());
}

#[tokio::test]
async fn a_void_batch_takes_a_free_name_and_never_an_existing_batch() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    write_batch(&output, "images", 20, false, blocks_of(sample_blocks()))
        .await
        .unwrap();

    let taken = void_batch(&output, "images-20", 0, "test").await.unwrap();
    assert_eq!(taken, PublishOutcome::AlreadyPublished);
    assert!(!output.is_void("images-20").await.unwrap());
    assert_eq!(tree(output.root()), expected_images("images-20"));

    let free = void_batch(
        &output,
        "images-30",
        0,
        "claimed by a node that was replaced",
    )
    .await
    .unwrap();
    assert_eq!(free, PublishOutcome::Published);
    assert!(output.is_void("images-30").await.unwrap());
    // The claimant publishing later finds the name taken and writes nothing.
    let late = write_batch(&output, "images", 30, false, blocks_of(sample_blocks()))
        .await
        .unwrap();
    assert_eq!(late.outcome, Some(PublishOutcome::AlreadyPublished));
    assert!(output.is_void("images-30").await.unwrap());
}

#[tokio::test]
async fn a_claim_that_fails_leaves_the_batch_unpublished() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    let err = write_batch_claimed(
        &output,
        &Layout::flat("images"),
        40,
        0,
        false,
        blocks_of(sample_blocks()),
        || async {
            Err(SinkError::InvalidName {
                kind: "test",
                name: "fenced".into(),
                reason: "the claim was lost",
            })
        },
    )
    .await;
    assert!(err.is_err());
    assert!(!output.is_published("images-40").await.unwrap());
}

#[test]
fn the_local_output_is_described_by_its_absolute_url() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a").join("..").join("out");
    let output = LocalOutput::new(&nested).unwrap();
    let canonical = std::fs::canonicalize(dir.path().join("out")).unwrap();
    assert_eq!(output.root(), canonical);
    assert_eq!(output.describe(), format!("file://{}", canonical.display()));
}

#[cfg(feature = "failpoints")]
#[tokio::test]
async fn a_fault_just_before_the_rename_publishes_nothing_and_the_rerun_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let output = LocalOutput::new(dir.path()).unwrap();
    // Scoped to this test's batch, so concurrent tests are unaffected.
    fail::cfg("sink::publish::fault", "return(images-11000)").unwrap();
    let err = write_batch(&output, "images", 11000, true, blocks_of(sample_blocks())).await;
    fail::remove("sink::publish::fault");

    assert!(
        matches!(
            err,
            Err(SinkError::Io {
                op: "publish batch",
                ..
            })
        ),
        "{err:?}"
    );
    assert!(!output.is_published("images-11000").await.unwrap());

    write_batch(&output, "images", 11000, false, blocks_of(sample_blocks()))
        .await
        .unwrap();
    assert_eq!(tree(output.root()), expected_images("images-11000"));
    assert_eq!(top_level(output.root()), vec!["images-11000".to_owned()]);
}
