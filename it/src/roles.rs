//! Two-node strategies under test: a pipeline's configuration (from the shipped `config/<strategy>.toml`
//! with free ports and scratch directories), its role processes (`run --config F --role R [--standby]`)
//! with the events they print, signals, and the sender as a child process (`send push --config F`).
//!
//! # Design
//!
//! Everything runs as real processes, killed with real signals (`libc::kill`). A [`RoleProc`] reads
//! its child's stdout on a thread: the first `ready` or `standby` line ends [`RoleProc::start`], later
//! lines (a standby's `ready` and `takeover {json}`) wait in a channel for
//! [`RoleProc::wait_takeover`]. Each process writes its log (at `info`, or `RUST_LOG`) to a file of
//! its own under the pipeline's directory; when a test panics or passes an error through
//! [`Pipeline::check`], [`Pipeline`]'s drop prints the tail of every log and keeps the directory, so
//! a failure can be read afterwards. `IT_KEEP=1` keeps it always.
//!
//! The output is checked two ways: [`Pipeline::batches`] lists it without reading a byte (cheap
//! enough to poll while waiting for commits), [`Pipeline::verify`] is the project's verify (every
//! file read and hashed; in a debug build about 30 MB/s, so each test runs it once, at the end).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use hdfs_ingest::ha::TakeoverEvent;
use hdfs_ingest::send::manifest::{read_manifest, ManifestEntry};
use hdfs_ingest::verify::VerifyReport;

use crate::minidfs::{unique_dir, MiniDfs};
use crate::net::Net;
use crate::{bin, free_port, stdout_lines};

/// Batch interval of test pipelines: short, so kills land in every phase of a commit.
pub const BATCH_INTERVAL: &str = "500ms";
/// Heartbeat interval of test pipelines (the shipped configurations' value).
pub const HEARTBEAT_INTERVAL: &str = "100ms";
/// Failure timeout of test pipelines: at the top of the 300-500 ms range, so two busy cores running
/// several debug-built processes do not make a healthy primary look dead.
pub const FAILURE_TIMEOUT: &str = "500ms";

/// The images a [`SenderProc`] sends: this many distinct files of about this size.
pub const IMAGE_FILES: u64 = 64;
pub const IMAGE_SIZE: usize = 64 * 1024;

/// What the processes log (to their files) unless `RUST_LOG` says otherwise: `info`, without a line per
/// analysed image.
pub const LOG_FILTER: &str = "info,hdfs_ingest::analysis=warn";

