//! A primary and its standby as processes, which one is which over takeovers, and the scenario the
//! failover tests share: SIGKILL the primary at seeded moments under load, let the standby take over,
//! bring the killed node back as the new standby, and check the output against the sender's manifest.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hdfs_ingest::ha::TakeoverEvent;
use hdfs_ingest::send::manifest::{read_manifest, sha256_hex};
use rand::{Rng, SeedableRng};

use crate::roles::{Pipeline, Role, RoleProc, SendArgs, SenderProc, TAKEOVER_TIMEOUT};

/// How long a standby that has just started needs before it can take over: it must have read a
/// heartbeat (one every 100 ms; a standby that never saw one waits forever, by design).
pub const WATCHING: Duration = Duration::from_millis(300);

/// The two role processes of a pipeline.
pub struct Pair<'p> {
    p: &'p Pipeline,
    /// The node that commits now.
    pub primary: RoleProc,
    /// The node that takes over when `primary` fails (none between a takeover and the rejoin).
    pub standby: Option<RoleProc>,
    /// A former primary that failed (killed, aborted, stopped) and was replaced, until it rejoins.
    pub failed: Option<RoleProc>,
    /// Every takeover so far.
    pub takeovers: Vec<TakeoverEvent>,
}

impl<'p> Pair<'p> {
    /// Starts `--role primary` (with `primary_env`) and then `--role standby`, and gives the standby
    /// time to read the primary's heartbeats.
    pub fn start(p: &'p Pipeline, primary_env: &[(&str, &str)]) -> anyhow::Result<Pair<'p>> {
        let primary = RoleProc::start(p, Role::Primary, false, primary_env)?;
        let standby = RoleProc::start(p, Role::Standby, false, &[])?;
        std::thread::sleep(WATCHING);
        Ok(Pair {
            p,
            primary,
            standby: Some(standby),
            failed: None,
            takeovers: Vec::new(),
        })
    }

    /// The standby (panics between a takeover and the rejoin).
    pub fn standby(&mut self) -> &mut RoleProc {
        self.standby.as_mut().expect("a standby is running")
    }

    /// Waits for the standby's takeover line and swaps the roles; the old primary is kept in `failed`
    /// until [`Pair::rejoin`].
    pub fn takeover(&mut self) -> anyhow::Result<TakeoverEvent> {
        ensure!(
            self.failed.is_none(),
            "the last failed node has not rejoined"
        );
        let Some(mut standby) = self.standby.take() else {
            bail!("no standby to take over");
        };
        let ev = standby.wait_takeover(TAKEOVER_TIMEOUT)?;
        self.failed = Some(std::mem::replace(&mut self.primary, standby));
        self.takeovers.push(ev.clone());
        Ok(ev)
    }

    /// Restarts the failed node (which must have exited) as the standby of the current primary, and
    /// gives it time to read the primary's heartbeats.
    pub fn rejoin(&mut self) -> anyhow::Result<()> {
        let Some(mut failed) = self.failed.take() else {
            bail!("no failed node to bring back");
        };
        if failed.running() {
            bail!("the failed {} is still running", failed.role.name());
        }
        self.standby = Some(RoleProc::start(self.p, failed.role, true, &[])?);
        std::thread::sleep(WATCHING);
        Ok(())
    }

    /// SIGKILLs the standby and starts it again.
    pub fn restart_standby(&mut self) -> anyhow::Result<()> {
        let standby = self.standby();
        standby.kill9()?;
        let role = standby.role;
        self.standby = Some(RoleProc::start(self.p, role, true, &[])?);
        std::thread::sleep(WATCHING);
        Ok(())
    }
}

/// A kill lands this long (drawn at random) after the pipeline is ready for it (see [`ready_for_a_kill`]):
/// anywhere in a batch interval (500 ms), and most of a passive-standby checkpoint interval (1 s).
pub const KILL_WINDOW: std::ops::Range<u64> = 0..800;

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits until the output holds a batch of images that is not in `known` and whose batch time is at
/// least `min_ms`, or until `stop` says there is no point (returns whether the batch came).
pub async fn wait_for_batch(
    p: &Pipeline,
    known: &BTreeSet<String>,
    min_ms: u64,
    within: Duration,
    mut stop: impl FnMut() -> bool,
) -> anyhow::Result<bool> {
    let deadline = Instant::now() + within;
    loop {
        let new = p
            .batches()
            .await?
            .into_iter()
            .any(|b| !b.images.is_empty() && b.ms >= min_ms && !known.contains(&b.name));
        if new {
            return Ok(true);
        }
        if stop() {
            return Ok(false);
        }
        if Instant::now() >= deadline {
            bail!(
                "{}: no new batch was committed within {within:?}",
                p.strategy
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The names of the output's batches now.
pub async fn batch_names(p: &Pipeline) -> anyhow::Result<BTreeSet<String>> {
    Ok(p.batches().await?.into_iter().map(|b| b.name).collect())
}

/// Waits until a kill of the primary is a single failure the strategy must survive: the primary has
/// committed a batch since `known` was listed (so every kill lands while a primary does its normal
/// work, not while a backlog of killed primaries grows), and under `active-standby` the standby has
/// every block the primary has not committed: the sender's `streams` streams are connected to it, and a
/// batch sealed after that is committed (the sender releases a block on the primary's ack alone while
/// the standby is down, so such blocks are only on the primary until its next commit). A kill before
/// that is a second failure, which no strategy promises to survive.
///
/// Once the sender has finished (it sent everything before the kills were over), the remaining kills
/// find no load; under `active-standby` they still wait until everything released is committed, since
/// what was released while the standby was down may be on the primary alone.
pub async fn ready_for_a_kill(
    pair: &mut Pair<'_>,
    known: &BTreeSet<String>,
    sender: &mut SenderProc,
    streams: usize,
) -> anyhow::Result<()> {
    let p = pair.p;
    let active = p.strategy == "active-standby";
    let mut min_ms = 0;
    if active {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = pair
            .standby()
            .wait_streams(streams, Duration::from_millis(200))
        {
            if !sender.running() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(e);
            }
        }
        min_ms = unix_ms();
    }
    let came = wait_for_batch(p, known, min_ms, Duration::from_secs(60), || {
        !sender.running()
    })
    .await?;
    if !came && active {
        p.wait_committed(&sender.manifest, Duration::from_secs(60))
            .await?;
    }
    Ok(())
}

/// `IT_SEED` (default `default`).
pub fn seed(default: u64) -> u64 {
    env_u64("IT_SEED", default)
}

/// An unsigned number from the environment, or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What [`kill_primaries`] did.
#[derive(Debug)]
pub struct KillReport {
    /// Images the sender pushed (and the output holds).
    pub images: u64,
    pub takeovers: Vec<TakeoverEvent>,
}

/// How [`kill_primaries`] runs.
#[derive(Clone, Copy, Debug)]
pub struct KillPlan {
    pub kills: u64,
    pub seed: u64,
    /// Images per second.
    pub rate: f64,
    /// The expected time from one kill to the next (ms), to size the push so the load lasts through
    /// every kill: the wait for a commit, the random wait, detection (failure_timeout), recovery, the
    /// restart and [`WATCHING`]. Should the sender still finish first, the last kills find no load
    /// (it is printed).
    pub cycle_ms: u64,
}

impl KillPlan {
    /// The plan for a local output: cycles measured on 2 cores at about 2.2 s, 2.6 s under
    /// active-standby (the gate also waits for the sender to reconnect to the restarted standby).
    pub fn local(strategy: &str, kills: u64, seed: u64) -> KillPlan {
        KillPlan {
            kills,
            seed,
            rate: 200.0,
            cycle_ms: if strategy == "active-standby" {
                2600
            } else {
                2200
            },
        }
    }
}

/// The kill scenario: a sender pushes at `plan.rate`; `plan.kills` times, once the pipeline is ready for
/// it ([`ready_for_a_kill`]) and after a seeded random wait in [`KILL_WINDOW`], the primary is
/// SIGKILLed, the standby must print its takeover line, and the killed node is restarted as the new
/// standby. Then the sender must finish, everything it released must be committed exactly once, byte
/// for byte, and one more image pushed afterwards must be committed too.
pub async fn kill_primaries(p: &Pipeline, plan: KillPlan) -> anyhow::Result<KillReport> {
    let started = Instant::now();
    let KillPlan {
        kills,
        seed,
        rate,
        cycle_ms,
    } = plan;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let images = (rate * (kills * cycle_ms + 2000) as f64 / 1000.0).max(400.0) as u64;
    println!(
        "{}: seed {seed}, {kills} kills, {images} images at {rate}/s",
        p.strategy
    );
    let mut pair = Pair::start(p, &[])?;
    let manifest = p.dir().join("manifest.jsonl");
    let args = SendArgs {
        count: images,
        rate,
        source_prefix: "kill".into(),
        ..SendArgs::default()
    };
    let mut sender = SenderProc::start(p, &args, &manifest)?;
    println!(
        "{:5.1} s: nodes and sender started",
        started.elapsed().as_secs_f64()
    );
    let mut known = BTreeSet::new();
    for k in 0..kills {
        if let Err(e) = ready_for_a_kill(&mut pair, &known, &mut sender, args.concurrency).await {
            bail!("{e:#} (the sender: {})", sender.state());
        }
        if !sender.running() {
            println!("the sender finished before kill {k}: this kill and the next find no load");
        }
        let wait = rng.random_range(KILL_WINDOW);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let killed = pair.primary.role;
        pair.primary.kill9()?;
        let ev = pair.takeover()?;
        // Whatever the killed primary published is there now; the next kill waits for a new batch.
        known = batch_names(p).await?;
        pair.rejoin()?;
        println!(
            "{:5.1} s: kill {k} at +{wait} ms: {} killed, {} took over at epoch {} (silent {} ms, serving {} ms after detection)",
            started.elapsed().as_secs_f64(),
            killed.name(),
            ev.node,
            ev.epoch,
            ev.detected_unix_ms.saturating_sub(ev.last_heartbeat_unix_ms),
            ev.serving_unix_ms.saturating_sub(ev.detected_unix_ms)
        );
    }
    let kills_done = started.elapsed();
    let summary = sender.wait(Duration::from_secs(180))?;
    println!("sender: {summary}");
    let sender_done = started.elapsed();
    check_all_committed(p, &manifest, images).await?;
    let checked = started.elapsed();
    push_one_more(p).await?;
    println!(
        "{}: kills done at {:.1} s, sender done at {:.1} s, output checked at {:.1} s, one more at {:.1} s",
        p.strategy,
        kills_done.as_secs_f64(),
        sender_done.as_secs_f64(),
        checked.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    ensure!(
        pair.primary.running() && pair.standby().running(),
        "both nodes are still up at the end"
    );
    Ok(KillReport {
        images,
        takeovers: std::mem::take(&mut pair.takeovers),
    })
}

/// Waits until every image the manifest acknowledges is committed, then checks the whole output: each
/// of the `images` released images exactly once and byte for byte, and nothing else.
pub async fn check_all_committed(
    p: &Pipeline,
    manifest: &std::path::Path,
    images: u64,
) -> anyhow::Result<()> {
    p.wait_committed(manifest, Duration::from_secs(60)).await?;
    let v = p.verify(manifest, false).await?;
    println!("{}", v.summary());
    ensure!(v.ok(), "{}: {}", p.strategy, describe(&v));
    ensure!(
        v.expected as u64 == images && v.found as u64 == images,
        "{}: every image was released and is in the output once: {}",
        p.strategy,
        v.summary()
    );
    ensure!(
        v.unexpected.is_empty(),
        "{}: nothing in the output that the sender did not release: {:?}",
        p.strategy,
        &v.unexpected[..v.unexpected.len().min(10)]
    );
    Ok(())
}

/// Pushes one more image, waiting for its committed ack, and finds it in the output with the bytes
/// sent: the pipeline still works after everything a test did to it.
pub async fn push_one_more(p: &Pipeline) -> anyhow::Result<()> {
    let manifest = p.dir().join("one-more.jsonl");
    let mut s = SenderProc::start(
        p,
        &SendArgs {
            count: 1,
            rate: 100.0,
            source_prefix: "one-more".into(),
            concurrency: 1,
            extra: vec!["--release".into(), "committed".into()],
        },
        &manifest,
    )?;
    s.wait(Duration::from_secs(60))?;
    let sent = read_manifest(&manifest)?;
    ensure!(
        sent.len() == 1 && sent[0].acked,
        "{}: the image pushed last is acknowledged: {sent:?}",
        p.strategy
    );
    let stem = format!("one-more-0-{}.", sent[0].seq.unwrap_or_default());
    let found: Vec<(String, String)> = p
        .batches()
        .await?
        .into_iter()
        .flat_map(|b| {
            let name = b.name;
            b.images
                .into_iter()
                .filter(|f| f.starts_with(&stem))
                .map(move |f| (name.clone(), f))
        })
        .collect();
    ensure!(
        found.len() == 1,
        "{}: the image pushed last is in the output once: {found:?}",
        p.strategy
    );
    let data = p.read_output(&found[0].0, &found[0].1).await?;
    ensure!(
        sha256_hex(&data) == sent[0].sha256,
        "{}: the image pushed last has the bytes sent",
        p.strategy
    );
    Ok(())
}

/// A failed report's summary and the first names of what went wrong.
pub fn describe(v: &hdfs_ingest::verify::VerifyReport) -> String {
    let first = |l: &Vec<String>| l[..l.len().min(10)].to_vec();
    format!(
        "{}; lost {:?}; duplicated {:?}; corrupt {:?}",
        v.summary(),
        first(&v.lost),
        first(&v.duplicated),
        first(&v.corrupt)
    )
}
