//! The integration-test harness: runs the real `hdfs-ingest` binary as child processes, kills them with
//! SIGKILL, and gives tests free ports and scratch configurations. The tests are in `it/tests/`.

pub mod compose;
pub mod hostile;
mod logged;
pub mod minidfs;
pub mod net;
pub mod pair;
pub mod readers;
pub mod roles;
pub mod soak;

pub use logged::LoggedNode;
pub use roles::{kill_pid, OutputAt, Pipeline, Role, RoleProc, SendArgs, SenderProc, Storage};

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{bail, Context};

/// The `hdfs-ingest` binary of this build profile, built on first use (cargo does not build a
/// dependency's binaries for another package's tests, nor for its binaries).
pub fn bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // A test is target/<profile>/deps/<test>-<hash>; a binary of this package (the soak) is
        // target/<profile>/<bin>.
        let mut profile_dir = exe.parent().expect("target/<profile>").to_path_buf();
        if profile_dir.file_name().is_some_and(|n| n == "deps") {
            profile_dir.pop();
        }
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
        let mut cmd = Command::new(cargo);
        cmd.args([
            "build",
            "--quiet",
            "-p",
            "hdfs-ingest",
            "--bin",
            "hdfs-ingest",
            "--manifest-path",
        ])
        .arg(&manifest);
        if release {
            cmd.arg("--release");
        }
        if cfg!(feature = "failpoints") {
            cmd.args(["--features", "failpoints"]);
        }
        let target_dir = profile_dir.parent().expect("target dir");
        cmd.env("CARGO_TARGET_DIR", target_dir);
        let st = cmd.status().expect("cargo build of hdfs-ingest");
        assert!(st.success(), "building the hdfs-ingest binary failed");
        profile_dir.join("hdfs-ingest")
    })
    .clone()
}

/// A port nobody listens on right now.
/// The lines a child writes to its stdout (taken from it), read on a thread of their own, so that a
/// test can wait for one with a timeout.
pub fn stdout_lines(child: &mut std::process::Child) -> anyhow::Result<mpsc::Receiver<String>> {
    let stdout = child.stdout.take().context("the child's stdout")?;
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Ok(lines)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .expect("local addr")
        .port()
}

/// A node process.
pub struct NodeProc {
    pub child: Child,
    /// The addresses it printed on its `ready` line, in configuration order.
    pub addresses: Vec<String>,
}

