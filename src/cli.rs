//! The `hdfs-ingest` command line. `main` calls [`main`]; every command is a function here or in
//! [`crate::demo`] / [`crate::bench`](mod@crate::bench), so the binary stays thin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing::info;

use crate::config::Config;
use crate::images::ImageSet;
use crate::protocol::AckLevel;
use crate::send::interrupt::watch_interrupts;
use crate::send::manifest::{read_manifest, ManifestWriter};
use crate::send::push::{self, Protocol, PushOptions, SendMode};
use crate::send::serve::{self, ServeOptions};
use crate::size::ByteSize;

#[derive(Parser, Debug)]
#[command(
    name = "hdfs-ingest",
    version,
    about = "Lands streams of images on HDFS or a local directory exactly once"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a node: receivers → WAL → batches → output, with checkpoints.
    Run {
        /// The TOML configuration (see config/none.toml); without it, the embedded defaults.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Start even if the WAL is corrupt in its middle, dropping the damaged record and the rest of its
        /// segment (what is dropped is logged). Same as `wal.salvage = true`.
        #[arg(long)]
        salvage_wal: bool,
        /// Which `[strategy.<role>]` table this node is (two-node strategies): its name, WAL directory,
        /// framed and control addresses. A primary starts serving; a standby watches the primary's
        /// heartbeats and takes over when they stop.
        #[arg(long, value_enum, default_value = "primary")]
        role: crate::config::NodeRole,
        /// Start as a standby of the other role even with `--role primary`: how a failed primary
        /// rejoins the pipeline after the standby took over.
        #[arg(long)]
        standby: bool,
    },
    /// The upstream: serve images the classic way, or push them raw or framed.
    #[command(subcommand)]
    Send(SendCommand),
    /// Check an output directory against a sender's manifest; exits 1 if an acknowledged image is
    /// missing, duplicated or corrupt.
    Verify {
        #[arg(long)]
        manifest: PathBuf,
        /// A directory, or `hdfs://namenode:port/dir`.
        #[arg(long)]
        output: PathBuf,
        /// For an HDFS output: the configuration whose `[hdfs]` section says how to reach it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Every image in the manifest must be there, acknowledged or not (runs without failures; raw senders).
        #[arg(long)]
        expect_all: bool,
        /// Print the full report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rewrite committed one-file-per-image batches older than `--older-than` into packed
    /// `sequencefile` or `parquet` batches under the same partitions, exactly once (the originals go
    /// only after the packed batch is published; a rerun finishes what a crash left).
    Compact {
        /// The configuration whose `output` (and `[hdfs]`) name the output to compact.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The packed format: `sequencefile` or `parquet`.
        #[arg(long, default_value = "sequencefile")]
        format: crate::layout::Format,
        /// Only batches whose batch time is at least this old (at least 1m).
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        older_than: Duration,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The whole pipeline on the embedded defaults: a node, a sender pushing real JPEG and BMP images,
    /// verify; then one failover per strategy (the primary killed with SIGKILL) and the comparison table.
    Demo {
        /// Images to push (framed; a tenth more go raw).
        #[arg(long, default_value_t = 400)]
        images: u64,
        /// Where the demo keeps its data (wiped at the start).
        #[arg(long, default_value = "./hdfs-ingest-data/demo")]
        dir: PathBuf,
        /// Skip the failover per strategy (about a minute).
        #[arg(long)]
        no_failover: bool,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Print the effective configuration (the defaults, or FILE's after validation).
    Config {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum SendCommand {
    /// Serve images like the classic Java image sender: bind, accept one connection, write one image, close, repeat.
    Serve {
        #[arg(long, default_value = "127.0.0.1:9999")]
        address: String,
        #[command(flatten)]
        images: ImageArgs,
        /// Images to serve.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// Pause between images.
        #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
        pause: Duration,
        #[arg(long)]
        manifest: Option<PathBuf>,
    },
    /// Push images to a node, or to a primary and its standbys (failover or mirror), keeping every
    /// block until the nodes release it. SIGINT or SIGTERM: no new images, `--interrupt-grace` for
    /// the nodes to acknowledge what was sent (a second signal: stop now), a manifest line for every
    /// image sent (acked only if released), exit status 130 (SIGINT) or 143 (SIGTERM). A node that
    /// already held blocks of a stream before this run sent them (its source id was used before)
    /// fails the push, naming the source and the seqs: exit status 1.
    Push(Box<PushArgs>),
}

/// `send push`. Framed, every stream keeps what it sent until the nodes release it (`--release`),
/// within the retention bounds over all streams, with at most `--window` blocks per stream sent and
/// not yet acknowledged (then it waits: nothing is ever dropped).
#[derive(Args, Debug, Clone)]
pub struct PushArgs {
    /// A node's address (framed, or raw with --protocol raw). Repeat it for a primary and its
    /// standbys, primary first. Default 127.0.0.1:9998.
    #[arg(long = "to", alias = "address", value_name = "ADDR")]
    pub to: Vec<String>,
    /// Take the targets, mode, release level, retention and stall timeout from this configuration
    /// (its `[strategy]` section and framed addresses); the flags below override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// failover: one node at a time, the next when it fails; mirror: every block to every node
    /// (active-standby). Default failover.
    #[arg(long, value_enum)]
    pub mode: Option<SendMode>,
    /// The acknowledgement that releases a block (a stronger one also does). Default durable.
    #[arg(long, value_enum, alias = "ack")]
    pub release: Option<AckArg>,
    /// Bytes kept (sent, not yet released) over all streams; then the push waits. Default 1GiB.
    #[arg(long)]
    pub retention_max_bytes: Option<ByteSize>,
    /// Blocks kept over all streams; then the push waits. Default 65536.
    #[arg(long)]
    pub retention_max_blocks: Option<u64>,
    /// A connected node that for this long, while blocks are outstanding, acknowledges nothing and
    /// takes no more bytes is given up on (failover: the next target). Default 10s; with --config and
    /// a standby, twice strategy.failure_timeout.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub stall_timeout: Option<Duration>,
    /// A connected node that sends keepalives and says nothing at all (no ack, no keepalive) for this
    /// long while blocks are kept is given up on. Default 10s; with --config and a standby,
    /// strategy.failure_timeout + receiver.keepalive_interval.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub silence_timeout: Option<Duration>,
    /// Fail when nothing is released for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub give_up_after: Duration,
    /// Mirror: how long a standby that is not connected still holds blocks back before they are
    /// released on the primary's ack alone. Default 3s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub standby_grace: Option<Duration>,
    #[arg(long, value_enum, default_value = "framed")]
    pub protocol: Protocol,
    #[command(flatten)]
    pub images: ImageArgs,
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Images per second over all connections (default: as fast as acks allow).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Framed streams are named `<prefix>-<n>` (default `send-<unix ms>`: new streams every run).
    #[arg(long)]
    pub source_prefix: Option<String>,
    /// Continue an earlier run with the same --source-prefix and images (a sender killed and
    /// started again): blocks a node already holds are re-sends, not an error. Without it, a node
    /// that held a block before this run sent it fails the push (the prefix was used before).
    #[arg(long, requires = "source_prefix")]
    pub resume: bool,
    #[arg(long)]
    pub token: Option<String>,
    /// Blocks a stream has in flight (sent, not yet acknowledged at any level); then it waits. Blocks
    /// acknowledged but not yet released count against the retention bounds only.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// On SIGINT or SIGTERM: how long to wait for the nodes to acknowledge what was sent before
    /// ending (a second signal ends it at once).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interrupt_grace: Duration,
}

impl PushArgs {
    /// The options these flags give, on top of `base` (the defaults, or what a configuration implies):
    /// a flag that was given wins.
    pub fn options(&self, base: PushOptions) -> PushOptions {
        let mut o = base;
        if !self.to.is_empty() {
            o.targets = self.to.clone();
        }
        if let Some(mode) = self.mode {
            o.mode = mode;
        }
        if let Some(r) = self.release {
            o.release = r.into();
        }
        if let Some(b) = self.retention_max_bytes {
            o.retention_max_bytes = b.as_u64();
        }
        if let Some(b) = self.retention_max_blocks {
            o.retention_max_blocks = b;
        }
        if let Some(t) = self.stall_timeout {
            o.stall_timeout = t;
        }
        if let Some(t) = self.silence_timeout {
            o.silence_timeout = t;
        }
        o.give_up_after = self.give_up_after;
        if let Some(g) = self.standby_grace {
            o.standby_grace = g;
        }
        o.protocol = self.protocol;
        o.count = self.count;
        o.concurrency = self.concurrency;
        o.rate = self.rate;
        o.source_prefix = self
            .source_prefix
            .clone()
            .unwrap_or_else(push::default_source_prefix);
        o.resume = self.resume;
        o.token = self.token.clone();
        o.window = self.window.max(1);
        o
    }
}

#[derive(Args, Debug, Clone)]
pub struct ImageArgs {
    /// Send the files of this directory (round-robin).
    #[arg(long, conflicts_with = "size")]
    pub dir: Option<PathBuf>,
    /// Otherwise, generate distinct JPEG and BMP images of about this size.
    #[arg(long, default_value = "64KiB")]
    pub size: ByteSize,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl ImageArgs {
    fn load(&self) -> anyhow::Result<ImageSet> {
        match &self.dir {
            Some(d) => {
                ImageSet::from_dir(d).with_context(|| format!("images from {}", d.display()))
            }
            None => Ok(ImageSet::Generated {
                size: self.size.as_usize(),
                seed: self.seed,
            }),
        }
    }
}

/// `--release`: the ack level that releases a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AckArg {
    Durable,
    Checkpointed,
    Committed,
}

impl From<AckArg> for AckLevel {
    fn from(a: AckArg) -> AckLevel {
        match a {
            AckArg::Durable => AckLevel::Durable,
            AckArg::Checkpointed => AckLevel::Checkpointed,
            AckArg::Committed => AckLevel::Committed,
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// End to end: a node process, a framed sender; images/s, MB/s, ack latency, and the node's peak RSS
    /// as the stream grows.
    Ingest(crate::bench::IngestArgs),
    /// Batch output to HDFS against plain hdfs-native writes of the same bytes, and checkpoint write/read
    /// latency on HDFS and on sled. Needs an HDFS: `docker compose up -d`, or `cargo run -p it --bin minidfs`.
    Hdfs(crate::bench::HdfsArgs),
    /// Every strategy on one seeded workload with its primary killed (SIGKILL): detection, time to the
    /// first new ack and until everything released before the kill is committed, steady-state
    /// throughput, network and storage bytes; p50/p99 over runs, ratios to `none`; writes
    /// recovery.md, recovery.json and recovery.svg.
    Recovery(crate::bench::recovery::RecoveryArgs),
}

/// Logs go to stderr through tracing; `RUST_LOG` sets the filter (default `default`). Colours only
/// on a terminal (and not with `NO_COLOR`): a log redirected to a file gets plain lines.
pub fn init_logging(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `bench recovery` prints a table; its in-process sender's failovers would drown it (the nodes'
    // logs go to files).
    init_logging(match &cli.command {
        Command::Bench(BenchCommand::Recovery(_)) => "warn",
        _ => "info",
    });
    // With the `failpoints` feature, FAILPOINTS="name=action;..." arms failpoints (crash tests).
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(dispatch(cli.command));
    // A blocking call that never returns (a write into an output whose file system stopped
    // answering, abandoned at `batch.commit_timeout`) must not keep the process from exiting.
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Run {
            config,
            salvage_wal,
            role,
            standby,
        } => {
            let mut cfg = load_config(config.as_deref())?;
            cfg.wal.salvage |= salvage_wal;
            crate::ha::run_role(cfg, role, standby, shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Send(s) => send(s).await,
        Command::Compact {
            config,
            format,
            older_than,
            json,
        } => {
            let cfg = load_config(config.as_deref())?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            let r = crate::compact::compact(&cfg, format, older_than, now).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "compact: {} batches compacted ({} images) into {}, {} finished from an earlier run, {} younger than {} left alone",
                    r.compacted.len(),
                    r.images,
                    format.name(),
                    r.finished.len(),
                    r.too_young,
                    humantime::format_duration(older_than)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            manifest,
            output,
            config,
            expect_all,
            json,
        } => {
            let m = read_manifest(&manifest)?;
            let out = output.to_string_lossy();
            let r = if out.starts_with("hdfs://") {
                let cfg = load_config(config.as_deref())?;
                crate::verify::verify_hdfs(&m, &out, &crate::node::hdfs_options(&cfg), expect_all)
                    .await?
            } else {
                crate::verify::verify(&m, &output, expect_all)?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                for l in r.lost.iter().take(20) {
                    println!("lost: {l}");
                }
                for d in r.duplicated.iter().take(20) {
                    println!("duplicated: {d}");
                }
                for c in r.corrupt.iter().take(20) {
                    println!("corrupt: {c}");
                }
                println!("{}", r.summary());
            }
            Ok(if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Demo {
            images,
            dir,
            no_failover,
        } => crate::demo::run(images, &dir, !no_failover).await,
        Command::Bench(BenchCommand::Ingest(a)) => crate::bench::ingest(a).await,
        Command::Bench(BenchCommand::Hdfs(a)) => crate::bench::hdfs(a).await,
        Command::Bench(BenchCommand::Recovery(a)) => crate::bench::recovery::recovery(a).await,
        Command::Config { config } => {
            let cfg = load_config(config.as_deref())?;
            print!("{}", toml::to_string_pretty(&cfg)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn load_config(path: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn send(cmd: SendCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        SendCommand::Serve {
            address,
            images,
            count,
            pause,
            manifest,
        } => {
            let m = open_manifest(manifest.as_deref())?;
            let n = serve::serve(
                ServeOptions {
                    address,
                    count,
                    pause,
                },
                images.load()?,
                m,
            )
            .await?;
            println!("served {n} images");
        }
        SendCommand::Push(args) => {
            let m = open_manifest(args.manifest.as_deref())?;
            let base = match &args.config {
                Some(path) => PushOptions::for_config(&Config::load(path)?),
                None => PushOptions::default(),
            };
            let opts = args.options(base);
            let count = opts.count;
            info!(targets = ?opts.targets, mode = ?opts.mode, release = %opts.release, "pushing");
            let (signals, stop) = watch_interrupts(args.interrupt_grace)?;
            let r = push::push_until(opts, args.images.load()?, m, stop).await?;
            println!("{}", r.summary());
            if let Some(sig) = signals.received() {
                eprintln!(
                    "interrupted by {}: {} of {count} images acknowledged; {} sent and not acknowledged are in the manifest with acked false",
                    sig.name(),
                    r.acked,
                    r.unreleased
                );
                return Ok(ExitCode::from(sig.exit_code()));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn open_manifest(path: Option<&std::path::Path>) -> anyhow::Result<Option<Arc<ManifestWriter>>> {
    Ok(path.map(ManifestWriter::create).transpose()?.map(Arc::new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_args(args: &[&str]) -> PushArgs {
        let argv = ["hdfs-ingest", "send", "push"].iter().chain(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Send(SendCommand::Push(a)) => *a,
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn send_push_takes_several_targets_a_mode_a_release_level_and_retention_bounds() {
        let o = push_args(&[
            "--to",
            "10.0.0.1:9998",
            "--to",
            "10.0.0.2:9998",
            "--mode",
            "mirror",
            "--release",
            "checkpointed",
            "--retention-max-bytes",
            "2MiB",
            "--retention-max-blocks",
            "7",
            "--stall-timeout",
            "3s",
            "--silence-timeout",
            "700ms",
        ])
        .options(PushOptions::default());
        assert_eq!(o.targets, ["10.0.0.1:9998", "10.0.0.2:9998"]);
        assert_eq!(o.mode, SendMode::Mirror);
        assert_eq!(o.release, AckLevel::Checkpointed);
        assert_eq!(o.retention_max_bytes, 2 << 20);
        assert_eq!(o.retention_max_blocks, 7);
        assert_eq!(o.stall_timeout, Duration::from_secs(3));
        assert_eq!(o.silence_timeout, Duration::from_millis(700));
    }

    #[test]
    fn send_push_defaults_to_one_local_node_and_keeps_the_old_address_and_ack_flags() {
        let o = push_args(&[]).options(PushOptions::default());
        assert_eq!(o.targets, [push::DEFAULT_TARGET]);
        assert_eq!((o.mode, o.release), (SendMode::Failover, AckLevel::Durable));
        let o = push_args(&["--address", "node:9998", "--ack", "committed"])
            .options(PushOptions::default());
        assert_eq!(o.targets, ["node:9998"]);
        assert_eq!(o.release, AckLevel::Committed);
    }

    #[test]
    fn send_push_with_a_config_takes_the_strategys_targets_mode_release_and_retention() {
        let shipped = |name: &str| {
            let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("config")
                .join(name);
            PushOptions::for_config(&Config::load(&p).unwrap())
        };
        let active = shipped("active-standby.toml");
        let cfg = Config::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/active-standby.toml"),
        )
        .unwrap();
        assert_eq!(
            active.targets,
            [
                cfg.strategy.primary.framed.clone(),
                cfg.strategy.standby.framed.clone()
            ]
        );
        assert_eq!(
            (active.mode, active.release),
            (SendMode::Mirror, AckLevel::Durable)
        );
        assert_eq!(active.stall_timeout, 2 * cfg.strategy.failure_timeout);
        assert_eq!(
            active.silence_timeout,
            cfg.strategy.failure_timeout + cfg.receiver.keepalive_interval
        );
        assert_eq!(
            active.retention_max_blocks,
            cfg.strategy.retention.max_blocks
        );
        assert_eq!(
            active.retention_max_bytes,
            cfg.strategy.retention.max_bytes.as_u64()
        );
        let passive = shipped("passive-standby.toml");
        assert_eq!(
            (passive.mode, passive.release),
            (SendMode::Failover, AckLevel::Checkpointed)
        );
        let upstream = shipped("upstream-backup.toml");
        assert_eq!(
            (upstream.mode, upstream.release),
            (SendMode::Failover, AckLevel::Committed)
        );
        let none = shipped("none.toml");
        assert_eq!(
            (none.mode, none.release),
            (SendMode::Failover, AckLevel::Durable)
        );
        assert_eq!(none.targets.len(), 1);
        // And a flag still wins over the configuration.
        let o = push_args(&["--release", "committed", "--to", "x:1"]).options(active);
        assert_eq!(
            (o.release, o.targets),
            (AckLevel::Committed, vec!["x:1".to_string()])
        );
    }

    #[test]
    fn send_push_flags_override_what_the_base_options_say_and_leave_the_rest() {
        let base = PushOptions {
            targets: vec!["primary:1".into(), "standby:2".into()],
            mode: SendMode::Mirror,
            retention_max_blocks: 99,
            ..PushOptions::default()
        };
        let o = push_args(&["--mode", "failover"]).options(base);
        assert_eq!(o.targets, ["primary:1", "standby:2"]);
        assert_eq!(o.mode, SendMode::Failover);
        assert_eq!(o.retention_max_blocks, 99);
    }
}
