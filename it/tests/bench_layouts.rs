//! `hdfs-ingest bench hdfs` with tiny batches against the shared MiniDFS (or `HDFS_URL`), as a child
//! process: it must exit 0 (which it does only if every batch read back matched what was written) and
//! report a row per layout and for the plain file, with the NameNode objects each created. Only what
//! holds by construction is asserted — one file per image for `files`, a few part files for the
//! packed layouts — never a speed, which is the benchmark's to report, not a test's to judge.

use it::minidfs::{unique_dir, MiniDfs};
use serde_json::Value;

#[test]
fn the_hdfs_bench_writes_every_layout_reads_it_back_and_counts_its_namenode_objects(
) -> anyhow::Result<()> {
    let dfs = MiniDfs::shared()?;
    let url = format!("{}{}", dfs.url(), unique_dir("bench-layouts"));
    let dir = tempfile::tempdir()?;
    let out = dir.path().join("bench");
    let o = std::process::Command::new(it::bin())
        .args(["bench", "hdfs", "--url", &url, "--rounds", "2"])
        .args(["--sizes", "4KiB,16KiB", "--batch-images", "60"])
        .args(["--files-images", "20", "--checkpoints", "3", "--out"])
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()?;
    println!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        o.status.success(),
        "bench hdfs failed ({}); stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("hdfs.json"))?)?;
    let rows = report["summary"].as_array().expect("summary");
    let row = |writer: &str, size: u64| {
        rows.iter()
            .find(|r| r["writer"] == writer && r["size"].as_u64() == Some(size))
            .unwrap_or_else(|| panic!("no row for {writer} at {size} bytes"))
    };
    for size in [4096, 16384] {
        let files = row("files", size);
        assert_eq!(files["images_per_batch"], 20);
        assert_eq!(files["verified"], true, "{files}");
        // One file and one block per image, and `_analysis.jsonl` (one file, one block) per batch.
        assert_eq!(
            files["objects_per_10k"].as_f64().unwrap().round(),
            (2.0 * 21.0 * 1e4 / 20.0_f64).round(),
            "{files}"
        );
        for packed in ["sequencefile", "parquet"] {
            let r = row(packed, size);
            assert_eq!(r["images_per_batch"], 60, "{r}");
            assert_eq!(r["verified"], true, "{r}");
            // One part file of one block, `_analysis.jsonl`: 4 objects per batch of 60.
            let objects = r["objects_per_10k"].as_f64().unwrap();
            assert!(
                objects > 0.0 && (objects - 4.0 * 1e4 / 60.0).abs() < 1.0,
                "{packed} at {size}: {objects} objects per 10k images"
            );
            assert!(r["images_per_s"]["p50"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["mb_per_s_vs_plain"].as_f64().unwrap() > 0.0, "{r}");
        }
        let plain = row("plain", size);
        assert_eq!(plain["verified"], true, "{plain}");
        assert_eq!(plain["mb_per_s_vs_plain"].as_f64(), Some(1.0));
    }
    let batches = report["batches"].as_array().expect("batches");
    assert_eq!(batches.len(), 2 * 2 * 4, "rounds × sizes × writers");
    let md = std::fs::read_to_string(out.join("hdfs.md"))?;
    for name in [
        "| files |",
        "| sequencefile |",
        "| parquet |",
        "| plain hdfs-native, one file |",
        "| hdfs |",
    ] {
        assert!(md.contains(name), "{name} missing from hdfs.md:\n{md}");
    }
    Ok(())
}
