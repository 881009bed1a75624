//! `hdfs-ingest bench recovery --runs 1 --quick --carry all` as a child process: every strategy's
//! primary is SIGKILLed mid-stream and the bench verifies every run (exit 0 = no released image lost or
//! duplicated). (`--carry all`: passive-standby checkpoints every uncommitted block, so its checkpoint
//! store holds blocks by construction; the demo runs the default, `lagging`.) Only orderings that
//! hold by construction, with a wide margin, are asserted — the times themselves are the benchmark's
//! to report, not a test's to judge. The same bench runs once more with checkpoints and output on
//! HDFS (the shared MiniDFS, or `HDFS_URL`), and once with `--fault partition`: the primary is cut off
//! (its network link down, every node on a host of its own) instead of killed, and must fence itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use it::minidfs::{unique_dir, MiniDfs};
use serde_json::Value;

const STRATEGIES: [&str; 4] = [
    "none",
    "passive-standby",
    "active-standby",
    "upstream-backup",
];

/// Runs `bench recovery --runs 1 --quick <extra> --out <dir>/bench` and checks that it succeeded and
/// that every strategy's run was verified: nothing released lost, duplicated or corrupt. Returns the
/// report (recovery.json) and the bench's output directory.
fn bench_verifies_every_strategy(extra: &[&str], dir: &Path) -> anyhow::Result<(Value, PathBuf)> {
    let out = dir.join("bench");
    let o = Command::new(it::bin())
        .args(["bench", "recovery", "--runs", "1", "--quick"])
        .args(extra)
        .arg("--out")
        .arg(&out)
        .output()?;
    println!("{}", String::from_utf8_lossy(&o.stdout));
    assert!(
        o.status.success(),
        "bench recovery {extra:?} failed ({}); stderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let report: Value = serde_json::from_str(&std::fs::read_to_string(out.join("recovery.json"))?)?;
    let runs = report["runs"].as_array().expect("runs");
    for s in STRATEGIES {
        let r = runs
            .iter()
            .find(|r| r["strategy"] == s)
            .unwrap_or_else(|| panic!("no run of {s}"));
        let verify = r["verify"].as_str().expect("verify summary");
        assert!(
            verify.contains(" 0 lost, 0 duplicated, 0 corrupt") && verify.ends_with("OK"),
            "{s}: {verify}"
        );
        assert!(r["images_released"].as_u64().unwrap() > 0, "{s}");
    }
    Ok((report, out))
}

#[test]
fn the_recovery_bench_verifies_every_strategy_after_a_kill_and_shows_the_costs_they_are_built_with(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (report, out) = bench_verifies_every_strategy(&["--carry", "all"], dir.path())?;
    let summary: BTreeMap<&str, &Value> = report["summary"]
        .as_array()
        .expect("summary")
        .iter()
        .map(|s| (s["strategy"].as_str().expect("strategy"), s))
        .collect();
    let p50 = |s: &str, key: &str| -> f64 {
        summary[s][key]["p50"]
            .as_f64()
            .unwrap_or_else(|| panic!("{s}: no {key}"))
    };

    // Mirror mode writes every block to both nodes while both are up: twice none's bytes.
    let active = p50("active-standby", "network_per_mb_until_kill");
    let none = p50("none", "network_per_mb_until_kill");
    assert!(
        active >= 1.7 * none,
        "active-standby sent {active:.2} MB per MB of images before the kill, none {none:.2}"
    );
    // passive-standby puts the blocks it has not committed into the checkpoint store; none's store
    // only ever holds small JSON checkpoints and claims.
    let passive = p50("passive-standby", "store_peak_mb");
    let none = p50("none", "store_peak_mb");
    assert!(
        passive > 1.0 && passive > 10.0 * none,
        "checkpoint store peak: passive-standby {passive:.3} MB, none {none:.3} MB"
    );

    let md = std::fs::read_to_string(out.join("recovery.md"))?;
    let svg = std::fs::read_to_string(out.join("recovery.svg"))?;
    for s in STRATEGIES {
        assert!(
            md.contains(&format!("| {s} |")),
            "{s} missing from the table"
        );
        assert!(svg.contains(s), "{s} missing from the chart");
    }
    println!("{md}");
    Ok(())
}

#[test]
fn the_recovery_bench_with_checkpoints_and_output_on_hdfs_verifies_every_strategy_after_a_kill(
) -> anyhow::Result<()> {
    // Small images at a low rate: a debug build writing to a MiniDFS with three replicas in one JVM on
    // two cores manages a few MB/s, and a backlog would only make every new primary commit it first.
    let dfs = MiniDfs::shared()?;
    let url = format!("{}{}", dfs.url(), unique_dir("bench-recovery"));
    let dir = tempfile::tempdir()?;
    let store = ["--checkpoint-store", url.as_str()];
    let small = ["--rate", "50", "--size", "16KiB"];
    bench_verifies_every_strategy(&[&small[..], &store[..]].concat(), dir.path())?;
    Ok(())
}

#[test]
fn the_recovery_bench_with_a_partition_verifies_every_strategy_after_its_primary_is_cut_off(
) -> anyhow::Result<()> {
    if it::net::for_test(&["probe"]).is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (report, _) = bench_verifies_every_strategy(&["--fault", "partition"], dir.path())?;
    assert_eq!(report["fault"], "partition");
    let runs = report["runs"].as_array().expect("runs");
    for s in ["passive-standby", "active-standby", "upstream-backup"] {
        let r = runs.iter().find(|r| r["strategy"] == s).expect("a run");
        assert!(
            r["detection_ms"].as_f64().unwrap_or(0.0) > 0.0,
            "{s}: the standby detected the cut-off primary and took over: {r}"
        );
    }
    Ok(())
}
