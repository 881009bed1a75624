//! HDFS high availability: an upstream-backup pair writes its output and checkpoints to
//! `hdfs://minidfs-ns`, a name
//! service of two NameNodes with shared edits (a MiniDFSCluster in HA topology), configured through a
//! Hadoop configuration directory (`hdfs.hadoop_conf_dir`). Mid-stream the active NameNode is failed
//! over to the other one — and, in the second test, killed. Nothing acknowledged may be lost,
//! commits must resume, and the time commits stalled (from the node's own log: the gap between the
//! last batch committed before the event and the first after it) is printed.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::ensure;
use it::log_unix_ms;
use it::minidfs::{MiniDfs, MiniDfsOptions};
use it::pair::{batch_names, check_all_committed, push_one_more, unix_ms, wait_for_batch, Pair};
use it::roles::{Pipeline, SendArgs, SenderProc, Storage};

#[derive(Clone, Copy, Debug)]
enum Event {
    Failover,
    KillActive,
}

async fn namenode_event_mid_stream(event: Event) -> anyhow::Result<()> {
    let dfs = MiniDfs::start(MiniDfsOptions {
        ha: true,
        ..MiniDfsOptions::default()
    })?;
    ensure!(
        dfs.hadoop_conf_dir().is_some(),
        "an HA cluster has a client configuration"
    );
    let p = Pipeline::new("upstream-backup", Storage::Hdfs(&dfs))?;
    let r = async {
        let mut pair = Pair::start(&p, &[])?;
        let manifest = p.dir().join("manifest.jsonl");
        let images = 1200;
        let mut sender = SenderProc::start(
            &p,
            &SendArgs {
                count: images,
                rate: 120.0,
                source_prefix: "ha".into(),
                ..SendArgs::default()
            },
            &manifest,
        )?;
        wait_for_batch(&p, &BTreeSet::new(), 0, Duration::from_secs(60), || {
            !sender.running()
        })
        .await?;
        // The event comes once the node has logged a commit, so there is one before it.
        let committed_before = |log: &str| log.lines().any(|l| l.contains("batch committed"));
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !committed_before(&std::fs::read_to_string(&pair.primary.log)?) {
            ensure!(
                std::time::Instant::now() < deadline,
                "the node logged no commit"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let at = unix_ms();
        match event {
            Event::Failover => dfs.failover()?,
            Event::KillActive => dfs.kill_active_namenode()?,
        }
        let known = batch_names(&p).await?;
        ensure!(
            wait_for_batch(&p, &known, at, Duration::from_secs(60), || false).await?,
            "commits resume after the NameNode {event:?}"
        );
        let summary = sender.wait(Duration::from_secs(180))?;
        println!("sender: {summary}");
        check_all_committed(&p, &manifest, images).await?;
        push_one_more(&p).await?;
        ensure!(
            !pair.standby().took_over(),
            "a NameNode {event:?} is no reason for the pipeline's own standby to take over"
        );
        let log = std::fs::read_to_string(&pair.primary.log)?;
        let commits: Vec<u64> = log
            .lines()
            .filter(|l| l.contains("batch committed"))
            .filter_map(log_unix_ms)
            .collect();
        let before = commits.iter().copied().filter(|&t| t <= at).max();
        let after = commits.iter().copied().find(|&t| t > at);
        ensure!(
            before.is_some() && after.is_some(),
            "commits before and after the event: {commits:?}"
        );
        let (before, after) = (before.unwrap_or(0), after.unwrap_or(0));
        let mut gaps: Vec<u64> = commits.windows(2).map(|w| w[1] - w[0]).collect();
        gaps.sort_unstable();
        println!(
            "FIGURES namenode {event:?}: commits stalled {} ms (last commit {} ms before the event, first {} ms after it); median gap between commits over the run {} ms",
            after - before,
            at - before,
            after - at,
            gaps.get(gaps.len() / 2).copied().unwrap_or(0)
        );
        Ok(())
    }
    .await;
    p.check(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namenode_failover_mid_stream_loses_nothing_and_commits_resume() -> anyhow::Result<()> {
    namenode_event_mid_stream(Event::Failover).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_namenode_killed_mid_stream_loses_nothing_and_commits_resume(
) -> anyhow::Result<()> {
    namenode_event_mid_stream(Event::KillActive).await
}
