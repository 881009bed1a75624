//! `send push`: pushes images to one or more nodes, raw or framed, at a given rate and concurrency —
//! the upstream that the fault-tolerance strategies rely on.
//!
//! # Framed: streams, retention, release
//!
//! Every worker is one stream (`<source prefix>-<worker>`) with its own sequence numbers. It *keeps*
//! every block it sent until the block is *released*, and releases it only when the nodes have
//! acknowledged it at `release` level (a stronger ack also releases: durable < checkpointed <
//! committed). What each strategy needs: `none` and `active-standby` release on *durable*,
//! `passive-standby` on *checkpointed* (a block not yet in a checkpoint must be re-sent to a standby
//! that takes over from that checkpoint), `upstream-backup` on *committed* (only the output is safe).
//! An image goes into the manifest as acknowledged only when it is released.
//!
//! The kept blocks are the *retention log*. It is bounded over all streams by `retention_max_blocks`
//! and `retention_max_bytes`; per stream, `window` bounds the blocks *in flight* (sent and not yet
//! acknowledged at any level by the node that has the most of them) — flow control, apart from
//! retention, so that a release level slower than the WAL (a checkpoint, a commit) does not cap the
//! flow at `window` blocks per commit latency. When a bound is reached the streams stop taking new
//! images (backpressure: the push slows down to what the nodes acknowledge and release) and never drop
//! one; see `send::retention`.
//!
//! # Framed: modes
//!
//! - [`SendMode::Failover`] (strategies none, upstream-backup, passive-standby): a stream talks to one
//!   node at a time, starting with the first target. It moves on to the next target (round-robin,
//!   backoff 10 ms doubling to 500 ms, reset by an ack) when the connection fails, when the node says
//!   ROLE standby, or when it is connected but for `stall_timeout`, while blocks are outstanding, neither
//!   acknowledges anything nor takes any more bytes (a node that still reads what it is sent is busy —
//!   a long group commit under load — not hung; a hung one stops reading once the socket buffers are
//!   full); it then re-sends every block it keeps, in order. A node that sends no ROLE (a
//!   version 1 node, or one that does not announce roles) counts as primary.
//! - [`SendMode::Mirror`] (active-standby): a stream keeps a connection to every target and sends every
//!   block to all of them. The *primary* is the target whose latest ROLE says primary with the highest
//!   epoch (a version 1 node counts as primary at epoch 0; a version 2 node is nothing until its ROLE
//!   arrives). A block is released when the primary acked it at `release` level **and** every other
//!   target that is connected and says standby acked it durable. A standby target that is not connected
//!   (or not yet said standby) holds blocks back for `standby_grace` — from the start of the stream, or
//!   from when it went away — so a standby that is still connecting, or whose connection is being
//!   re-made, never misses a block the primary alone released; only a standby gone for longer than that
//!   stops holding blocks back (a warning says "running without standby", once per push). A standby's
//!   ack alone never releases anything. A standby that says ROLE primary with a higher epoch is the primary
//!   from then on. A target that reconnects is re-sent every kept block. Each target has its own
//!   reconnect backoff and stall timeout.
//!
//! A node's acks for a target count only from the connection they arrived on: a reconnect forgets
//! them and re-sends (a fresh node behind the same address knows nothing of the old one's acks). The
//! node stores a re-sent block once and acknowledges it again.
//!
//! A stream that releases nothing for `give_up_after` (over all targets) while it has blocks kept or
//! no node to send to fails the push with [`PushError::GaveUp`], naming the targets.
//!
//! # Raw
//!
//! Every image is one connection to the first target that takes it; the worker writes it, closes its
//! side and waits for the node to close. The raw protocol has no acknowledgement, so raw images go into
//! the manifest as sent, not acked.
//!
//! # Measuring
//!
//! [`PushReport`] has the totals (`bytes_sent_total`: every byte written to every node, re-sends and
//! mirror copies included). A [`Timeline`] given in the options records, per block, when it was first
//! sent, released and first acknowledged committed by any node, and the bytes written to each target.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strategies::Release;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::manifest::{ManifestEntry, ManifestWriter};
use super::retention::{Gauge, Held, Retention};
pub use super::timeline::{Timeline, TimelineEntry};
use crate::config::Config;
use crate::images::ImageSet;
use crate::protocol::AckLevel;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Raw,
    Framed,
}

