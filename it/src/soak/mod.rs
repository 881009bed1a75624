//! The soak: one node (strategy `none`, a local output directory) under well-behaved senders and every
//! kind of hostile client at once for a set duration, SIGKILLed on a seeded schedule and started again
//! on the same directories; then every well-behaved manifest is checked with `hdfs-ingest verify`, and
//! the node's peak memory and descriptors are held against bounds its configuration sets.
//!
//! `cargo run -p it --release --bin soak -- --duration 30m` runs it by hand; `it/tests/soak.rs` runs the
//! same code for two minutes (`IT_SOAK_SECONDS`) and asserts [`SoakReport::violations`] is empty.
//!
//! The bounds:
//! - **memory**: the node's RSS when first ready, plus 4 × `inflight_budget` (the budget, the node's two
//!   copies of a block while the WAL appends it, and a block's worth of slack for the moment one is
//!   freed and the next arrives — as `hostile_clients.rs` bounds it), plus 1 MiB per connection of
//!   `max_connections` (a raw connection reads 256 KiB before it reserves, a framed one holds its
//!   header, bounded ack queue and task; 1 MiB is that with room);
//! - **descriptors**: `max_connections` + 130, the reserve the node itself counts for its WAL, sinks,
//!   store and runtime when it checks `max_connections` against its descriptor limit.

pub mod clients;
pub mod node;
pub mod senders;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::hostile::MIB;
pub use senders::SenderPlan;

/// The fixed per-connection memory of the bound (see the module documentation).
pub const PER_CONNECTION: u64 = MIB;
/// Descriptors the node keeps for itself beside its connections.
pub const FD_RESERVE: usize = 130;

/// What a soak runs.
#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub duration: Duration,
    /// About how often the node is SIGKILLed (each wait is this × [0.5, 1.5)); `None`: never.
    pub kill_every: Option<Duration>,
    pub seed: u64,
    /// Where the node's data, output, logs and the manifests go.
    pub dir: PathBuf,
    /// The `hdfs-ingest` binary.
    pub node_bin: PathBuf,
    pub senders: SenderPlan,
    pub max_connections: usize,
    pub inflight_budget: u64,
    pub max_block_size: u64,
    pub idle_timeout: Duration,
    pub write_timeout: Duration,
    /// The blocks of the pipelining hostile client (two connections, three blocks each, every ~10 s).
    pub pipelined_block: u64,
    /// Print a progress line this often (`None`: quiet).
    pub progress_every: Option<Duration>,
}

impl SoakOptions {
    /// The soak's defaults: 3 framed and 1 raw sender slots at 40 images/s of 8 KiB each, 128
    /// connections, a 32 MiB in-flight budget with blocks up to 30 MiB, pipelined blocks of 4 MiB, a
    /// kill about every 20 s.
    pub fn new(duration: Duration, dir: PathBuf, node_bin: PathBuf) -> SoakOptions {
        SoakOptions {
            duration,
            kill_every: Some(Duration::from_secs(20)),
            seed: 0x50a4_2026,
            dir,
            node_bin,
            senders: SenderPlan {
                framed: 3,
                raw: 1,
                rate: 40.0,
                raw_rate: 40.0,
                concurrency: 2,
                round: Duration::from_secs(20).min(duration / 6),
                image_size: 8 * 1024,
                seed: 0x50a4_2026,
            },
            max_connections: 128,
            inflight_budget: 32 * MIB,
            max_block_size: 30 * MIB,
            idle_timeout: Duration::from_secs(2),
            write_timeout: Duration::from_secs(2),
            pipelined_block: 4 * MIB,
            progress_every: Some(Duration::from_secs(30)),
        }
    }