/// How long a node may take to print `ready`/`standby`, and a standby to take over once its primary
/// died (detection is `FAILURE_TIMEOUT`; the rest is opening the WAL and recovery on a busy machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
pub const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends signal `sig` (`libc::SIGKILL`, `SIGSTOP`, `SIGCONT`, ...) to `pid`.
pub fn kill_pid(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        bail!(
            "kill({pid}, {sig}) failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Waits up to `timeout` for `child` to exit.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(Some(st));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which `[strategy.<role>]` table a process runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }

    pub fn other(self) -> Role {
        match self {
            Role::Primary => Role::Standby,
            Role::Standby => Role::Primary,
        }
    }
}

/// A directory of [`IMAGE_FILES`] distinct images of about [`IMAGE_SIZE`] bytes (JPEGs and BMPs), for
/// `send push --dir`: the sender sends them round-robin (image `i` is file `i % IMAGE_FILES`), because
/// a debug-built sender generating 64 KiB JPEGs on the fly makes only about 30 a second, far below the
/// load these tests need. Made once (seeded, so always the same bytes) next to the binary under test
/// and kept there for later runs; concurrent test processes race harmlessly (the first rename wins).
pub fn image_dir() -> anyhow::Result<PathBuf> {
    static DIR: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    DIR.get_or_init(|| make_image_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!("cannot make the test images: {e}"))
}

fn make_image_dir() -> anyhow::Result<PathBuf> {
    let bin = bin();
    let profile = bin.parent().context("the binary's directory")?;
    let dir = profile.join(format!("it-images-{IMAGE_FILES}x{IMAGE_SIZE}"));
    if dir.exists() {
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(".it-images-")
        .tempdir_in(profile)?;
    let set = hdfs_ingest::images::ImageSet::Generated {
        size: IMAGE_SIZE,
        seed: 0x1a6e,
    };
    for i in 0..IMAGE_FILES {
        let (_, data) = set.get(i);
        let ext = if i % 2 == 0 { "jpg" } else { "bmp" };
        std::fs::write(tmp.path().join(format!("img-{i:03}.{ext}")), &data)?;
    }
    if std::fs::rename(tmp.path(), &dir).is_err() && !dir.exists() {
        bail!(
            "cannot rename {} to {}",
            tmp.path().display(),
            dir.display()
        );
    }
    Ok(dir)
}

/// Where a pipeline's output is.
#[derive(Clone, Debug)]
pub enum OutputAt {
    Local(PathBuf),
    Hdfs(String),
}

/// Where a pipeline keeps its checkpoints and output.
#[derive(Clone, Copy)]
pub enum Storage<'a> {
    /// Directories under the pipeline's temporary directory.
    Local,
    /// Fresh directories on this HDFS.
    Hdfs(&'a MiniDfs),
}

/// A two-node pipeline's scratch directory and configuration file.
pub struct Pipeline {
    dir: Option<tempfile::TempDir>,
    pub strategy: String,
    pub config: PathBuf,
    pub output: OutputAt,
    logs: AtomicU64,
    failed: std::sync::atomic::AtomicBool,
    /// Where the roles and the sender run, when they run on hosts of a [`Net`]: the namespace of each.
    hosts: Option<Hosts>,
    /// An HA cluster's client configuration, which the test's own HDFS reads need too.
    hdfs_conf_dir: Option<PathBuf>,
}

/// The hosts of a [`Net`] a pipeline runs on: `primary`, `standby` and `sender`.
#[derive(Clone, Debug)]
struct Hosts {
    primary: String,
    standby: String,
    sender: String,
}

/// Who runs a command of a pipeline.
#[derive(Clone, Copy, Debug)]
enum Runner {
    Role(Role),
    Sender,
}

/// Sets `key` (dotted: `strategy.failure_timeout`) in a TOML table, creating tables on the way.
fn toml_set(table: &mut toml::Table, key: &str, value: impl Into<toml::Value>) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().expect("a key");
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap_or_else(|| panic!("{p} of {key} is not a table"));
    }
    t.insert(last.to_string(), value.into());
}

impl Pipeline {
    /// `config/<strategy>.toml` with free ports, directories under a new temporary directory (or, for
    /// [`Storage::Hdfs`], checkpoints and output on HDFS), batches every [`BATCH_INTERVAL`], heartbeats
    /// every [`HEARTBEAT_INTERVAL`], failure after [`FAILURE_TIMEOUT`].
    pub fn new(strategy: &str, storage: Storage<'_>) -> anyhow::Result<Pipeline> {
        Pipeline::make(strategy, storage, None)
    }

    /// As [`Pipeline::new`], with the roles and the sender on the hosts `primary`, `standby` and
    /// `sender` of `net`: each role listens on its host's address, and every process of the pipeline
    /// runs inside its host. The net must outlive the pipeline's processes.
    pub fn on_net(strategy: &str, storage: Storage<'_>, net: &Net) -> anyhow::Result<Pipeline> {
        Pipeline::make(strategy, storage, Some(net))
    }

