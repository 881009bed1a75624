//! Hadoop's own readers (it/readers, through `it::readers`) on files written by Hadoop's and
//! parquet-mr's own writers, on MiniDFS and in a local directory; their failure on corrupt files; and a
//! MiniDFSCluster started with Hadoop configuration keys.
//!
//! The reference files come from Hadoop's `SequenceFile.Writer` and parquet-mr's example writer, so
//! these tests check the reading side alone: that a test reading the project's packed output through
//! these functions sees what Hadoop sees, and fails when Hadoop would.
//!
//! Tests on the process-wide [`MiniDfs::shared`] work in their own directories and run in parallel;
//! the limit test starts a one-DataNode cluster of its own. No timing is asserted.

use hdfs_native::{Client, ClientBuilder, WriteOptions};
use it::minidfs::{unique_dir, MiniDfs};
use it::readers::{
    crc32, read_parquet_files, read_sequence_files, read_with_fs_text, sample_bytes, sample_name,
    sequence_file_info, write_parquet_file, write_sequence_file, ParquetRow, SeqRecord,
};

const MAX_ITEMS_KEY: &str = "dfs.namenode.fs-limits.max-directory-items";

fn client(dfs: &MiniDfs) -> Client {
    ClientBuilder::new()
        .with_url(dfs.url())
        .build()
        .unwrap_or_else(|e| panic!("client for {}: {e}", dfs.url()))
}

/// The records Hadoop's writer wrote for `write_sequence_file(file, n)`.
fn expected_records(file: &str, n: usize) -> Vec<SeqRecord> {
    (0..n)
        .map(|i| SeqRecord {
            file: file.to_string(),
            name: sample_name(i),
            length: i as u64,
            crc32: crc32(&sample_bytes(i)),
        })
        .collect()
}

/// The rows parquet-mr's example writer wrote for `write_parquet_file(file, n)`.
fn expected_rows(file: &str, n: usize) -> Vec<ParquetRow> {
    (0..n)
        .map(|i| {
            let crc = crc32(&sample_bytes(i));
            let even = i % 2 == 0;
            ParquetRow {
                file: file.to_string(),
                name: sample_name(i),
                length: i as u64,
                crc32: crc,
                source: format!("src-{}", i % 3),
                seq: i as i64,
                batch_ms: 1_700_000_000_000 + i as i64,
                format: "bin".into(),
                width: even.then_some(i as i32),
                height: even.then_some(2 * i as i32),
                crc32_column: i64::from(crc),
            }
        })
        .collect()
}

