//! The two-node strategies under failures, with real processes: a primary and a standby
//! (`run --config F --role R [--standby]`), a sender (`send push --config F`) that fails over on its own,
//! SIGKILL and failpoint aborts. After every scenario the output must hold each image the sender
//! released exactly once, byte for byte, and the pipeline must still take and commit a new image.
//!
//! Checkpoints and output are in a local directory here; `hdfs_failover.rs` runs the kill scenario on
//! HDFS. `IT_SEED` replays a run (the seed is printed), `IT_KILLS` sets the number of primary kills
//! (default 10) for a longer run.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::ensure;
use hdfs_ingest::send::manifest::ManifestEntry;
use it::pair::{
    check_all_committed, describe, env_u64, kill_primaries, push_one_more, seed, KillPlan, Pair,
};
use it::{Pipeline, SendArgs, SenderProc, Storage};
use rand::{Rng, SeedableRng};

const SEED: u64 = 0xfa11_0e75;

async fn ten_primary_kills(strategy: &str) -> anyhow::Result<()> {
    primary_kills_in(strategy, "files", env_u64("IT_KILLS", 10)).await
}

async fn primary_kills_in(strategy: &str, format: &str, kills: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let p = Pipeline::new(strategy, Storage::Local)?;
    p.set("output.format", format)?;
    let plan = KillPlan::local(strategy, kills, seed(SEED));
    let r = p.check(kill_primaries(&p, plan).await)?;
    println!(
        "{strategy}: {} images, {} takeovers, {:.1} s",
        r.images,
        r.takeovers.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_ten_primary_kills_exactly_once_under_passive_standby(
) -> anyhow::Result<()> {
    ten_primary_kills("passive-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_ten_primary_kills_exactly_once_under_active_standby(
) -> anyhow::Result<()> {
    ten_primary_kills("active-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_ten_primary_kills_exactly_once_under_upstream_backup(
) -> anyhow::Result<()> {
    ten_primary_kills("upstream-backup").await
}

/// The standby is SIGKILLed twice under load and restarted; the primary goes on alone meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_primary_kills_exactly_once_in_sequencefile_parts_under_passive_standby(
) -> anyhow::Result<()> {
    primary_kills_in(
        "passive-standby",
        "sequencefile",
        env_u64("IT_KILLS", 10) / 2,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_image_survives_primary_kills_exactly_once_in_parquet_parts_under_upstream_backup(
) -> anyhow::Result<()> {
    primary_kills_in("upstream-backup", "parquet", env_u64("IT_KILLS", 10) / 2).await
}

async fn standby_kills(strategy: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let p = Pipeline::new(strategy, Storage::Local)?;
    p.check(standby_kills_in(&p).await)?;
    println!("{strategy}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn standby_kills_in(p: &Pipeline) -> anyhow::Result<()> {
    let strategy = p.strategy.as_str();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed(SEED));
    let mut pair = Pair::start(p, &[])?;
    let primary_pid = pair.primary.pid();
    let images = 1000;
    let manifest = p.dir().join("manifest.jsonl");
    let mut sender = SenderProc::start(
        p,
        &SendArgs {
            count: images,
            source_prefix: "standby-kill".into(),
            ..SendArgs::default()
        },
        &manifest,
    )?;
    for k in 0..2 {
        let wait = rng.random_range(800..1800);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        println!("{strategy}: standby kill {k} after {wait} ms");
        pair.restart_standby()?;
        ensure!(
            pair.primary.running(),
            "{strategy}: the primary keeps running when its standby dies:\n{}",
            pair.primary.log_tail(30)
        );
    }
    println!("sender: {}", sender.wait(Duration::from_secs(120))?);
    check_all_committed(p, &manifest, images).await?;
    ensure!(
        pair.primary.pid() == primary_pid && pair.primary.running(),
        "{strategy}: the first primary served throughout"
    );
    ensure!(
        !pair.standby().took_over(),
        "{strategy}: the restarted standby did not take over from a live primary:\n{}",
        pair.standby().log_tail(30)
    );
    push_one_more(p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_standby_loses_nothing_and_the_primary_keeps_serving_under_passive_standby(
) -> anyhow::Result<()> {
    standby_kills("passive-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_standby_loses_nothing_and_the_primary_keeps_serving_under_active_standby(
) -> anyhow::Result<()> {
    standby_kills("active-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_standby_loses_nothing_and_the_primary_keeps_serving_under_upstream_backup(
) -> anyhow::Result<()> {
    standby_kills("upstream-backup").await
}

/// The entries of a manifest whose writer was SIGKILLed: a torn last line is dropped.
fn read_torn_manifest(path: &Path) -> anyhow::Result<Vec<ManifestEntry>> {
    let text = std::fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(e) => out.push(e),
            Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
            Err(e) => anyhow::bail!("{}:{}: {e}", path.display(), i + 1),
        }
    }
    Ok(out)
}

/// The sender is SIGKILLed under load and started again with the same source prefix and `--resume`
/// (without it, blocks the nodes hold already would fail the push as a reused prefix): it re-sends
/// every image from the first (a stream's k-th block is always the same image, so a re-sent
/// (source, seq) has the same bytes), and the nodes store each (source, seq) once.
async fn sender_kill(strategy: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let p = Pipeline::new(strategy, Storage::Local)?;
    p.check(sender_kill_in(&p).await)?;
    println!("{strategy}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn sender_kill_in(p: &Pipeline) -> anyhow::Result<()> {
    let strategy = p.strategy.as_str();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed(SEED));
    let _pair = Pair::start(p, &[])?;
    let images = 800;
    let args = SendArgs {
        count: images,
        source_prefix: "resend".into(),
        ..SendArgs::default()
    };
    let first = p.dir().join("first.jsonl");
    let mut sender = SenderProc::start(p, &args, &first)?;
    let wait = rng.random_range(1500..3000);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    sender.kill9()?;
    println!("{strategy}: sender killed after {wait} ms");
    let second = p.dir().join("second.jsonl");
    let resume = SendArgs {
        extra: vec!["--resume".into()],
        ..args.clone()
    };
    let mut sender = SenderProc::start(p, &resume, &second)?;
    println!("sender: {}", sender.wait(Duration::from_secs(120))?);
    check_all_committed(p, &second, images).await?;
    // What the killed sender saw released is in the output too, once, with the same bytes.
    let entries = read_torn_manifest(&first)?;
    let released = entries.iter().filter(|e| e.acked).count();
    ensure!(
        released > 0,
        "the first sender released images before its kill"
    );
    let v = p.verify_entries(&entries, false).await?;
    ensure!(
        v.ok() && v.found == released,
        "{strategy}: {}",
        describe(&v)
    );
    push_one_more(p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_sender_loses_nothing_under_passive_standby(
) -> anyhow::Result<()> {
    sender_kill("passive-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_sender_loses_nothing_under_active_standby() -> anyhow::Result<()>
{
    sender_kill("active-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_and_restarting_the_sender_loses_nothing_under_upstream_backup(
) -> anyhow::Result<()> {
    sender_kill("upstream-backup").await
}

/// The primary aborts at a named point (a failpoint: as abrupt as SIGKILL, but exactly there) the
/// first time it gets there; the standby takes over, the aborted node rejoins as standby.
#[cfg(feature = "failpoints")]
async fn primary_aborts_at(strategy: &str, point: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let p = Pipeline::new(strategy, Storage::Local)?;
    if point.starts_with("node::checkpoint::") {
        // Every checkpoint carries every uncommitted block: with the default (`lagging`) and batches
        // faster than checkpoints, a checkpoint may carry nothing and the failpoint never be reached.
        p.set("strategy.carry", "all")?;
    }
    p.check(primary_aborts_at_in(&p, point).await)?;
    println!("{strategy}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(feature = "failpoints")]
async fn primary_aborts_at_in(p: &Pipeline, point: &str) -> anyhow::Result<()> {
    let strategy = p.strategy.as_str();
    let mut pair = Pair::start(p, &[("FAILPOINTS", &format!("{point}=return"))])?;
    let images = 800;
    let manifest = p.dir().join("manifest.jsonl");
    let mut sender = SenderProc::start(
        p,
        &SendArgs {
            count: images,
            source_prefix: "abort".into(),
            ..SendArgs::default()
        },
        &manifest,
    )?;
    let st = pair.primary.wait_exit(Duration::from_secs(30))?;
    ensure!(
        st.is_some_and(|s| !s.success()),
        "{strategy}: the primary aborted at {point} ({st:?})"
    );
    let ev = pair.takeover()?;
    println!(
        "{strategy}: aborted at {point}; {} took over at epoch {}",
        ev.node, ev.epoch
    );
    pair.rejoin()?;
    println!("sender: {}", sender.wait(Duration::from_secs(120))?);
    check_all_committed(p, &manifest, images).await?;
    push_one_more(p).await?;
    ensure!(pair.primary.running() && pair.standby().running());
    Ok(())
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_during_a_checkpoint_write_loses_nothing_under_passive_standby(
) -> anyhow::Result<()> {
    primary_aborts_at("passive-standby", "node::checkpoint::after_write").await
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_between_publish_and_checkpoint_loses_nothing_under_active_standby(
) -> anyhow::Result<()> {
    primary_aborts_at("active-standby", "node::commit::after_publish").await
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_killed_between_publish_and_checkpoint_loses_nothing_under_upstream_backup(
) -> anyhow::Result<()> {
    primary_aborts_at("upstream-backup", "node::commit::after_publish").await
}