    fn make(strategy: &str, storage: Storage<'_>, net: Option<&Net>) -> anyhow::Result<Pipeline> {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../config")
            .join(format!("{strategy}.toml"));
        let text = std::fs::read_to_string(&shipped)
            .with_context(|| format!("read {}", shipped.display()))?;
        let mut t: toml::Table = text
            .parse()
            .with_context(|| format!("parse {}", shipped.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("it-{strategy}-"))
            .tempdir()?;
        let d = |p: &str| dir.path().join(p).display().to_string();
        toml_set(&mut t, "node.data_dir", d("data"));
        let hdfs_conf_dir = match storage {
            Storage::Hdfs(dfs) => dfs.hadoop_conf_dir().map(Path::to_path_buf),
            Storage::Local => None,
        };
        if let Some(dir) = &hdfs_conf_dir {
            toml_set(&mut t, "hdfs.hadoop_conf_dir", dir.display().to_string());
        }
        let output = match storage {
            Storage::Local => {
                toml_set(&mut t, "checkpoint.store.kind", "local");
                toml_set(&mut t, "checkpoint.store.path", d("checkpoints"));
                toml_set(&mut t, "output.url", d("output"));
                OutputAt::Local(dir.path().join("output"))
            }
            Storage::Hdfs(dfs) => {
                let base = format!("{}{}", dfs.url(), unique_dir(strategy));
                let mut store = toml::Table::new();
                store.insert("kind".into(), "hdfs".into());
                store.insert("url".into(), format!("{base}/checkpoints").into());
                toml_set(&mut t, "checkpoint.store", store);
                toml_set(&mut t, "output.url", format!("{base}/output"));
                if net.is_some() {
                    // The DataNodes of a cluster on a host of the net register that host's address
                    // as their name (see `MiniDfsOptions::host`).
                    let mut client = toml::Table::new();
                    client.insert("dfs.client.use.datanode.hostname".into(), "true".into());
                    toml_set(&mut t, "hdfs.client", client);
                }
                OutputAt::Hdfs(format!("{base}/output"))
            }
        };
        toml_set(&mut t, "batch.interval", BATCH_INTERVAL);
        toml_set(&mut t, "strategy.heartbeat_interval", HEARTBEAT_INTERVAL);
        toml_set(&mut t, "strategy.failure_timeout", FAILURE_TIMEOUT);
        // Each role's framed and control addresses (its framed one replaces the `framed-listen`
        // source's address when it runs).
        for role in ["primary", "standby"] {
            let ip = net.map_or("127.0.0.1", |n| n.ip(role));
            for what in ["framed", "control"] {
                toml_set(
                    &mut t,
                    &format!("strategy.{role}.{what}"),
                    format!("{ip}:{}", free_port()),
                );
            }
        }
        // `IT_OUTPUT_FORMAT=sequencefile|parquet|files` runs every pipeline test in that layout.
        if let Some(format) = output_format_override()? {
            toml_set(&mut t, "output.format", format.name());
        }
        let config = dir.path().join(format!("{strategy}.toml"));
        std::fs::write(&config, toml::to_string(&t)?)?;
        std::fs::create_dir_all(dir.path().join("logs"))?;
        Ok(Pipeline {
            dir: Some(dir),
            strategy: strategy.to_string(),
            config,
            output,
            logs: AtomicU64::new(0),
            failed: Default::default(),
            hdfs_conf_dir,
            hosts: net.map(|n| Hosts {
                primary: n.ns("primary").to_string(),
                standby: n.ns("standby").to_string(),
                sender: n.ns("sender").to_string(),
            }),
        })
    }

    /// How the test reads an HDFS output: on a net, DataNodes are known by their host's address.
    fn hdfs_options(&self) -> strategies::store::hdfs::HdfsOptions {
        let mut o = strategies::store::hdfs::HdfsOptions {
            hadoop_conf_dir: self.hdfs_conf_dir.clone(),
            ..Default::default()
        };
        if self.hosts.is_some() {
            o.config
                .insert("dfs.client.use.datanode.hostname".into(), "true".into());
        }
        o
    }

    /// The binary under test, to run as `who`: inside its host when the pipeline runs on a net.
    fn command(&self, who: Runner) -> Command {
        let Some(h) = &self.hosts else {
            return Command::new(bin());
        };
        let ns = match who {
            Runner::Role(Role::Primary) => &h.primary,
            Runner::Role(Role::Standby) => &h.standby,
            Runner::Sender => &h.sender,
        };
        crate::net::exec_in(ns, bin())
    }

    /// Writes into `other`'s output root instead of its own (several pipelines, one root): its
    /// configuration and what the test lists and verifies.
    pub fn share_output_of(&mut self, other: &Pipeline) -> anyhow::Result<()> {
        let url = match &other.output {
            OutputAt::Local(dir) => dir.display().to_string(),
            OutputAt::Hdfs(url) => url.clone(),
        };
        self.set("output.url", url)?;
        self.output = match &other.output {
            OutputAt::Local(dir) => OutputAt::Local(dir.clone()),
            OutputAt::Hdfs(url) => OutputAt::Hdfs(url.clone()),
        };
        Ok(())
    }

    /// Sets `key` (dotted) in the configuration file, before any role starts.
    pub fn set(&self, key: &str, value: impl Into<toml::Value>) -> anyhow::Result<()> {
        let mut t: toml::Table = std::fs::read_to_string(&self.config)?.parse()?;
        toml_set(&mut t, key, value);
        std::fs::write(&self.config, toml::to_string(&t)?)?;
        Ok(())
    }

    /// Passes `r` through; an error makes the drop print every log's tail and keep the directory
    /// (as a panic does).
    pub fn check<T>(&self, r: anyhow::Result<T>) -> anyhow::Result<T> {
        if r.is_err() {
            self.failed.store(true, Ordering::Relaxed);
        }
        r
    }

    /// The pipeline's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory is kept until drop")
            .path()
    }

