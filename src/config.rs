//! Configuration: one TOML file, read by every role (`run`, `send`).
//!
//! Every section and every field has a default that serves a first run on one machine, so an empty file
//! (or no file: `hdfs-ingest demo`) is a valid configuration. Unknown keys are errors, with the line and
//! column the TOML parser gives; [`Config::validate`] then checks values and names the key at fault.
//! Sizes are human-readable (`"64 MiB"`), durations too (`"2s"`, `"500ms"`). Relative paths are relative
//! to the working directory.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use strategies::Strategy;

use crate::protocol::valid_source_id;
use crate::size::ByteSize;

/// The largest `receiver.max_block_size`: a block goes into one WAL record (at most 64 MiB, the WAL's
/// `MAX_RECORD_PAYLOAD`) with its source id (up to 128 bytes) and sequence number. The node, which
/// writes those records, checks at compile time that the two agree.
pub const MAX_BLOCK_SIZE: u64 = 64 * 1024 * 1024 - 1024;

/// The largest `receiver.max_connections`: the default `fs.nr_open`, the most descriptors a Linux
/// process can have (each connection holds one).
pub const MAX_CONNECTIONS: usize = 1 << 20;

/// A configuration that cannot be used, with the key and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {key}: {reason}")]
    Invalid { key: String, reason: String },
}

/// The path of a `file://` URL: `file:///abs/path` or `file://localhost/abs/path` (RFC 8089); any
/// other host, or a path that is not absolute, is refused with the reason.
fn file_url_path(url: &str) -> Result<PathBuf, String> {
    let rest = url.strip_prefix("file://").unwrap_or(url);
    let (host, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if !host.is_empty() && !host.eq_ignore_ascii_case("localhost") {
        return Err(format!(
            "`{url}` names host `{host}`: a file URL is a local path, `file:///absolute/path` \
             (for a relative path write the path without `file://`)"
        ));
    }
    if path.is_empty() {
        return Err(format!("`{url}` has no directory path after the host"));
    }
    Ok(PathBuf::from(path))
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeConfig,
    pub receiver: ReceiverConfig,
    pub wal: WalConfig,
    pub batch: BatchConfig,
    pub output: OutputConfig,
    pub analysis: AnalysisConfig,
    pub checkpoint: CheckpointConfig,
    pub strategy: StrategyConfig,
    pub hdfs: HdfsConfig,
    pub dedup: DedupConfig,
}

/// How to reach HDFS, for an `hdfs://` output and a `kind = "hdfs"` checkpoint store.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HdfsConfig {
    /// The user to act as (simple authentication); default `HADOOP_USER_NAME`, then the login user.
    pub user: Option<String>,
    /// A directory with `core-site.xml` / `hdfs-site.xml`, for `hdfs://<nameservice>` HA URLs and
    /// Kerberos as hdfs-native supports them; default `HADOOP_CONF_DIR`, then `HADOOP_HOME/etc/hadoop`.
    pub hadoop_conf_dir: Option<PathBuf>,
    /// Hadoop client settings, e.g. `"dfs.client.failover.max.attempts" = "2"` (the node's defaults make
    /// an unreachable NameNode an error in about two seconds instead of minutes of retries).
    pub client: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// This node's name, in logs, checkpoints and epoch claims.
    pub name: String,
    /// The pipeline this node belongs to (`{pipeline}` in `output.path`, recorded in part files):
    /// pipelines that share an output root need distinct names. Defaults to `node.name` as written
    /// in the file, before a role's name replaces it, so both roles of a pair share it.
    pub pipeline: Option<String>,
    /// Where the WAL, the sled checkpoint store and (by default) the output live.
    pub data_dir: PathBuf,
    /// On SIGTERM the node keeps retrying to commit what is durable for this long (the output may be
    /// briefly unreachable); after that it exits anyway and the rest is committed at the next start.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: "node-1".into(),
            pipeline: None,
            data_dir: PathBuf::from("./hdfs-ingest-data"),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// The largest image (raw) or block (framed) accepted; larger ones are refused and nothing is stored.
    pub max_block_size: ByteSize,
    /// Connections served at once. Each listener (`raw-listen`, `framed-listen`) has its own share,
    /// an equal part of this number, so a flood on one cannot lock senders of another out; a
    /// connection over its listener's share is refused at once (framed: an ERROR frame). The node
    /// refuses to start if the descriptor limit cannot serve this many (README: descriptors).
    pub max_connections: usize,
    /// Silence: a connection that sends no byte for this long is closed (between blocks and inside
    /// one). Also the grace before `min_rate` applies to a block in progress.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Bytes per second a block (framed) or an image (raw) must average once it has taken longer
    /// than `idle_timeout`: a block in progress is cut when it has taken longer than
    /// `idle_timeout + received / min_rate`, so a client trickling bytes cannot hold a slot and its
    /// reserved budget forever.
    pub min_rate: ByteSize,
    /// The most bytes of blocks in flight (read or being read, not yet durable) over all
    /// connections: a block's length is reserved before its body is read, and a connection waits
    /// for room. Must hold one block of `max_block_size`.
    pub inflight_budget: ByteSize,
    /// A framed connection whose client takes none of the acks the node has for it for this long is
    /// closed (the client does not read; its acks would pile up).
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// A protocol-v2 connection the node has written nothing on for this long gets its ROLE frame
    /// again: a keepalive, so a sender tells an idle healthy node from a silent (cut off) one. Keep it
    /// well under the senders' silence timeout (with a standby: at most a third of
    /// `strategy.failure_timeout`).
    #[serde(with = "humantime_serde")]
    pub keepalive_interval: Duration,
    /// The sources: listeners and outbound raw connections.
    pub sources: Vec<SourceConfig>,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            max_block_size: ByteSize::mib(32),
            max_connections: 512,
            idle_timeout: Duration::from_secs(60),
            min_rate: ByteSize::kib(16),
            inflight_budget: ByteSize::mib(256),
            write_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_millis(100),
            sources: vec![
                SourceConfig::RawListen {
                    address: "127.0.0.1:9997".into(),
                    source: "raw".into(),
                },
                SourceConfig::FramedListen {
                    address: "127.0.0.1:9998".into(),
                    token: None,
                },
            ],
        }
    }
}

