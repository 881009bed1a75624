//! A real HDFS for tests: Hadoop's MiniDFSCluster (the real NameNode and DataNode code) in a JVM we
//! start and control, or an external cluster named by `HDFS_URL`.
//!
//! # Design
//!
//! The Java side is a small Maven project of ours, `it/minidfs/` (Hadoop 3.5.0's HDFS test jars from
//! Maven Central; Java 17). Its `main` starts a MiniDFSCluster (one NameNode on the requested port,
//! `0` = a free one; N DataNodes; a small block size so multi-block files happen; permissions off;
//! safe mode left at once), prints exactly one `READY hdfs://127.0.0.1:<port>` line on stdout and then
//! answers commands read from stdin, one per line, with `OK` or `ERR <message>`:
//! `stop-namenode`, `restart-namenode`, `stop-datanode <i>`, `restart-datanode <i>`,
//! `wait-datanode-dead <i>` (until the NameNode has noticed a stopped DataNode), `shutdown`.
//! EOF on stdin shuts it down, so a test process that dies (even by SIGKILL) never leaves a JVM behind.
//!
//! Hadoop configuration keys for the cluster ([`MiniDfsOptions::conf`], [`MiniDfs::start_with`]) go
//! to the JVM as `--conf KEY=VALUE` and are set after the harness's own settings, so they win. A value
//! the NameNode refuses (say `dfs.namenode.fs-limits.max-directory-items = 0`; its range is
//! 1..=6,400,000) makes [`MiniDfs::start`] fail with Hadoop's message.
//!
//! ## Build once, then plain `java`
//!
//! `mvn exec:java` costs Maven's own start-up and dependency resolution on every cluster (seconds).
//! Instead [`MiniDfs::start`] builds the project once (`mvn package`, which also writes the runtime
//! class path to `it/minidfs/target/classpath.txt`) and then runs `java -cp <jar>:<classpath>` for
//! every cluster. The build is redone only when the jar is older than `pom.xml` or a source file, or a
//! class-path entry has gone missing (an emptied `~/.m2`). Maven runs offline (`-o`) first, so a warm
//! `~/.m2` costs no network; only if that fails (a cold repository) does it run online and download
//! Hadoop (about 120 MiB into `~/.m2/repository`, where CI can cache it). Builds are serialized across
//! test threads and processes with an exclusive `flock` on `it/minidfs/target/.build.lock`.
//! The JVM runs with C1 only (`-XX:TieredStopAtLevel=1`): a cluster is up in about 5-7 s instead of
//! 12 s, and tests move too little data for the C2 compiler to pay off.
//!
//! Measured on the 2-core build machine: empty `~/.m2` — online build 44 s, then the cluster up in
//! 5.6 s; warm `~/.m2` but no jar — offline build 6 s; warm — no Maven at all, up in 4.7-7 s
//! (resolving the class path through Maven alone would add 3.3 s to every cluster).
//!
//! ## Parallel tests
//!
//! Every cluster gets its own free NameNode port (port 0; DataNodes and HTTP servers too) and its
//! own temporary base directory, so tests that each start a cluster run in parallel without a lock.
//! The one fixed thing is the port after `restart_namenode`: the same as before, as a real restart.
//!
//! ## Blocking
//!
//! Every method blocks the calling thread (process I/O). From async tests, use a multi-thread
//! runtime (`#[tokio::test(flavor = "multi_thread")]`) so the HDFS client's tasks keep running
//! while a restart is waited for.
//!
//! ## External clusters
//!
//! With `HDFS_URL` set (e.g. the docker-compose HDFS), [`MiniDfs::external`] returns a handle to it.
//! It cannot be stopped or restarted: [`MiniDfs::controllable`] is false and the control methods
//! return an error, so a test that needs them prints why and skips.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context};

/// How long a started JVM may take to print `READY`. Generous: two cores shared with a build.
const READY_TIMEOUT: Duration = Duration::from_secs(180);
/// How long one control command may take (a NameNode restart replays its edits and waits for
/// every DataNode to register again).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// JVM flags: C1 only starts a cluster in ~7 s instead of ~12 s; a small heap is plenty.
const JVM_FLAGS: &[&str] = &[
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Xmx768m",
    "-Djava.net.preferIPv4Stack=true",
];