fn local(dir: &tempfile::TempDir, rel: &str) -> String {
    dir.path().join(rel).display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_max_directory_items_32_takes_32_entries_in_a_directory_and_refuses_the_33rd(
) {
    let dfs = MiniDfs::start_with(1, &[(MAX_ITEMS_KEY, "32")]).unwrap();
    let client = client(&dfs);
    client.mkdirs("/limited", 0o755, true).await.unwrap();
    for i in 0..31 {
        client
            .mkdirs(&format!("/limited/dir-{i:02}"), 0o755, false)
            .await
            .unwrap_or_else(|e| panic!("entry {} of 32: {e}", i + 1));
    }
    // The 32nd entry a file, so that the limit is seen to count entries, not directories.
    let mut w = client
        .create("/limited/file-31", WriteOptions::default())
        .await
        .expect("entry 32 of 32");
    w.close().await.unwrap();
    assert_eq!(
        client.list_status("/limited", false).await.unwrap().len(),
        32
    );

    let refused_dir = client.mkdirs("/limited/dir-32", 0o755, false).await;
    let refused_file = client
        .create("/limited/file-32", WriteOptions::default())
        .await
        .map(drop);
    for (what, refused) in [("directory", refused_dir), ("file", refused_file)] {
        let err = refused
            .expect_err(&format!("a 33rd entry ({what}) in /limited"))
            .to_string();
        assert!(
            err.contains("MaxDirectoryItemsExceededException") && err.contains("limit=32"),
            "the 33rd entry ({what}) should be refused naming the limit: {err}"
        );
    }
    assert_eq!(
        client.list_status("/limited", false).await.unwrap().len(),
        32
    );
    // Other directories are not affected.
    client.mkdirs("/elsewhere/dir", 0o755, true).await.unwrap();
}

#[test]
fn a_cluster_asked_for_zero_max_directory_items_does_not_start_and_says_which_key() {
    // Hadoop's FSDirectory accepts 1..=6,400,000 for this key.
    let err = MiniDfs::start_with(1, &[(MAX_ITEMS_KEY, "0")])
        .expect_err("max-directory-items = 0 should be refused")
        .to_string();
    assert!(err.contains(MAX_ITEMS_KEY), "{err}");
}

#[test]
fn a_configuration_key_with_an_equals_sign_is_refused_before_any_jvm_starts() {
    let err = MiniDfs::start_with(1, &[("a=b", "1")])
        .expect_err("a key with '=' cannot be passed as KEY=VALUE")
        .to_string();
    assert!(err.contains("a=b"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_files_written_by_hadoop_to_minidfs_read_back_through_the_reader_and_fs_text() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("readers-seq");
    // 600 records of 0..599 bytes: about 180 KB, past Hadoop's 100 KB sync interval.
    let big = format!("{}{root}/batch-1/part-00000.seq", dfs.url());
    let small = format!("{}{root}/batch-2/part-00000.seq", dfs.url());
    write_sequence_file(&big, 600).unwrap();
    write_sequence_file(&small, 3).unwrap();

    let mut expected = expected_records(&big, 600);
    expected.extend(expected_records(&small, 3));
    let dir = vec![format!("{}{root}", dfs.url())];
    assert_eq!(read_sequence_files(&dir).unwrap(), expected);
    assert_eq!(read_with_fs_text(&dir).unwrap(), expected);
    // A file named directly reads the same as through its directory.
    assert_eq!(
        read_sequence_files(std::slice::from_ref(&small)).unwrap(),
        expected_records(&small, 3)
    );

    let info = sequence_file_info(&dir).unwrap();
    assert_eq!(info.len(), 2, "{info:?}");
    assert_eq!(info[0].file, big);
    assert!(info.iter().all(|i| i.compression == "none"), "{info:?}");
    assert!(
        info[0].syncs >= 1,
        "180 KB of records with no sync marker: {info:?}"
    );
    assert_eq!(info[1].syncs, 0, "{info:?}");
    assert_eq!(
        info[0].metadata.get("written-by").map(String::as_str),
        Some("hadoop SequenceFile.Writer")
    );

    // The header as hdfs-native reads it: magic SEQ, version 6.
    let client = client(dfs);
    let reader = client
        .read(&format!("{root}/batch-1/part-00000.seq"))
        .await
        .unwrap();
    let head = reader.read_range(0, 4).await.unwrap();
    assert_eq!(&head[..], b"SEQ\x06");
}

#[test]
fn sequence_files_in_a_local_directory_read_back_through_the_reader_and_fs_text_without_staged_ones(
) {
    let dir = tempfile::tempdir().unwrap();
    let a = local(&dir, "out/b/part-00001.seq");
    let b = local(&dir, "out/a/part-00000.seq");
    write_sequence_file(&a, 5).unwrap();
    write_sequence_file(&b, 260).unwrap();
    // Path order: out/a before out/b, whatever the order of writing.
    let mut expected = expected_records(&b, 260);
    expected.extend(expected_records(&a, 5));
    // Staging and hidden files are skipped below a directory, as Hadoop's input formats skip them.
    let staged = local(&dir, "out/_temporary/0/part-00000.seq");
    write_sequence_file(&staged, 2).unwrap();
    write_sequence_file(&local(&dir, "out/a/.part-00002.seq"), 2).unwrap();
    let out = vec![local(&dir, "out")];
    assert_eq!(read_sequence_files(&out).unwrap(), expected);
    assert_eq!(read_with_fs_text(&out).unwrap(), expected);
    // Named directly, a staged file is read.
    assert_eq!(
        read_sequence_files(std::slice::from_ref(&staged)).unwrap(),
        expected_records(&staged, 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parquet_written_by_parquet_mr_reads_back_with_every_column_on_minidfs_and_locally() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("readers-parquet");
    let remote = format!("{}{root}/batch-1/part-00000.parquet", dfs.url());
    write_parquet_file(&remote, 7).unwrap();
    let rows = read_parquet_files(&[format!("{}{root}", dfs.url())]).unwrap();
    assert_eq!(rows, expected_rows(&remote, 7));
    assert!(rows.iter().any(|r| r.width.is_none()) && rows.iter().any(|r| r.width.is_some()));

    let dir = tempfile::tempdir().unwrap();
    let file = local(&dir, "part-00000.parquet");
    write_parquet_file(&file, 4).unwrap();
    assert_eq!(
        read_parquet_files(&[dir.path().display().to_string()]).unwrap(),
        expected_rows(&file, 4)
    );
}

#[test]
fn a_garbage_sequence_file_fails_every_reader_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = local(&dir, "part-00000.seq");
    std::fs::write(&garbage, b"this is not a SequenceFile\tnor hex\n").unwrap();
    let paths = vec![garbage.clone()];

    let err = format!("{:#}", read_sequence_files(&paths).unwrap_err());
    assert!(
        err.contains(&garbage) && err.contains("not a SequenceFile"),
        "{err}"
    );
    // hadoop fs -text prints a file without a known magic as it is: its lines do not parse back.
    let err = format!("{:#}", read_with_fs_text(&paths).unwrap_err());
    assert!(err.contains(&garbage) && err.contains("hex"), "{err}");
    let err = format!("{:#}", read_parquet_files(&paths).unwrap_err());
    assert!(err.contains(&garbage), "{err}");
}

#[test]
fn a_truncated_sequence_file_fails_both_readers_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let whole = local(&dir, "whole/part-00000.seq");
    write_sequence_file(&whole, 100).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    // Cut in the middle of a record (no checksum file beside it: Hadoop's own reader must notice).
    let cut = local(&dir, "cut.seq");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let paths = vec![cut.clone()];

    let err = format!("{:#}", read_sequence_files(&paths).unwrap_err());
    assert!(err.contains(&cut), "{err}");
    let err = format!("{:#}", read_with_fs_text(&paths).unwrap_err());
    assert!(err.contains(&cut), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_sequence_file_on_minidfs_fails_the_reader_naming_its_url() {
    let dfs = MiniDfs::shared().unwrap();
    let root = unique_dir("readers-garbage");
    let client = client(dfs);
    client.mkdirs(&root, 0o755, true).await.unwrap();
    let mut w = client
        .create(&format!("{root}/part-00000.seq"), WriteOptions::default())
        .await
        .unwrap();
    w.write_bytes(bytes::Bytes::from_static(
        b"SEQ\x06garbage after a good magic",
    ))
    .await
    .unwrap();
    w.close().await.unwrap();
    let url = format!("{}{root}/part-00000.seq", dfs.url());
    let err = format!(
        "{:#}",
        read_sequence_files(&[format!("{}{root}", dfs.url())]).unwrap_err()
    );
    assert!(err.contains(&url), "{err}");
    let err = format!(
        "{:#}",
        read_with_fs_text(std::slice::from_ref(&url)).unwrap_err()
    );
    assert!(err.contains(&url), "{err}");
}

#[test]
fn a_directory_without_part_files_or_a_missing_path_is_an_error_not_zero_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    let empty = vec![dir.path().display().to_string()];
    let err = format!("{:#}", read_sequence_files(&empty).unwrap_err());
    assert!(err.contains("without any *.seq"), "{err}");
    let err = format!("{:#}", read_parquet_files(&empty).unwrap_err());
    assert!(err.contains("without any *.parquet"), "{err}");
    let missing = local(&dir, "missing.seq");
    let err = format!(
        "{:#}",
        read_with_fs_text(std::slice::from_ref(&missing)).unwrap_err()
    );
    assert!(
        err.contains(&missing) && err.contains("no such file"),
        "{err}"
    );
}
