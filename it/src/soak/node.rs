//! The soak's node: one `hdfs-ingest run` process at a time on the same configuration and directories,
//! SIGKILLed on a seeded schedule and started again, its memory and descriptors sampled from `/proc`
//! every 250 ms across restarts, and any exit that was not one of our SIGKILLs recorded.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rand::{Rng, SeedableRng};

use crate::hostile;

/// How often the node is sampled.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// What the supervisor saw of the node over the whole run.
#[derive(Clone, Debug, Default)]
pub struct NodeFigures {
    /// The largest VmRSS sampled, and the largest VmHWM (which also catches peaks between samples).
    pub peak_rss: u64,
    pub peak_hwm: u64,
    /// The largest count of `/proc/<pid>/fd` sampled.
    pub peak_fds: usize,
    /// VmRSS of the first process once it was ready: what the memory bound is added to.
    pub base_rss: u64,
    pub samples: u64,
    /// Our SIGKILLs.
    pub kills: u64,
    /// Starts after the first (one per kill, and one per exit of its own).
    pub restarts: u64,
    /// Exits that were not our SIGKILLs: status and the end of the log at the time.
    pub own_exits: Vec<String>,
    /// The longest a restart took, from the kill to the `ready` line.
    pub slowest_restart: Duration,
}

/// A node process whose stderr goes to a log file shared by all its incarnations.
struct Proc {
    child: Child,
}

fn spawn(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Proc> {
    let stderr = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("node log {}", log.display()))?;
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("spawn {} run", bin.display()))?;
    let stdout = child.stdout.take().context("the node's stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if l.starts_with("ready ") {
                let _ = tx.send(());
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
            return Ok(Proc { child });
        }
        if let Ok(Some(st)) = child.try_wait() {
            bail!(
                "the node exited before it was ready ({st}); log {}:\n{}",
                log.display(),
                tail(log, 20)
            );
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!(
        "the node was not ready within 60 s; log {}:\n{}",
        log.display(),
        tail(log, 20)
    )
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The node under supervision, on a thread of its own.
pub struct Supervised {
    figures: Arc<Mutex<NodeFigures>>,
    stop_killing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<Option<Proc>>>>,
    bin: PathBuf,
    config: PathBuf,
    log: PathBuf,
}

impl Supervised {
    /// Starts the node and waits for it to be ready; then SIGKILLs it every `kill_every` (each wait drawn
    /// from `kill_every` × [0.5, 1.5) by `seed`) and starts it again, until [`Supervised::stop_kills`].
    pub fn start(
        bin: &Path,
        config: &Path,
        log: &Path,
        kill_every: Option<Duration>,
        seed: u64,
    ) -> anyhow::Result<Supervised> {
        let first = spawn(bin, config, log)?;
        let figures = Arc::new(Mutex::new(NodeFigures {
            base_rss: hostile::rss(first.child.id()),
            ..NodeFigures::default()
        }));
        let (stop_killing, stop) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (f, sk, st) = (figures.clone(), stop_killing.clone(), stop.clone());
        let (b, c, l) = (bin.to_path_buf(), config.to_path_buf(), log.to_path_buf());
        let thread = std::thread::spawn(move || {
            supervise(first, &b, &c, &l, kill_every, seed, &f, &sk, &st)
        });
        Ok(Supervised {
            figures,
            stop_killing,
            stop,
            thread: Some(thread),
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            log: log.to_path_buf(),
        })
    }

    /// False once the supervisor gave up (a start that failed): the run cannot go on.
    pub fn alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// The figures so far.
    pub fn figures(&self) -> NodeFigures {
        self.figures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// No more SIGKILLs from now on (sampling and restarts after exits of its own go on).
    pub fn stop_kills(&self) {
        self.stop_killing.store(true, Ordering::SeqCst);
    }

    /// Ends the run: one last SIGKILL once everything was acknowledged, a start on the same directories
    /// (which commits what was durable and not committed), then SIGTERM and a clean exit.
    pub fn finish(mut self) -> anyhow::Result<NodeFigures> {
        self.stop.store(true, Ordering::SeqCst);
        let last = self
            .thread
            .take()
            .context("the supervisor thread")?
            .join()
            .map_err(|_| anyhow::anyhow!("the supervisor thread panicked"))??;
        if let Some(mut p) = last {
            crate::kill_pid(p.child.id(), libc::SIGKILL)?;
            p.child.wait()?;
            self.figures.lock().unwrap_or_else(|p| p.into_inner()).kills += 1;
        }
        let mut p = spawn(&self.bin, &self.config, &self.log)?;
        crate::kill_pid(p.child.id(), libc::SIGTERM)?;
        match crate::roles::wait_exit(&mut p.child, Duration::from_secs(60))? {
            Some(st) if st.success() => {}
            Some(st) => bail!(
                "the node exited with {st} after SIGTERM; log {}:\n{}",
                self.log.display(),
                tail(&self.log, 20)
            ),
            None => bail!("the node did not stop within 60 s of SIGTERM"),
        }
        Ok(self.figures())
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            if let Ok(Ok(Some(mut p))) = t.join() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn supervise(
    mut node: Proc,
    bin: &Path,
    config: &Path,
    log: &Path,
    kill_every: Option<Duration>,
    seed: u64,
    figures: &Mutex<NodeFigures>,
    stop_killing: &AtomicBool,
    stop: &AtomicBool,
) -> anyhow::Result<Option<Proc>> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let next_wait =
        |rng: &mut rand::rngs::StdRng| kill_every.map(|k| k.mul_f64(rng.random_range(0.5..1.5)));
    let mut next_kill = next_wait(&mut rng).map(|w| Instant::now() + w);
    let fig = |f: &mut dyn FnMut(&mut NodeFigures)| {
        f(&mut figures.lock().unwrap_or_else(|p| p.into_inner()))
    };
    while !stop.load(Ordering::SeqCst) {
        let pid = node.child.id();
        let (rss, hwm, fds) = (hostile::rss(pid), hostile::peak_rss(pid), hostile::fds(pid));
        fig(&mut |f| {
            f.peak_rss = f.peak_rss.max(rss);
            f.peak_hwm = f.peak_hwm.max(hwm);
            f.peak_fds = f.peak_fds.max(fds);
            f.samples += 1;
        });
        if let Some(st) = node.child.try_wait()? {
            let why = format!("exited on its own: {st}; log:\n{}", tail(log, 20));
            eprintln!("soak: the node {why}");
            fig(&mut |f| {
                f.own_exits.push(why.clone());
                f.restarts += 1;
            });
            node = spawn(bin, config, log)?;
            continue;
        }
        if next_kill.is_some_and(|t| Instant::now() >= t) && !stop_killing.load(Ordering::SeqCst) {
            let killed = Instant::now();
            crate::kill_pid(pid, libc::SIGKILL)?;
            node.child.wait()?;
            node = spawn(bin, config, log)?;
            let took = killed.elapsed();
            fig(&mut |f| {
                f.kills += 1;
                f.restarts += 1;
                f.slowest_restart = f.slowest_restart.max(took);
            });
            next_kill = next_wait(&mut rng).map(|w| Instant::now() + w);
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    Ok(Some(node))
}