/// One way images come in.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum SourceConfig {
    /// The classic raw protocol, senders connect to us: one image per connection, bytes up to EOF.
    RawListen {
        address: String,
        /// The source id the images get in the output (`<source>-<seq>.<ext>`).
        #[serde(default = "default_raw_source")]
        source: String,
    },
    /// The classic raw protocol, we connect out to a sender that serves one image per connection
    /// (like Spark's socket receiver); reconnects with bounded backoff for as long as the node runs.
    RawConnect {
        address: String,
        source: String,
        #[serde(default = "default_backoff_max", with = "humantime_serde")]
        backoff_max: Duration,
    },
    /// Our framed protocol with sequence numbers and acknowledgements (docs/PROTOCOL.md).
    FramedListen {
        address: String,
        /// If set, a hello must carry this token.
        #[serde(default)]
        token: Option<String>,
    },
}

fn default_raw_source() -> String {
    "raw".into()
}
fn default_backoff_max() -> Duration {
    Duration::from_secs(2)
}

impl SourceConfig {
    pub fn address(&self) -> &str {
        match self {
            SourceConfig::RawListen { address, .. }
            | SourceConfig::RawConnect { address, .. }
            | SourceConfig::FramedListen { address, .. } => address,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Defaults to `<data_dir>/wal`.
    pub dir: Option<PathBuf>,
    /// A segment file is closed and a new one started past this size.
    pub segment_size: ByteSize,
    /// Open a WAL with a corrupt record in its middle by dropping that record and the rest of its
    /// segment (what was dropped is logged). Off: the node refuses to start and names the segment and offset.
    pub salvage: bool,
    /// The most disk the WAL may use. When batches cannot commit (the output is down) the WAL grows; at
    /// this size the node stops taking new blocks — senders see backpressure, nothing is dropped — until
    /// a commit frees segments.
    pub disk_budget: ByteSize,
    /// Free space kept on the file systems of the WAL and of a local output: below it the node takes
    /// no new blocks (backpressure, like the budget) until space is freed, so commits still have room
    /// to write the output and free WAL segments. `0` turns the check off.
    pub min_free: ByteSize,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            dir: None,
            segment_size: ByteSize::mib(64),
            salvage: false,
            disk_budget: ByteSize::gib(8),
            min_free: ByteSize::mib(256),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Like Spark's batch duration: durable blocks are written out this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Batch directories are `<prefix>-<batch time ms>`.
    pub prefix: String,
    /// A batch commit (output and checkpoint) that makes no progress for this long is abandoned and
    /// retried under the same name: an output or store that stops answering must not stop commits for
    /// good, and a large batch that keeps moving must not be cut short.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            interval: Duration::from_secs(2),
            prefix: "images".into(),
            commit_timeout: Duration::from_secs(120),
        }
    }
}

/// The per-source de-duplication state's bounds (docs/PROTOCOL.md, "Sequence numbers and state"):
/// what a framed source may send, and how long a source is remembered.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DedupConfig {
    /// A framed block whose seq is this far or farther past its source's first seq not yet received
    /// is refused (ERROR Malformed, that connection only).
    pub window: u64,
    /// Per source, the most seqs held out of order (received above a seq that has not arrived); one
    /// more is refused until the missing seq arrives.
    pub max_gaps: usize,
    /// Over all sources, the most seqs held out of order; past it an out-of-order block is refused
    /// (ERROR Internal, "try later") whatever its source.
    pub gap_budget: usize,
    /// The most sources the node keeps state for; a block of a new source past it is refused.
    pub max_sources: usize,
    /// A source no block arrived from for this long (and with nothing uncommitted) is forgotten: dropped
    /// from the node's state and from the next checkpoint. A sender that comes back later with old
    /// sequence numbers gets them stored again.
    #[serde(with = "humantime_serde")]
    pub source_retention: Duration,
}