    fn config(&self, raw_port: u16, framed_port: u16) -> String {
        format!(
            "[node]\nname = \"soak\"\ndata_dir = {data:?}\nshutdown_grace = \"20s\"\n\
             [receiver]\nmax_block_size = {mbs}\ninflight_budget = {budget}\nmax_connections = {mc}\n\
             idle_timeout = \"{idle}ms\"\nwrite_timeout = \"{wt}ms\"\nmin_rate = \"16 KiB\"\n\
             [[receiver.sources]]\nkind = \"raw-listen\"\naddress = \"127.0.0.1:{raw_port}\"\nsource = \"raw\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{framed_port}\"\n\
             [wal]\nsegment_size = \"4 MiB\"\n[batch]\ninterval = \"300ms\"\n[analysis]\nenabled = false\n\
             [strategy]\nkind = \"none\"\n",
            data = self.dir.join("data").display().to_string(),
            mbs = self.max_block_size,
            budget = self.inflight_budget,
            mc = self.max_connections,
            idle = self.idle_timeout.as_millis(),
            wt = self.write_timeout.as_millis(),
        )
    }

    pub fn rss_bound(&self, base_rss: u64) -> u64 {
        base_rss + 4 * self.inflight_budget + self.max_connections as u64 * PER_CONNECTION
    }

    pub fn fd_bound(&self) -> usize {
        self.max_connections + FD_RESERVE
    }
}

/// What `hdfs-ingest verify --json` said of one manifest.
#[derive(Clone, Debug, Default)]
pub struct Verified {
    pub entries: u64,
    pub expected: u64,
    pub found: u64,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub corrupt: Vec<String>,
    pub unexpected: u64,
    /// Sent, not acknowledged, and not in the output (raw images in flight at a kill).
    pub unconfirmed_missing: u64,
    pub output_files: u64,
    pub exit_ok: bool,
}

impl Verified {
    /// Duplicates among the raw images (matched by content) and among names (framed, and anything
    /// else the node named).
    pub fn duplicated_raw(&self) -> usize {
        self.duplicated
            .iter()
            .filter(|d| d.starts_with("raw image"))
            .count()
    }

    pub fn duplicated_named(&self) -> usize {
        self.duplicated.len() - self.duplicated_raw()
    }
}

/// What a soak measured.
#[derive(Clone, Debug)]
pub struct SoakReport {
    pub options: SoakOptions,
    pub elapsed: Duration,
    pub node: node::NodeFigures,
    pub senders: senders::SenderFigures,
    /// Per hostile kind: connections made, and how they ended.
    pub hostile: clients::Counts,
    /// Refusals as the flood saw them, and as the node logged them (`refused=` of its rate-limited lines).
    pub refusals_seen: u64,
    pub refusals_logged: u64,
    pub panics_logged: u64,
    /// Every manifest of the run (framed and raw), concatenated, verified.
    pub verified: Verified,
}

impl SoakReport {
    pub fn rss_bound(&self) -> u64 {
        self.options.rss_bound(self.node.base_rss)
    }

    /// Everything that makes this run a failure, each naming what and by how much.
    pub fn violations(&self) -> Vec<String> {
        let mut v = Vec::new();
        let r = &self.verified;
        let few = |l: &[String]| l[..l.len().min(10)].to_vec();
        if !r.lost.is_empty() {
            v.push(format!(
                "{} acknowledged images lost: {:?}",
                r.lost.len(),
                few(&r.lost)
            ));
        }
        if !r.duplicated.is_empty() {
            v.push(format!(
                "{} images duplicated: {:?}",
                r.duplicated.len(),
                few(&r.duplicated)
            ));
        }
        if !r.corrupt.is_empty() {
            v.push(format!(
                "{} images corrupt: {:?}",
                r.corrupt.len(),
                few(&r.corrupt)
            ));
        }
        if !r.exit_ok {
            v.push("hdfs-ingest verify of the manifests failed".into());
        }
        if r.found != self.senders.acked || self.senders.acked == 0 {
            v.push(format!(
                "{} framed images acknowledged, {} found",
                self.senders.acked, r.found
            ));
        }
        let peak = self.node.peak_rss.max(self.node.peak_hwm);
        if peak > self.rss_bound() {
            v.push(format!(
                "peak RSS {} MiB over the bound {} MiB",
                peak / MIB,
                self.rss_bound() / MIB
            ));
        }
        if self.node.peak_fds > self.options.fd_bound() {
            v.push(format!(
                "peak descriptors {} over the bound {}",
                self.node.peak_fds,
                self.options.fd_bound()
            ));
        }
        for e in &self.node.own_exits {
            v.push(format!("the node {e}"));
        }
        for e in &self.senders.failed {
            v.push(format!("a well-behaved sender failed: {e}"));
        }
        if self.panics_logged > 0 {
            v.push(format!("{} panics in the node's log", self.panics_logged));
        }
        if self.options.kill_every.is_some() && self.node.kills < 2 {
            v.push(format!("only {} SIGKILLs", self.node.kills));
        }
        v
    }

