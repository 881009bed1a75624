//! The primary-kill scenario of `failover.rs` with the checkpoint store and the output on a real HDFS
//! (the shared MiniDFSCluster, or `HDFS_URL`): fewer kills (3, `IT_HDFS_KILLS` for more), same checks —
//! every released image exactly once and byte for byte in the HDFS output, and a new image committed
//! after the last takeover. The output is in the HDFS default layout (`sequencefile` part files under
//! `dt=…/hour=…`); one test runs `parquet`.

use std::time::Instant;

use it::minidfs::MiniDfs;
use it::pair::{env_u64, kill_primaries, seed, KillPlan};
use it::{Pipeline, Storage};

/// On HDFS the output defaults to `sequencefile` part files; `format` overrides it.
async fn primary_kills_on_hdfs(strategy: &str) -> anyhow::Result<()> {
    primary_kills_on_hdfs_in(strategy, None).await
}

async fn primary_kills_on_hdfs_in(strategy: &str, format: Option<&str>) -> anyhow::Result<()> {
    let dfs = MiniDfs::shared()?;
    let started = Instant::now();
    let p = Pipeline::new(strategy, Storage::Hdfs(dfs))?;
    if let Some(format) = format {
        p.set("output.format", format)?;
    }
    if strategy == "passive-standby" {
        // Checkpoints that carry every uncommitted block, so takeovers load carried blocks from HDFS
        // (the local ten-kill test runs the default, `lagging`).
        p.set("strategy.carry", "all")?;
    }
    let plan = KillPlan {
        // What the output keeps up with here: debug builds writing 64 KiB files to a MiniDFS with
        // three replicas in one JVM on two cores manage about 3-4 MB/s, so 200 images/s (13 MB/s)
        // would only grow a backlog that each new primary must commit first.
        rate: 50.0,
        // A takeover on HDFS costs more (HDFS client, checkpoint and batch log reads, staging
        // cleanup), and so does the first commit after it, which active-standby waits for.
        cycle_ms: if strategy == "active-standby" {
            7000
        } else {
            5000
        },
        ..KillPlan::local(strategy, env_u64("IT_HDFS_KILLS", 3), seed(0x4df5_fa11))
    };
    let r = p.check(kill_primaries(&p, plan).await)?;
    println!(
        "{strategy} on HDFS: {} images, {} takeovers, {:.1} s",
        r.images,
        r.takeovers.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_primary_kills_exactly_once_on_hdfs_under_passive_standby(
) -> anyhow::Result<()> {
    primary_kills_on_hdfs("passive-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_primary_kills_exactly_once_on_hdfs_under_active_standby(
) -> anyhow::Result<()> {
    primary_kills_on_hdfs("active-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_primary_kills_exactly_once_on_hdfs_under_upstream_backup(
) -> anyhow::Result<()> {
    primary_kills_on_hdfs("upstream-backup").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_primary_kills_exactly_once_on_hdfs_in_parquet_parts_under_active_standby(
) -> anyhow::Result<()> {
    primary_kills_on_hdfs_in("active-standby", Some("parquet")).await
}
