//! One run of a strategy in a `bench recovery`: the node processes, the sender, the fault.
//!
//! A run gets a fresh directory under `<out>/runs/<strategy>-<run>` and its configuration from the
//! plan; its nodes are child processes of this executable (`run --config .. --role ..`) whose stdout
//! is read for `ready`, `standby` and `takeover {json}` and whose stderr goes to `<out>/logs/`. The
//! sender is the [`crate::send::push`] library in this process, set up as `send push --config` would
//! be, with a [`Timeline`] of every image's send, release and commit.
//!
//! - [`steady_run`]: the unpaced run that measures throughput, on nodes of its own: push, wait until
//!   the output has every image, stop, verify.
//! - [`run_one`]: the steady run (unless skipped), then the failover run on fresh nodes: push at
//!   `--rate`, SIGKILL the primary at `kill-after` (the variant: once the fill is all at the
//!   primary), restart it in place (`none`) or wait for the standby's takeover, let the push finish,
//!   wait until everything sent before the kill is committed, stop the survivor with SIGTERM, verify
//!   against the sender's manifest — and turn what the [`Watcher`] and the timeline saw into the
//!   run's [`RunResult`].
//!
//! A lost, duplicated or corrupt image, a node that does not come up, or a push that does not finish
//! fails the bench with the run's directory kept.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use strategies::{Release, Strategy};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use super::plan::{push_options, write_config, Fault, OutputAt, Plan, RunPaths, StoreAt};
use super::watch::{
    commit_times, first_ack_ms, landing_rate, new_ack_ms, replay_rate, takeover_times, RunResult,
    Watcher,
};
use crate::bench::child::{proc_write_bytes, terminate};
use crate::bench::net::Net;
use crate::bench::stats::ms_between;
use crate::config::Config;
use crate::ha::TakeoverEvent;
use crate::send::manifest::{read_manifest, ManifestWriter};
use crate::send::push::{push, Timeline, TimelineEntry};

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
    /// Starts `run --config <config> <args>`, inside the host `ns` (a network namespace) if given.
    async fn spawn(
        plan: &Plan,
        config: &Path,
        args: &[&str],
        log: PathBuf,
        ns: Option<&str>,
    ) -> anyhow::Result<Self> {
        let role = args.join(" ");
        let err = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = match ns {
            Some(ns) => tokio::process::Command::from(crate::bench::net::exec_in(ns, &plan.exe)),
            None => tokio::process::Command::new(&plan.exe),
        };
        let mut child = command
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

/// A run's node processes on a fresh directory and configuration.
struct Nodes {
    paths: RunPaths,
    cfg: Config,
    primary: NodeChild,
    standby: Option<NodeChild>,
    primary_started: Instant,
    /// `--fault partition`: the hosts the nodes and the sender run on.
    net: Option<Arc<Net>>,
}

/// Starts a run's nodes; with `on_net`, each on a host of a new [`Net`] (`primary`, `standby`,
/// `sender`), so that a partition can cut one off.
async fn start_nodes(plan: &Plan, s: Strategy, tag: &str, on_net: bool) -> anyhow::Result<Nodes> {
    let dir = plan.out.join("runs").join(tag);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    let logs = plan.out.join("logs");
    std::fs::create_dir_all(&logs)?;
    let net = if on_net {
        let net = Net::new(&["primary", "standby", "sender"]).context(
            "--fault partition runs the nodes on network namespaces, which cannot be made here",
        )?;
        Some(Arc::new(net))
    } else {
        None
    };
    let hosts = net.as_ref().map(|n| (n.ip("primary"), n.ip("standby")));
    let paths = write_config(plan, s, &dir, tag, hosts)?;
    let ns = |role: &str| net.as_ref().map(|n| n.ns(role).to_string());
    let cfg = Config::load(&paths.config)?;
    let mut primary = NodeChild::spawn(
        plan,
        &paths.config,
        &["--role", "primary"],
        logs.join(format!("{tag}-primary.log")),
        ns("primary").as_deref(),
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
            ns("standby").as_deref(),
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
        net,
    })
}

