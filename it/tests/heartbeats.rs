//! Heartbeats with real processes: a primary whose runtime is saturated — every worker thread blocked
//! for three failure timeouts at a time, under load — keeps heartbeating from its own threads, and its
//! standby does not take over (the failpoint `ha::primary::block_runtime` blocks the workers).

#![cfg(feature = "failpoints")]

use std::time::{Duration, Instant};

use anyhow::ensure;
use it::pair::{check_all_committed, Pair};
use it::{Pipeline, SendArgs, SenderProc, Storage};

/// Four blocks of 1.5 s (three times the it pipelines' 500 ms failure timeout; under the 5 s after
/// which a primary withholds heartbeats from a runtime that makes no progress).
const BLOCKS: usize = 4;
const FAILPOINT: &str = "ha::primary::block_runtime";

async fn a_blocked_runtime_is_not_taken_over(strategy: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let p = Pipeline::new(strategy, Storage::Local)?;
    p.check(a_blocked_runtime_is_not_taken_over_in(&p).await)?;
    println!("{strategy}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn a_blocked_runtime_is_not_taken_over_in(p: &Pipeline) -> anyhow::Result<()> {
    let strategy = p.strategy.as_str();
    let mut pair = Pair::start(
        p,
        &[("FAILPOINTS", &format!("{FAILPOINT}={BLOCKS}*return(1500)"))],
    )?;
    let primary_pid = pair.primary.pid();
    let images = 600;
    let manifest = p.dir().join("manifest.jsonl");
    let mut sender = SenderProc::start(
        p,
        &SendArgs {
            count: images,
            source_prefix: "busy".into(),
            ..SendArgs::default()
        },
        &manifest,
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(&pair.primary.log)?;
        let blocks = log.lines().filter(|l| l.contains(FAILPOINT)).count();
        if blocks >= BLOCKS {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "{strategy}: the primary's runtime was blocked {blocks} times, not {BLOCKS}:\n{}",
            pair.primary.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("sender: {}", sender.wait(Duration::from_secs(120))?);
    check_all_committed(p, &manifest, images).await?;
    let standby_log = std::fs::read_to_string(&pair.standby().log)?;
    ensure!(
        !standby_log.contains("primary failed") && !pair.standby().took_over(),
        "{strategy}: the standby did not take over from a primary whose runtime was only busy:\n{}",
        pair.standby().log_tail(30)
    );
    ensure!(
        pair.primary.pid() == primary_pid && pair.primary.running(),
        "{strategy}: the first primary served throughout"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_runtime_is_blocked_for_three_failure_timeouts_at_a_time_keeps_heartbeating_and_is_not_taken_over_under_active_standby(
) -> anyhow::Result<()> {
    a_blocked_runtime_is_not_taken_over("active-standby").await
}
