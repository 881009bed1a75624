//! The soak's well-behaved clients: `hdfs-ingest send push` child processes, framed (acknowledged,
//! re-sent after every reconnect) and raw, each slot one push after another with a manifest each,
//! under stream names and image seeds of their own, so that every image of the run is one the
//! manifests know by name (framed) or by content (raw).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;

/// What the senders do.
#[derive(Clone, Debug)]
pub struct SenderPlan {
    /// Framed and raw sender slots (one push process at a time each).
    pub framed: usize,
    pub raw: usize,
    /// Images per second of one push (over its streams), framed and raw.
    pub rate: f64,
    pub raw_rate: f64,
    /// Streams (framed) or connections at once (raw) of one push.
    pub concurrency: usize,
    /// How long one push is meant to take (its count is `rate` × this).
    pub round: Duration,
    /// Bytes of a generated image (JPEG or BMP, about this size).
    pub image_size: u64,
    pub seed: u64,
}

/// What the senders did.
#[derive(Clone, Debug, Default)]
pub struct SenderFigures {
    pub pushes: u64,
    /// Pushes that did not end with success: why, and the end of their log.
    pub failed: Vec<String>,
    pub sent_framed: u64,
    pub acked: u64,
    pub sent_raw: u64,
    pub resent: u64,
    pub reconnects: u64,
    pub framed_manifests: Vec<PathBuf>,
    pub raw_manifests: Vec<PathBuf>,
}

/// Runs the slots on threads of their own; a slot starts no push unless it should end by `last_end`.
/// Joins them and returns what they did.
pub fn run(
    bin: &Path,
    dir: &Path,
    framed_addr: &str,
    raw_addr: &str,
    plan: &SenderPlan,
    last_end: Instant,
) -> anyhow::Result<SenderFigures> {
    std::fs::create_dir_all(dir).with_context(|| format!("sender directory {}", dir.display()))?;
    let figures = Arc::new(Mutex::new(SenderFigures::default()));
    let mut slots = Vec::new();
    for slot in 0..plan.framed + plan.raw {
        let raw = slot >= plan.framed;
        let (bin, dir, plan, figures) = (
            bin.to_path_buf(),
            dir.to_path_buf(),
            plan.clone(),
            figures.clone(),
        );
        let addr = if raw { raw_addr } else { framed_addr }.to_string();
        slots.push(std::thread::spawn(move || {
            let mut round = 0u64;
            // A push slowed by kills and floods takes longer than its round: half a round more.
            while Instant::now() + plan.round.mul_f64(1.5) <= last_end {
                let r = push(&bin, &dir, &addr, raw, slot, round, &plan);
                let mut f = figures.lock().unwrap_or_else(|p| p.into_inner());
                f.pushes += 1;
                match r {
                    Ok(p) => {
                        if raw {
                            f.sent_raw += p.sent;
                            f.raw_manifests.push(p.manifest);
                        } else {
                            f.sent_framed += p.sent;
                            f.acked += p.acked;
                            f.framed_manifests.push(p.manifest);
                        }
                        f.resent += p.resent;
                        f.reconnects += p.reconnects;
                        if let Some(why) = p.failed {
                            f.failed.push(why);
                        }
                    }
                    Err(e) => f.failed.push(format!("{e:#}")),
                }
                round += 1;
            }
        }));
    }
    for s in slots {
        s.join()
            .map_err(|_| anyhow::anyhow!("a sender slot panicked"))?;
    }
    let f = figures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(f)
}

struct Pushed {
    manifest: PathBuf,
    sent: u64,
    acked: u64,
    resent: u64,
    reconnects: u64,
    failed: Option<String>,
}

fn push(
    bin: &Path,
    dir: &Path,
    addr: &str,
    raw: bool,
    slot: usize,
    round: u64,
    plan: &SenderPlan,
) -> anyhow::Result<Pushed> {
    let prefix = format!("{}{slot}r{round}", if raw { "raw" } else { "wb" });
    let manifest = dir.join(format!("{prefix}.jsonl"));
    let log = dir.join(format!("{prefix}.log"));
    let rate = if raw { plan.raw_rate } else { plan.rate };
    let count = ((rate * plan.round.as_secs_f64()) as u64).max(1);
    // A raw image takes a connection of its own, which the node closes once the image is durable:
    // more of them at once keep the rate.
    let concurrency = if raw {
        4 * plan.concurrency
    } else {
        plan.concurrency
    };
    // Image i of a push is generated from seed + i: seeds a million apart never share an image.
    let seed = plan.seed.wrapping_mul(1_000_003) ^ ((slot as u64) << 40) ^ (round << 20);
    let out = Command::new(bin)
        .args(["send", "push", "--to", addr])
        .args(["--protocol", if raw { "raw" } else { "framed" }])
        .args(["--count", &count.to_string()])
        .args(["--rate", &rate.to_string()])
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--source-prefix", &prefix])
        .args(["--size", &plan.image_size.to_string()])
        .args(["--seed", &seed.to_string()])
        .args(["--window", "64", "--give-up-after", "120s"])
        .arg("--manifest")
        .arg(&manifest)
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .output()
        .with_context(|| format!("spawn {} send push", bin.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("pushed "))
        .unwrap_or_default();
    // `pushed N images (A acked, R re-sent, C reconnects, F failovers), …`
    let num = |after: &str| -> u64 {
        line.split(after)
            .next()
            .and_then(|s| s.rsplit([' ', '(']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    let failed = (!out.status.success() || line.is_empty()).then(|| {
        format!(
            "push {prefix} exited {}; log {}:\n{}",
            out.status,
            log.display(),
            super::node::tail(&log, 10)
        )
    });
    Ok(Pushed {
        manifest,
        sent: num(" images"),
        acked: num(" acked"),
        resent: num(" re-sent"),
        reconnects: num(" reconnects"),
        failed,
    })
}
