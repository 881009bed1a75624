//! `hdfs-ingest bench recovery`: every fault-tolerance strategy on one seeded workload, its primary
//! killed with SIGKILL mid-stream, measured side by side.
//!
//! # One run
//!
//! For each strategy and run, in a fresh directory:
//!
//! 1. A configuration is written from the shipped `config/<strategy>.toml` (embedded in the binary),
//!    with free ports, `heartbeat_interval = 100ms`, `failure_timeout = 300ms`, `batch.interval = 1s`
//!    and the chosen checkpoint store (a local directory, or a fresh directory under an HDFS URL,
//!    which then holds the output too: `<run dir>/checkpoints` and `<run dir>/output`).
//! 2. The primary, and for the two-node strategies the standby, are started as child processes of
//!    this executable (`run --config .. --role ..`); their stdout is read for `ready`, `standby` and
//!    `takeover {json}`, their stderr goes to `<out>/logs/`.
//! 3. **Steady run** (skipped by the `--checkpoint-mb` variant), on its own nodes: the sender pushes
//!    `--steady-images` images *unpaced*, with the strategy's targets, mode and release level; then
//!    the nodes are stopped and the output verified. The steady-state throughput is end to end: every
//!    image over the time from the first send until the last one landed in the output (see
//!    `landing_rate`). It is a separate run, not a
//!    first phase on the same nodes, so that the failover is measured from a steady state at
//!    `--rate` and not in the wake of the unpaced backlog (batch commits of hundreds of MB, a full
//!    page cache) — and so that a standby that takes over from a live primary under the unpaced load
//!    (heartbeats stalled for longer than `failure_timeout`) is reported as such without spoiling the
//!    failover figures.
//! 4. **Failover run**, on fresh nodes: the sender pushes at `--rate` for `kill-after + after-kill`;
//!    at `kill-after` the primary gets SIGKILL. `none` is restarted in place at once (that is its
//!    recovery); the two-node strategies' standby detects the silence and takes over. The sender fails over on its
//!    own (the [`crate::send::push`] library, in this process, with a [`Timeline`]).
//! 5. Once the push is done and everything sent before the kill is committed, the surviving node
//!    is stopped with SIGTERM and the output is verified against the sender's manifest of released
//!    images ([`crate::verify`]): a lost, duplicated or corrupt image fails the bench.
//!
//! # What is measured (all relative to the SIGKILL, in ms)
//!
//! - **detection**: the standby's `takeover.detected_unix_ms` − kill (`none`: 0, nothing detects; a
//!   supervisor restarts it).
//! - **serving**: `takeover.serving_unix_ms` − kill (`none`: until the restarted node printed `ready`).
//! - **new ack**: the first release after the kill. Releases before the recovered node served (minus
//!   5 ms for clock rounding) can only be acks the dead node sent before it died that were still in the
//!   sender's socket buffer; they do not count.
//! - **all committed**: the latest commit of an image released before the kill. A commit is the
//!   committed ack, or, when that ack could not reach the sender (a node commits a recovered batch
//!   before the sender's stream has reconnected and registered), the moment the image appeared in
//!   the output, polled every 5 ms. Under `upstream-backup` a release *is* a commit, so this is ≤ 0;
//!   **all sent committed** (every image *sent* before the kill) shows the cost of its replay.
//! - **throughput**: images/s and MB/s of the steady run (above).
//! - **network**: bytes the sender wrote to all nodes (hellos, frames, re-sends, mirror copies) per MB
//!   of images, over both runs, and up to the kill only (both nodes alive: mirror mode's 2×).
//! - **storage**: `write_bytes` of `/proc/<pid>/io` of the node processes — in the steady run every
//!   node at its end, in the failover run the primary just before the kill plus the survivor
//!   (standby or restarted node) at the end — per MB of images; and the checkpoint store's peak size
//!   (sampled every 5 ms).
//! - the `--checkpoint-mb` variant also reports **load** (serving − detection: opening the WAL, the
//!   checkpoint and loading its blocks) and **replay** MB/s: bytes the sender wrote after the kill
//!   (re-sends only: no image is new after the kill in this variant) over the time from the first
//!   re-sent byte until the new node had written as many bytes (its `write_bytes`, sampled every 5 ms).
//!
//! Runs are interleaved (run 1 of every strategy, then run 2, …) so drift on the machine hits all
//! alike. Every figure is reported as p50 and p99 over runs (nearest rank), throughput and bytes also
//! as a ratio to `none`'s p50. The table goes to stdout and `<out>/recovery.md` (with the command line
//! and the machine), every run's figures to `<out>/recovery.json`, the chart to `<out>/recovery.svg`.
//!
//! # The `--checkpoint-mb` variant
//!
//! Shows a takeover that must load a large checkpoint: the batch interval is made long
//! (`kill-after + 7s`), the sender pushes `--checkpoint-mb` MB unpaced and stops, and the primary is
//! killed once every image is released (for `upstream-backup`, whose release needs a commit: once every
//! image was sent) and `kill-after` has passed — so `passive-standby`'s takeover loads a checkpoint of
//! that many MB of uncommitted blocks and `upstream-backup` replays that many MB from the sender.
//! Time to all committed then includes waiting for the long batch interval where the strategy's new
//! primary does not commit at once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;
use strategies::{Release, Strategy};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

pub use crate::bench::stats::Spread;

use crate::bench::child::{proc_write_bytes, terminate};
use crate::bench::stats::{ms_between, p50_ratio, ratio_cell, spread, spread_cell};
use crate::config::{Carry, Config};
use crate::ha::TakeoverEvent;
use crate::images::{bmp_of_size, ImageSet};
use crate::send::manifest::{read_manifest, ManifestWriter};
use crate::send::push::{push, PushOptions, Timeline, TimelineEntry};
use crate::size::ByteSize;

#[derive(clap::Args, Debug, Clone)]
pub struct RecoveryArgs {
    /// Strategies to compare, comma-separated, in table order (`none` is the baseline of the ratios).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,passive-standby,active-standby,upstream-backup"
    )]
    pub strategies: Vec<String>,
    /// Runs per strategy (interleaved).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Images per second over all streams in the failover phase (default 300; --quick 200).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Image size (default 256KiB; --quick 64KiB).
    #[arg(long)]
    pub size: Option<ByteSize>,
    /// Blocks a sender stream keeps unreleased at most.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// Sender streams.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seeds the image pool.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// When the primary is killed, after the failover phase starts (default 3s; --quick 1.5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub kill_after: Option<Duration>,
    /// How long the sender goes on after the kill (default 5s; --quick 3s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub after_kill: Option<Duration>,
    /// Images of the unpaced steady run that measures throughput (default 6000). 0 skips it, as
    /// --quick does: a run of a few hundred images is over before a strategy that releases on a commit
    /// or a checkpoint reaches a steady state, so its figure would be the commit latency, not a rate.
    #[arg(long)]
    pub steady_images: Option<u64>,
    /// `local` (a directory in each run's directory), or `hdfs URL` / `hdfs://namenode:port/dir`: a
    /// fresh directory under it per run holds the checkpoint store *and the output*.
    #[arg(long, num_args = 1..=2, default_values = ["local"], value_name = "local|hdfs URL")]
    pub checkpoint_store: Vec<String>,
    /// The variant with a large checkpoint: fill the primary with this many MB of uncommitted blocks
    /// (a long batch interval), then kill it.
    #[arg(long)]
    pub checkpoint_mb: Option<u64>,
    /// passive-standby's `strategy.carry`: `lagging` (the shipped default: checkpoints carry what
    /// the output has not taken within an interval) or `all` (every uncommitted block, every time).
    #[arg(long, value_enum, default_value = "lagging")]
    pub carry: Carry,
    /// Where the results go (recovery.md, recovery.json, recovery.svg, logs/, runs/).
    #[arg(long, default_value = "./hdfs-ingest-data/bench-recovery")]
    pub out: PathBuf,
    /// A short run for tests: fewer images, shorter phases.
    #[arg(long)]
    pub quick: bool,
    /// Keep every run's directory (data, WALs, output); by default a verified run's is removed.
    #[arg(long)]
    pub keep: bool,
}