impl NodeProc {
    /// Starts `hdfs-ingest run --config <config>` and waits (up to 60 s) for its `ready` line.
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> anyhow::Result<NodeProc> {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn");
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawn hdfs-ingest run")?;
        let stdout = child.stdout.take().context("stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let mut sent = false;
            for l in lines.by_ref().map_while(Result::ok) {
                if !sent && l.starts_with("ready ") {
                    let _ = tx.send(
                        l[6..]
                            .split_whitespace()
                            .map(String::from)
                            .collect::<Vec<_>>(),
                    );
                    sent = true;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addresses) => Ok(NodeProc { child, addresses }),
            Err(_) => {
                let _ = child.kill();
                let st = child.wait()?;
                bail!("node did not become ready (exit {st})")
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, then reap.
    pub fn kill9(mut self) -> anyhow::Result<()> {
        signal(self.pid(), "KILL")?;
        self.child.wait()?;
        Ok(())
    }

    /// SIGTERM (the node commits what is durable), then wait for a clean exit.
    pub fn stop(mut self) -> anyhow::Result<()> {
        signal(self.pid(), "TERM")?;
        let st = self.child.wait()?;
        if !st.success() {
            bail!("node exited with {st} after SIGTERM");
        }
        Ok(())
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name (`KILL`, `TERM`, `STOP`, `CONT`) through kill(1).
pub fn signal(pid: u32, name: &str) -> anyhow::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()?;
    if !st.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

/// Writes a node configuration: `data_dir` under `dir`, and the TOML in `body` after it.
pub fn write_config(dir: &Path, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join("node.toml");
    let text = format!(
        "[node]\ndata_dir = {:?}\n{body}",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The published batch directories of a local output, at any depth of its layout (none if it does
/// not exist): `(path relative to the output, absolute path)`, sorted.
pub fn batch_paths(output: &Path) -> Vec<(String, PathBuf)> {
    hdfs_ingest::layout::read::local_batch_dirs(output)
        .unwrap_or_default()
        .into_iter()
        .map(|b| (b.clone(), output.join(b)))
        .collect()
}

/// The regular files under `dir`, at any depth (0 if it does not exist).
pub fn files_under(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => files_under(&e.path()),
            _ => 1,
        })
        .sum()
}

/// Files left in staging anywhere under an output dir.
pub fn leftover_staging(output: &Path) -> Vec<PathBuf> {
    let staging = output.join("_temporary");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&staging) {
        for e in rd.flatten() {
            out.push(e.path());
        }
    }
    out
}

/// The configuration of a node `name` run in this process under `root`: one framed listener on a free
/// port, the output and a local checkpoint store shared by every node under `root`, no analysis.
pub fn node_config(
    root: &Path,
    name: &str,
    strategy: strategies::Strategy,
) -> hdfs_ingest::config::Config {
    use hdfs_ingest::config::{Config, SourceConfig, StoreConfig};
    let mut cfg = Config::default();
    cfg.node.name = name.into();
    cfg.node.data_dir = root.join(name);
    cfg.receiver.sources = vec![SourceConfig::FramedListen {
        address: "127.0.0.1:0".into(),
        token: None,
    }];
    cfg.output.url = Some(root.join("output").display().to_string());
    cfg.checkpoint.store = StoreConfig::Local {
        path: root.join("store"),
    };
    cfg.strategy.kind = strategy;
    cfg.analysis.enabled = false;
    cfg
}

/// A node in this process (for receiver tests, which need no kill): data under `dir`, the given sources
/// (use port 0), a short batch interval; `tweak` adjusts the rest.
pub async fn start_in_process(
    dir: &Path,
    sources: Vec<hdfs_ingest::config::SourceConfig>,
    tweak: impl FnOnce(&mut hdfs_ingest::config::Config),
) -> anyhow::Result<InProcess> {
    let mut cfg = hdfs_ingest::config::Config::default();
    cfg.node.data_dir = dir.join("data");
    cfg.receiver.sources = sources;
    cfg.batch.interval = Duration::from_millis(100);
    tweak(&mut cfg);
    cfg.validate()?;
    let output = cfg.output_dir();
    let node = hdfs_ingest::node::Node::open(cfg).await?;
    let running = hdfs_ingest::node::start_node(node).await?;
    Ok(InProcess {
        node: running.node.clone(),
        addresses: running.addresses.clone(),
        running,
        output,
    })
}

pub struct InProcess {
    pub node: hdfs_ingest::node::Node,
    pub addresses: Vec<String>,
    running: hdfs_ingest::node::RunningNode,
    pub output: PathBuf,
}

impl InProcess {
    /// Stops receivers and commits everything durable.
    pub async fn stop(self) -> anyhow::Result<PathBuf> {
        self.running.stop().await?;
        Ok(self.output)
    }
}

/// Unix milliseconds of a log line's leading RFC 3339 timestamp (`2026-12-01T22:30:17.123456Z`).
pub fn log_unix_ms(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?;
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + hh) * 60 + mm) * 60 + ss) as u64 * 1000 + ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_timestamps_read_as_unix_milliseconds() {
        assert_eq!(
            log_unix_ms("2026-12-01T22:30:17.123456Z  INFO x: y"),
            Some(1_796_164_217_123)
        );
        assert_eq!(log_unix_ms("1970-01-01T00:00:00Z x"), Some(0));
        assert_eq!(log_unix_ms("no timestamp"), None);
    }
}