/// How to start a [`MiniDfs`].
#[derive(Debug, Clone)]
pub struct MiniDfsOptions {
    /// NameNode RPC port; 0 picks a free one (the default, so clusters can run side by side).
    pub port: u16,
    /// Number of DataNodes (default 3).
    pub datanodes: usize,
    /// Default replication of new files (default `min(3, datanodes)`).
    pub replication: Option<usize>,
    /// Default block size in bytes, a multiple of 512 (default 1 MiB, so multi-block files are cheap).
    pub block_size: u64,
    /// Run the cluster inside a host of a [`crate::net::Net`] (its namespace and address): the
    /// NameNode and the DataNodes then serve that address, and the DataNodes register it as their
    /// host name, so clients on other hosts need `dfs.client.use.datanode.hostname = true`.
    pub host: Option<(String, String)>,
    /// Two NameNodes of the HA name service `minidfs-ns` with shared edits, nn1 active; clients
    /// reach it as `hdfs://minidfs-ns` through [`MiniDfs::hadoop_conf_dir`]. [`MiniDfs::failover`]
    /// and [`MiniDfs::kill_active_namenode`] move the active role.
    pub ha: bool,
    /// Hadoop configuration keys and values for the whole cluster (NameNodes and DataNodes), set
    /// after the harness's own settings, so they override them. Default none.
    pub conf: Vec<(String, String)>,
}

impl Default for MiniDfsOptions {
    fn default() -> Self {
        MiniDfsOptions {
            port: 0,
            datanodes: 3,
            replication: None,
            block_size: 1024 * 1024,
            host: None,
            ha: false,
            conf: Vec::new(),
        }
    }
}

/// A running MiniDFSCluster (killed on drop) or an external cluster from `HDFS_URL`.
pub struct MiniDfs {
    url: String,
    /// For an HA cluster: the directory with the name service's client configuration.
    conf_dir: Option<PathBuf>,
    local: Option<Local>,
}

struct Local {
    child: Child,
    control: Mutex<Control>,
    /// The cluster's base directory and the JVM's log (`minidfs.log`); removed on drop.
    dir: tempfile::TempDir,
}

struct Control {
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl std::fmt::Debug for MiniDfs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MiniDfs")
            .field("url", &self.url)
            .field("controllable", &self.controllable())
            .finish()
    }
}

/// `it/minidfs/`, the Maven project.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("minidfs")
}