    /// The images a [`SenderProc`] sends: see [`image_dir`].
    pub fn images(&self) -> anyhow::Result<PathBuf> {
        image_dir()
    }

    /// A fresh log file for a process named `what`.
    fn log_file(&self, what: &str) -> PathBuf {
        let n = self.logs.fetch_add(1, Ordering::Relaxed) + 1;
        self.dir().join("logs").join(format!("{n:02}-{what}.log"))
    }

    /// Verifies the output against a manifest file.
    pub async fn verify(&self, manifest: &Path, expect_all: bool) -> anyhow::Result<VerifyReport> {
        let entries = read_manifest(manifest)
            .with_context(|| format!("read manifest {}", manifest.display()))?;
        self.verify_entries(&entries, expect_all).await
    }

    /// Verifies the output against manifest entries.
    pub async fn verify_entries(
        &self,
        entries: &[ManifestEntry],
        expect_all: bool,
    ) -> anyhow::Result<VerifyReport> {
        Ok(match &self.output {
            OutputAt::Local(dir) => hdfs_ingest::verify::verify(entries, dir, expect_all)?,
            OutputAt::Hdfs(url) => {
                hdfs_ingest::verify::verify_hdfs(entries, url, &self.hdfs_options(), expect_all)
                    .await?
            }
        })
    }

    /// The batch directories of the output and the names of their files, listed without reading any
    /// file (cheap enough to poll; [`Pipeline::verify`] reads and hashes everything).
    pub async fn batches(&self) -> anyhow::Result<Vec<Batch>> {
        self.list_batches()
            .await
            .with_context(|| format!("list the output {:?}", self.output))
    }