impl Default for DedupConfig {
    fn default() -> Self {
        DedupConfig {
            window: 1 << 20,
            max_gaps: 1024,
            gap_budget: 1 << 18,
            max_sources: 100_000,
            source_retention: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

impl DedupConfig {
    /// The largest `window`: seqs of a source stay this close to its first missing one, far from
    /// `u64::MAX`.
    pub const MAX_WINDOW: u64 = 1 << 40;

    fn validate(&self, batch_interval: Duration) -> Result<(), ConfigError> {
        if self.window < 2 || self.window > Self::MAX_WINDOW {
            return Err(invalid(
                "dedup.window",
                format!(
                    "must be between 2 and 2^40 (got {}): it bounds how far past its first missing seq a source may send",
                    self.window
                ),
            ));
        }
        if self.max_gaps == 0 || self.max_gaps as u64 >= self.window {
            return Err(invalid(
                "dedup.max_gaps",
                format!(
                    "must be at least 1 and below dedup.window ({}); got {}",
                    self.window, self.max_gaps
                ),
            ));
        }
        if self.gap_budget < self.max_gaps {
            return Err(invalid(
                "dedup.gap_budget",
                format!(
                    "must be at least dedup.max_gaps ({}), or no source could use its share; got {}",
                    self.max_gaps, self.gap_budget
                ),
            ));
        }
        if self.max_sources == 0 {
            return Err(invalid("dedup.max_sources", "must be at least 1"));
        }
        let floor = (batch_interval * 2).max(Duration::from_secs(60));
        if self.source_retention < floor {
            return Err(invalid(
                "dedup.source_retention",
                format!(
                    "must be at least {} (1 minute, and two batch intervals: a source is remembered past its commit); got {}",
                    humantime::format_duration(floor),
                    humantime::format_duration(self.source_retention)
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// A directory path, `file:///abs/path` or `hdfs://namenode:port/path`. Defaults to
    /// `<data_dir>/output`.
    pub url: Option<String>,
    /// How a batch's images are stored: `files` (one file per image), `sequencefile` or `parquet`
    /// (packed part files). Defaults to `sequencefile` on HDFS and `files` in a local directory.
    pub format: Option<crate::layout::Format>,
    /// Where a batch directory goes under the output root: a template of `{pipeline}`, `{prefix}`,
    /// `{batch_ms}`, `{date}`, `{hour}`, `{minute}` (see [`crate::layout::template`]).
    pub path: String,
    /// A packed part file is closed before an image would take it past this size.
    pub max_file_size: ByteSize,
    /// A packed part file holds at most this many images.
    pub max_images_per_file: u64,
    /// The HDFS block size of packed part files; unset, the cluster's `dfs.blocksize`.
    pub block_size: Option<ByteSize>,
}

impl Default for OutputConfig {
    fn default() -> Self {
        OutputConfig {
            url: None,
            format: None,
            path: crate::layout::PathTemplate::DEFAULT.into(),
            max_file_size: ByteSize(crate::layout::DEFAULT_MAX_FILE_SIZE),
            max_images_per_file: crate::layout::DEFAULT_MAX_IMAGES_PER_FILE,
            block_size: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// Write format, width, height, size and CRC32 of every image to `<batch dir>/_analysis.jsonl`.
    pub enabled: bool,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig { enabled: true }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    pub store: StoreConfig,
    /// How many checkpoint objects to keep (the newest ones).
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            store: StoreConfig::Sled { path: None },
            keep: 3,
        }
    }
}

/// Where checkpoints go.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum StoreConfig {
    /// An embedded sled database (default `<data_dir>/checkpoints.sled`); one process at a time.
    Sled { path: Option<PathBuf> },
    /// A local directory through object_store.
    Local { path: PathBuf },
    /// In memory: gone with the process. For tests and benchmarks only.
    Memory,
    /// A directory on HDFS, `hdfs://namenode:port/path` (client settings under `[hdfs]`).
    Hdfs { url: String },
}

/// The fault-tolerance strategy and its parameters (`[strategy]`), read by `run` and `send`.
///
/// `kind` selects one of [`Strategy`]'s variants. The two-node strategies run a primary and a standby:
/// `hdfs-ingest run --role primary|standby` picks the `[strategy.primary]` or `[strategy.standby]`
/// table, which gives the node its name, its WAL directory, its framed address and its control
/// (heartbeat) address. The output and the checkpoint store are shared by both roles.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StrategyConfig {
    pub kind: Strategy,
    /// The primary sends a heartbeat to the standby this often.
    #[serde(with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// The standby takes over after this long without a heartbeat; the sender fails over from a node
    /// that acknowledges nothing for twice this long.
    #[serde(with = "humantime_serde")]
    pub failure_timeout: Duration,
    /// `passive-standby`: the primary checkpoints its uncommitted blocks this often.
    #[serde(with = "humantime_serde")]
    pub checkpoint_interval: Duration,
    /// `passive-standby`: which uncommitted blocks a checkpoint carries.
    pub carry: Carry,
    /// What the sender may keep while it waits for the acknowledgement the strategy needs.
    pub retention: RetentionConfig,
    pub primary: RoleConfig,
    pub standby: RoleConfig,
}

impl Default for StrategyConfig {
    fn default() -> Self {
        StrategyConfig {
            kind: Strategy::None,
            heartbeat_interval: Duration::from_millis(100),
            failure_timeout: Duration::from_millis(300),
            checkpoint_interval: Duration::from_secs(1),
            carry: Carry::default(),
            retention: RetentionConfig::default(),
            primary: RoleConfig {
                name: "primary".into(),
                data_dir: None,
                framed: "127.0.0.1:9998".into(),
                control: "127.0.0.1:9996".into(),
            },
            standby: RoleConfig {
                name: "standby".into(),
                data_dir: None,
                framed: "127.0.0.1:10998".into(),
                control: "127.0.0.1:10996".into(),
            },
        }
    }
}

impl StrategyConfig {
    /// The control address of the role named `name` (a node serves heartbeats on its own).
    pub fn primary_or_standby_control(&self, name: &str) -> &str {
        if name == self.standby.name {
            &self.standby.control
        } else {
            &self.primary.control
        }
    }
}

/// The sender's bound on what it keeps unreleased; when full it stops taking images (backpressure).
/// `passive-standby`: which uncommitted blocks a checkpoint carries into the checkpoint store. Only a
/// carried block is acknowledged *checkpointed*; every other one stays with the sender until it is
/// carried or committed, so either choice loses nothing — they trade the second write of every block
/// against what the sender keeps and re-sends after a takeover.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Carry {
    /// Blocks the output has not taken within a checkpoint interval: those already uncommitted at the
    /// previous checkpoint and not in a batch sealed since then. While commits keep up, checkpoints
    /// carry (almost) nothing and blocks are released by their commit; when commits fall behind (a
    /// long batch interval, an unreachable output) checkpoints carry what waits. The sender keeps
    /// about two checkpoint intervals of blocks.
    #[default]
    Lagging,
    /// Every block not committed at the checkpoint: the sender keeps about one checkpoint interval, and
    /// every block is written a second time, into the checkpoint store.
    All,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    pub max_bytes: ByteSize,
    pub max_blocks: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_bytes: ByteSize::mib(512),
            max_blocks: 16_384,
        }
    }
}

/// One role of a two-node strategy.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleConfig {
    /// The node's name (logs, epoch and batch claims).
    pub name: String,
    /// Where its WAL lives; default `<node.data_dir>/<name>`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Its framed listener (replaces the `framed-listen` source's address).
    pub framed: String,
    /// Its control address: the primary serves heartbeats here.
    pub control: String,
}

/// Which table of `[strategy]` a node runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NodeRole {
    Primary,
    Standby,
}

impl Config {
    /// Reads, parses and validates a TOML file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let cfg = Config::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: PathBuf::from("<inline>"),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that parse but cannot work, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.name.is_empty() || !valid_source_id(&self.node.name) {
            return Err(invalid(
                "node.name",
                format!("`{}` must be 1-128 of A-Z a-z 0-9 . _ -", self.node.name),
            ));
        }
        let mbs = self.receiver.max_block_size.as_u64();
        let wal_max = MAX_BLOCK_SIZE;
        if mbs > wal_max {
            return Err(invalid(
                "receiver.max_block_size",
                format!(
                    "must be at most {} (one WAL record, less room for the block's source and sequence number); got {}",
                    ByteSize(wal_max),
                    self.receiver.max_block_size
                ),
            ));
        }
        if mbs == 0 || mbs > u32::MAX as u64 {
            return Err(invalid(
                "receiver.max_block_size",
                format!(
                    "must be between 1 B and 4 GiB (got {})",
                    self.receiver.max_block_size
                ),
            ));
        }
        let listeners = self.listeners();
        let mc = self.receiver.max_connections;
        if mc < listeners.max(1) {
            return Err(invalid(
                "receiver.max_connections",
                format!(
                    "must be at least 1 per listener ({}); got {mc}",
                    listeners.max(1)
                ),
            ));
        }
        if mc > MAX_CONNECTIONS {
            return Err(invalid(
                "receiver.max_connections",
                format!(
                    "must be at most {MAX_CONNECTIONS} (a Linux process has at most that many descriptors, fs.nr_open's default); got {mc}"
                ),
            ));
        }
        if self.receiver.idle_timeout < Duration::from_millis(100) {
            return Err(invalid("receiver.idle_timeout", "must be at least 100ms"));
        }
        if self.receiver.write_timeout < Duration::from_millis(100) {
            return Err(invalid("receiver.write_timeout", "must be at least 100ms"));
        }
        if self.receiver.min_rate.as_u64() == 0 {
            return Err(invalid(
                "receiver.min_rate",
                "must be at least 1 B (bytes per second)",
            ));
        }
        let budget = self.receiver.inflight_budget;
        if budget < self.receiver.max_block_size || budget > ByteSize::gib(1024) {
            return Err(invalid(
                "receiver.inflight_budget",
                format!(
                    "must hold one block of receiver.max_block_size ({}) and be at most 1 TiB; got {budget}",
                    self.receiver.max_block_size
                ),
            ));
        }
        let ka = self.receiver.keepalive_interval;
        if ka < Duration::from_millis(10) || ka > Duration::from_secs(60) {
            return Err(invalid(
                "receiver.keepalive_interval",
                format!(
                    "must be between 10ms and 60s; got {}",
                    humantime::format_duration(ka)
                ),
            ));
        }
        // Under a standby strategy each role's view adds its framed listener (`strategy.*.framed`).
        if self.receiver.sources.is_empty() && !self.strategy.kind.has_standby() {
            return Err(invalid(
                "receiver.sources",
                "is empty: the node would take no images; add a `[[receiver.sources]]` \
                 (kind = \"framed-listen\", \"raw-listen\" or \"raw-connect\")",
            ));
        }
        let mut addresses = HashSet::new();
        let mut sources = HashSet::new();
        for (i, s) in self.receiver.sources.iter().enumerate() {
            let key = format!("receiver.sources[{i}]");
            if let SourceConfig::RawListen { address, .. }
            | SourceConfig::FramedListen { address, .. } = s
            {
                check_host_port(address).map_err(|e| invalid(format!("{key}.address"), e))?;
                if !addresses.insert(address.clone()) {
                    return Err(invalid(
                        format!("{key}.address"),
                        format!("`{address}` is used by two listeners"),
                    ));
                }
            }
            if let SourceConfig::RawConnect { address, .. } = s {
                if !address.contains(':') {
                    return Err(invalid(
                        format!("{key}.address"),
                        format!("`{address}` is not host:port"),
                    ));
                }
            }
            if let SourceConfig::RawListen { source, .. }
            | SourceConfig::RawConnect { source, .. } = s
            {
                if !valid_source_id(source) {
                    return Err(invalid(
                        format!("{key}.source"),
                        format!("`{source}` must be 1-128 of A-Z a-z 0-9 . _ -, not starting with . or _"),
                    ));
                }
                if !sources.insert(source.clone()) {
                    return Err(invalid(
                        format!("{key}.source"),
                        format!("`{source}` is used by two raw sources; their sequence numbers would collide"),
                    ));
                }
            }
        }
        if self.wal.segment_size < ByteSize::mib(1) {
            return Err(invalid(
                "wal.segment_size",
                format!("must be at least 1 MiB (got {})", self.wal.segment_size),
            ));
        }
        let two_segments = self.wal.segment_size.as_u64().checked_mul(2);
        if two_segments.is_none_or(|two| self.wal.disk_budget.as_u64() < two) {
            return Err(invalid(
                "wal.disk_budget",
                format!(
                    "must be at least two segments ({} is under 2 x {})",
                    self.wal.disk_budget, self.wal.segment_size
                ),
            ));
        }
        if self.batch.interval < Duration::from_millis(10)
            || self.batch.interval > Duration::from_secs(3600)
        {
            return Err(invalid(
                "batch.interval",
                format!(
                    "must be between 10ms and 1h (got {})",
                    humantime::format_duration(self.batch.interval)
                ),
            ));
        }
        if self.batch.commit_timeout < Duration::from_secs(1) {
            return Err(invalid(
                "batch.commit_timeout",
                format!(
                    "must be at least 1s (a commit that makes no progress for this long is abandoned and retried); got {}",
                    humantime::format_duration(self.batch.commit_timeout)
                ),
            ));
        }
        if !valid_source_id(&self.batch.prefix) {
            return Err(invalid(
                "batch.prefix",
                format!("`{}` must be 1-128 of A-Z a-z 0-9 . _ -", self.batch.prefix),
            ));
        }
        for (key, path) in [
            ("node.data_dir", Some(&self.node.data_dir)),
            ("wal.dir", self.wal.dir.as_ref()),
            (
                "checkpoint.store.path",
                match &self.checkpoint.store {
                    StoreConfig::Local { path } => Some(path),
                    _ => None,
                },
            ),
        ] {
            if path.is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(invalid(
                    key,
                    "is empty: name a directory (an empty path would write into the working directory)",
                ));
            }
        }
        if let Some(url) = &self.output.url {
            if url.is_empty() {
                return Err(invalid("output.url", "is empty"));
            }
            if let Some((scheme, _)) = url.split_once("://") {
                match scheme {
                    "file" => {
                        file_url_path(url).map_err(|reason| invalid("output.url", reason))?;
                    }
                    "hdfs" => {
                        split_hdfs_url(url).map_err(|reason| invalid("output.url", reason))?;
                    }
                    _ => {
                        return Err(invalid(
                            "output.url",
                            format!("scheme `{scheme}` is not supported (use a path, file:///path or hdfs://namenode:port/path)"),
                        ))
                    }
                }
            }
        }
        self.validate_output_layout()?;
        if let StoreConfig::Hdfs { url } = &self.checkpoint.store {
            split_hdfs_url(url).map_err(|reason| invalid("checkpoint.store.url", reason))?;
        }
        if self.checkpoint.keep == 0 {
            return Err(invalid("checkpoint.keep", "must be at least 1"));
        }
        self.dedup.validate(self.batch.interval)?;
        self.validate_strategy()
    }

    fn validate_strategy(&self) -> Result<(), ConfigError> {
        let st = &self.strategy;
        if st.heartbeat_interval < Duration::from_millis(10) {
            return Err(invalid(
                "strategy.heartbeat_interval",
                "must be at least 10ms",
            ));
        }
        // Checked: a duration too large to double must be a refusal, not a panic.
        let twice_heartbeat = st.heartbeat_interval.checked_mul(2);
        if twice_heartbeat.is_none_or(|twice| st.failure_timeout < twice) {
            return Err(invalid(
                "strategy.failure_timeout",
                format!(
                    "must be at least twice strategy.heartbeat_interval ({} is under 2 x {})",
                    humantime::format_duration(st.failure_timeout),
                    humantime::format_duration(st.heartbeat_interval)
                ),
            ));
        }
        // A sender of a two-node strategy leaves a node silent for failure_timeout + one keepalive
        // interval (`send push --config`): a healthy idle node must keepalive well within that, so
        // that keepalives lost to a busy moment do not look like a partition.
        let silence = st.failure_timeout;
        if st.kind.has_standby() && 3 * self.receiver.keepalive_interval > silence {
            return Err(invalid(
                "receiver.keepalive_interval",
                format!(
                    "must be at most a third of strategy.failure_timeout ({}), by which a sender of a two-node strategy judges a node's silence; got {}",
                    humantime::format_duration(silence),
                    humantime::format_duration(self.receiver.keepalive_interval)
                ),
            ));
        }
        if st.checkpoint_interval < Duration::from_millis(10) {
            return Err(invalid(
                "strategy.checkpoint_interval",
                "must be at least 10ms",
            ));
        }
        if st.retention.max_blocks == 0 {
            return Err(invalid(
                "strategy.retention.max_blocks",
                "must be at least 1",
            ));
        }
        if st.retention.max_bytes < self.receiver.max_block_size {
            return Err(invalid(
                "strategy.retention.max_bytes",
                format!(
                    "must hold at least one block of receiver.max_block_size ({} is under {})",
                    st.retention.max_bytes, self.receiver.max_block_size
                ),
            ));
        }
        if !st.kind.has_standby() {
            return Ok(());
        }
        if let Some(i) = self
            .receiver
            .sources
            .iter()
            .position(|s| !matches!(s, SourceConfig::FramedListen { .. }))
        {
            return Err(invalid(
                format!("receiver.sources[{i}].kind"),
                format!(
                    "strategy `{}` fails over framed senders only: the raw protocol has no acknowledgement, \
                     so a sender cannot know what to re-send to the standby. Use strategy `none` for raw \
                     sources, or the framed protocol",
                    st.kind
                ),
            ));
        }
        match &self.checkpoint.store {
            StoreConfig::Local { .. } | StoreConfig::Hdfs { .. } => {}
            StoreConfig::Sled { .. } | StoreConfig::Memory => {
                return Err(invalid(
                    "checkpoint.store.kind",
                    format!(
                        "strategy `{}` needs a checkpoint store both nodes reach: kind = \"local\" (a directory \
                         on a shared disk) or kind = \"hdfs\"; a sled database is held by one process at a time \
                         and memory by none",
                        st.kind
                    ),
                ))
            }
        }
        let mut seen = HashSet::new();
        for (role, rc) in [("primary", &st.primary), ("standby", &st.standby)] {
            if !valid_source_id(&rc.name) {
                return Err(invalid(
                    format!("strategy.{role}.name"),
                    format!("`{}` must be 1-128 of A-Z a-z 0-9 . _ -", rc.name),
                ));
            }
            for (field, addr) in [("framed", &rc.framed), ("control", &rc.control)] {
                check_host_port(addr)
                    .map_err(|e| invalid(format!("strategy.{role}.{field}"), e))?;
                if !seen.insert(addr.clone()) {
                    return Err(invalid(
                        format!("strategy.{role}.{field}"),
                        format!("`{addr}` is used twice in [strategy]"),
                    ));
                }
            }
        }
        if st.primary.name == st.standby.name {
            return Err(invalid(
                "strategy.standby.name",
                "must differ from strategy.primary.name (claims and checkpoints name their node)",
            ));
        }
        Ok(())
    }

    fn validate_output_layout(&self) -> Result<(), ConfigError> {
        if let Some(p) = &self.node.pipeline {
            if !valid_source_id(p) {
                return Err(invalid(
                    "node.pipeline",
                    format!("`{p}` must be 1-128 of A-Z a-z 0-9 . _ -, not starting with . or _"),
                ));
            }
        }
        let template = crate::layout::PathTemplate::parse(&self.output.path)
            .map_err(|e| invalid("output.path", e.reason))?;
        let _ = template;
        if self.output.max_file_size.0 < 1 << 20 {
            return Err(invalid(
                "output.max_file_size",
                format!(
                    "is {}: at least 1 MiB (a part file much smaller than an HDFS block is the small-files problem again)",
                    self.output.max_file_size
                ),
            ));
        }
        if self.output.max_images_per_file == 0 {
            return Err(invalid("output.max_images_per_file", "must be at least 1"));
        }
        if let Some(b) = self.output.block_size {
            if b.0 < 1 << 20 || b.0 % 512 != 0 {
                return Err(invalid(
                    "output.block_size",
                    format!("is {b}: HDFS needs a multiple of 512 bytes of at least 1 MiB"),
                ));
            }
        }
        Ok(())
    }

    /// The output format in effect: `output.format`, or the default for the output's kind.
    pub fn output_format(&self) -> crate::layout::Format {
        self.output
            .format
            .unwrap_or(if self.hdfs_output().is_some() {
                crate::layout::Format::SequenceFile
            } else {
                crate::layout::Format::Files
            })
    }

    /// The pipeline in effect (`node.pipeline`, else `node.name`).
    pub fn pipeline(&self) -> &str {
        self.node.pipeline.as_deref().unwrap_or(&self.node.name)
    }

    /// The output layout this configuration writes (validated by [`Config::validate`]).
    pub fn layout(&self) -> crate::layout::Layout {
        let template = crate::layout::PathTemplate::parse(&self.output.path).unwrap_or_else(|_| {
            crate::layout::PathTemplate::parse(crate::layout::PathTemplate::DEFAULT)
                .expect("the default template parses")
        });
        self.layout_with(template)
    }

    fn layout_with(&self, path: crate::layout::PathTemplate) -> crate::layout::Layout {
        crate::layout::Layout {
            format: self.output_format(),
            path,
            pipeline: self.pipeline().to_owned(),
            prefix: self.batch.prefix.clone(),
            max_file_size: self.output.max_file_size.0,
            max_images_per_file: self.output.max_images_per_file,
        }
    }

    /// The configuration one role runs with: under a two-node strategy, the role's name, WAL
    /// directory and framed address replace `node.name`, `wal.dir` and the `framed-listen` address.
    pub fn for_role(&self, role: NodeRole) -> Result<Config, ConfigError> {
        let mut cfg = self.clone();
        if !self.strategy.kind.has_standby() {
            if role == NodeRole::Standby {
                return Err(invalid(
                    "strategy.kind",
                    "strategy `none` has no standby: run the node with --role primary (the default) and restart it in place",
                ));
            }
            return Ok(cfg);
        }
        let rc = match role {
            NodeRole::Primary => &self.strategy.primary,
            NodeRole::Standby => &self.strategy.standby,
        };
        // The pair is one pipeline: its name is the file's, not the role's.
        cfg.node.pipeline = Some(self.pipeline().to_owned());
        cfg.node.name = rc.name.clone();
        let dir = rc
            .data_dir
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join(&rc.name));
        cfg.wal.dir = Some(dir.join("wal"));
        let mut has_framed = false;
        for s in &mut cfg.receiver.sources {
            if let SourceConfig::FramedListen { address, .. } = s {
                if !has_framed {
                    *address = rc.framed.clone();
                }
                has_framed = true;
            }
        }
        cfg.receiver.sources.retain(
            |s| !matches!(s, SourceConfig::FramedListen { address, .. } if *address != rc.framed),
        );
        if !has_framed {
            cfg.receiver.sources.push(SourceConfig::FramedListen {
                address: rc.framed.clone(),
                token: None,
            });
        }
        Ok(cfg)
    }

    /// How many listeners (`raw-listen`, `framed-listen` sources) share `receiver.max_connections`.
    pub fn listeners(&self) -> usize {
        self.receiver
            .sources
            .iter()
            .filter(|s| !matches!(s, SourceConfig::RawConnect { .. }))
            .count()
    }

    /// The framed addresses a sender uses: the primary's first, then the standby's (`none`: the
    /// first `framed-listen` source).
    pub fn send_targets(&self) -> Vec<String> {
        if self.strategy.kind.has_standby() {
            return vec![
                self.strategy.primary.framed.clone(),
                self.strategy.standby.framed.clone(),
            ];
        }
        self.receiver
            .sources
            .iter()
            .find_map(|s| match s {
                SourceConfig::FramedListen { address, .. } => Some(address.clone()),
                _ => None,
            })
            .into_iter()
            .collect()
    }

    pub fn wal_dir(&self) -> PathBuf {
        self.wal
            .dir
            .clone()
            .unwrap_or_else(|| self.node.data_dir.join("wal"))
    }

    /// The HDFS output URL, if the output is on HDFS.
    pub fn hdfs_output(&self) -> Option<&str> {
        self.output
            .url
            .as_deref()
            .filter(|u| u.starts_with("hdfs://"))
    }

    /// The output directory (a local output).
    /// Whether `source` is the source id of a raw listener or raw connection of this node.
    pub fn is_raw_source(&self, name: &str) -> bool {
        self.receiver.sources.iter().any(|s| {
            matches!(s, SourceConfig::RawListen { source, .. } | SourceConfig::RawConnect { source, .. } if source == name)
        })
    }

    pub fn output_dir(&self) -> PathBuf {
        match &self.output.url {
            Some(url) if url.starts_with("file://") => file_url_path(url)
                .unwrap_or_else(|_| PathBuf::from(url.trim_start_matches("file://"))),
            Some(path) => PathBuf::from(path),
            None => self.node.data_dir.join("output"),
        }
    }

    pub fn sled_path(&self) -> Option<PathBuf> {
        match &self.checkpoint.store {
            StoreConfig::Sled { path } => Some(
                path.clone()
                    .unwrap_or_else(|| self.node.data_dir.join("checkpoints.sled")),
            ),
            _ => None,
        }
    }
}