    /// The summary table.
    pub fn table(&self) -> String {
        let n = &self.node;
        let s = &self.senders;
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("| {k:<34} | {v} |\n"));
        row(
            "duration",
            format!(
                "{:.0} s (asked {:?})",
                self.elapsed.as_secs_f64(),
                self.options.duration
            ),
        );
        row(
            "SIGKILLs / restarts",
            format!(
                "{} / {} (slowest restart {:.1} s)",
                n.kills,
                n.restarts,
                n.slowest_restart.as_secs_f64()
            ),
        );
        row("exits of its own", n.own_exits.len().to_string());
        row(
            "well-behaved pushes (failed)",
            format!("{} ({})", s.pushes, s.failed.len()),
        );
        row(
            "framed images sent / acked",
            format!("{} / {}", s.sent_framed, s.acked),
        );
        row(
            "framed re-sent / reconnects",
            format!("{} / {}", s.resent, s.reconnects),
        );
        let r = &self.verified;
        row("framed acked and stored (verify)", r.found.to_string());
        // Every framed image was acknowledged (a push ends only then), so what verify counts as sent,
        // not acknowledged and missing is raw.
        row(
            "raw images sent / stored",
            format!(
                "{} / {}",
                s.sent_raw,
                s.sent_raw.saturating_sub(r.unconfirmed_missing)
            ),
        );
        row("files in the output", r.output_files.to_string());
        row("lost (acknowledged, not stored)", r.lost.len().to_string());
        row(
            "duplicated by name / raw by content",
            format!("{} / {}", r.duplicated_named(), r.duplicated_raw()),
        );
        row("corrupt", r.corrupt.len().to_string());
        row(
            "peak RSS (sampled / VmHWM)",
            format!(
                "{} / {} MiB, bound {} MiB (at start {} MiB)",
                n.peak_rss / MIB,
                n.peak_hwm / MIB,
                self.rss_bound() / MIB,
                n.base_rss / MIB
            ),
        );
        row(
            "peak descriptors",
            format!("{}, bound {}", n.peak_fds, self.options.fd_bound()),
        );
        row("samples (every 250 ms)", n.samples.to_string());
        row(
            "refusals seen / logged by the node",
            format!("{} / {}", self.refusals_seen, self.refusals_logged),
        );
        for kind in clients::KINDS {
            let (conns, events) = self.hostile.get(kind).cloned().unwrap_or_default();
            let ev: Vec<String> = events.iter().map(|(k, v)| format!("{k}: {v}")).collect();
            row(
                &format!("hostile {kind}"),
                format!("{conns} connections; {}", ev.join("; ")),
            );
        }
        out
    }
}