impl MiniDfs {
    /// Builds the harness if needed (see the module docs), starts a MiniDFSCluster with `opts` and
    /// waits for it to be ready.
    pub fn start(opts: MiniDfsOptions) -> anyhow::Result<MiniDfs> {
        if let Some((key, _)) = opts
            .conf
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('='))
        {
            bail!("MiniDFS configuration key {key:?} must be non-empty and without '='");
        }
        let classpath = ensure_built()?;
        let dir = tempfile::Builder::new()
            .prefix("minidfs-")
            .tempdir()
            .context("create the MiniDFS base directory")?;
        let log_path = dir.path().join("minidfs.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let replication = opts.replication.unwrap_or(opts.datanodes.min(3));
        let started = Instant::now();
        let mut cmd = match &opts.host {
            Some((ns, _)) => crate::net::exec_in(ns, java()),
            None => Command::new(java()),
        };
        cmd.args(JVM_FLAGS)
            .arg("-cp")
            .arg(&classpath)
            .arg("hdfsingest.minidfs.Main")
            .args(["--port", &opts.port.to_string()])
            .args(["--datanodes", &opts.datanodes.to_string()])
            .args(["--replication", &replication.to_string()])
            .args(["--block-size", &opts.block_size.to_string()])
            .arg("--base-dir")
            .arg(dir.path().join("cluster"));
        if let Some((_, ip)) = &opts.host {
            cmd.args(["--host", ip]);
        }
        if opts.ha {
            cmd.args(["--ha", "true"]);
        }
        for (key, value) in &opts.conf {
            cmd.arg("--conf").arg(format!("{key}={value}"));
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn java for MiniDFS (is a JDK 17 on PATH?)")?;
        let stdin = child.stdin.take();
        let lines = crate::stdout_lines(&mut child)?;
        let mut local = Local {
            child,
            control: Mutex::new(Control { stdin, lines }),
            dir,
        };
        let first = {
            let control = local.control.get_mut().map_err(|_| anyhow!("poisoned"))?;
            control.lines.recv_timeout(READY_TIMEOUT)
        };
        let (url, conf_dir) = match first {
            Ok(line) => match line.strip_prefix("READY ") {
                Some(rest) => {
                    let mut words = rest.split_whitespace();
                    let url = words.next().unwrap_or_default().to_owned();
                    let conf = words
                        .find_map(|w| w.strip_prefix("conf="))
                        .map(PathBuf::from);
                    (url, conf)
                }
                None => bail!("MiniDFS did not start: {line}\n{}", log_tail(&log_path, 30)),
            },
            Err(RecvTimeoutError::Timeout) => bail!(
                "MiniDFS printed no READY within {READY_TIMEOUT:?}\n{}",
                log_tail(&log_path, 30)
            ),
            Err(RecvTimeoutError::Disconnected) => {
                let status = local.child.wait().ok();
                bail!(
                    "MiniDFS exited ({status:?}) before READY\n{}",
                    log_tail(&log_path, 30)
                )
            }
        };
        eprintln!(
            "MiniDFS {url} up in {:.1} s (log {})",
            started.elapsed().as_secs_f64(),
            log_path.display()
        );
        Ok(MiniDfs {
            url,
            conf_dir,
            local: Some(local),
        })
    }

    /// A cluster of `datanodes` DataNodes with these Hadoop configuration keys set (see
    /// [`MiniDfsOptions::conf`]), everything else as [`MiniDfsOptions::default`]. Always a
    /// MiniDFSCluster of its own, never `HDFS_URL`: an external cluster has its own settings.
    ///
    /// ```no_run
    /// # use it::minidfs::MiniDfs;
    /// let dfs = MiniDfs::start_with(1, &[("dfs.namenode.fs-limits.max-directory-items", "32")])?;
    /// # anyhow::Ok(())
    /// ```
    pub fn start_with(datanodes: usize, conf: &[(&str, &str)]) -> anyhow::Result<MiniDfs> {
        MiniDfs::start(MiniDfsOptions {
            datanodes,
            conf: conf
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..MiniDfsOptions::default()
        })
    }

    /// The cluster named by the `HDFS_URL` environment variable, if set. It cannot be stopped or
    /// restarted from here.
    pub fn external() -> Option<MiniDfs> {
        let url = std::env::var("HDFS_URL").ok()?;
        let url = url.trim().trim_end_matches('/').to_owned();
        if url.is_empty() {
            return None;
        }
        Some(MiniDfs {
            url,
            conf_dir: None,
            local: None,
        })
    }

    /// [`MiniDfs::external`] when `HDFS_URL` is set, otherwise [`MiniDfs::start`] with `opts`.
    pub fn external_or_start(opts: MiniDfsOptions) -> anyhow::Result<MiniDfs> {
        match MiniDfs::external() {
            Some(dfs) => Ok(dfs),
            None => MiniDfs::start(opts),
        }
    }

    /// One cluster per test process, shared by every test that calls this (each should work in
    /// its own directory, see [`unique_dir`]): [`MiniDfs::external`] if `HDFS_URL` is set,
    /// otherwise a MiniDFSCluster with default options started on first use. It is never
    /// dropped; when the test process exits, its stdin closes and the JVM shuts itself down.
    /// Tests that stop or restart nodes must start their own cluster instead.
    pub fn shared() -> anyhow::Result<&'static MiniDfs> {
        static SHARED: OnceLock<Result<MiniDfs, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                MiniDfs::external_or_start(MiniDfsOptions::default()).map_err(|e| format!("{e:#}"))
            })
            .as_ref()
            .map_err(|e| anyhow!("the shared MiniDFS did not start: {e}"))
    }

    /// `hdfs://127.0.0.1:<port>` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// An HA cluster's client configuration (`core-site.xml`, `hdfs-site.xml` for `minidfs-ns`).
    pub fn hadoop_conf_dir(&self) -> Option<&Path> {
        self.conf_dir.as_deref()
    }

    /// HA: the active NameNode becomes standby and the other one active.
    pub fn failover(&self) -> anyhow::Result<()> {
        self.command("failover")
    }

    /// HA: the active NameNode is shut down and the other one made active.
    pub fn kill_active_namenode(&self) -> anyhow::Result<()> {
        self.command("kill-active-namenode")
    }

    /// Whether this handle can stop and restart nodes (false for an external cluster).
    pub fn controllable(&self) -> bool {
        self.local.is_some()
    }

    /// The JVM's log (Hadoop's output), for a failing test to look at.
    pub fn log_path(&self) -> Option<PathBuf> {
        self.local
            .as_ref()
            .map(|l| l.dir.path().join("minidfs.log"))
    }

    /// Stops the NameNode (its port then refuses connections).
    pub fn stop_namenode(&self) -> anyhow::Result<()> {
        self.command("stop-namenode")
    }

    /// Starts the NameNode again on the same port with the same data, and waits until every
    /// running DataNode has registered with it.
    pub fn restart_namenode(&self) -> anyhow::Result<()> {
        self.command("restart-namenode")
    }

    /// Stops DataNode `i` (0-based in start order; indices never shift).
    pub fn stop_datanode(&self, i: usize) -> anyhow::Result<()> {
        self.command(&format!("stop-datanode {i}"))
    }

    /// Waits until the NameNode has declared the stopped DataNode `i` dead (heartbeat expiry:
    /// about 14 s with the harness's 1 s heartbeat and 2 s recheck interval). Until then the
    /// NameNode still places new blocks on it.
    pub fn wait_datanode_dead(&self, i: usize) -> anyhow::Result<()> {
        self.command(&format!("wait-datanode-dead {i}"))
    }

    /// Starts the stopped DataNode `i` again on its old ports with its old data.
    pub fn restart_datanode(&self, i: usize) -> anyhow::Result<()> {
        self.command(&format!("restart-datanode {i}"))
    }

    fn command(&self, command: &str) -> anyhow::Result<()> {
        let Some(local) = &self.local else {
            bail!(
                "{command}: {} is an external cluster (HDFS_URL), it cannot be controlled from here",
                self.url
            );
        };
        let mut control = local
            .control
            .lock()
            .map_err(|_| anyhow!("{command}: the MiniDFS control channel is poisoned"))?;
        let started = Instant::now();
        let stdin = control
            .stdin
            .as_mut()
            .with_context(|| format!("{command}: MiniDFS stdin is closed"))?;
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{command}: write to MiniDFS"))?;
        let answer = match control.lines.recv_timeout(COMMAND_TIMEOUT) {
            Ok(answer) => answer,
            Err(RecvTimeoutError::Timeout) => {
                bail!("{command}: MiniDFS did not answer within {COMMAND_TIMEOUT:?}")
            }
            Err(RecvTimeoutError::Disconnected) => bail!("{command}: MiniDFS has exited"),
        };
        if answer == "OK" {
            eprintln!(
                "MiniDFS {}: {command} took {:.1} s",
                self.url,
                started.elapsed().as_secs_f64()
            );
            Ok(())
        } else {
            bail!(
                "{command}: MiniDFS answered {}",
                answer.strip_prefix("ERR ").unwrap_or(&answer)
            )
        }
    }
}