    async fn list_batches(&self) -> anyhow::Result<Vec<Batch>> {
        let mut out = Vec::new();
        for (batch, files) in self.batch_files().await? {
            let mut names = Vec::new();
            for file in files {
                // A packed batch: the images are inside its part files.
                match hdfs_ingest::layout::Format::of_part_name(&file) {
                    Some(format) => {
                        let data = bytes::Bytes::from(self.read_file(&batch, &file).await?);
                        let images = hdfs_ingest::layout::read::decode_part(format, data)
                            .map_err(|e| anyhow!("{batch}/{file}: {e}"))?;
                        names.extend(images.into_iter().map(|(n, _)| n));
                    }
                    None => names.push(file),
                }
            }
            out.push(Batch::new(batch, names));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Every batch directory of the output (relative to its root, in any layout) with its file names.
    async fn batch_files(&self) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut out = Vec::new();
        match &self.output {
            OutputAt::Local(dir) => {
                if !dir.exists() {
                    return Ok(out);
                }
                for batch in hdfs_ingest::layout::read::local_batch_dirs(dir)? {
                    let files = match std::fs::read_dir(dir.join(&batch)) {
                        Ok(rd) => rd
                            .map(|f| Ok(f?.file_name().to_string_lossy().into_owned()))
                            .collect::<std::io::Result<Vec<_>>>()?,
                        // Not a batch: a directory being renamed into place.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e.into()),
                    };
                    out.push((batch, files));
                }
            }
            OutputAt::Hdfs(url) => {
                let (base, root) =
                    hdfs_ingest::config::split_hdfs_url(url).map_err(|e| anyhow!(e))?;
                let client = strategies::store::hdfs::build_client(&base, &self.hdfs_options())?;
                out = match hdfs_ingest::layout::read::hdfs_batch_dirs(&client, &root).await {
                    Ok(b) => b,
                    // Nothing published yet.
                    Err(hdfs_native::HdfsError::FileNotFound(_)) => Vec::new(),
                    Err(e) => return Err(e.into()),
                };
            }
        }
        Ok(out)
    }

    /// Reads one file of a batch directory.
    async fn read_file(&self, batch: &str, file: &str) -> anyhow::Result<Vec<u8>> {
        match &self.output {
            OutputAt::Local(dir) => Ok(std::fs::read(dir.join(batch).join(file))?),
            OutputAt::Hdfs(url) => {
                let (base, root) =
                    hdfs_ingest::config::split_hdfs_url(url).map_err(|e| anyhow!(e))?;
                let client = strategies::store::hdfs::build_client(&base, &self.hdfs_options())?;
                let r = client.read(&format!("{root}/{batch}/{file}")).await?;
                Ok(r.read_range(0, r.file_length()).await?.to_vec())
            }
        }
    }

    /// Reads one image of a batch (its own file, or from the batch's part files).
    pub async fn read_output(&self, batch: &str, image: &str) -> anyhow::Result<Vec<u8>> {
        let files = self
            .batch_files()
            .await?
            .into_iter()
            .find(|(b, _)| b == batch)
            .map(|(_, f)| f)
            .ok_or_else(|| anyhow!("no batch {batch} in the output"))?;
        if files.iter().any(|f| f == image) {
            return self.read_file(batch, image).await;
        }
        for file in files {
            if let Some(format) = hdfs_ingest::layout::Format::of_part_name(&file) {
                let data = bytes::Bytes::from(self.read_file(batch, &file).await?);
                let images = hdfs_ingest::layout::read::decode_part(format, data)
                    .map_err(|e| anyhow!("{batch}/{file}: {e}"))?;
                if let Some((_, b)) = images.into_iter().find(|(n, _)| n == image) {
                    return Ok(b.to_vec());
                }
            }
        }
        Err(anyhow!("no image {image} in batch {batch}"))
    }

    /// Polls the output listing until every image the manifest acknowledges has a file (what was
    /// released on a durable or checkpointed ack is committed a batch or two later).
    pub async fn wait_committed(&self, manifest: &Path, within: Duration) -> anyhow::Result<()> {
        let wanted: Vec<String> = read_manifest(manifest)?
            .into_iter()
            .filter(|e| e.acked)
            .filter_map(|e| Some(format!("{}-{}", e.source?, e.seq?)))
            .collect();
        let deadline = Instant::now() + within;
        loop {
            let have: std::collections::HashSet<String> = self
                .batches()
                .await?
                .into_iter()
                .flat_map(|b| b.images)
                .map(|f| {
                    f.rsplit_once('.')
                        .map_or(f.clone(), |(stem, _)| stem.to_string())
                })
                .collect();
            let missing = wanted.iter().filter(|w| !have.contains(*w)).count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{missing} of {} acknowledged images were not committed within {within:?}",
                    wanted.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Every log of this pipeline's processes, with its last `lines` lines.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let Ok(rd) = std::fs::read_dir(self.dir().join("logs")) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("==> {} <==\n", p.display()));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        let failed = std::thread::panicking() || self.failed.load(Ordering::Relaxed);
        if failed || std::env::var_os("IT_KEEP").is_some() {
            if failed {
                eprintln!("{}", self.log_tails(40));
            }
            if let Some(dir) = self.dir.take() {
                eprintln!("kept {}", dir.keep().display());
            }
        }
    }
}

/// One batch directory of an output.
#[derive(Clone, Debug)]
pub struct Batch {
    pub name: String,
    /// Its batch time (`<prefix>-<ms>`).
    pub ms: u64,
    /// Its image files (names not starting with `_`).
    pub images: Vec<String>,
    /// It holds a `_VOID` marker: a batch claimed by a node that was replaced before publishing it.
    pub void: bool,
}

impl Batch {
    fn new(name: String, files: Vec<String>) -> Batch {
        let ms = name
            .rsplit_once('-')
            .and_then(|(_, ms)| ms.parse().ok())
            .unwrap_or(0);
        let void = files.iter().any(|f| f == hdfs_ingest::sink::VOID_FILE);
        let images = files.into_iter().filter(|f| !f.starts_with('_')).collect();
        Batch {
            name,
            ms,
            images,
            void,
        }
    }
}

/// A `run --config F --role R [--standby]` child process.
pub struct RoleProc {
    pub child: Child,
    pub role: Role,
    /// The first line it printed: `ready <addresses>` or `standby <peer control address>`.
    pub first_line: String,
    pub log: PathBuf,
    lines: Receiver<String>,
}

impl RoleProc {
    /// Starts role `role` (as a standby of the other role with `standby`) and waits for its `ready` or
    /// `standby` line.
    pub fn start(
        p: &Pipeline,
        role: Role,
        standby: bool,
        envs: &[(&str, &str)],
    ) -> anyhow::Result<RoleProc> {
        let log = p.log_file(&format!(
            "{}{}",
            role.name(),
            if standby && role == Role::Primary {
                "-as-standby"
            } else {
                ""
            }
        ));
        let mut cmd = p.command(Runner::Role(role));
        cmd.args(["run", "--config"])
            .arg(&p.config)
            .args(["--role", role.name()]);
        if standby {
            cmd.arg("--standby");
        }
        cmd.stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| LOG_FILTER.into()),
            );
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawn hdfs-ingest run")?;
        let lines = stdout_lines(&mut child)?;
        let mut proc = RoleProc {
            child,
            role,
            first_line: String::new(),
            log,
            lines,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match proc.next_line(deadline) {
                Ok(l) if l.starts_with("ready ") || l.starts_with("standby ") => {
                    proc.first_line = l;
                    return Ok(proc);
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = proc.child.kill();
                    let st = proc.child.wait()?;
                    bail!(
                        "{} did not start ({e}; exit {st}); log {}:\n{}",
                        role.name(),
                        proc.log.display(),
                        tail(&proc.log, 30)
                    );
                }
            }
        }
    }

