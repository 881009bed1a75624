//! Fencing with real processes: a primary frozen with SIGSTOP under load for longer than the failure
//! timeout is declared dead and replaced; when it is thawed (SIGCONT) it must find the newer epoch,
//! stop, and write nothing — no duplicate, no file of the output changed. A batch it had claimed and
//! not published is voided by the node that took over (a batch directory holding only `_VOID`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure};
use hdfs_ingest::send::manifest::sha256_hex;
use hdfs_ingest::sink::VOID_FILE;
use it::pair::{check_all_committed, push_one_more, seed, Pair};
use it::{Pipeline, SendArgs, SenderProc, Storage};
use rand::{Rng, SeedableRng};

/// Every file of a local output but staging: its hash and modification time.
fn output_files(output: &Path) -> anyhow::Result<BTreeMap<PathBuf, (String, SystemTime)>> {
    let mut out = BTreeMap::new();
    for (_, batch) in it::batch_paths(output) {
        for f in std::fs::read_dir(batch)? {
            let f = f?;
            let data = std::fs::read(f.path())?;
            out.insert(f.path(), (sha256_hex(&data), f.metadata()?.modified()?));
        }
    }
    Ok(out)
}

/// The batch directories of a local output that hold images (not only `_VOID`/`_`-files).
fn batches_with_images(output: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, batch) in it::batch_paths(output) {
        let mut images = 0;
        let mut void = false;
        for f in std::fs::read_dir(batch)? {
            let n = f?.file_name();
            let n = n.to_string_lossy();
            void |= n == VOID_FILE;
            images += usize::from(!n.starts_with('_'));
        }
        ensure!(
            !(void && images > 0),
            "batch {name} is void and holds {images} images"
        );
        if images > 0 {
            out.push(name);
        }
    }
    Ok(out)
}

async fn a_stopped_primary_fences_itself(strategy: &str) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let p = Pipeline::new(strategy, Storage::Local)?;
    p.check(a_stopped_primary_fences_itself_in(&p).await)?;
    println!("{strategy}: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

async fn a_stopped_primary_fences_itself_in(p: &Pipeline) -> anyhow::Result<()> {
    let strategy = p.strategy.as_str();
    let output = p.dir().join("output");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed(0xf3ce));
    let mut pair = Pair::start(p, &[])?;
    let images = 1200;
    let manifest = p.dir().join("manifest.jsonl");
    let mut sender = SenderProc::start(
        p,
        &SendArgs {
            count: images,
            source_prefix: "fence".into(),
            ..SendArgs::default()
        },
        &manifest,
    )?;
    let wait = rng.random_range(1000..2000);
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let before = batches_with_images(&output)?;
    pair.primary.sigstop()?;
    println!("{strategy}: primary stopped after {wait} ms");
    let ev = pair.takeover()?;
    println!("{strategy}: {} took over at epoch {}", ev.node, ev.epoch);
    // The new primary commits a batch of its own while the old one is frozen.
    let deadline = Instant::now() + Duration::from_secs(30);
    while batches_with_images(&output)?
        .iter()
        .all(|b| before.contains(b))
    {
        if Instant::now() > deadline {
            bail!("the new primary committed no batch within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let files = output_files(&output)?;
    let old = pair.failed.as_mut().expect("the stopped primary");
    old.sigcont()?;
    let st = old.wait_exit(Duration::from_secs(10))?;
    ensure!(
        st.is_some_and(|s| !s.success()),
        "{strategy}: the thawed primary exits with an error soon ({st:?}):\n{}",
        old.log_tail(30)
    );
    let log = std::fs::read_to_string(&old.log)?;
    let fenced = log.lines().find(|l| l.contains("fenced"));
    ensure!(
        fenced.is_some(),
        "{strategy}: the thawed primary says it was fenced:\n{}",
        old.log_tail(30)
    );
    println!("{strategy}: {}", fenced.unwrap_or_default());
    let after = output_files(&output)?;
    for (path, was) in &files {
        ensure!(
            after.get(path) == Some(was),
            "{strategy}: {} was changed or removed after the old primary woke up",
            path.display()
        );
    }
    pair.rejoin()?;
    println!("sender: {}", sender.wait(Duration::from_secs(120))?);
    check_all_committed(p, &manifest, images).await?;
    batches_with_images(&output)?;
    push_one_more(p).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_that_wakes_up_after_a_takeover_fences_itself_and_writes_nothing_under_passive_standby(
) -> anyhow::Result<()> {
    a_stopped_primary_fences_itself("passive-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_that_wakes_up_after_a_takeover_fences_itself_and_writes_nothing_under_active_standby(
) -> anyhow::Result<()> {
    a_stopped_primary_fences_itself("active-standby").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_primary_that_wakes_up_after_a_takeover_fences_itself_and_writes_nothing_under_upstream_backup(
) -> anyhow::Result<()> {
    a_stopped_primary_fences_itself("upstream-backup").await
}