impl Drop for MiniDfs {
    fn drop(&mut self) {
        let Some(local) = self.local.as_mut() else {
            return;
        };
        if let Ok(control) = local.control.get_mut() {
            // A clean shutdown first (EOF makes the JVM shut the cluster down); then make sure.
            if let Some(mut stdin) = control.stdin.take() {
                let _ = writeln!(stdin, "shutdown");
                drop(stdin);
                let _ = control.lines.recv_timeout(Duration::from_secs(10));
            }
        }
        let _ = local.child.kill();
        let _ = local.child.wait();
    }
}

/// `$JAVA_HOME/bin/java` if there is one, else `java` from `PATH`.
pub(crate) fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").exists() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    }
}

fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            format!(
                "--- last lines of {} ---\n{}",
                path.display(),
                all[from..].join("\n")
            )
        }
        Err(e) => format!("(no log at {}: {e})", path.display()),
    }
}

/// Builds `it/minidfs` if needed and returns the class path to run it with (jar first). Once per
/// process; across processes the build is serialized by a file lock.
pub fn ensure_built() -> anyhow::Result<String> {
    static CLASSPATH: OnceLock<String> = OnceLock::new();
    if let Some(cp) = CLASSPATH.get() {
        return Ok(cp.clone());
    }
    let cp = ensure_maven_built(&project_dir(), "minidfs.jar", "MiniDFS harness")?;
    Ok(CLASSPATH.get_or_init(|| cp).clone())
}