/// How a framed stream uses its targets (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SendMode {
    /// One node at a time, the primary; the next one when it fails.
    Failover,
    /// Every block to every node; released on the primary's ack and the connected standbys' durable acks.
    Mirror,
}

/// Mirror: how long a standby that is not connected holds blocks back by default — long enough for a
/// connection to be made or re-made (backoff at most 500 ms, then connect, hello and ROLE), short
/// enough that a dead standby stalls the push only briefly.
pub const DEFAULT_STANDBY_GRACE: Duration = Duration::from_secs(3);

/// The default target: the framed listener of a node on the embedded defaults.
pub const DEFAULT_TARGET: &str = "127.0.0.1:9998";

#[derive(Clone, Debug)]
pub struct PushOptions {
    /// Node addresses: primary first, then standbys. Raw: tried in order.
    pub targets: Vec<String>,
    pub mode: SendMode,
    pub protocol: Protocol,
    /// Images to send in all.
    pub count: u64,
    /// Connections (framed: streams) at once.
    pub concurrency: usize,
    /// Images per second over all workers; None = as fast as acks allow.
    pub rate: Option<f64>,
    /// Streams are named `<source_prefix>-<worker>`.
    pub source_prefix: String,
    pub token: Option<String>,
    /// Blocks a framed stream may have in flight (sent, not yet acknowledged at any level). What it
    /// keeps beyond that (acknowledged, not yet released) is bounded by the retention limits.
    pub window: usize,
    /// The acknowledgement that releases a block (or any stronger one).
    pub release: AckLevel,
    /// Bytes kept over all streams at most.
    pub retention_max_bytes: u64,
    /// Blocks kept over all streams at most.
    pub retention_max_blocks: u64,
    /// A connected node that for this long, while blocks are outstanding, acknowledges nothing and takes
    /// no more bytes is given up on (failover: the next target). Also bounds connect + hello.
    pub stall_timeout: Duration,
    /// Fail when nothing is released for this long.
    pub give_up_after: Duration,
    /// Mirror: how long a standby target that is not connected as standby still holds blocks back (from
    /// the stream's start, or from when it went away) before blocks are released on the primary's ack
    /// alone.
    pub standby_grace: Duration,
    /// Bytes released so far, for live progress (benchmarks).
    pub progress: Option<Arc<AtomicU64>>,
    /// Per-block times and per-target bytes (benchmarks, tests).
    pub timeline: Option<Arc<Timeline>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            targets: vec![DEFAULT_TARGET.into()],
            mode: SendMode::Failover,
            protocol: Protocol::Framed,
            count: 100,
            concurrency: 4,
            rate: None,
            source_prefix: default_source_prefix(),
            token: None,
            window: 256,
            release: AckLevel::Durable,
            retention_max_bytes: 1 << 30,
            retention_max_blocks: 1 << 16,
            stall_timeout: Duration::from_secs(10),
            give_up_after: Duration::from_secs(60),
            standby_grace: DEFAULT_STANDBY_GRACE,
            progress: None,
            timeline: None,
        }
    }
}

impl PushOptions {
    /// The defaults, sending to one node.
    pub fn to(address: impl Into<String>) -> PushOptions {
        PushOptions {
            targets: vec![address.into()],
            ..PushOptions::default()
        }
    }