impl RecoveryArgs {
    /// `--quick --runs 1` over every strategy, results under `out`: one failover each (the demo's).
    pub fn quick(out: PathBuf) -> RecoveryArgs {
        RecoveryArgs {
            strategies: Strategy::ALL.iter().map(|s| s.name().to_string()).collect(),
            runs: 1,
            rate: None,
            size: None,
            window: 256,
            concurrency: 4,
            seed: 1,
            kill_after: None,
            after_kill: None,
            steady_images: None,
            checkpoint_store: vec!["local".into()],
            checkpoint_mb: None,
            carry: Carry::Lagging,
            out,
            quick: true,
            keep: false,
        }
    }
}

#[derive(Clone, Debug)]
enum StoreChoice {
    Local,
    Hdfs(String),
}

/// The arguments with the `--quick` defaults resolved.
#[derive(Clone, Debug)]
struct Plan {
    strategies: Vec<Strategy>,
    runs: usize,
    rate: f64,
    window: usize,
    concurrency: usize,
    kill_after: Duration,
    after_kill: Duration,
    steady_images: u64,
    store: StoreChoice,
    checkpoint_mb: Option<u64>,
    carry: Carry,
    batch_interval: Duration,
    out: PathBuf,
    keep: bool,
    pool: Arc<Vec<(PathBuf, Bytes)>>,
    image_len: u64,
    exe: PathBuf,
}

impl Plan {
    fn new(a: &RecoveryArgs) -> anyhow::Result<Plan> {
        let mut strategies = Vec::new();
        for name in &a.strategies {
            let s = Strategy::from_name(name.trim()).with_context(|| {
                format!(
                    "--strategies: unknown strategy `{name}` (one of {})",
                    Strategy::ALL.map(|s| s.name()).join(", ")
                )
            })?;
            if !strategies.contains(&s) {
                strategies.push(s);
            }
        }
        if strategies.is_empty() {
            bail!("--strategies: name at least one strategy");
        }
        let store = match a
            .checkpoint_store
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["local"] => StoreChoice::Local,
            ["hdfs", url] | [url] if url.starts_with("hdfs://") => {
                crate::config::split_hdfs_url(url).map_err(anyhow::Error::msg)?;
                StoreChoice::Hdfs(url.trim_end_matches('/').to_string())
            }
            other => bail!(
                "--checkpoint-store: `local` or `hdfs hdfs://namenode:port/dir`, not `{}`",
                other.join(" ")
            ),
        };
        if a.runs == 0 {
            bail!("--runs must be at least 1");
        }
        let rate = a.rate.unwrap_or(if a.quick { 200.0 } else { 300.0 });
        if !rate.is_finite() || rate <= 0.0 {
            bail!("--rate must be positive");
        }
        let kill_after = a.kill_after.unwrap_or(if a.quick {
            Duration::from_millis(1500)
        } else {
            Duration::from_secs(3)
        });
        let after_kill = a.after_kill.unwrap_or(if a.quick {
            Duration::from_secs(3)
        } else {
            Duration::from_secs(5)
        });
        let size = a
            .size
            .unwrap_or(ByteSize(if a.quick { 64 << 10 } else { 256 << 10 }))
            .as_usize()
            .max(64);
        let pool: Vec<(PathBuf, Bytes)> = (0..64u64)
            .map(|i| {
                (
                    PathBuf::from(format!("pool:{i}")),
                    Bytes::from(bmp_of_size(size, a.seed.wrapping_mul(1000).wrapping_add(i))),
                )
            })
            .collect();
        let image_len = pool[0].1.len() as u64;
        Ok(Plan {
            strategies,
            runs: a.runs,
            rate,
            window: a.window.max(1),
            concurrency: a.concurrency.max(1),
            kill_after,
            after_kill,
            steady_images: a.steady_images.unwrap_or(if a.quick { 0 } else { 6000 }),
            store,
            checkpoint_mb: a.checkpoint_mb,
            carry: a.carry,
            batch_interval: match a.checkpoint_mb {
                Some(_) => kill_after + Duration::from_secs(7),
                None => Duration::from_secs(1),
            },
            out: a.out.clone(),
            keep: a.keep,
            pool: Arc::new(pool),
            image_len,
            exe: std::env::current_exe().context("the path of this executable")?,
        })
    }

    fn images(&self) -> ImageSet {
        ImageSet::Files(self.pool.as_ref().clone())
    }

    fn failover_images(&self) -> u64 {
        match self.checkpoint_mb {
            Some(mb) => (mb * 1_000_000).div_ceil(self.image_len).max(1),
            None => ((self.kill_after + self.after_kill).as_secs_f64() * self.rate).ceil() as u64,
        }
    }
}

/// Every figure of one run (ms are after the SIGKILL).
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub strategy: String,
    pub run: usize,
    /// The standby took over this long *before* the kill: the primary's heartbeats stalled for more
    /// than `failure_timeout` under load (a false failover). The run's times are left out of the
    /// percentiles; its bytes still count.
    pub took_over_before_kill_ms: Option<f64>,
    /// The standby took over during the unpaced steady run, while the primary was alive.
    pub steady_false_takeover: bool,
    pub detection_ms: f64,
    pub serving_ms: f64,
    pub new_ack_ms: Option<f64>,
    pub all_committed_ms: f64,
    pub all_sent_committed_ms: f64,
    /// Images released before the kill whose commit time is their appearance in the output: their
    /// committed ack never reached the sender (the node committed them before the sender's stream
    /// had reconnected to it).
    pub commits_seen_in_output: usize,
    pub throughput_images_s: Option<f64>,
    pub throughput_mb_s: Option<f64>,
    pub network_bytes: u64,
    pub image_bytes: u64,
    pub network_per_mb: f64,
    /// Network bytes per MB of images up to the kill (both nodes alive).
    pub network_per_mb_until_kill: f64,
    /// Bytes written to each node (primary first) in the steady and the failover phase.
    pub network_bytes_by_node: Vec<(u64, u64)>,
    pub storage_bytes: u64,
    pub storage_per_mb: f64,
    pub store_peak_bytes: u64,
    /// Serving − detection (`none`: the restart until ready).
    pub load_ms: f64,
    pub replayed_bytes: u64,
    pub replay_mb_s: Option<f64>,
    pub images_released: u64,
    pub resent: u64,
    pub failovers: u64,
    pub verify: String,
}

/// A line a node printed on stdout.
#[derive(Debug)]
enum Line {
    Ready,
    Standby,
    Takeover(TakeoverEvent),
}

/// A node process of this executable.
struct NodeChild {
    role: String,
    child: tokio::process::Child,
    pid: u32,
    lines: mpsc::UnboundedReceiver<(Instant, Line)>,
    log: PathBuf,
}