/// The push, run by a thread that entered the `sender` host of `net` (with a runtime of its own, so
/// every socket of the push is that host's); the same handle as `tokio::spawn` of the push.
fn push_on_host(
    net: Arc<Net>,
    opts: crate::send::push::PushOptions,
    images: crate::images::ImageSet,
    manifest: Arc<ManifestWriter>,
) -> tokio::task::JoinHandle<Result<crate::send::push::PushReport, crate::send::push::PushError>> {
    use crate::send::push::PushError;
    tokio::task::spawn_blocking(move || {
        let _inside = net
            .enter("sender")
            .map_err(|e| PushError::Options(format!("{e:#}")))?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| PushError::Options(format!("a runtime for the sender: {e}")))?;
        rt.block_on(push(opts, images, Some(manifest)))
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

async fn remove_hdfs_dir(url: &str) {
    let Ok((base, root)) = crate::config::split_hdfs_url(url) else {
        return;
    };
    let opts = strategies::store::hdfs::HdfsOptions::default();
    if let Ok(client) = strategies::store::hdfs::build_client(&base, &opts) {
        let _ = client.delete(&root, true).await;
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
    } = start_nodes(plan, s, &tag, false).await?;
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
    watcher.wait_for_output(&tag, &entries, deadline).await?;
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

pub(super) async fn run_one(plan: &Plan, s: Strategy, run: usize) -> anyhow::Result<RunResult> {
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
        net,
    } = start_nodes(plan, s, &tag, plan.fault == Fault::Partition).await?;
    let logs = plan.out.join("logs");
    let manifest_path = paths.dir.join("manifest.jsonl");
    let manifest = Arc::new(ManifestWriter::create(&manifest_path)?);
    let t2 = Arc::new(Timeline::new());
    let watcher = Watcher::start(&paths, Arc::new(Mutex::new(Some(t2.clone()))));

    let count = plan.failover_images();
    let rate = plan.checkpoint_mb.is_none().then_some(plan.rate);
    let opts = push_options(plan, &cfg, "failover", count, rate, t2.clone());
    let phase_start = Instant::now();
    let sender = match &net {
        None => tokio::spawn(push(opts, plan.images(), Some(manifest.clone()))),
        Some(net) => push_on_host(net.clone(), opts, plan.images(), manifest.clone()),
    };
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
                        watcher.store_now() >= fill_bytes || e.iter().all(|e| e.released.is_some())
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
        watcher.follow(sb.pid);
    }
    let kill_wall = SystemTime::now();
    let kill = Instant::now();
    match &net {
        None => primary.kill9().await?,
        Some(net) => net.isolate("primary")?,
    }
    let mut took_over_before_kill_ms = None;
    let mut replaced: Option<NodeChild> = None;
    let (serving, detection_ms, survivor) = match standby.take() {
        // A partition of the only node is an outage of its length: it serves again once its link
        // is back.
        None if net.is_some() => {
            tokio::time::sleep(plan.heal_after).await;
            if let Some(net) = &net {
                net.rejoin("primary")?;
            }
            (Instant::now(), 0.0, primary)
        }
        None => {
            let mut restarted = NodeChild::spawn(
                plan,
                &paths.config,
                &["--role", "primary"],
                logs.join(format!("{tag}-restarted.log")),
                None,
            )
            .await?;
            watcher.follow(restarted.pid);
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
            let t = takeover_times(&ev, kill, kill_wall);
            if let Some(early) = t.early_ms {
                println!(
                    "  {tag}: WARNING: the standby took over {early:.0} ms BEFORE the kill (the primary's \
                     heartbeats stalled for more than failure_timeout); this run's times are left out"
                );
                took_over_before_kill_ms = Some(early);
            }
            if let Some(net) = &net {
                // The old primary is alive: its link comes back later, and it must find out it was
                // replaced and stop (checked below).
                let net = net.clone();
                let heal_after = plan.heal_after;
                tokio::spawn(async move {
                    tokio::time::sleep(heal_after).await;
                    let _ = net.rejoin("primary");
                });
                replaced = Some(primary);
            }
            (t.serving, t.detection_ms, sb)
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
    let uncommitted = watcher.wait_committed(&before_kill, kill, deadline).await;
    let survivor_written = survivor.write_bytes();
    let seen = watcher.finish().await;

    if let Some(mut old) = replaced {
        // Healed by now (heal_after is shorter than the sender's phase); a replaced primary that is
        // still running 30 s later did not fence itself.
        match tokio::time::timeout(Duration::from_secs(30), old.child.wait()).await {
            Ok(Ok(st)) if !st.success() => {}
            Ok(Ok(st)) => bail!(
                "{tag}: the replaced primary exited with {st}, not as a fenced node; its log {}",
                old.log.display()
            ),
            Ok(Err(e)) => bail!("{tag}: waiting for the replaced primary: {e}"),
            Err(_) => bail!(
                "{tag}: the replaced primary was still running 30 s after its link came back (not \
                 fenced); its log {}",
                old.log.display()
            ),
        }
    }
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
    let new_ack_ms = new_ack_ms(&t2e, kill, serving);
    // The node serving after the fault: the standby, or the same address (none).
    let survivor_address =
        &paths.targets[usize::from(s.has_standby()).min(paths.targets.len() - 1)];
    let first_ack_ms = first_ack_ms(&t2, survivor_address, kill, serving);
    let commits = commit_times(&before_kill, &seen, kill)?;
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
        replay_rate(&seen, sent_at_kill, replayed_bytes)
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
        first_ack_ms,
        new_ack_ms,
        all_committed_ms: commits.all_committed_ms,
        all_sent_committed_ms: commits.all_sent_committed_ms,
        commits_seen_in_output: commits.seen_in_output,
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