    /// The defaults for the nodes and strategy a configuration describes (`send push --config`):
    /// its framed addresses (primary first), mirror mode for a strategy that sends to the standby,
    /// the strategy's release level, `[strategy.retention]`, and — for strategies with a standby —
    /// a stall timeout of twice `strategy.failure_timeout`, so a hung primary is left about when its
    /// standby takes over. (With `none` there is no one to fail over to, so the stall timeout stays
    /// the default: a node slowed by backpressure is not reconnected to over and over.)
    pub fn for_config(cfg: &Config) -> PushOptions {
        let st = &cfg.strategy;
        let mut o = PushOptions {
            targets: cfg.send_targets(),
            mode: if st.kind.sends_to_standby() {
                SendMode::Mirror
            } else {
                SendMode::Failover
            },
            release: release_level(st.kind.release_level()),
            retention_max_bytes: st.retention.max_bytes.as_u64(),
            retention_max_blocks: st.retention.max_blocks,
            ..PushOptions::default()
        };
        if st.kind.has_standby() {
            o.stall_timeout = 2 * st.failure_timeout;
        }
        o
    }
}

/// The ack level that releases a block, for a strategy's release level.
pub fn release_level(r: Release) -> AckLevel {
    match r {
        Release::Durable => AckLevel::Durable,
        Release::Checkpointed => AckLevel::Checkpointed,
        Release::Committed => AckLevel::Committed,
    }
}

/// `send-<unix ms>`: a fresh stream name per run, so a second run's sequence numbers never collide with
/// the first's (the node would take them for re-sends and store nothing).
pub fn default_source_prefix() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("send-{ms}")
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("node {address} refused the stream: {reason}")]
    Refused { address: String, reason: String },
    #[error("gave up on {} after {after:?} without progress: {last_error}", targets.join(", "))]
    GaveUp {
        targets: Vec<String>,
        after: Duration,
        last_error: String,
    },
    #[error("push options: {0}")]
    Options(String),
    #[error("manifest: {0}")]
    Manifest(#[from] std::io::Error),
}

/// What a push did.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    /// Images sent (each once, however often re-sent).
    pub sent: u64,
    /// Images released (framed) — each exactly once.
    pub acked: u64,
    /// Image bytes sent (each image once).
    pub bytes: u64,
    /// Bytes written to all nodes: hellos and frames, re-sends and mirror copies included.
    pub bytes_sent_total: u64,
    /// Blocks sent again (after a reconnect or a failover).
    pub resent: u64,
    /// Connections lost or refused (framed), failed sends (raw).
    pub reconnects: u64,
    /// Times a failover stream moved on to another target.
    pub failovers: u64,
    /// The most blocks and bytes kept at once, over all streams (framed).
    pub peak_retained_blocks: u64,
    pub peak_retained_bytes: u64,
    pub elapsed: Duration,
    /// Ack latency of every released block (framed): from its last send to the first ack from the node
    /// that counts (failover: the one talked to; mirror: the primary).
    pub latencies: Vec<Duration>,
}

impl PushReport {
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    fn merge(&mut self, o: PushReport) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.bytes += o.bytes;
        self.resent += o.resent;
        self.reconnects += o.reconnects;
        self.failovers += o.failovers;
        self.latencies.extend(o.latencies);
    }
}

pub(crate) struct Shared {
    pub(crate) opts: PushOptions,
    images: ImageSet,
    next: AtomicU64,
    pub(crate) manifest: Option<Arc<ManifestWriter>>,
    started: Instant,
    retention: Retention,
    /// Bytes written to each target, by index.
    pub(crate) target_bytes: Vec<Arc<AtomicU64>>,
    /// "running without standby" was logged.
    pub(crate) warned_no_standby: AtomicBool,
}

/// What a stream gets when it may take the next image.
pub(crate) enum Admission {
    Image {
        label: String,
        data: bytes::Bytes,
        held: Held,
    },
    /// No images left (or, never in practice, the retention was closed).
    Exhausted,
}