    fn next_line(&self, deadline: Instant) -> anyhow::Result<String> {
        match self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(anyhow!("timed out")),
            Err(RecvTimeoutError::Disconnected) => Err(anyhow!("stdout closed")),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the `takeover {json}` line.
    pub fn wait_takeover(&mut self, timeout: Duration) -> anyhow::Result<TakeoverEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            let l = self.next_line(deadline).map_err(|e| {
                anyhow!(
                    "{} printed no takeover line ({e}); log {}:\n{}",
                    self.role.name(),
                    self.log.display(),
                    tail(&self.log, 30)
                )
            })?;
            if let Some(json) = l.strip_prefix("takeover ") {
                return serde_json::from_str(json)
                    .with_context(|| format!("parse the takeover line {l:?}"));
            }
        }
    }

    /// A takeover line printed so far, without waiting.
    pub fn took_over(&mut self) -> bool {
        while let Ok(l) = self.lines.try_recv() {
            if l.starts_with("takeover ") {
                return true;
            }
        }
        false
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        kill_pid(self.pid(), libc::SIGKILL)?;
        self.child.wait()?;
        Ok(())
    }

    pub fn sigstop(&self) -> anyhow::Result<()> {
        kill_pid(self.pid(), libc::SIGSTOP)
    }

    pub fn sigcont(&self) -> anyhow::Result<()> {
        kill_pid(self.pid(), libc::SIGCONT)
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> anyhow::Result<Option<ExitStatus>> {
        wait_exit(&mut self.child, timeout)
    }

    /// Still running (not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `streams` distinct sender streams have connected to this node (its log says
    /// `framed connection ... source=<stream>` for each).
    pub fn wait_streams(&self, streams: usize, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let connected: std::collections::BTreeSet<&str> = log
                .lines()
                .filter(|l| l.contains("framed connection") && !l.contains("closed"))
                .filter_map(|l| l.split_once(" source=")?.1.split_whitespace().next())
                .collect();
            if connected.len() >= streams {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} streams of the sender connected to the {} within {within:?} ({connected:?}), not {streams}",
                    connected.len(),
                    self.role.name()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log, n)
    }
}