impl NodeChild {
    async fn spawn(
        plan: &Plan,
        config: &Path,
        args: &[&str],
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        let role = args.join(" ");
        let err = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut child = tokio::process::Command::new(&plan.exe)
            .args(["run", "--config"])
            .arg(config)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG")
                    .unwrap_or_else(|_| "info,hdfs_ingest::analysis=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start the node ({role})"))?;
        let pid = child.id().context("the node has no pid")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut rd = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = rd.next_line().await {
                let at = Instant::now();
                let line = if l.starts_with("ready ") {
                    Line::Ready
                } else if l.starts_with("standby ") {
                    Line::Standby
                } else if let Some(json) = l.strip_prefix("takeover ") {
                    match serde_json::from_str(json) {
                        Ok(ev) => Line::Takeover(ev),
                        Err(_) => continue,
                    }
                } else {
                    continue;
                };
                if tx.send((at, line)).is_err() {
                    return;
                }
            }
        });
        Ok(NodeChild {
            role,
            child,
            pid,
            lines,
            log,
        })
    }

    /// Waits for a line `want` accepts; an error with the end of the node's log if it exits first.
    async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        want: impl Fn(&Line) -> bool,
    ) -> anyhow::Result<(Instant, Line)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((at, l))) if want(&l) => return Ok((at, l)),
                Ok(Some(_)) => continue,
                Ok(None) => {
                    let st = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
                    bail!(
                        "the node ({}) exited ({st:?}) before printing {what}; its log {}:\n{}",
                        self.role,
                        self.log.display(),
                        log_tail(&self.log)
                    );
                }
                Err(_) => bail!(
                    "the node ({}) printed no {what} within {within:?}; its log {}:\n{}",
                    self.role,
                    self.log.display(),
                    log_tail(&self.log)
                ),
            }
        }
    }

    fn write_bytes(&self) -> u64 {
        proc_write_bytes(self.pid).unwrap_or(0)
    }

    /// SIGKILL and reap.
    async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM (the node commits what is durable and exits), SIGKILL after 30 s.
    async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        terminate(self.pid);
        match tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await {
            Ok(st) => Ok(st?),
            Err(_) => {
                self.child.start_kill()?;
                bail!(
                    "the node ({}) did not stop within 30 s of SIGTERM; its log {}",
                    self.role,
                    self.log.display()
                )
            }
        }
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn unix_ms_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn shipped_config(s: Strategy) -> &'static str {
    match s {
        Strategy::None => include_str!("../../config/none.toml"),
        Strategy::PassiveStandby => include_str!("../../config/passive-standby.toml"),
        Strategy::ActiveStandby => include_str!("../../config/active-standby.toml"),
        Strategy::UpstreamBackup => include_str!("../../config/upstream-backup.toml"),
    }
}

fn table<'a>(t: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    let v = t
        .entry(key.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if !v.is_table() {
        *v = toml::Value::Table(toml::Table::new());
    }
    v.as_table_mut().expect("made a table above")
}

fn string(s: impl Into<String>) -> toml::Value {
    toml::Value::String(s.into())
}

/// Where one run's pieces are.
struct RunPaths {
    dir: PathBuf,
    config: PathBuf,
    /// The output: a directory of the run's, or (with the checkpoint store on HDFS) `<hdfs run dir>/output`.
    output: OutputAt,
    store: StoreAt,
    targets: Vec<String>,
}

#[derive(Clone, Debug)]
enum StoreAt {
    Local(PathBuf),
    /// `hdfs://…/bench-recovery-<pid>-<tag>`: the run's directory on HDFS, holding `checkpoints`
    /// (the store) and `output`.
    Hdfs(String),
}

#[derive(Clone, Debug)]
enum OutputAt {
    Local(PathBuf),
    Hdfs(String),
}

/// Writes the run's configuration: the shipped one of the strategy, with this run's directories,
/// free ports, the bench's timings and store.
fn write_config(plan: &Plan, s: Strategy, dir: &Path, tag: &str) -> anyhow::Result<RunPaths> {
    let mut t: toml::Table = toml::from_str(shipped_config(s))
        .with_context(|| format!("the shipped config/{s}.toml"))?;
    let data = dir.join("data");
    table(&mut t, "node").insert("data_dir".into(), string(data.display().to_string()));
    table(&mut t, "batch").insert(
        "interval".into(),
        string(humantime::format_duration(plan.batch_interval).to_string()),
    );
    let (store, output) = match &plan.store {
        StoreChoice::Local => (
            StoreAt::Local(dir.join("checkpoints")),
            OutputAt::Local(dir.join("output")),
        ),
        StoreChoice::Hdfs(url) => {
            let run = format!("{url}/bench-recovery-{}-{tag}", std::process::id());
            (
                StoreAt::Hdfs(run.clone()),
                OutputAt::Hdfs(format!("{run}/output")),
            )
        }
    };
    let output_url = match &output {
        OutputAt::Local(p) => p.display().to_string(),
        OutputAt::Hdfs(u) => u.clone(),
    };
    table(&mut t, "output").insert("url".into(), string(output_url));
    let mut st = toml::Table::new();
    match &store {
        StoreAt::Local(p) => {
            st.insert("kind".into(), string("local"));
            st.insert("path".into(), string(p.display().to_string()));
        }
        StoreAt::Hdfs(u) => {
            st.insert("kind".into(), string("hdfs"));
            st.insert("url".into(), string(format!("{u}/checkpoints")));
        }
    }
    table(&mut t, "checkpoint").insert("store".into(), toml::Value::Table(st));
    let framed = format!("127.0.0.1:{}", free_port()?);
    let mut source = toml::Table::new();
    source.insert("kind".into(), string("framed-listen"));
    source.insert("address".into(), string(framed.clone()));
    table(&mut t, "receiver").insert(
        "sources".into(),
        toml::Value::Array(vec![toml::Value::Table(source)]),
    );
    {
        let strat = table(&mut t, "strategy");
        strat.insert("kind".into(), string(s.name()));
        strat.insert("heartbeat_interval".into(), string("100ms"));
        strat.insert("failure_timeout".into(), string("300ms"));
        strat.insert("checkpoint_interval".into(), string("1s"));
        strat.insert("carry".into(), toml::Value::try_from(plan.carry)?);
        if s.has_standby() {
            for role in ["primary", "standby"] {
                let r = table(strat, role);
                r.insert(
                    "framed".into(),
                    string(format!("127.0.0.1:{}", free_port()?)),
                );
                r.insert(
                    "control".into(),
                    string(format!("127.0.0.1:{}", free_port()?)),
                );
            }
        }
        if plan.checkpoint_mb.is_some() {
            // Room for the whole fill in the sender's retention.
            let r = table(strat, "retention");
            let need = plan.failover_images() * plan.image_len;
            if let Some(toml::Value::String(b)) = r.get("max_bytes") {
                let have: ByteSize = b.parse().map_err(anyhow::Error::msg)?;
                if have.as_u64() < need * 2 {
                    r.insert("max_bytes".into(), string(ByteSize(need * 2).to_string()));
                }
            }
        }
    }
    let text = toml::to_string(&t)?;
    let cfg = Config::parse(&text).map_err(|e| anyhow::anyhow!("the bench's {s} config: {e}"))?;
    let config = dir.join("node.toml");
    std::fs::write(&config, &text)?;
    Ok(RunPaths {
        dir: dir.to_path_buf(),
        config,
        output,
        store,
        targets: cfg.send_targets(),
    })
}

/// The sender of a strategy, as `send push --config` sets it up ([`PushOptions::for_config`]).
fn push_options(
    plan: &Plan,
    cfg: &Config,
    prefix: &str,
    count: u64,
    rate: Option<f64>,
    timeline: Arc<Timeline>,
) -> PushOptions {
    PushOptions {
        count,
        concurrency: plan.concurrency,
        rate,
        source_prefix: prefix.into(),
        window: plan.window,
        give_up_after: Duration::from_secs(60),
        timeline: Some(timeline),
        ..PushOptions::for_config(cfg)
    }
}

/// What the watcher thread saw.
#[derive(Default)]
struct Seen {
    /// First time each image was in a published batch of the output.
    in_output: HashMap<(String, u64), Instant>,
    store_peak: u64,
    store_now: u64,
    /// After the kill: (when, the new node's write_bytes, bytes the sender wrote in all).
    replay: Vec<(Instant, u64, u64)>,
}

/// Polls the output, the checkpoint store and (after the kill) the new node every 5 ms.
struct Watcher {
    stop: Arc<AtomicBool>,
    new_pid: Arc<AtomicU32>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
    hdfs: Option<tokio::task::JoinHandle<()>>,
}

