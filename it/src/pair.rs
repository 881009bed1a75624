//! A primary and its standby as processes, which one is which over takeovers, and the scenario the
//! failover tests share: SIGKILL the primary at seeded moments under load, let the standby take over,
//! bring the killed node back as the new standby, and check the output against the sender's manifest.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure};
use hdfs_ingest::ha::TakeoverEvent;
use rand::{Rng, SeedableRng};

use crate::roles::{Pipeline, Role, RoleProc, SendArgs, SenderProc, TAKEOVER_TIMEOUT};

/// How long a standby that has just started needs before it can take over: it must have read a
/// heartbeat (one every 100 ms; a standby that never saw one waits forever, by design).
pub const WATCHING: Duration = Duration::from_millis(400);

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

    /// SIGKILLs the primary, waits for the standby's takeover, restarts the killed node as standby.
    pub fn kill_primary(&mut self) -> anyhow::Result<TakeoverEvent> {
        self.primary.kill9()?;
        let ev = self.takeover()?;
        self.rejoin()?;
        Ok(ev)
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

/// The time a kill is drawn from, in ms after the standby restarted by the previous kill has had
/// [`WATCHING`] to read heartbeats. Under `active-standby` the standby must also hold every block the
/// primary has not committed: blocks the sender released on the primary's ack alone while the standby
/// was down (a disconnected standby does not hold blocks back) are only on the primary until its next
/// commit, so the kill waits for the sender to reconnect (backoff up to 500 ms) and for one more batch
/// (500 ms) to commit. A kill inside that window is a second failure, which no strategy promises to
/// survive.
pub fn kill_window(strategy: &str) -> std::ops::Range<u64> {
    match strategy {
        "active-standby" => 1200..2200,
        _ => 0..1000,
    }
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

/// What [`kill_primaries`] measured.
#[derive(Debug)]
pub struct KillReport {
    pub images: u64,
    pub takeovers: Vec<TakeoverEvent>,
    pub sender: String,
    pub elapsed: Duration,
}

/// The kill scenario: a sender pushes at 200 images/s; `kills` times, at a seeded moment in
/// [`kill_window`], the primary is SIGKILLed, the standby must print its takeover line, and the killed
/// node is restarted as the new standby. Then the sender must finish, everything it released must be
/// committed exactly once, byte for byte, and one more image pushed afterwards must be committed too.
pub async fn kill_primaries(p: &Pipeline, kills: u64, seed: u64) -> anyhow::Result<KillReport> {
    let started = Instant::now();
    let window = kill_window(&p.strategy);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // Enough images to keep the load on through every kill: a kill cycle is the wait, about 0.6 s of
    // detection and recovery, a restart and WATCHING.
    let rate = 200.0;
    let cycle_ms = (window.start + window.end) / 2 + 1400;
    let images = (rate as u64 * (kills * cycle_ms + 2000) / 1000).max(400);
    println!(
        "{}: seed {seed}, {kills} kills, {images} images at {rate}/s",
        p.strategy
    );
    let mut pair = Pair::start(p, &[])?;
    let manifest = p.dir().join("manifest.jsonl");
    let mut sender = SenderProc::start(
        p,
        &SendArgs {
            count: images,
            rate,
            source_prefix: "kill".into(),
            ..SendArgs::default()
        },
        &manifest,
    )?;
    for k in 0..kills {
        let wait = rng.random_range(window.clone());
        tokio::time::sleep(Duration::from_millis(wait)).await;
        let killed = pair.primary.role;
        let ev = pair.kill_primary()?;
        println!(
            "kill {k} after {wait} ms: {} killed, {} took over at epoch {} (silent {} ms, serving {} ms after detection)",
            killed.name(),
            ev.node,
            ev.epoch,
            ev.detected_unix_ms.saturating_sub(ev.last_heartbeat_unix_ms),
            ev.serving_unix_ms.saturating_sub(ev.detected_unix_ms)
        );
    }
    let summary = sender.wait(Duration::from_secs(180))?;
    println!("sender: {summary}");
    check_all_committed(p, &manifest, images).await?;
    push_one_more(p).await?;
    ensure!(
        pair.primary.running() && pair.standby().running(),
        "both nodes are still up at the end"
    );
    Ok(KillReport {
        images,
        takeovers: pair.takeovers.clone(),
        sender: summary,
        elapsed: started.elapsed(),
    })
}

/// Waits until every image the manifest acknowledges is committed, then checks the whole output: each
/// of the `images` released images exactly once and byte for byte, and nothing else.
pub async fn check_all_committed(
    p: &Pipeline,
    manifest: &std::path::Path,
    images: u64,
) -> anyhow::Result<()> {
    let v = p.wait_committed(manifest, Duration::from_secs(60)).await?;
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

/// Pushes one more image, waiting for its committed ack, and finds it in the output: the pipeline
/// still works after everything a test did to it.
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
    let v = p.verify(&manifest, true).await?;
    ensure!(
        v.ok() && v.expected == 1 && v.found == 1,
        "{}: the image pushed last is acknowledged and in the output: {}",
        p.strategy,
        v.summary()
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