/// `hdfs://authority/path` → (`hdfs://authority`, `/path`). The path must be absolute and not `/`.
pub fn split_hdfs_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("hdfs://")
        .ok_or_else(|| format!("`{url}` is not an hdfs:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.is_empty() {
        return Err(format!(
            "`{url}` has no namenode (hdfs://namenode:port/path or hdfs://nameservice/path)"
        ));
    }
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return Err(format!(
            "`{url}` needs a directory path after the namenode, e.g. hdfs://{authority}/ingest"
        ));
    }
    Ok((format!("hdfs://{authority}"), path.to_string()))
}

/// `ip:port` or `hostname:port` (a name lets a role bind and be reached under its host's name, as in
/// docker compose); the message says what is wrong.
fn check_host_port(address: &str) -> Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = |why: &str| format!("`{address}` is not host:port ({why})");
    let (host, port) = address.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    port.parse::<u16>()
        .map_err(|e| bad(&format!("port: {e}")))?;
    let name_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if name_ok {
        Ok(())
    } else {
        Err(bad("not an IP address or a host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_a_valid_configuration_with_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.batch.interval, Duration::from_secs(2));
        assert_eq!(c.receiver.sources.len(), 2);
        assert_eq!(c.wal_dir(), PathBuf::from("./hdfs-ingest-data/wal"));
        assert!(c.analysis.enabled);
        assert_eq!(c.strategy.kind, Strategy::None);
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let err = Config::parse("[batch]\ninterval = \"1s\"\nintervall = \"2s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("intervall"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn sizes_and_durations_are_human_readable() {
        let c = Config::parse("[wal]\nsegment_size = \"8 MiB\"\n[batch]\ninterval = \"500ms\"\n")
            .unwrap();
        assert_eq!(c.wal.segment_size, ByteSize::mib(8));
        assert_eq!(c.batch.interval, Duration::from_millis(500));
    }

    #[test]
    fn a_bad_value_is_named_by_its_key_and_reason() {
        let err = Config::parse("[batch]\ninterval = \"1ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch.interval") && err.contains("10ms"),
            "{err}"
        );
        let err = Config::parse("[wal]\nsegment_size = \"12 parsecs\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("parsecs"), "{err}");
        let err =
            Config::parse("[[receiver.sources]]\nkind = \"raw-listen\"\naddress = \"nowhere\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("receiver.sources[0].address"), "{err}");
    }

    #[test]
    fn durations_and_sizes_too_large_to_double_are_refused_by_key_or_accepted_never_a_panic() {
        // Found with the `config` fuzz target (fuzz/): validation doubled these with `2 *`, which
        // panicked ("overflow when multiplying duration by scalar"; "attempt to multiply with
        // overflow" at the wal.disk_budget check).
        let err = Config::parse("[strategy]\nheartbeat_interval = \"18446744073709551615s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("strategy.failure_timeout"), "{err}");
        let err = Config::parse("[wal]\nsegment_size = \"18446744073709551615\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wal.disk_budget"), "{err}");
        // A failure timeout of 584 billion years is silly but consistent.
        Config::parse("[strategy]\nfailure_timeout = \"18446744073709551615s\"\n").unwrap();
    }

    #[test]
    fn a_keepalive_interval_a_sender_would_take_for_silence_is_refused_and_named() {
        let mut c = Config::parse(include_str!("../config/passive-standby.toml")).unwrap();
        assert_eq!(c.strategy.failure_timeout, Duration::from_millis(300));
        c.receiver.keepalive_interval = Duration::from_millis(101);
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("receiver.keepalive_interval") && err.contains("300ms"),
            "{err}"
        );
        c.receiver.keepalive_interval = Duration::from_millis(100);
        c.validate().unwrap();
        // A single node has no sender that fails over: any keepalive in range goes.
        Config::parse("[receiver]\nkeepalive_interval = \"5s\"\n").unwrap();
        let err = Config::parse("[receiver]\nkeepalive_interval = \"1ms\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("receiver.keepalive_interval"), "{err}");
    }

    #[test]
    fn sources_are_tagged_by_kind_and_an_unknown_kind_is_refused() {
        let c = Config::parse(
            "[[receiver.sources]]\nkind = \"raw-connect\"\naddress = \"127.0.0.1:9999\"\nsource = \"cam-1\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:9000\"\ntoken = \"t\"\n",
        )
        .unwrap();
        assert!(
            matches!(&c.receiver.sources[0], SourceConfig::RawConnect { source, .. } if source == "cam-1")
        );
        let err =
            Config::parse("[[receiver.sources]]\nkind = \"carrier-pigeon\"\naddress = \"x\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("carrier-pigeon"), "{err}");
    }

    #[test]
    fn dedup_bounds_parse_with_human_durations_and_impossible_ones_name_their_key() {
        let c = Config::parse(
            "[dedup]\nwindow = 5000\nmax_gaps = 10\ngap_budget = 100\nmax_sources = 7\nsource_retention = \"2days\"\n",
        )
        .unwrap();
        assert_eq!(c.dedup.window, 5000);
        assert_eq!(c.dedup.source_retention, Duration::from_secs(2 * 24 * 3600));
        assert_eq!(Config::default().dedup, DedupConfig::default());
        for (toml, key, words) in [
            ("window = 1", "dedup.window", "between 2 and 2^40"),
            (
                "window = 2000000000000",
                "dedup.window",
                "between 2 and 2^40",
            ),
            ("max_gaps = 0", "dedup.max_gaps", "at least 1"),
            (
                "window = 100\nmax_gaps = 100",
                "dedup.max_gaps",
                "below dedup.window (100)",
            ),
            (
                "gap_budget = 10",
                "dedup.gap_budget",
                "at least dedup.max_gaps (1024)",
            ),
            ("max_sources = 0", "dedup.max_sources", "at least 1"),
            (
                "source_retention = \"30s\"",
                "dedup.source_retention",
                "at least 1m",
            ),
        ] {
            let err = Config::parse(&format!("[dedup]\n{toml}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains(words), "{toml}: {err}");
        }
        let err = Config::parse("[dedup]\nwindows = 5\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("windows"), "{err}");
    }

    #[test]
    fn two_raw_sources_with_one_name_are_refused() {
        let err = Config::parse(
            "[[receiver.sources]]\nkind = \"raw-listen\"\naddress = \"127.0.0.1:1\"\nsource = \"a\"\n\
             [[receiver.sources]]\nkind = \"raw-listen\"\naddress = \"127.0.0.1:2\"\nsource = \"a\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("receiver.sources[1].source"), "{err}");
    }

    #[test]
    fn hdfs_urls_split_into_namenode_and_directory_and_bad_ones_are_named() {
        assert_eq!(
            split_hdfs_url("hdfs://127.0.0.1:9000/ingest/out/").unwrap(),
            (
                "hdfs://127.0.0.1:9000".to_string(),
                "/ingest/out".to_string()
            )
        );
        assert_eq!(split_hdfs_url("hdfs://ns1/x").unwrap().0, "hdfs://ns1");
        let err = Config::parse("[output]\nurl = \"hdfs://127.0.0.1:9000\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output.url") && err.contains("directory path"),
            "{err}"
        );
        let err = Config::parse("[checkpoint.store]\nkind = \"hdfs\"\nurl = \"hdfs:///x\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("checkpoint.store.url") && err.contains("no namenode"),
            "{err}"
        );
        let c = Config::parse(
            "[output]\nurl = \"hdfs://nn:9000/out\"\n[hdfs]\nuser = \"etl\"\n[hdfs.client]\n\"dfs.client.failover.max.attempts\" = \"3\"\n",
        )
        .unwrap();
        assert_eq!(c.hdfs_output(), Some("hdfs://nn:9000/out"));
        assert_eq!(
            c.hdfs
                .client
                .get("dfs.client.failover.max.attempts")
                .map(String::as_str),
            Some("3")
        );
    }

    #[test]
    fn a_max_connections_no_process_could_serve_is_refused_with_the_limit_and_not_a_panic() {
        let err = Config::parse("[receiver]\nmax_connections = 2305843009213693952\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("receiver.max_connections")
                && err.contains("at most 1048576")
                && err.contains("2305843009213693952"),
            "{err}"
        );
        let err = Config::parse("[receiver]\nmax_connections = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("receiver.max_connections") && err.contains("1 per listener (2)"),
            "{err}"
        );
    }

    #[test]
    fn an_inflight_budget_that_cannot_hold_one_block_is_refused_and_named() {
        let err =
            Config::parse("[receiver]\nmax_block_size = \"8 MiB\"\ninflight_budget = \"4 MiB\"\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("receiver.inflight_budget") && err.contains("8 MiB"),
            "{err}"
        );
    }

    #[test]
    fn the_shipped_config_files_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                Config::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                n += 1;
            }
        }
        assert!(n >= 1, "no config files in {}", dir.display());
    }

    #[test]
    fn an_address_is_an_ip_or_a_host_name_with_a_port_and_anything_else_is_named() {
        for ok in [
            "127.0.0.1:9998",
            "[::1]:9998",
            "primary:9998",
            "node-1.example.org:8020",
        ] {
            assert_eq!(check_host_port(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("primary", "no port"),
            ("primary:99999", "port"),
            (":9998", "not an IP address or a host name"),
            ("a b:9998", "not an IP address or a host name"),
        ] {
            let e = check_host_port(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains(why), "{bad}: {e}");
        }
        let err = Config::parse(
            "[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:1\"\n[checkpoint.store]\nkind = \"local\"\npath = \"/tmp/x\"\n[strategy]\nkind = \"active-standby\"\n[strategy.primary]\nname = \"p\"\nframed = \"p 1:1\"\ncontrol = \"p:2\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("strategy.primary.framed"), "{err}");
    }

    #[test]
    fn an_empty_data_directory_is_refused_instead_of_writing_into_the_working_directory() {
        for (toml, key) in [
            ("[node]\ndata_dir = \"\"\n", "node.data_dir"),
            ("[wal]\ndir = \"\"\n", "wal.dir"),
            (
                "[checkpoint.store]\nkind = \"local\"\npath = \"\"\n",
                "checkpoint.store.path",
            ),
        ] {
            let err = Config::parse(toml).unwrap_err().to_string();
            assert!(
                err.contains(key) && err.contains("is empty"),
                "{toml}: {err}"
            );
        }
    }

    #[test]
    fn a_file_url_with_localhost_is_the_absolute_path_and_any_other_host_is_refused() {
        let c = Config::parse("[output]\nurl = \"file://localhost/srv/images\"\n").unwrap();
        assert_eq!(c.output_dir(), PathBuf::from("/srv/images"));
        let c = Config::parse("[output]\nurl = \"file:///srv/images\"\n").unwrap();
        assert_eq!(c.output_dir(), PathBuf::from("/srv/images"));
        let err = Config::parse("[output]\nurl = \"file://srv/images\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output.url") && err.contains("host `srv`"),
            "{err}"
        );
        let err = Config::parse("[output]\nurl = \"file://localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no directory path"), "{err}");
    }

    #[test]
    fn a_node_with_no_sources_is_refused_unless_its_strategy_gives_each_role_a_listener() {
        let err = Config::parse("[receiver]\nsources = []\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("receiver.sources") && err.contains("no images"),
            "{err}"
        );
        let c = Config::parse(
            "[receiver]\nsources = []\n[checkpoint.store]\nkind = \"local\"\npath = \"/tmp/x\"\n\
             [strategy]\nkind = \"active-standby\"\n",
        );
        assert!(c.is_ok(), "{:?}", c.err());
    }

    #[test]
    fn a_commit_timeout_under_a_second_is_refused_and_named() {
        let err = Config::parse("[batch]\ncommit_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("batch.commit_timeout") && err.contains("at least 1s"),
            "{err}"
        );
        assert!(Config::parse("[batch]\ncommit_timeout = \"5s\"\n").is_ok());
    }

    #[test]
    fn output_layout_keys_parse_and_a_bad_one_is_refused_naming_the_key_and_the_reason() {
        let cfg = Config::parse(
            "[node]\npipeline = \"east\"\n[output]\nformat = \"parquet\"\npath = \"{pipeline}/dt={date}/{prefix}-{batch_ms}\"\nmax_file_size = \"64 MiB\"\nmax_images_per_file = 1000\n",
        )
        .unwrap();
        let layout = cfg.layout();
        assert_eq!(layout.format, crate::layout::Format::Parquet);
        assert_eq!(layout.batch_dir(0), "east/dt=1970-01-01/images-0");
        assert_eq!(layout.max_file_size, 64 << 20);
        for (toml, key, says) in [
            ("[output]\nformat = \"orc\"\n", "format", "orc"),
            (
                "[output]\npath = \"{prefix}\"\n",
                "output.path",
                "no {batch_ms}",
            ),
            (
                "[output]\npath = \"../{batch_ms}\"\n",
                "output.path",
                "\"..\" part",
            ),
            (
                "[output]\npath = \"/x/{batch_ms}\"\n",
                "output.path",
                "absolute",
            ),
            (
                "[output]\npath = \"{camera}/{batch_ms}\"\n",
                "output.path",
                "unknown field {camera}",
            ),
            (
                "[output]\nmax_file_size = \"4 KiB\"\n",
                "output.max_file_size",
                "at least 1 MiB",
            ),
            (
                "[output]\nmax_images_per_file = 0\n",
                "output.max_images_per_file",
                "at least 1",
            ),
            (
                "[output]\nblock_size = \"1000 KiB\"\n",
                "output.block_size",
                "1 MiB",
            ),
            ("[node]\npipeline = \"a/b\"\n", "node.pipeline", "a/b"),
        ] {
            let err = Config::parse(toml).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{toml}: {err}");
        }
    }

    #[test]
    fn the_format_defaults_to_packed_on_hdfs_and_files_locally_and_a_pair_shares_one_pipeline() {
        let local = Config::parse("[output]\nurl = \"/tmp/out\"\n").unwrap();
        assert_eq!(local.output_format(), crate::layout::Format::Files);
        assert_eq!(
            local.layout().path.as_str(),
            crate::layout::PathTemplate::DEFAULT
        );
        let hdfs = Config::parse("[output]\nurl = \"hdfs://nn:9000/out\"\n").unwrap();
        assert_eq!(hdfs.output_format(), crate::layout::Format::SequenceFile);
        let pair = Config::parse(
            "[node]\nname = \"cams\"\n[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:9998\"\n[checkpoint.store]\nkind = \"local\"\npath = \"/tmp/ck\"\n[strategy]\nkind = \"active-standby\"\n[output]\npath = \"{pipeline}/{batch_ms}\"\n",
        )
        .unwrap();
        let primary = pair.for_role(NodeRole::Primary).unwrap();
        let standby = pair.for_role(NodeRole::Standby).unwrap();
        assert_ne!(primary.node.name, standby.node.name);
        assert_eq!(primary.layout().batch_dir(7), "cams/7");
        assert_eq!(standby.layout().batch_dir(7), "cams/7");
    }
}