impl Watcher {
    fn start(paths: &RunPaths, timeline: Arc<Mutex<Option<Arc<Timeline>>>>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let new_pid = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let thread = {
            let (stop, new_pid, seen) = (stop.clone(), new_pid.clone(), seen.clone());
            let output = match &paths.output {
                OutputAt::Local(p) => Some(p.clone()),
                OutputAt::Hdfs(_) => None,
            };
            let local_store = match &paths.store {
                StoreAt::Local(p) => Some(p.clone()),
                StoreAt::Hdfs(_) => None,
            };
            std::thread::spawn(move || {
                let mut batches = HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let store = local_store.as_deref().map(dir_size);
                    let pid = new_pid.load(Ordering::Relaxed);
                    let replay = (pid != 0).then(|| {
                        let sent = lock(&timeline).as_ref().map_or(0, |t| t.bytes_total());
                        (now, proc_write_bytes(pid).unwrap_or(0), sent)
                    });
                    let fresh = output
                        .as_deref()
                        .map_or_else(Vec::new, |o| new_batches(o, &mut batches));
                    {
                        let mut s = lock(&seen);
                        if let Some(b) = store {
                            s.store_peak = s.store_peak.max(b);
                            s.store_now = b;
                        }
                        if let Some(r) = replay {
                            s.replay.push(r);
                        }
                        for key in fresh {
                            s.in_output.entry(key).or_insert(now);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let hdfs = match &paths.store {
            StoreAt::Hdfs(url) => {
                let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
                Some(tokio::spawn(async move {
                    let Ok((base, root)) = crate::config::split_hdfs_url(&url) else {
                        return;
                    };
                    let opts = strategies::store::hdfs::HdfsOptions::default();
                    let Ok(client) = strategies::store::hdfs::build_client(&base, &opts) else {
                        return;
                    };
                    let (store, output) = (format!("{root}/checkpoints"), format!("{root}/output"));
                    let mut batches = HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(c) = client.get_content_summary(&store).await {
                            let mut s = lock(&seen);
                            s.store_peak = s.store_peak.max(c.length);
                            s.store_now = c.length;
                        }
                        let now = Instant::now();
                        let fresh = new_hdfs_batches(&client, &output, &mut batches).await;
                        {
                            let mut s = lock(&seen);
                            for key in fresh {
                                s.in_output.entry(key).or_insert(now);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }))
            }
            StoreAt::Local(_) => None,
        };
        Watcher {
            stop,
            new_pid,
            seen,
            thread: Some(thread),
            hdfs,
        }
    }

    async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(h) = self.hdfs.take() {
            let _ = h.await;
        }
        std::mem::take(&mut *lock(&self.seen))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = &self.hdfs {
            h.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes of the regular files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The images of batch directories published since the last call (a batch is published with one
/// rename, so a directory seen is complete).
fn new_batches(output: &Path, known: &mut HashSet<String>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(output) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('_') || name.starts_with('.') || known.contains(&name) {
            continue;
        }
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if let Ok(files) = std::fs::read_dir(e.path()) {
            for f in files.flatten() {
                let fname = f.file_name().to_string_lossy().into_owned();
                if let Some((source, seq)) = crate::verify::parse_image_name(&fname) {
                    out.push((source.to_string(), seq));
                }
            }
        }
        known.insert(name);
    }
    out
}

/// [`new_batches`] for an output on HDFS.
async fn new_hdfs_batches(
    client: &hdfs_native::Client,
    output: &str,
    known: &mut HashSet<String>,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(dirs) = client.list_status(output, false).await else {
        return out;
    };
    for d in dirs.into_iter().filter(|d| d.isdir) {
        let name = d.path.rsplit('/').next().unwrap_or_default().to_string();
        if name.starts_with('_') || name.starts_with('.') || known.contains(&name) {
            continue;
        }
        if let Ok(files) = client.list_status(&format!("{output}/{name}"), false).await {
            for f in files {
                let fname = f.path.rsplit('/').next().unwrap_or_default();
                if let Some((source, seq)) = crate::verify::parse_image_name(fname) {
                    out.push((source.to_string(), seq));
                }
            }
        }
        known.insert(name);
    }
    out
}

/// Steady-state throughput, end to end: every image of the unpaced run over the time from the first
/// send until the last image *landed* — its committed ack, or its batch seen in the output, whichever
/// came first. Every strategy pays the same tail (the last batch's interval and commit), so the
/// ratios compare like with like; the release rate does not, since a strategy that releases on a
/// commit releases in bursts, one per batch, and one that releases on *durable* ends its push before
/// its output has the images.
fn landing_rate(
    entries: &[TimelineEntry],
    in_output: &HashMap<(String, u64), Instant>,
    image_len: u64,
) -> Option<(f64, f64)> {
    let first_send = entries.iter().map(|e| e.sent).min()?;
    let mut last = first_send;
    for e in entries {
        let out = in_output.get(&(e.source.clone(), e.seq)).copied();
        let landed = match (e.committed, out) {
            (Some(c), Some(o)) => c.min(o),
            (c, o) => c.or(o)?,
        };
        last = last.max(landed);
    }
    let secs = last.duration_since(first_send).as_secs_f64();
    let n = entries.len() as f64;
    (secs > 0.0).then(|| (n / secs, n * image_len as f64 / 1e6 / secs))
}

/// A run's node processes on a fresh directory and configuration.
struct Nodes {
    paths: RunPaths,
    cfg: Config,
    primary: NodeChild,
    standby: Option<NodeChild>,
    primary_started: Instant,
}

async fn start_nodes(plan: &Plan, s: Strategy, tag: &str) -> anyhow::Result<Nodes> {
    let dir = plan.out.join("runs").join(tag);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let logs = plan.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let paths = write_config(plan, s, &dir, tag)?;
    let cfg = Config::load(&paths.config)?;
    let mut primary = NodeChild::spawn(
        plan,
        &paths.config,
        &["--role", "primary"],
        logs.join(format!("{tag}-primary.log")),
    )
    .await?;
    primary
        .wait_for("ready", Duration::from_secs(60), |l| {
            matches!(l, Line::Ready)
        })
        .await?;
    let primary_started = Instant::now();
    let standby = if s.has_standby() {
        let mut sb = NodeChild::spawn(
            plan,
            &paths.config,
            &["--role", "standby"],
            logs.join(format!("{tag}-standby.log")),
        )
        .await?;
        sb.wait_for("ready or standby", Duration::from_secs(60), |l| {
            matches!(l, Line::Ready | Line::Standby)
        })
        .await?;
        Some(sb)
    } else {
        None
    };
    Ok(Nodes {
        paths,
        cfg,
        primary,
        standby,
        primary_started,
    })
}

/// Every released image in the output exactly once, or an error naming what is not.
async fn verify_run(tag: &str, manifest: &Path, paths: &RunPaths) -> anyhow::Result<String> {
    let entries = read_manifest(manifest)?;
    let report = match &paths.output {
        OutputAt::Local(dir) => crate::verify::verify(&entries, dir, false)?,
        OutputAt::Hdfs(url) => {
            let opts = strategies::store::hdfs::HdfsOptions::default();
            crate::verify::verify_hdfs(&entries, url, &opts, false).await?
        }
    };
    if !report.ok() {
        bail!(
            "{tag}: VERIFY FAILED — {}; lost {:?}, duplicated {:?}, corrupt {:?}; run directory kept: {}",
            report.summary(),
            report.lost.iter().take(10).collect::<Vec<_>>(),
            report.duplicated.iter().take(10).collect::<Vec<_>>(),
            report.corrupt.iter().take(10).collect::<Vec<_>>(),
            paths.dir.display()
        );
    }
    Ok(report.summary())
}

async fn clean_up(plan: &Plan, paths: &RunPaths) {
    if !plan.keep {
        let _ = std::fs::remove_dir_all(&paths.dir);
        if let StoreAt::Hdfs(url) = &paths.store {
            remove_hdfs_dir(url).await;
        }
    }
}

/// The unpaced run that measures throughput, on its own nodes.
struct Steady {
    images: u64,
    throughput: Option<(f64, f64)>,
    network_bytes: u64,
    network_by_node: Vec<u64>,
    storage_bytes: u64,
    store_peak: u64,
    /// The standby took over while the primary was alive (a false failover under load).
    false_takeover: bool,
    verify: String,
}

async fn steady_run(plan: &Plan, s: Strategy, run: usize) -> anyhow::Result<Steady> {
    let tag = format!("{s}-{}-steady", run + 1);
    let Nodes {
        paths,
        cfg,
        primary,
        mut standby,
        ..
    } = start_nodes(plan, s, &tag).await?;
    let manifest_path = paths.dir.join("manifest.jsonl");
    let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);
    let timeline = Arc::new(Timeline::new());
    let watcher = Watcher::start(&paths, Arc::new(Mutex::new(None)));
    let opts = push_options(
        plan,
        &cfg,
        "steady",
        plan.steady_images,
        None,
        timeline.clone(),
    );
    let report = push(opts, plan.images(), Some(manifest.clone()))
        .await
        .with_context(|| format!("{tag}: push"))?;
    if report.acked != plan.steady_images {
        bail!(
            "{tag}: released {} of {} images",
            report.acked,
            plan.steady_images
        );
    }
    // Wait until the output has every image (each was released: it is committed by the next batch).
    let entries = timeline.entries();
    let deadline = Instant::now() + plan.batch_interval + Duration::from_secs(30);
    loop {
        let missing = {
            let seen = lock(&watcher.seen);
            entries
                .iter()
                .filter(|e| !seen.in_output.contains_key(&(e.source.clone(), e.seq)))
                .count()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{tag}: {missing} released images are not in the output");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut false_takeover = false;
    if let Some(sb) = &mut standby {
        while let Ok((_, l)) = sb.lines.try_recv() {
            false_takeover |= matches!(l, Line::Takeover(_));
        }
    }
    if false_takeover {
        println!(
            "  {tag}: WARNING: the standby took over while the primary was alive (its heartbeats \
             stalled for more than failure_timeout under the unpaced load)"
        );
    }
    let storage_bytes = primary.write_bytes() + standby.as_ref().map_or(0, |sb| sb.write_bytes());
    let seen = watcher.finish().await;
    // The standby first, so that it does not take over from a primary that is stopping.
    if let Some(sb) = standby {
        sb.stop().await?;
    }
    primary.stop().await?;
    manifest.flush()?;
    let verify = verify_run(&tag, &manifest_path, &paths).await?;
    clean_up(plan, &paths).await;
    let by_target = timeline.bytes_by_target();
    Ok(Steady {
        images: report.acked,
        throughput: landing_rate(&entries, &seen.in_output, plan.image_len),
        network_bytes: timeline.bytes_total(),
        network_by_node: paths
            .targets
            .iter()
            .map(|a| by_target.get(a).copied().unwrap_or(0))
            .collect(),
        storage_bytes,
        store_peak: seen.store_peak,
        false_takeover,
        verify,
    })
}

async fn run_one(plan: &Plan, s: Strategy, run: usize) -> anyhow::Result<RunResult> {
    let steady = match plan.checkpoint_mb {
        None if plan.steady_images > 0 => Some(steady_run(plan, s, run).await?),
        _ => None,
    };
    let tag = format!("{s}-{}", run + 1);
    let Nodes {
        paths,
        cfg,
        mut primary,
        mut standby,
        primary_started,
    } = start_nodes(plan, s, &tag).await?;
    let logs = plan.out.join("logs");
    let manifest_path = paths.dir.join("manifest.jsonl");
    let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);
    let t2 = Arc::new(Timeline::new());
    let watcher = Watcher::start(&paths, Arc::new(Mutex::new(Some(t2.clone()))));

    let count = plan.failover_images();
    let rate = plan.checkpoint_mb.is_none().then_some(plan.rate);
    let opts = push_options(plan, &cfg, "failover", count, rate, t2.clone());
    let phase_start = Instant::now();
    let sender = tokio::spawn(push(opts, plan.images(), Some(manifest.clone())));
    tokio::time::sleep_until((phase_start + plan.kill_after).into()).await;
    if plan.checkpoint_mb.is_some() {
        // The fill must be all at the primary: released; under passive-standby, in the checkpoint
        // store (whether or not the node sends checkpointed acks); under upstream-backup, whose
        // release needs a commit, all sent.
        let fill_bytes = count * plan.image_len;
        let latest = primary_started + plan.batch_interval - Duration::from_millis(1500);
        loop {
            let e = t2.entries();
            let all_sent = e.len() as u64 == count;
            let done = all_sent
                && match s.release_level() {
                    Release::Committed => true,
                    Release::Checkpointed => {
                        lock(&watcher.seen).store_now >= fill_bytes
                            || e.iter().all(|e| e.released.is_some())
                    }
                    Release::Durable => e.iter().all(|e| e.released.is_some()),
                };
            if done {
                break;
            }
            if Instant::now() > latest || sender.is_finished() {
                bail!(
                    "{tag}: the {count}-image fill was not at the primary before its first batch \
                     would commit it ({} sent, {} released); lower --checkpoint-mb or --kill-after",
                    e.len(),
                    e.iter().filter(|e| e.released.is_some()).count()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let the last durable acks land (upstream-backup: the fill is in the primary's WAL).
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The kill.
    let primary_written = primary.write_bytes();
    let sent_at_kill = t2.bytes_total();
    if let Some(sb) = &standby {
        watcher.new_pid.store(sb.pid, Ordering::Relaxed);
    }
    let kill_wall = SystemTime::now();
    let kill = Instant::now();
    primary.kill9().await?;
    let mut took_over_before_kill_ms = None;
    let (serving, detection_ms, survivor) = match standby.take() {
        None => {
            let mut restarted = NodeChild::spawn(
                plan,
                &paths.config,
                &["--role", "primary"],
                logs.join(format!("{tag}-restarted.log")),
            )
            .await?;
            watcher.new_pid.store(restarted.pid, Ordering::Relaxed);
            let (at, _) = restarted
                .wait_for("ready", Duration::from_secs(60), |l| {
                    matches!(l, Line::Ready)
                })
                .await?;
            (at, 0.0, restarted)
        }
        Some(mut sb) => {
            let (_, line) = sb
                .wait_for("takeover", Duration::from_secs(30), |l| {
                    matches!(l, Line::Takeover(_))
                })
                .await?;
            let Line::Takeover(ev) = line else {
                unreachable!("wait_for returned a takeover line")
            };
            let kill_ms = unix_ms_f64(kill_wall);
            if (ev.detected_unix_ms as f64) < kill_ms {
                let early = kill_ms - ev.detected_unix_ms as f64;
                println!(
                    "  {tag}: WARNING: the standby took over {early:.0} ms BEFORE the kill (the primary's \
                     heartbeats stalled for more than failure_timeout); this run's times are left out"
                );
                took_over_before_kill_ms = Some(early);
            }
            let serving_ms = ev.serving_unix_ms as f64 - kill_ms;
            let serving = kill + Duration::from_secs_f64(serving_ms.max(0.0) / 1e3);
            (serving, ev.detected_unix_ms as f64 - kill_ms, sb)
        }
    };
    let serving_ms = ms_between(kill, serving);

    let within = plan.kill_after + plan.after_kill + plan.batch_interval + Duration::from_secs(120);
    let failover_report = match tokio::time::timeout(within, sender).await {
        Ok(r) => r
            .context("the sender panicked")?
            .with_context(|| format!("{tag}: the failover phase's push"))?,
        Err(_) => bail!("{tag}: the failover phase's push did not finish within {within:?}"),
    };
    if failover_report.acked != count {
        bail!(
            "{tag}: the failover phase released {} of {count} images",
            failover_report.acked
        );
    }

    // Everything sent before the kill must get committed; wait for the output to show it.
    let t2e = t2.entries();
    let before_kill: Vec<&TimelineEntry> = t2e.iter().filter(|e| e.sent < kill).collect();
    let deadline = Instant::now() + plan.batch_interval + Duration::from_secs(15);
    let commit_of = |e: &TimelineEntry, seen: &Seen| -> Option<(Instant, bool)> {
        let out = seen.in_output.get(&(e.source.clone(), e.seq)).copied();
        match (e.committed, out) {
            (Some(c), _) => Some((c, false)),
            (None, Some(o)) => Some((o, true)),
            (None, None) => None,
        }
    };
    let uncommitted = loop {
        let uncommitted: Vec<String> = {
            let seen = lock(&watcher.seen);
            before_kill
                .iter()
                .filter(|e| commit_of(e, &seen).is_none())
                .map(|e| {
                    format!(
                        "{}-{} (released {})",
                        e.source,
                        e.seq,
                        e.released.map_or("never".into(), |r| format!(
                            "{:+.0} ms",
                            ms_between(kill, r)
                        ))
                    )
                })
                .collect()
        };
        if uncommitted.is_empty() || Instant::now() > deadline {
            break uncommitted;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let survivor_written = survivor.write_bytes();
    let seen = watcher.finish().await;

    let survivor_log = survivor.log.clone();
    let st = survivor.stop().await?;
    if !st.success() {
        bail!(
            "{tag}: the surviving node exited with {st} after SIGTERM; its log {}",
            survivor_log.display()
        );
    }
    manifest.flush()?;
    // Verify first: if something is missing, whether it was lost is the question.
    let verify = verify_run(&tag, &manifest_path, &paths).await?;
    if !uncommitted.is_empty() {
        bail!(
            "{tag}: {} images sent before the kill never showed up committed (no committed ack, not \
             seen in the output), though verify passed ({verify}): {:?}; run directory kept: {}",
            uncommitted.len(),
            uncommitted.iter().take(10).collect::<Vec<_>>(),
            paths.dir.display()
        );
    }

    // Figures.
    let not_before = serving
        .checked_sub(Duration::from_millis(5))
        .unwrap_or(kill)
        .max(kill);
    let new_ack_ms = t2e
        .iter()
        .filter_map(|e| e.released)
        .filter(|r| *r >= not_before)
        .min()
        .map(|r| ms_between(kill, r));
    let mut commits_seen_in_output = 0;
    let mut all_committed_ms: f64 = 0.0;
    let mut all_sent_committed_ms: f64 = 0.0;
    for e in &before_kill {
        let (c, from_output) = commit_of(e, &seen).context("checked above")?;
        all_sent_committed_ms = all_sent_committed_ms.max(ms_between(kill, c));
        if e.released.is_some_and(|r| r < kill) {
            commits_seen_in_output += usize::from(from_output);
            all_committed_ms = all_committed_ms.max(ms_between(kill, c));
        }
    }
    let steady_images = steady.as_ref().map_or(0, |st| st.images);
    let steady_bytes = steady.as_ref().map_or(0, |st| st.network_bytes);
    let network_bytes = steady_bytes + t2.bytes_total();
    let images_before_kill = steady_images + before_kill.len() as u64;
    let network_per_mb_until_kill = (steady_bytes + sent_at_kill) as f64
        / ((images_before_kill * plan.image_len) as f64).max(1.0);
    let image_bytes = (steady_images + failover_report.acked) * plan.image_len;
    let storage_bytes =
        steady.as_ref().map_or(0, |st| st.storage_bytes) + primary_written + survivor_written;
    let per_mb = |b: u64| b as f64 / (image_bytes as f64).max(1.0);

    // Replay: bytes the sender wrote after the kill, and how fast the new node wrote them.
    let replayed_bytes = t2.bytes_total().saturating_sub(sent_at_kill);
    let replay_mb_s = if plan.checkpoint_mb.is_some() && replayed_bytes >= 1_000_000 {
        let start = seen
            .replay
            .iter()
            .find(|(_, _, sent)| *sent > sent_at_kill + 65_536)
            .map(|(t, _, _)| *t);
        let base = seen.replay.first().map_or(0, |(_, w, _)| *w);
        let end = seen
            .replay
            .iter()
            .find(|(_, w, _)| w.saturating_sub(base) >= replayed_bytes)
            .map(|(t, _, _)| *t);
        match (start, end) {
            (Some(a), Some(b)) if b > a => {
                Some(replayed_bytes as f64 / 1e6 / b.duration_since(a).as_secs_f64())
            }
            _ => None,
        }
    } else {
        None
    };
    clean_up(plan, &paths).await;

    let by_target = t2.bytes_by_target();
    Ok(RunResult {
        strategy: s.name().into(),
        run: run + 1,
        steady_false_takeover: steady.as_ref().is_some_and(|st| st.false_takeover),
        took_over_before_kill_ms,
        detection_ms,
        serving_ms,
        new_ack_ms,
        all_committed_ms,
        all_sent_committed_ms,
        commits_seen_in_output,
        throughput_images_s: steady.as_ref().and_then(|st| st.throughput.map(|t| t.0)),
        throughput_mb_s: steady.as_ref().and_then(|st| st.throughput.map(|t| t.1)),
        network_bytes,
        image_bytes,
        network_per_mb: per_mb(network_bytes),
        network_per_mb_until_kill,
        network_bytes_by_node: paths
            .targets
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    steady
                        .as_ref()
                        .and_then(|st| st.network_by_node.get(i).copied())
                        .unwrap_or(0),
                    by_target.get(a).copied().unwrap_or(0),
                )
            })
            .collect(),
        storage_bytes,
        storage_per_mb: per_mb(storage_bytes),
        store_peak_bytes: seen
            .store_peak
            .max(steady.as_ref().map_or(0, |st| st.store_peak)),
        load_ms: serving_ms - detection_ms,
        replayed_bytes,
        replay_mb_s,
        images_released: steady_images + failover_report.acked,
        resent: failover_report.resent,
        failovers: failover_report.failovers,
        verify: match &steady {
            Some(st) => format!("steady run {}; failover run {verify}", st.verify),
            None => verify,
        },
    })
}

async fn remove_hdfs_dir(url: &str) {
    let Ok((base, root)) = crate::config::split_hdfs_url(url) else {
        return;
    };
    let opts = strategies::store::hdfs::HdfsOptions::default();
    if let Ok(client) = strategies::store::hdfs::build_client(&base, &opts) {
        let _ = client.delete(&root, true).await;
    }
}

/// One strategy's figures over its runs.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub strategy: String,
    pub runs: usize,
    /// Runs whose standby took over before the kill (left out of the times).
    pub took_over_before_kill: usize,
    /// Steady runs whose standby took over from a live primary under the unpaced load.
    pub steady_false_takeovers: usize,
    pub detection_ms: Option<Spread>,
    pub serving_ms: Option<Spread>,
    pub new_ack_ms: Option<Spread>,
    pub all_committed_ms: Option<Spread>,
    pub all_sent_committed_ms: Option<Spread>,
    pub throughput_images_s: Option<Spread>,
    pub throughput_mb_s: Option<Spread>,
    pub network_per_mb: Option<Spread>,
    pub network_per_mb_until_kill: Option<Spread>,
    pub storage_per_mb: Option<Spread>,
    pub store_peak_mb: Option<Spread>,
    pub load_ms: Option<Spread>,
    pub replay_mb_s: Option<Spread>,
    /// p50 ÷ `none`'s p50.
    pub throughput_ratio: Option<f64>,
    pub network_ratio: Option<f64>,
    pub network_until_kill_ratio: Option<f64>,
    pub storage_ratio: Option<f64>,
}

fn summarize(results: &[RunResult], strategies: &[Strategy]) -> Vec<Summary> {
    let mut out: Vec<Summary> = strategies
        .iter()
        .map(|s| {
            let rs: Vec<&RunResult> = results.iter().filter(|r| r.strategy == s.name()).collect();
            let f = |g: &dyn Fn(&RunResult) -> Option<f64>| {
                spread(rs.iter().filter_map(|r| g(r)).collect())
            };
            // Times only from runs whose takeover followed the kill.
            let t = |g: &dyn Fn(&RunResult) -> Option<f64>| {
                spread(
                    rs.iter()
                        .filter(|r| r.took_over_before_kill_ms.is_none())
                        .filter_map(|r| g(r))
                        .collect(),
                )
            };
            Summary {
                strategy: s.name().into(),
                runs: rs.len(),
                took_over_before_kill: rs
                    .iter()
                    .filter(|r| r.took_over_before_kill_ms.is_some())
                    .count(),
                steady_false_takeovers: rs.iter().filter(|r| r.steady_false_takeover).count(),
                detection_ms: t(&|r| Some(r.detection_ms)),
                serving_ms: t(&|r| Some(r.serving_ms)),
                new_ack_ms: t(&|r| r.new_ack_ms),
                all_committed_ms: t(&|r| Some(r.all_committed_ms)),
                all_sent_committed_ms: t(&|r| Some(r.all_sent_committed_ms)),
                throughput_images_s: f(&|r| r.throughput_images_s),
                throughput_mb_s: f(&|r| r.throughput_mb_s),
                network_per_mb: f(&|r| Some(r.network_per_mb)),
                network_per_mb_until_kill: f(&|r| Some(r.network_per_mb_until_kill)),
                storage_per_mb: f(&|r| Some(r.storage_per_mb)),
                store_peak_mb: f(&|r| Some(r.store_peak_bytes as f64 / 1e6)),
                load_ms: t(&|r| Some(r.load_ms)),
                replay_mb_s: t(&|r| r.replay_mb_s),
                throughput_ratio: None,
                network_ratio: None,
                network_until_kill_ratio: None,
                storage_ratio: None,
            }
        })
        .collect();
    let base = out.iter().find(|s| s.strategy == "none").cloned();
    if let Some(b) = base {
        for s in &mut out {
            s.throughput_ratio = p50_ratio(s.throughput_images_s, b.throughput_images_s);
            s.network_ratio = p50_ratio(s.network_per_mb, b.network_per_mb);
            s.network_until_kill_ratio =
                p50_ratio(s.network_per_mb_until_kill, b.network_per_mb_until_kill);
            s.storage_ratio = p50_ratio(s.storage_per_mb, b.storage_per_mb);
        }
    }
    out
}

fn runs_cell(r: &Summary) -> String {
    let mut notes = Vec::new();
    if r.took_over_before_kill > 0 {
        notes.push(format!(
            "{} took over before the kill: times left out",
            r.took_over_before_kill
        ));
    }
    if r.steady_false_takeovers > 0 {
        notes.push(format!(
            "{} false takeovers in the steady run",
            r.steady_false_takeovers
        ));
    }
    if notes.is_empty() {
        r.runs.to_string()
    } else {
        format!("{} ({})", r.runs, notes.join("; "))
    }
}

/// The table: one column list for both kinds of run (the variant has load and replay instead of
/// throughput, which it does not measure).
fn markdown_table(rows: &[Summary], variant: bool) -> String {
    type Column = (&'static str, fn(&Summary) -> String);
    let mut columns: Vec<Column> = vec![
        ("strategy", |r| r.strategy.clone()),
        ("runs", runs_cell),
        ("detection ms", |r| spread_cell(r.detection_ms, 0)),
        ("serving ms", |r| spread_cell(r.serving_ms, 0)),
    ];
    if variant {
        columns.push(("load ms", |r| spread_cell(r.load_ms, 0)));
        columns.push(("replay MB/s", |r| spread_cell(r.replay_mb_s, 0)));
    }
    columns.extend::<[Column; 3]>([
        ("new ack ms", |r| spread_cell(r.new_ack_ms, 0)),
        ("all committed ms", |r| spread_cell(r.all_committed_ms, 0)),
        ("all sent committed ms", |r| {
            spread_cell(r.all_sent_committed_ms, 0)
        }),
    ]);
    if !variant {
        columns.extend::<[Column; 2]>([
            ("throughput images/s", |r| {
                spread_cell(r.throughput_images_s, 0) + &ratio_cell(r.throughput_ratio)
            }),
            ("throughput MB/s", |r| spread_cell(r.throughput_mb_s, 1)),
        ]);
    }
    columns.extend::<[Column; 4]>([
        ("network MB per MB until kill", |r| {
            spread_cell(r.network_per_mb_until_kill, 2) + &ratio_cell(r.network_until_kill_ratio)
        }),
        ("network MB per MB", |r| {
            spread_cell(r.network_per_mb, 2) + &ratio_cell(r.network_ratio)
        }),
        ("storage MB per MB", |r| {
            spread_cell(r.storage_per_mb, 2) + &ratio_cell(r.storage_ratio)
        }),
        ("checkpoint store peak MB", |r| {
            spread_cell(r.store_peak_mb, 1)
        }),
    ]);
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut t = line(columns.iter().map(|(h, _)| h.to_string()).collect());
    t.push_str("|---|");
    t.push_str(&"---:|".repeat(columns.len() - 1));
    t.push('\n');
    for r in rows {
        t.push_str(&line(columns.iter().map(|(_, f)| f(r)).collect()));
    }
    t
}

/// Cores, CPU, kernel, date: what a reader needs to compare figures across machines.
#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu: String,
    pub kernel: String,
    pub date: String,
}

fn machine() -> Machine {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    Machine {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu,
        kernel,
        date: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
    }
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'a str,
    machine: &'a Machine,
    variant_checkpoint_mb: Option<u64>,
    throughput_note: &'a str,
    summary: &'a [Summary],
    runs: &'a [RunResult],
}

/// Bars of p50 time to new ack and time to all committed per strategy, p99 as whiskers.
fn chart(path: &Path, rows: &[Summary], title: &str) -> anyhow::Result<()> {
    use plotters::prelude::*;
    let secs =
        |s: Option<Spread>| s.map_or((0.0, 0.0), |s| (s.p50.max(0.0) / 1e3, s.p99.max(0.0) / 1e3));
    let bars: Vec<[(f64, f64); 2]> = rows
        .iter()
        .map(|r| [secs(r.new_ack_ms), secs(r.all_committed_ms)])
        .collect();
    let top = bars
        .iter()
        .flat_map(|b| b.iter().map(|(_, p99)| *p99))
        .fold(0.1, f64::max)
        * 1.2;
    let names: Vec<String> = rows.iter().map(|r| r.strategy.clone()).collect();
    let n = rows.len();
    let err = |e: &dyn std::fmt::Display| anyhow::anyhow!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (820, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut c = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..top)
        .map_err(|e| err(&e))?;
    c.configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(n + 1)
        .x_label_formatter(&|x| {
            let i = x.round();
            if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
                names[i as usize].clone()
            } else {
                String::new()
            }
        })
        .y_desc("seconds after SIGKILL of the primary")
        .draw()
        .map_err(|e| err(&e))?;
    let series = [
        (
            "time to new ack (bar p50, whisker p99)",
            RGBColor(0x1f, 0x77, 0xb4),
            -0.4,
            -0.02,
        ),
        (
            "time to all committed (bar p50, whisker p99)",
            RGBColor(0xd6, 0x27, 0x28),
            0.02,
            0.4,
        ),
    ];
    for (k, (label, color, lo, hi)) in series.into_iter().enumerate() {
        c.draw_series(bars.iter().enumerate().map(|(i, b)| {
            let x = i as f64;
            Rectangle::new([(x + lo, 0.0), (x + hi, b[k].0)], color.mix(0.8).filled())
        }))
        .map_err(|e| err(&e))?
        .label(label)
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        c.draw_series(bars.iter().enumerate().flat_map(|(i, b)| {
            let mid = i as f64 + (lo + hi) / 2.0;
            let (p50, p99) = b[k];
            [
                PathElement::new(vec![(mid, p50), (mid, p99)], BLACK.stroke_width(1)),
                PathElement::new(
                    vec![(mid - 0.06, p99), (mid + 0.06, p99)],
                    BLACK.stroke_width(1),
                ),
            ]
        }))
        .map_err(|e| err(&e))?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

pub async fn recovery(a: RecoveryArgs) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&a)?;
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let m = machine();
    let variant = plan.checkpoint_mb.is_some();
    println!(
        "bench recovery: {} × {} runs; images of {}; {}; kill after {:?}, sender on for {:?} after; batch interval {:?}; passive carry {:?}; {} cores",
        plan.strategies.iter().map(|s| s.name()).collect::<Vec<_>>().join(", "),
        plan.runs,
        ByteSize(plan.image_len),
        match plan.checkpoint_mb {
            Some(mb) => format!("variant: {mb} MB of uncommitted blocks at the primary, then kill"),
            None if plan.steady_images == 0 => format!(
                "no steady run, failover run {} images at {}/s",
                plan.failover_images(),
                plan.rate
            ),
            None => format!(
                "steady run {} images unpaced, failover run {} images at {}/s",
                plan.steady_images,
                plan.failover_images(),
                plan.rate
            ),
        },
        plan.kill_after,
        plan.after_kill,
        plan.batch_interval,
        plan.carry,
        m.cores
    );
    let mut results = Vec::new();
    for run in 0..plan.runs {
        for &s in &plan.strategies {
            let r = run_one(&plan, s, run)
                .await
                .with_context(|| format!("{s}, run {}", run + 1))?;
            println!(
                "  {s} run {}: detection {:.0} ms, serving {:.0} ms, new ack {}, all committed {:.0} ms, all sent committed {:.0} ms, {}, network {:.2} MB/MB, storage {:.2} MB/MB, store peak {:.1} MB{}; {}",
                r.run,
                r.detection_ms,
                r.serving_ms,
                r.new_ack_ms.map_or("-".into(), |v| format!("{v:.0} ms")),
                r.all_committed_ms,
                r.all_sent_committed_ms,
                match (r.throughput_images_s, r.throughput_mb_s) {
                    (Some(i), Some(mb)) => format!("steady {i:.0} images/s {mb:.1} MB/s"),
                    _ => "no steady run".into(),
                },
                r.network_per_mb,
                r.storage_per_mb,
                r.store_peak_bytes as f64 / 1e6,
                r.replay_mb_s.map_or(String::new(), |v| format!(", replay {v:.0} MB/s")),
                r.verify
            );
            results.push(r);
        }
    }
    let rows = summarize(&results, &plan.strategies);
    let note = if variant {
        "variant: no steady run (the batch interval is long, so that blocks stay uncommitted)"
    } else if plan.steady_images == 0 {
        "throughput: not measured (no steady run: --quick or --steady-images 0)"
    } else {
        "throughput: a separate unpaced run on its own nodes before each failover run, every image over first send to the last one in the output"
    };
    let table = markdown_table(&rows, variant);
    println!("\n{table}\np50 / p99 over runs; (×r) = p50 ÷ none's p50; {note}.");
    let md = format!(
        "# bench recovery\n\n`{command}`\n\nMachine: {} cores ({}), Linux {}, {}.\n\n{table}\n\
         p50 / p99 over runs (nearest rank); (×r) = p50 ÷ none's p50. Times are ms after the SIGKILL of the \
         primary; \"all committed\" is over images released before the kill, \"all sent committed\" over \
         images sent before it. {note}. Every run was verified: no released image lost or duplicated.\n",
        m.cores, m.cpu, m.kernel, m.date
    );
    std::fs::write(plan.out.join("recovery.md"), md)?;
    let json = serde_json::to_string_pretty(&Report {
        command: &command,
        machine: &m,
        variant_checkpoint_mb: plan.checkpoint_mb,
        throughput_note: note,
        summary: &rows,
        runs: &results,
    })?;
    std::fs::write(plan.out.join("recovery.json"), json)?;
    let title = match plan.checkpoint_mb {
        Some(mb) => format!(
            "Recovery with {mb} MB uncommitted at the kill ({} runs)",
            plan.runs
        ),
        None => format!(
            "Recovery after SIGKILL of the primary ({} runs, {}/s)",
            plan.runs, plan.rate
        ),
    };
    chart(&plan.out.join("recovery.svg"), &rows, &title)?;
    println!(
        "bench recovery: wrote {}, recovery.json and recovery.svg",
        plan.out.join("recovery.md").display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_every_image_over_first_send_to_the_last_landing_whichever_sign_came_first() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let entry = |seq: u64, committed: Option<u64>| TimelineEntry {
            source: "s".into(),
            seq,
            sent: at(seq * 100),
            released: Some(at(seq * 100 + 10)),
            committed: committed.map(at),
        };
        // seq 0: committed ack at 900, in the output at 800 (the ack came late); seq 1: no ack, in
        // the output at 2000; seq 2: acked at 1500, never seen in the output (polled past it).
        let e = vec![entry(0, Some(900)), entry(1, None), entry(2, Some(1500))];
        let out: HashMap<_, _> = [
            (("s".to_string(), 0), at(800)),
            (("s".to_string(), 1), at(2000)),
        ]
        .into_iter()
        .collect();
        let (images_s, mb_s) = landing_rate(&e, &out, 1_000_000).unwrap();
        assert!((images_s - 1.5).abs() < 1e-9, "3 images in 2 s: {images_s}");
        assert!((mb_s - 1.5).abs() < 1e-9, "{mb_s}");
        // An image that never landed leaves no figure rather than a wrong one.
        let e = vec![entry(0, Some(900)), entry(3, None)];
        assert!(landing_rate(&e, &out, 1).is_none());
    }

    #[test]
    fn every_shipped_strategy_config_becomes_a_valid_bench_config() {
        let dir = tempfile::tempdir().unwrap();
        let a = RecoveryArgs {
            strategies: vec!["none".into()],
            size: Some(ByteSize(1024)),
            window: 8,
            concurrency: 1,
            ..RecoveryArgs::quick(dir.path().into())
        };
        let plan = Plan::new(&a).unwrap();
        for s in Strategy::ALL {
            let d = dir.path().join(s.name());
            std::fs::create_dir_all(&d).unwrap();
            let p = write_config(&plan, s, &d, "t").unwrap();
            let cfg = Config::load(&p.config).unwrap();
            assert_eq!(cfg.strategy.kind, s);
            assert_eq!(cfg.batch.interval, Duration::from_secs(1));
            assert_eq!(cfg.strategy.failure_timeout, Duration::from_millis(300));
            assert_eq!(cfg.strategy.heartbeat_interval, Duration::from_millis(100));
            assert_eq!(p.targets.len(), if s.has_standby() { 2 } else { 1 }, "{s}");
            assert_eq!(cfg.output_dir(), d.join("output"));
        }
    }

    #[test]
    fn the_checkpoint_store_flag_takes_local_or_an_hdfs_url() {
        let parse = |v: &[&str]| {
            let mut a = RecoveryArgs {
                strategies: vec!["none".into()],
                size: Some(ByteSize(1024)),
                window: 1,
                concurrency: 1,
                ..RecoveryArgs::quick(PathBuf::from("x"))
            };
            a.checkpoint_store = v.iter().map(|s| s.to_string()).collect();
            Plan::new(&a).map(|p| p.store)
        };
        assert!(matches!(parse(&["local"]), Ok(StoreChoice::Local)));
        assert!(
            matches!(parse(&["hdfs", "hdfs://nn:9000/ck/"]), Ok(StoreChoice::Hdfs(u)) if u == "hdfs://nn:9000/ck")
        );
        assert!(matches!(
            parse(&["hdfs://nn:9000/ck"]),
            Ok(StoreChoice::Hdfs(_))
        ));
        assert!(parse(&["hdfs"]).is_err());
        assert!(parse(&["s3://bucket"]).is_err());
    }
}