impl Drop for RoleProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What a [`SenderProc`] pushes.
#[derive(Clone, Debug)]
pub struct SendArgs {
    pub count: u64,
    /// Images per second over all streams.
    pub rate: f64,
    pub source_prefix: String,
    pub concurrency: usize,
    /// More flags (`--release committed`, ...).
    pub extra: Vec<String>,
}

impl Default for SendArgs {
    fn default() -> Self {
        SendArgs {
            count: 1000,
            rate: 200.0,
            source_prefix: "it".into(),
            concurrency: 4,
            extra: Vec::new(),
        }
    }
}

/// A `send push --config F` child process: it takes its targets, mode, release level and retention
/// from the pipeline's configuration and fails over on its own.
pub struct SenderProc {
    pub child: Child,
    pub manifest: PathBuf,
    pub log: PathBuf,
    stdout: Receiver<String>,
}

impl SenderProc {
    pub fn start(p: &Pipeline, args: &SendArgs, manifest: &Path) -> anyhow::Result<SenderProc> {
        let log = p.log_file(&format!("sender-{}", args.source_prefix));
        let mut cmd = p.command(Runner::Sender);
        cmd.args(["send", "push", "--config"])
            .arg(&p.config)
            .args(["--count", &args.count.to_string()])
            .args(["--rate", &args.rate.to_string()])
            .arg("--dir")
            .arg(p.images()?)
            .args(["--source-prefix", &args.source_prefix])
            .args(["--concurrency", &args.concurrency.to_string()])
            .arg("--manifest")
            .arg(manifest)
            .args(&args.extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .env("NO_COLOR", "1")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| LOG_FILTER.into()),
            );
        let mut child = cmd.spawn().context("spawn hdfs-ingest send push")?;
        let stdout = stdout_lines(&mut child)?;
        Ok(SenderProc {
            child,
            manifest: manifest.to_path_buf(),
            log,
            stdout,
        })
    }

    /// Waits for the push to finish; returns its summary line (`pushed N images (...)`).
    pub fn wait(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let st = wait_exit(&mut self.child, timeout)?;
        let lines: Vec<String> = self.stdout.try_iter().collect();
        match st {
            Some(st) if st.success() => Ok(lines
                .into_iter()
                .find(|l| l.starts_with("pushed "))
                .unwrap_or_default()),
            Some(st) => bail!(
                "the sender failed ({st}); stdout {lines:?}; log {}:\n{}",
                self.log.display(),
                tail(&self.log, 30)
            ),
            None => bail!(
                "the sender did not finish within {timeout:?}; log {}:\n{}",
                self.log.display(),
                tail(&self.log, 30)
            ),
        }
    }

    /// Still running (not exited).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// `running`, or how it exited, with the end of its log.
    pub fn state(&mut self) -> String {
        match self.child.try_wait() {
            Ok(None) => "running".into(),
            Ok(Some(st)) => format!(
                "exited {st}; log {}:\n{}",
                self.log.display(),
                tail(&self.log, 20)
            ),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        kill_pid(self.child.id(), libc::SIGKILL)?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for SenderProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output format `IT_OUTPUT_FORMAT` asks every pipeline to write, if set.
pub fn output_format_override() -> anyhow::Result<Option<hdfs_ingest::layout::Format>> {
    match std::env::var("IT_OUTPUT_FORMAT") {
        Ok(v) if !v.is_empty() => Ok(Some(
            v.parse()
                .map_err(|e: String| anyhow!("IT_OUTPUT_FORMAT: {e}"))?,
        )),
        _ => Ok(None),
    }
}
