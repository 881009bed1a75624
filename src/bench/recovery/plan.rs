//! The plan of a `bench recovery`: the arguments with the `--quick` defaults resolved, the seeded
//! image pool every run sends, the sender's options for a phase (the plan's workload with the
//! strategy's targets, mode and release level) and each run's configuration.
//!
//! A run's configuration is the shipped `config/<strategy>.toml` (embedded in the binary), with the
//! run's own directories, free ports, `heartbeat_interval = 100ms`, `failure_timeout = 300ms`,
//! `checkpoint_interval = 1s`, the plan's batch interval (`1s`; the `--checkpoint-mb` variant:
//! `kill-after + 7s`, so that blocks stay uncommitted) and checkpoint store — a directory of the
//! run's, or a fresh directory under an HDFS URL, which then holds the output too. Every
//! configuration is parsed with [`Config::parse`] before a node sees it, so a shipped file the bench
//! cannot use fails here rather than in a child process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use strategies::Strategy;

use crate::config::{Carry, Config};
use crate::images::{bmp_of_size, ImageSet};
use crate::send::push::{PushOptions, Timeline};
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
    /// The fault: `kill` (SIGKILL the primary) or `partition` (take the primary's network link down:
    /// alive, cut off from its standby, the sender and everyone else; its link comes back
    /// `--heal-after` later). `partition` runs every node and the sender on a host of their own
    /// (Linux network namespaces: root and iproute2) and needs `--checkpoint-store local`.
    #[arg(long, value_enum, default_value = "kill")]
    pub fault: Fault,
    /// With `--fault partition`: how long the primary stays cut off (after its standby took over;
    /// under `none`, the length of the outage).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub heal_after: Duration,
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
            fault: Fault::Kill,
            heal_after: Duration::from_secs(2),
            out,
            quick: true,
            keep: false,
        }
    }
}

/// What happens to the primary mid-run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// SIGKILL.
    Kill,
    /// Its network link goes down: alive and cut off.
    Partition,
}

#[derive(Clone, Debug)]
enum StoreChoice {
    Local,
    Hdfs(String),
}

/// The arguments with the `--quick` defaults resolved.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) strategies: Vec<Strategy>,
    pub(super) runs: usize,
    pub(super) rate: f64,
    pub(super) window: usize,
    pub(super) concurrency: usize,
    pub(super) kill_after: Duration,
    pub(super) after_kill: Duration,
    pub(super) steady_images: u64,
    store: StoreChoice,
    pub(super) checkpoint_mb: Option<u64>,
    pub(super) carry: Carry,
    pub(super) fault: Fault,
    pub(super) heal_after: Duration,
    pub(super) batch_interval: Duration,
    pub(super) out: PathBuf,
    pub(super) keep: bool,
    pool: Arc<Vec<(PathBuf, Bytes)>>,
    pub(super) image_len: u64,
    pub(super) exe: PathBuf,
}

impl Plan {
    pub(super) fn new(a: &RecoveryArgs) -> anyhow::Result<Plan> {
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
        if a.fault == Fault::Partition && !matches!(store, StoreChoice::Local) {
            bail!(
                "--fault partition runs the nodes on network namespaces of this machine, which an \
                 HDFS outside them cannot serve: use --checkpoint-store local"
            );
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
            fault: a.fault,
            heal_after: a.heal_after,
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

    pub(super) fn images(&self) -> ImageSet {
        ImageSet::Files(self.pool.as_ref().clone())
    }

    pub(super) fn failover_images(&self) -> u64 {
        match self.checkpoint_mb {
            Some(mb) => (mb * 1_000_000).div_ceil(self.image_len).max(1),
            None => ((self.kill_after + self.after_kill).as_secs_f64() * self.rate).ceil() as u64,
        }
    }
}

/// The sender of a strategy, as `send push --config` sets it up ([`PushOptions::for_config`]).
pub(super) fn push_options(
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

/// Where one run's pieces are.
pub(super) struct RunPaths {
    pub(super) dir: PathBuf,
    pub(super) config: PathBuf,
    /// The output: a directory of the run's, or (with the checkpoint store on HDFS) `<hdfs run dir>/output`.
    pub(super) output: OutputAt,
    pub(super) store: StoreAt,
    pub(super) targets: Vec<String>,
}

#[derive(Clone, Debug)]
pub(super) enum StoreAt {
    Local(PathBuf),
    /// `hdfs://…/bench-recovery-<pid>-<tag>`: the run's directory on HDFS, holding `checkpoints`
    /// (the store) and `output`.
    Hdfs(String),
}

#[derive(Clone, Debug)]
pub(super) enum OutputAt {
    Local(PathBuf),
    Hdfs(String),
}

/// Writes the run's configuration: the shipped one of the strategy, with this run's directories,
/// free ports, the bench's timings and store.
/// The run's configuration. `hosts`: the addresses of the primary's and the standby's hosts when the
/// nodes run on a network of namespaces (`--fault partition`); loopback otherwise.
pub(super) fn write_config(
    plan: &Plan,
    s: Strategy,
    dir: &Path,
    tag: &str,
    hosts: Option<(&str, &str)>,
) -> anyhow::Result<RunPaths> {
    let (primary_ip, standby_ip) = hosts.unwrap_or(("127.0.0.1", "127.0.0.1"));
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
    let framed = format!("{primary_ip}:{}", free_port()?);
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
            for (role, ip) in [("primary", primary_ip), ("standby", standby_ip)] {
                let r = table(strat, role);
                r.insert("framed".into(), string(format!("{ip}:{}", free_port()?)));
                r.insert("control".into(), string(format!("{ip}:{}", free_port()?)));
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

fn shipped_config(s: Strategy) -> &'static str {
    match s {
        Strategy::None => include_str!("../../../config/none.toml"),
        Strategy::PassiveStandby => include_str!("../../../config/passive-standby.toml"),
        Strategy::ActiveStandby => include_str!("../../../config/active-standby.toml"),
        Strategy::UpstreamBackup => include_str!("../../../config/upstream-backup.toml"),
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

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

#[cfg(test)]
mod tests {
    use super::*;

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
            let p = write_config(&plan, s, &d, "t", None).unwrap();
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