impl Shared {
    /// Waits until the rate allows the next image. Claims nothing, so it is safe to cancel (select!).
    async fn pace(&self) {
        if let Some(rate) = self.opts.rate.filter(|r| *r > 0.0) {
            let i = self.next.load(Ordering::Relaxed);
            let due = self.started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// Claims the next image number, if any are left.
    fn claim(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.opts.count).then_some(i)
    }

    /// Takes the next image once the retention has room for it and the rate allows it: a block slot
    /// first (so a full retention stops the push before an image is taken), then the image, then room
    /// for its bytes. Not cancel-safe: a stream keeps this future until it completes.
    pub(crate) async fn admit(self: Arc<Self>, worker: usize, k: u64) -> Admission {
        let i = worker as u64 + k * self.opts.concurrency.max(1) as u64;
        if i >= self.opts.count {
            return Admission::Exhausted;
        }
        let Some(mut held) = self.retention.block().await else {
            return Admission::Exhausted;
        };
        self.pace().await;
        // Counts admissions for the pacing; the image itself is fixed by (worker, k).
        self.next.fetch_add(1, Ordering::Relaxed);
        let (label, data) = self.images.get(i);
        let Some(bytes) = self.retention.bytes(data.len() as u64).await else {
            return Admission::Exhausted;
        };
        held.add_bytes(bytes, data.len() as u64);
        Admission::Image { label, data, held }
    }

    fn gauge(&self) -> Arc<Gauge> {
        self.retention.gauge()
    }
}

/// Pushes `opts.count` images from `images`; records them in `manifest` if given.
pub async fn push(
    opts: PushOptions,
    images: ImageSet,
    manifest: Option<Arc<ManifestWriter>>,
) -> Result<PushReport, PushError> {
    if opts.targets.is_empty() {
        return Err(PushError::Options("no target node to send to".into()));
    }
    if opts.protocol == Protocol::Raw && opts.mode == SendMode::Mirror {
        return Err(PushError::Options(
            "mirror mode needs the framed protocol (raw has no acknowledgements)".into(),
        ));
    }
    let shared = Arc::new(Shared {
        retention: Retention::new(opts.retention_max_blocks, opts.retention_max_bytes),
        target_bytes: opts
            .targets
            .iter()
            .map(|_| Arc::new(AtomicU64::new(0)))
            .collect(),
        warned_no_standby: AtomicBool::new(false),
        opts: opts.clone(),
        images,
        next: AtomicU64::new(0),
        manifest,
        started: Instant::now(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..opts.concurrency.max(1) {
        let shared = shared.clone();
        match opts.protocol {
            Protocol::Framed => tasks.spawn(super::stream::run(shared, w)),
            Protocol::Raw => tasks.spawn(raw_worker(shared)),
        };
    }
    let mut report = PushReport::default();
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(r)) => report.merge(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
                // One stream failing fails the push: stop the others instead of waiting for them.
                tasks.abort_all();
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(PushError::Options(format!("worker panicked: {e}")));
                tasks.abort_all();
            }
        }
    }
    if let Some(m) = &shared.manifest {
        m.flush()?;
    }
    report.elapsed = shared.started.elapsed();
    report.bytes_sent_total = shared
        .target_bytes
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .sum();
    (report.peak_retained_blocks, report.peak_retained_bytes) = shared.gauge().peak();
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn raw_worker(shared: Arc<Shared>) -> Result<PushReport, PushError> {
    let opts = &shared.opts;
    let mut report = PushReport::default();
    let mut target = 0usize;
    while let Some(i) = {
        shared.pace().await;
        shared.claim()
    } {
        let (label, data) = shared.images.get(i);
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(10);
        loop {
            let address = &opts.targets[target];
            match send_raw(address, &data).await {
                Ok(()) => break,
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > opts.give_up_after {
                        return Err(PushError::GaveUp {
                            targets: opts.targets.clone(),
                            after: opts.give_up_after,
                            last_error: format!("{address}: {e}"),
                        });
                    }
                    debug!(address = %address, error = %e, "raw send failed; retrying");
                    report.resent += 1;
                    report.reconnects += 1;
                    target = (target + 1) % opts.targets.len();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        shared.target_bytes[target].fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(t) = &opts.timeline {
            t.add_bytes(&opts.targets[target], data.len() as u64);
        }
        report.sent += 1;
        report.bytes += data.len() as u64;
        if let Some(m) = &shared.manifest {
            m.append(&ManifestEntry::raw(label, &data))?;
        }
    }
    Ok(report)
}

async fn send_raw(address: &str, data: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(address).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    // The node closes once it has the image; wait for that so a run's end means the node has it all.
    let mut sink = [0u8; 64];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}