/// Runs a soak to its end and reports it; fails only if it could not be run (a node that would not
/// start, a verify that could not run). Whether the run held is [`SoakReport::violations`].
pub async fn run(o: SoakOptions) -> anyhow::Result<SoakReport> {
    crate::hostile::raise_own_nofile();
    std::fs::create_dir_all(&o.dir)
        .with_context(|| format!("soak directory {}", o.dir.display()))?;
    let (raw_port, framed_port) = (crate::free_port(), crate::free_port());
    let config = o.dir.join("node.toml");
    std::fs::write(&config, o.config(raw_port, framed_port))?;
    let log = o.dir.join("node.log");
    let started = Instant::now();
    let end = started + o.duration;
    let node = node::Supervised::start(&o.node_bin, &config, &log, o.kill_every, o.seed)?;
    let target = clients::Target {
        raw: format!("127.0.0.1:{raw_port}"),
        framed: format!("127.0.0.1:{framed_port}"),
        share: o.max_connections / 2,
        max_block_size: o.max_block_size,
        idle_timeout: o.idle_timeout,
        pipelined_block: o.pipelined_block,
    };
    let tally = Arc::new(clients::Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = clients::start(target.clone(), o.seed, tally.clone(), stop.clone());
    let senders = {
        let (bin, dir, plan) = (o.node_bin.clone(), o.dir.join("senders"), o.senders.clone());
        let (framed, raw) = (target.framed.clone(), target.raw.clone());
        tokio::task::spawn_blocking(move || senders::run(&bin, &dir, &framed, &raw, &plan, end))
    };
    let mut next_progress = o.progress_every.map(|p| started + p);
    while Instant::now() < end && node.alive() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(t) = next_progress.filter(|t| Instant::now() >= *t) {
            let f = node.figures();
            eprintln!(
                "soak: {:.0} s, {} kills, peak RSS {} MiB, peak descriptors {}, {} refusals seen",
                started.elapsed().as_secs_f64(),
                f.kills,
                f.peak_rss.max(f.peak_hwm) / MIB,
                f.peak_fds,
                tally.refusals()
            );
            next_progress = o.progress_every.map(|p| t + p);
        }
    }
    if !node.alive() {
        stop.store(true, Ordering::SeqCst);
        node.finish().context("the node supervisor stopped early")?;
        bail!("the node supervisor stopped early");
    }
    node.stop_kills();
    stop.store(true, Ordering::SeqCst);
    // Hostile clients owe us nothing: whatever they are doing is cut off here.
    for h in &hostile {
        h.abort();
    }
    let at = |what: &str| eprintln!("soak: {:.0} s: {what}", started.elapsed().as_secs_f64());
    at("hostile clients stopped; waiting for the senders");
    let senders = tokio::time::timeout(o.senders.round * 4 + Duration::from_secs(150), senders)
        .await
        .context("the well-behaved senders did not finish")???;
    at("senders done; a last SIGKILL, a start and a SIGTERM");
    let figures = tokio::task::spawn_blocking(move || node.finish()).await??;
    let elapsed = started.elapsed();
    at("node stopped; verifying");
    let output = o.dir.join("data/output");
    let mut manifests = senders.framed_manifests.clone();
    manifests.extend(senders.raw_manifests.iter().cloned());
    let verified = verify(&o.node_bin, &o.dir.join("all.jsonl"), &manifests, &output)?;
    at("verified");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let refusals_logged = crate::hostile::refused_logged(text.lines());
    let panics_logged = text.lines().filter(|l| l.contains("panicked")).count() as u64;
    Ok(SoakReport {
        elapsed,
        node: figures,
        refusals_seen: tally.refusals(),
        hostile: tally.snapshot(),
        senders,
        refusals_logged,
        panics_logged,
        verified,
        options: o,
    })
}

/// Concatenates `manifests` into `all` and runs `hdfs-ingest verify --json` on it.
fn verify(
    bin: &Path,
    all: &Path,
    manifests: &[PathBuf],
    output: &Path,
) -> anyhow::Result<Verified> {
    let mut out =
        std::fs::File::create(all).with_context(|| format!("manifest {}", all.display()))?;
    for m in manifests {
        out.write_all(&std::fs::read(m).with_context(|| format!("manifest {}", m.display()))?)?;
    }
    drop(out);
    let r = std::process::Command::new(bin)
        .args(["verify", "--json", "--manifest"])
        .arg(all)
        .arg("--output")
        .arg(output)
        .output()
        .with_context(|| format!("{} verify", bin.display()))?;
    let json: serde_json::Value = serde_json::from_slice(&r.stdout).with_context(|| {
        format!(
            "verify of {} printed no report ({}): {}",
            all.display(),
            r.status,
            String::from_utf8_lossy(&r.stderr)
        )
    })?;
    let n = |k: &str| json[k].as_u64().unwrap_or(0);
    let list = |k: &str| -> Vec<String> {
        json[k]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(Verified {
        entries: n("manifest_entries"),
        expected: n("expected"),
        found: n("found"),
        lost: list("lost"),
        duplicated: list("duplicated"),
        corrupt: list("corrupt"),
        unexpected: json["unexpected"].as_array().map_or(0, |a| a.len() as u64),
        unconfirmed_missing: n("unconfirmed_missing"),
        output_files: n("output_files"),
        exit_ok: r.status.success(),
    })
}