/// Builds the Maven project `project` (whose `package` writes `target/<jar>` and
/// `target/classpath.txt`) unless it is up to date, as the module docs describe, and returns the
/// class path to run it with (jar first). `what` names it in messages. Shared with
/// [`crate::readers`]; callers keep the answer for the process.
pub(crate) fn ensure_maven_built(project: &Path, jar: &str, what: &str) -> anyhow::Result<String> {
    let target = project.join("target");
    std::fs::create_dir_all(&target).with_context(|| format!("create {}", target.display()))?;
    let _lock = FileLock::exclusive(&target.join(".build.lock"))?;
    let cp = match up_to_date_classpath(project, jar)? {
        Some(cp) => cp,
        None => {
            build(project, what)?;
            up_to_date_classpath(project, jar)?.with_context(|| {
                format!(
                    "mvn package in {} succeeded but left no usable {jar} and classpath.txt",
                    project.display()
                )
            })?
        }
    };
    Ok(cp)
}

/// The class path if the jar is newer than every input and every class-path entry exists.
fn up_to_date_classpath(project: &Path, jar: &str) -> anyhow::Result<Option<String>> {
    let jar = project.join("target").join(jar);
    let cp_file = project.join("target/classpath.txt");
    let (Some(jar_time), Some(cp_time)) = (mtime(&jar), mtime(&cp_file)) else {
        return Ok(None);
    };
    let built = jar_time.min(cp_time);
    let mut inputs = vec![project.join("pom.xml")];
    collect_files(&project.join("src"), &mut inputs)?;
    if inputs.iter().any(|p| mtime(p).is_none_or(|t| t > built)) {
        return Ok(None);
    }
    let deps =
        std::fs::read_to_string(&cp_file).with_context(|| format!("read {}", cp_file.display()))?;
    let deps = deps.trim();
    if deps.split(':').any(|entry| !Path::new(entry).exists()) {
        return Ok(None);
    }
    Ok(Some(format!("{}:{deps}", jar.display())))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// `mvn package`, offline first; online (downloading into `~/.m2`) only if offline fails.
fn build(project: &Path, what: &str) -> anyhow::Result<()> {
    let pom = project.join("pom.xml");
    // maven-dependency-plugin leaves an unchanged classpath.txt untouched (old mtime): remove it
    // so the build always leaves a fresh one.
    let _ = std::fs::remove_file(project.join("target/classpath.txt"));
    let started = Instant::now();
    let offline = Command::new("mvn")
        .args(["-B", "-q", "-o", "-f"])
        .arg(&pom)
        .arg("package")
        .output()
        .context("run mvn (is Maven on PATH?)")?;
    if offline.status.success() {
        eprintln!(
            "built {what} offline in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    eprintln!(
        "offline Maven build of {what} failed (a cold ~/.m2?); building online, this downloads Hadoop"
    );
    let online = Command::new("mvn")
        .args(["-B", "-q", "-f"])
        .arg(&pom)
        .arg("package")
        .output()
        .context("run mvn")?;
    if !online.status.success() {
        bail!(
            "mvn -f {} package failed ({}):\n{}{}",
            pom.display(),
            online.status,
            String::from_utf8_lossy(&online.stdout),
            String::from_utf8_lossy(&online.stderr)
        );
    }
    eprintln!(
        "built {what} online in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// An exclusive `flock(2)` held until drop.
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn exclusive(path: &Path) -> anyhow::Result<FileLock> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("open {}", path.display()))?;
        loop {
            // SAFETY: flock only reads the descriptor, which `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(FileLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err).with_context(|| format!("flock {}", path.display()));
            }
        }
    }
}

/// A directory name no other test (or earlier run against an external cluster) uses:
/// `/it/<name>-<random>`.
pub fn unique_dir(name: &str) -> String {
    format!("/it/{name}-{:016x}", rand::random::<u64>())
}
