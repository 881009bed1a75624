//! Several pipelines, one HDFS output root: three primary/standby pairs, each with its own strategy,
//! checkpoint store and `node.pipeline`, write into one root under shared Hive-style partitions; each
//! sender's manifest is verified against that root — every released image of each pipeline once and
//! byte for byte, and nothing of one pipeline counted for another.

use std::time::Duration;

use anyhow::ensure;
use it::minidfs::MiniDfs;
use it::pair::Pair;
use it::{Pipeline, SendArgs, SenderProc, Storage};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_pipelines_with_different_strategies_share_one_hdfs_output_root_without_a_collision(
) -> anyhow::Result<()> {
    let dfs = MiniDfs::shared()?;
    let strategies = [
        ("east", "passive-standby"),
        ("west", "active-standby"),
        ("north", "upstream-backup"),
    ];
    let mut pipelines: Vec<Pipeline> = Vec::new();
    for (name, strategy) in strategies {
        let mut p = Pipeline::new(strategy, Storage::Hdfs(dfs))?;
        if let Some(first) = pipelines.first() {
            p.share_output_of(first)?;
        }
        p.set("node.pipeline", name)?;
        // Shared partitions; the pipeline in each batch's name keeps them apart.
        p.set("output.path", "dt={date}/hour={hour}/{pipeline}-{batch_ms}")?;
        pipelines.push(p);
    }
    let pairs = pipelines
        .iter()
        .map(|p| Pair::start(p, &[]))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let images = 300;
    let mut senders = Vec::new();
    for (p, (name, _)) in pipelines.iter().zip(strategies) {
        let manifest = p.dir().join(format!("{name}.jsonl"));
        let args = SendArgs {
            count: images,
            rate: 100.0,
            source_prefix: name.into(),
            extra: vec!["--release".into(), "committed".into()],
            ..SendArgs::default()
        };
        senders.push((SenderProc::start(p, &args, &manifest)?, manifest));
    }
    for (s, _) in &mut senders {
        println!("sender: {}", s.wait(Duration::from_secs(180))?);
    }
    let total = images as usize * strategies.len();
    for ((p, (_, manifest)), (name, strategy)) in pipelines.iter().zip(&senders).zip(strategies) {
        p.wait_committed(manifest, Duration::from_secs(60)).await?;
        let v = p.verify(manifest, false).await?;
        println!("{name} ({strategy}): {}", v.summary());
        ensure!(v.ok(), "{name}: {}", v.summary());
        ensure!(v.found == images as usize, "{name}: {}", v.summary());
        // The rest of the root is the other pipelines' images, none of them this sender's.
        ensure!(
            v.unexpected.len() == total - images as usize
                && v.unexpected
                    .iter()
                    .all(|u| !u.starts_with(&format!("{name}-"))),
            "{name}: {} unexpected",
            v.unexpected.len()
        );
    }
    let batches = pipelines[0].batches().await?;
    for (name, _) in strategies {
        let mine: Vec<_> = batches
            .iter()
            .filter(|b| {
                b.name
                    .rsplit('/')
                    .next()
                    .unwrap_or("")
                    .starts_with(&format!("{name}-"))
            })
            .collect();
        ensure!(!mine.is_empty(), "{name} published no batch");
        ensure!(
            mine.iter().all(|b| b.name.starts_with("dt=")),
            "{name}: batches outside the partitions"
        );
    }
    drop(pairs);
    Ok(())
}
