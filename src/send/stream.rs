//! One framed stream of a push: its retention log (the kept blocks), its connections to the targets,
//! and the rules that release a block — the state machine that [`super::push`] describes.
//!
//! Everything a stream does happens in one loop that waits for the first of: an event from one of its
//! connections ([`super::link`]: up, a frame, down), the next image it may take ([`Shared::admit`]:
//! retention room and pacing), or a timer (a reconnect that is due, a connection that has stalled,
//! giving up). Connections never block the loop, so a slow standby cannot stall the primary's flow.
//!
//! Per target the stream knows the latest ROLE it said, its connection state, and how many kept blocks
//! it has not acknowledged at all on its current connection (`unacked`). Two timers leave a node:
//!
//! - **Silence** (version 2 connections that have sent a keepalive — a node repeats its ROLE on an
//!   idle connection; one that never did, an older node say, is not judged by its silence): nothing
//!   at all heard on the connection — no ack, no ROLE, no keepalive — for `silence_timeout` since the
//!   last frame or since the stream began to keep a block, while it keeps any block not yet
//!   released, whatever its ack level. A node cut off by a partition, or a half-open
//!   connection that never errors, is left after `silence_timeout` even when every kept block was
//!   acknowledged durable and only waits for a commit, and even while the kernel's send buffer still
//!   takes bytes.
//! - **No progress**: kept blocks it has not acknowledged at all, no ack for `stall_timeout`, and it
//!   took no more bytes since the timer started (a node that still reads what it is sent is busy, not
//!   hung): a node alive enough to keep its connection but whose data path is stuck. Version 1 nodes
//!   send no keepalives, so for them this is the only timer.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::link::{self, AbortOnDrop, Event, LinkHandle, LinkSpec};
use super::manifest::{sha256_hex, ManifestEntry};
use super::options::{SendMode, Stop};
use super::report::{seq_ranges, PushError, PushReport};
use super::retention::Held;
use super::shared::{Admission, Shared};
use crate::protocol::{AckLevel, ErrorCode, Role, RoleInfo, ServerFrame, VERSION_2};

/// Why a stream's loop ended before every image it took was released.
enum Ended {
    /// The push was told to stop now.
    Stopped,
    Failed(PushError),
}

impl From<PushError> for Ended {
    fn from(e: PushError) -> Ended {
        Ended::Failed(e)
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(500);
/// How long a finished stream waits for its last bytes to be written before it closes anyway.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a version 2 connection waits for the node's ROLE (it comes right after WELCOME) before
/// anything is sent on it; a node that announces nothing by then counts as primary (failover).
const ROLE_GRACE: Duration = Duration::from_millis(200);

enum Link {
    /// Not wanted (failover: not the target talked to).
    Idle,
    /// Connect again at this instant.
    Waiting(Instant),
    Connecting {
        generation: u64,
        _task: AbortOnDrop,
    },
    /// Connected. `ready`: the role is settled and every kept block has been sent on it; before that
    /// nothing is sent, and it becomes ready on the first frame or at `ready_by`.
    Up {
        generation: u64,
        handle: LinkHandle,
        ready: bool,
        ready_by: Instant,
    },
}

struct Target {
    address: String,
    link: Link,
    /// The latest ROLE it said (a version 1 node: primary at epoch 0). Survives reconnects: the node
    /// says it again right after WELCOME anyway.
    role: Option<RoleInfo>,
    /// Mirror: this target's reconnect backoff.
    backoff: Duration,
    /// Kept blocks sent on the current connection and not acknowledged by it at any level.
    unacked: usize,
    /// The stall timer's start: the last ack, or when `unacked` last became non-zero.
    quiet_since: Instant,
    /// Bytes written to this node (every stream's) in all, and that count when the stall timer started.
    written: Arc<AtomicU64>,
    written_at_quiet: u64,
    /// When anything (a frame of any kind) last came from the current connection, and its protocol
    /// version: the silence timer's start, and whether the node sends keepalives (version 2).
    heard_at: Instant,
    version: u8,
    /// The current connection repeated its ROLE unchanged at least once: the node sends keepalives
    /// (an older node, or one that announces no role, does not), so its silence means something.
    keeps_alive: bool,
    /// Mirror: since when it has not been connected as a standby (the stream's start if it never was);
    /// `None` while it is. Updated once per turn of the loop, so a target that just went away counts
    /// as present until then (holding blocks back: the safe side).
    absent_since: Option<Instant>,
    /// Mirror: it was the primary and failed (its connection lost, or another target became primary
    /// at a higher epoch). It holds no block back — the pair runs without standby until it comes back
    /// as one — so a failover is not followed by a wait of `standby_grace` for it.
    failed_primary: bool,
}

impl Target {
    fn generation(&self) -> Option<u64> {
        match self.link {
            Link::Connecting { generation, .. } | Link::Up { generation, .. } => Some(generation),
            _ => None,
        }
    }

    /// The connection, once it is ready for blocks.
    fn handle(&self) -> Option<&LinkHandle> {
        match &self.link {
            Link::Up {
                handle,
                ready: true,
                ..
            } => Some(handle),
            _ => None,
        }
    }

    /// Connected and sent every kept block: what "connected" means for the rules.
    fn is_up(&self) -> bool {
        self.handle().is_some()
    }

    fn is_connected(&self) -> bool {
        matches!(self.link, Link::Up { .. })
    }

    /// When a connection that sends keepalives has been silent for `silence`: counted from the last
    /// frame it sent, or from when the stream last began to keep a block (`kept_since`), whichever is
    /// later — before that, its silence cost nothing.
    fn silent_since(&self, silence: Duration, kept_since: Instant) -> Option<Instant> {
        (self.is_connected() && self.version >= VERSION_2 && self.keeps_alive)
            .then_some(self.heard_at.max(kept_since) + silence)
    }

    fn says(&self, role: Role) -> bool {
        self.role.is_some_and(|r| r.role == role)
    }

    /// (Re)starts the stall timer.
    fn quiet_from(&mut self, now: Instant) {
        self.quiet_since = now;
        self.written_at_quiet = self.written.load(Ordering::Relaxed);
    }

    fn is_standby(&self) -> bool {
        self.is_up() && self.says(Role::Standby)
    }

    /// Mirror: a failed primary, or gone for `grace` or longer: it holds no block back any more.
    fn is_gone(&self, now: Instant, grace: Duration) -> bool {
        self.failed_primary
            || self
                .absent_since
                .is_some_and(|since| now.duration_since(since) >= grace)
    }
}

/// What one target did with one kept block, on its current connection.
#[derive(Clone, Copy, Default)]
struct PerTarget {
    /// Sent to it at least once (on any connection).
    sent: bool,
    /// The strongest ack from its current connection.
    best: Option<AckLevel>,
    /// Its current connection got the block's first send of this run (sent to no connection before,
    /// and this target was the one whose acks count then): a HELD answer to it means the node had the
    /// block before this run sent it, so the source id was used before. A re-send (after a reconnect
    /// or a failover) or a copy to a standby is not a first send: the node may well hold it already.
    first: bool,
    /// Its current connection answered the block itself (a durable ACK or HELD), not only with an
    /// ack of a commit or checkpoint, which may come first.
    answered: bool,
}

struct Kept {
    seq: u64,
    label: String,
    data: Bytes,
    /// The last send to the node whose ack counts, for the latency figure.
    sent_at: Instant,
    latency_recorded: bool,
    per: Vec<PerTarget>,
    /// The retention slot; released with the block.
    _held: Held,
}

struct Stream {
    shared: Arc<Shared>,
    /// This stream's index: its k-th block (seq k) is image `worker + k * concurrency`, so a restarted
    /// sender with the same source prefix sends the same image under the same `(source, seq)`.
    worker: usize,
    source: String,
    targets: Vec<Target>,
    kept: VecDeque<Kept>,
    next_seq: u64,
    exhausted: bool,
    report: PushReport,
    events: mpsc::UnboundedSender<Event>,
    generation: u64,
    /// Failover: the target talked to.
    active: usize,
    /// Failover: the backoff before the next target is tried.
    backoff: Duration,
    last_progress: Instant,
    /// When `kept` last went from empty to not empty.
    kept_since: Instant,
    /// Why the last connection was given up on (address and reason), if one was.
    last_error: Option<String>,
    /// Seqs a node answered HELD on their first send (see [`PerTarget::first`]), and which node.
    reused: Vec<u64>,
    reused_at: Option<String>,
}

type AdmitFuture = Pin<Box<dyn Future<Output = Admission> + Send>>;

/// Runs stream number `worker` until every image it took is released, or it fails, or the push is
/// told to stop. Told to drain ([`Stop::Drain`]), it takes no new image and ends once what it sent is
/// released; told to stop now, or failing, it first writes every block it sent and has not released
/// into the manifest as not acknowledged, so the manifest has a line for every image sent.
pub(super) async fn run(shared: Arc<Shared>, worker: usize) -> Result<PushReport, PushError> {
    let (tx, mut events) = mpsc::unbounded_channel();
    let mut s = Stream::new(shared, worker, tx);
    match drive(&mut s, &mut events).await {
        Ok(()) => {
            s.close().await;
            Ok(s.report)
        }
        Err(ended) => {
            let abandoned = s.abandon();
            match ended {
                Ended::Stopped => abandoned.map(|()| s.report),
                Ended::Failed(e) => Err(e),
            }
        }
    }
}

async fn drive(s: &mut Stream, events: &mut mpsc::UnboundedReceiver<Event>) -> Result<(), Ended> {
    // Kept across iterations while the stream takes images: once it holds a retention slot or
    // claimed an image, it completes. Dropped unfinished when the push is told to stop: it has sent
    // nothing, so no image is lost to the manifest.
    let mut admission: Option<AdmitFuture> = None;
    let shared = s.shared.clone();
    loop {
        let now = Instant::now();
        match shared.stop_level() {
            Stop::Running => {}
            Stop::Drain => {
                if !s.exhausted {
                    debug!(source = %s.source, kept = s.kept.len(), "told to stop: taking no more images");
                }
                s.exhausted = true;
                admission = None;
            }
            Stop::Now => return Err(Ended::Stopped),
        }
        s.connect_due(now);
        s.update_presence(now);
        if s.exhausted && s.kept.is_empty() {
            return Ok(());
        }
        if s.kept.is_empty() && s.can_send_new() {
            // Nothing owed and a node to send to: waiting for images is not a lack of progress.
            s.last_progress = now;
        }
        let can_admit = !s.exhausted && s.in_flight() < s.window() && s.can_send_new();
        if can_admit && admission.is_none() {
            admission = Some(Box::pin(s.shared.clone().admit(s.worker, s.next_seq)));
        }
        let deadline = s.next_deadline();
        let stop_level = if s.exhausted { Stop::Now } else { Stop::Drain };
        tokio::select! {
            biased;
            _ = shared.stopped(stop_level) => {}
            Some(ev) = events.recv() => s.on_event(ev)?,
            a = async {
                match admission.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if can_admit => {
                admission = None;
                s.on_admission(a)?;
            }
            _ = tokio::time::sleep_until(deadline.into()) => s.on_timers(Instant::now())?,
        }
        if !s.reused.is_empty() {
            // Name every seq the node has already answered HELD for, not just the first.
            while let Ok(ev) = events.try_recv() {
                s.on_event(ev)?;
            }
            return Err(s.reused_error().into());
        }
    }
}

impl Stream {
    fn new(shared: Arc<Shared>, worker: usize, events: mpsc::UnboundedSender<Event>) -> Stream {
        let now = Instant::now();
        let mirror = shared.opts.mode == SendMode::Mirror;
        let targets = shared
            .opts
            .targets
            .iter()
            .enumerate()
            .map(|(i, a)| Target {
                address: a.clone(),
                // Failover starts with the first target (the primary); mirror with all of them.
                link: if mirror || i == 0 {
                    Link::Waiting(now)
                } else {
                    Link::Idle
                },
                role: None,
                backoff: FIRST_BACKOFF,
                unacked: 0,
                quiet_since: now,
                written: shared.target_bytes[i].clone(),
                written_at_quiet: 0,
                heard_at: now,
                version: 0,
                keeps_alive: false,
                absent_since: Some(now),
                failed_primary: false,
            })
            .collect();
        Stream {
            worker,
            source: format!("{}-{worker}", shared.opts.source_prefix),
            shared,
            targets,
            kept: VecDeque::new(),
            next_seq: 0,
            exhausted: false,
            report: PushReport::default(),
            events,
            generation: 0,
            active: 0,
            backoff: FIRST_BACKOFF,
            last_progress: now,
            kept_since: now,
            last_error: None,
            reused: Vec::new(),
            reused_at: None,
        }
    }

    fn reused_error(&self) -> PushError {
        PushError::SourceReused {
            source_id: self.source.clone(),
            address: self.reused_at.clone().unwrap_or_default(),
            seqs: seq_ranges(&self.reused),
        }
    }

    /// The stream ends early: every block it sent and has not released goes into the manifest, not
    /// acknowledged (the node may have it, or not).
    fn abandon(&mut self) -> Result<(), PushError> {
        let kept = std::mem::take(&mut self.kept);
        self.report.unreleased += kept.len() as u64;
        if !kept.is_empty() {
            info!(source = %self.source, unreleased = kept.len(), first_seq = kept[0].seq, "ending with blocks sent and not released; they go into the manifest as not acknowledged");
        }
        let Some(m) = &self.shared.manifest else {
            return Ok(());
        };
        for k in kept {
            m.append(&ManifestEntry {
                path: k.label,
                size: k.data.len() as u64,
                sha256: sha256_hex(&k.data),
                protocol: "framed".into(),
                source: Some(self.source.clone()),
                seq: Some(k.seq),
                acked: false,
                released_unix_ms: None,
            })?;
        }
        Ok(())
    }

    fn mode(&self) -> SendMode {
        self.shared.opts.mode
    }

    fn window(&self) -> usize {
        self.shared.opts.window.max(1)
    }

    /// Blocks sent and not yet acknowledged at any level, on the connection that has the most: what
    /// `window` bounds. (Blocks acknowledged but not yet released — waiting for a checkpoint or a
    /// commit — are bounded by the retention limits alone, so a release level slower than the WAL does
    /// not throttle the flow to `window` per commit latency.)
    fn in_flight(&self) -> usize {
        match self.mode() {
            SendMode::Failover => self.targets[self.active].unacked,
            SendMode::Mirror => self
                .targets
                .iter()
                .filter(|t| t.is_up())
                .map(|t| t.unacked)
                .max()
                .unwrap_or(0),
        }
    }

    /// Whether a new block can go out now.
    fn can_send_new(&self) -> bool {
        match self.mode() {
            SendMode::Failover => self.targets[self.active].is_up(),
            SendMode::Mirror => self.targets.iter().any(Target::is_up),
        }
    }

    /// Mirror: the target that says primary with the highest epoch (the first listed on a tie).
    fn primary(&self) -> Option<usize> {
        let mut best: Option<(usize, u64)> = None;
        for (i, t) in self.targets.iter().enumerate() {
            if let Some(RoleInfo {
                role: Role::Primary,
                epoch,
            }) = t.role
            {
                if best.is_none_or(|(_, e)| epoch > e) {
                    best = Some((i, epoch));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// The target whose acks release blocks and time latencies.
    fn deciding(&self) -> Option<usize> {
        match self.mode() {
            SendMode::Failover => Some(self.active),
            SendMode::Mirror => self.primary(),
        }
    }

    fn connect_due(&mut self, now: Instant) {
        for i in 0..self.targets.len() {
            if matches!(self.targets[i].link, Link::Waiting(at) if at <= now) {
                self.generation += 1;
                let opts = &self.shared.opts;
                let task = link::connect(LinkSpec {
                    target: i,
                    generation: self.generation,
                    address: self.targets[i].address.clone(),
                    source: self.source.clone(),
                    token: opts.token.clone(),
                    timeout: opts.stall_timeout,
                    events: self.events.clone(),
                    bytes: self.shared.target_bytes[i].clone(),
                    timeline: opts.timeline.clone(),
                    max_queued: opts.retention_max_bytes,
                });
                self.targets[i].link = Link::Connecting {
                    generation: self.generation,
                    _task: task,
                };
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let stall = self.shared.opts.stall_timeout;
        let silence = self.shared.opts.silence_timeout;
        let mut d = self.last_progress + self.shared.opts.give_up_after;
        for t in &self.targets {
            match t.link {
                Link::Waiting(at) => d = d.min(at),
                Link::Up {
                    ready: false,
                    ready_by,
                    ..
                } => d = d.min(ready_by),
                Link::Up { .. } if t.unacked > 0 => d = d.min(t.quiet_since + stall),
                _ => {}
            }
            if !self.kept.is_empty() {
                if let Some(at) = t.silent_since(silence, self.kept_since) {
                    d = d.min(at);
                }
            }
        }
        if let Some(gone_at) = self.next_gone() {
            d = d.min(gone_at);
        }
        d
    }

    /// Mirror: records which targets are connected as standbys, and since when the others are not.
    fn update_presence(&mut self, now: Instant) {
        for t in &mut self.targets {
            if t.is_standby() {
                t.absent_since = None;
                t.failed_primary = false;
            } else if t.absent_since.is_none() {
                t.absent_since = Some(now);
            }
        }
    }

    /// Mirror, with blocks kept: the next instant an absent standby target's grace runs out (a timer, so
    /// blocks it held back are released then even if no ack comes).
    fn next_gone(&self) -> Option<Instant> {
        if self.mode() != SendMode::Mirror || self.kept.is_empty() {
            return None;
        }
        let now = Instant::now();
        let grace = self.shared.opts.standby_grace;
        let p = self.primary();
        self.targets
            .iter()
            .enumerate()
            .filter(|&(i, t)| Some(i) != p && !t.failed_primary)
            .filter_map(|(_, t)| t.absent_since.map(|since| since + grace))
            .filter(|&at| at > now)
            .min()
    }

    fn on_admission(&mut self, a: Admission) -> Result<(), PushError> {
        let Admission::Image { label, data, held } = a else {
            self.exhausted = true;
            return Ok(());
        };
        let now = Instant::now();
        if self.kept.is_empty() {
            self.kept_since = now;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.report.sent += 1;
        self.report.bytes += data.len() as u64;
        if let Some(t) = &self.shared.opts.timeline {
            t.sent(&self.source, seq, now);
        }
        let mut per = vec![PerTarget::default(); self.targets.len()];
        let only = (self.mode() == SendMode::Failover).then_some(self.active);
        let deciding = self.deciding();
        let mut behind = Vec::new();
        for (i, t) in self.targets.iter_mut().enumerate() {
            if only.is_some_and(|a| a != i) {
                continue;
            }
            if let Some(h) = t.handle() {
                if !h.send(seq, data.clone()) {
                    behind.push(i);
                    continue;
                }
                per[i].sent = true;
                per[i].first = deciding == Some(i);
                if t.unacked == 0 {
                    t.quiet_from(now);
                }
                t.unacked += 1;
            }
        }
        self.kept.push_back(Kept {
            seq,
            label,
            data,
            sent_at: now,
            latency_recorded: false,
            per,
            _held: held,
        });
        for i in behind {
            let why = format!(
                "it takes nothing of what it is sent: this stream has its retention bound ({} bytes) queued for it",
                self.shared.opts.retention_max_bytes
            );
            self.lose(i, why)?;
        }
        Ok(())
    }

    fn on_event(&mut self, ev: Event) -> Result<(), PushError> {
        match ev {
            Event::Up {
                target,
                generation,
                link,
                version,
            } => {
                if self.targets[target].generation() == Some(generation) {
                    self.on_up(target, generation, link, version);
                }
                // Otherwise a connection given up on while it connected: dropping it closes it.
                Ok(())
            }
            Event::Frame {
                target,
                generation,
                frame,
            } => {
                if self.targets[target].is_connected()
                    && self.targets[target].generation() == Some(generation)
                {
                    self.targets[target].heard_at = Instant::now();
                    self.on_frame(target, frame)?;
                }
                Ok(())
            }
            Event::Down {
                target,
                generation,
                why,
                fatal,
            } => {
                if self.targets[target].generation() != Some(generation) {
                    return Ok(());
                }
                if fatal {
                    return Err(PushError::Refused {
                        address: self.targets[target].address.clone(),
                        reason: why,
                    });
                }
                self.lose(target, why)
            }
        }
    }

    /// A connection is up. A version 1 node is primary and ready at once; a version 2 node first says
    /// its role (or is given [`ROLE_GRACE`] to).
    fn on_up(&mut self, target: usize, generation: u64, link: LinkHandle, version: u8) {
        let now = Instant::now();
        let failover = self.mode() == SendMode::Failover;
        let t = &mut self.targets[target];
        debug!(source = %self.source, target = %t.address, version, "connected");
        t.heard_at = now;
        t.version = version;
        t.keeps_alive = false;
        t.link = Link::Up {
            generation,
            handle: link,
            ready: false,
            ready_by: now + ROLE_GRACE,
        };
        if version < VERSION_2 {
            t.role = Some(RoleInfo {
                role: Role::Primary,
                epoch: 0,
            });
            self.make_ready(target);
        } else if failover {
            // Only what this connection says counts; saying nothing is being primary.
            t.role = None;
        }
    }

    /// The connection's role is settled: forget the target's old acks and send it every kept block,
    /// in order.
    fn make_ready(&mut self, target: usize) {
        let now = Instant::now();
        let deciding = self.deciding() == Some(target);
        let t = &mut self.targets[target];
        let Link::Up { handle, ready, .. } = &mut t.link else {
            return;
        };
        *ready = true;
        let failover = self.shared.opts.mode == SendMode::Failover;
        for k in self.kept.iter_mut() {
            // A re-send: to this target again, or (failover) moved here from another one.
            if k.per[target].sent || (failover && k.per.iter().any(|p| p.sent)) {
                self.report.resent += 1;
            }
            let never_sent = !k.per.iter().any(|p| p.sent);
            let p = &mut k.per[target];
            *p = PerTarget {
                sent: true,
                best: None,
                first: never_sent && deciding,
                answered: false,
            };
            if deciding {
                k.sent_at = now;
            }
            // A new connection's queue is empty and the kept blocks are within the retention bound,
            // which is the queue's bound too: this always queues.
            let _ = handle.send(k.seq, k.data.clone());
        }
        t.unacked = self.kept.len();
        t.quiet_from(now);
    }

    fn on_frame(&mut self, target: usize, frame: ServerFrame) -> Result<(), PushError> {
        let ready = self.targets[target].is_up();
        if let ServerFrame::Role { role, epoch } = frame {
            self.on_role(target, RoleInfo { role, epoch })?;
            if !ready && self.targets[target].is_connected() {
                self.make_ready(target);
            }
            return Ok(());
        }
        if !ready {
            self.make_ready(target);
        }
        match frame {
            ServerFrame::Ack { level, seq } => self.on_ack(target, level, seq),
            // A block held before this run sent it is not released: the stream fails, and its
            // manifest line says not acknowledged (what the node has may be another image).
            ServerFrame::Held { seq } if self.on_held(target, seq) => Ok(()),
            ServerFrame::Held { seq } => self.on_ack(target, AckLevel::Durable, seq),
            ServerFrame::Error { code, message } => {
                warn!(source = %self.source, target = %self.targets[target].address, code = ?code, error = %message, "node reported an error");
                if code == ErrorCode::BlockTooLarge {
                    return Err(PushError::Refused {
                        address: self.targets[target].address.clone(),
                        reason: message,
                    });
                }
                self.lose(target, message)
            }
            ServerFrame::Welcome { .. } => self.lose(target, "a second WELCOME".into()),
            ServerFrame::Role { .. } => Ok(()),
        }
    }

    fn on_ack(&mut self, target: usize, level: AckLevel, seq: u64) -> Result<(), PushError> {
        let now = Instant::now();
        if let Some(t) = &self.shared.opts.timeline {
            t.acked(&self.targets[target].address, now);
            if level.covers(AckLevel::Committed) {
                t.committed(&self.source, seq, now);
            }
        }
        let deciding = self.deciding() == Some(target);
        if self.mode() == SendMode::Failover {
            self.backoff = FIRST_BACKOFF;
        }
        let t = &mut self.targets[target];
        t.quiet_from(now);
        t.backoff = FIRST_BACKOFF;
        // Kept blocks are in sequence order (taken in order, removed anywhere).
        let Ok(i) = self.kept.binary_search_by_key(&seq, |k| k.seq) else {
            return Ok(()); // already released (a committed ack after the durable one, say)
        };
        let k = &mut self.kept[i];
        let p = &mut k.per[target];
        p.answered |= level == AckLevel::Durable;
        if p.best.is_none() {
            t.unacked = t.unacked.saturating_sub(1);
        }
        p.best = Some(p.best.map_or(level, |b| b.stronger(level)));
        if deciding && !k.latency_recorded {
            k.latency_recorded = true;
            self.report.latencies.push(now.duration_since(k.sent_at));
        }
        if self.releasable(i) {
            self.release(i)?;
        }
        Ok(())
    }

    /// A durable ack that says the node held the block before this copy arrived. For a block's first
    /// send that is a source id used before (true: the stream fails, naming the seqs); for a re-send
    /// it is what a re-send is for.
    fn on_held(&mut self, target: usize, seq: u64) -> bool {
        // A first send is not released before its answer (see `releasable`): not kept, a re-send.
        let first = self
            .kept
            .binary_search_by_key(&seq, |k| k.seq)
            .is_ok_and(|i| self.kept[i].per[target].first);
        let first = first && !self.shared.opts.resume;
        if first && self.reused.is_empty() {
            warn!(source = %self.source, target = %self.targets[target].address, seq, "the node held this block before this run sent it: the source id was used before");
        }
        if first {
            self.reused.push(seq);
            self.reused_at
                .get_or_insert_with(|| self.targets[target].address.clone());
        } else {
            debug!(source = %self.source, target = %self.targets[target].address, seq, "a re-sent block was held already");
        }
        first
    }

    fn on_role(&mut self, target: usize, role: RoleInfo) -> Result<(), PushError> {
        let before = self.primary();
        let t = &mut self.targets[target];
        if t.role != Some(role) {
            info!(source = %self.source, target = %t.address, role = %role.role, epoch = role.epoch, "node role");
        } else {
            // The same ROLE again on this connection: a keepalive.
            t.keeps_alive = true;
        }
        t.role = Some(role);
        match self.mode() {
            SendMode::Failover => {
                if role.role == Role::Standby {
                    return self.lose(
                        target,
                        format!("it is a standby (epoch {}), not the primary", role.epoch),
                    );
                }
                Ok(())
            }
            SendMode::Mirror => {
                let after = self.primary();
                if after != before {
                    if let Some(p) = after {
                        info!(source = %self.source, primary = %self.targets[p].address, epoch = role.epoch, "primary changed");
                    }
                    if let Some(old) = before {
                        if Some(old) != after && !self.targets[old].says(Role::Standby) {
                            self.targets[old].failed_primary = true;
                        }
                    }
                }
                self.release_ready()
            }
        }
    }

    /// Whether kept block `i` may go (see the module documentation of `push`).
    fn releasable(&self, i: usize) -> bool {
        let k = &self.kept[i];
        let release = self.shared.opts.release;
        // A block's first send waits for the node's own answer (a durable ack or HELD), even when
        // a committed ack overtook it: HELD says the source id was used before, and then the block
        // is not released (`on_held`).
        let acked = |t: usize, level: AckLevel| {
            let p = &k.per[t];
            p.best.is_some_and(|b| b.covers(level)) && (!p.first || p.answered)
        };
        match self.mode() {
            SendMode::Failover => acked(self.active, release),
            SendMode::Mirror => {
                let Some(p) = self.primary() else {
                    return false;
                };
                let now = Instant::now();
                let grace = self.shared.opts.standby_grace;
                acked(p, release)
                    && self.targets.iter().enumerate().all(|(t, target)| {
                        t == p || acked(t, AckLevel::Durable) || target.is_gone(now, grace)
                    })
            }
        }
    }

    /// Releases every kept block that may go (after a change of roles or connections).
    fn release_ready(&mut self) -> Result<(), PushError> {
        let mut i = 0;
        while i < self.kept.len() {
            if self.releasable(i) {
                self.release(i)?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    fn release(&mut self, i: usize) -> Result<(), PushError> {
        let Some(k) = self.kept.remove(i) else {
            return Ok(());
        };
        let now = Instant::now();
        for (t, target) in self.targets.iter_mut().enumerate() {
            if target.is_up() && k.per[t].best.is_none() {
                target.unacked = target.unacked.saturating_sub(1);
            }
        }
        if self.mode() == SendMode::Mirror && self.targets.len() > 1 {
            let p = self.primary();
            let standby_up = self
                .targets
                .iter()
                .enumerate()
                .any(|(t, target)| Some(t) != p && target.is_standby());
            if !standby_up && !self.shared.warned_no_standby.swap(true, Ordering::Relaxed) {
                warn!(source = %self.source, targets = ?self.shared.opts.targets, "running without standby: blocks are released on the primary's ack alone until a standby is connected again");
            }
        }
        if !k.latency_recorded {
            self.report.latencies.push(now.duration_since(k.sent_at));
        }
        self.report.acked += 1;
        self.last_progress = now;
        let opts = &self.shared.opts;
        if let Some(p) = &opts.progress {
            p.fetch_add(k.data.len() as u64, Ordering::Relaxed);
        }
        if let Some(t) = &opts.timeline {
            t.released(&self.source, k.seq, now);
        }
        if let Some(m) = &self.shared.manifest {
            m.append(&ManifestEntry {
                path: k.label,
                size: k.data.len() as u64,
                sha256: sha256_hex(&k.data),
                protocol: "framed".into(),
                source: Some(self.source.clone()),
                seq: Some(k.seq),
                acked: true,
                released_unix_ms: Some(unix_ms()),
            })?;
        }
        if self.report.acked.is_multiple_of(10_000) {
            info!(source = %self.source, acked = self.report.acked, "progress");
        }
        Ok(())
    }

    /// Gives up on target `t`'s connection: failover moves on to the next target, mirror reconnects.
    fn lose(&mut self, target: usize, why: String) -> Result<(), PushError> {
        let now = Instant::now();
        self.report.reconnects += 1;
        let address = self.targets[target].address.clone();
        self.last_error = Some(format!("{address}: {why}"));
        let t = &mut self.targets[target];
        // Losing a connection is news; another failed attempt to connect is not (debug).
        let was_connected = t.is_connected();
        t.link = Link::Idle; // drops the connection
        t.unacked = 0;
        match self.mode() {
            SendMode::Failover => {
                let next = (target + 1) % self.targets.len();
                if next != target {
                    self.report.failovers += 1;
                }
                if was_connected && next != target {
                    info!(source = %self.source, from = %address, to = %self.targets[next].address, reason = %why, kept = self.kept.len(), "failing over");
                } else {
                    debug!(source = %self.source, target = %address, next = %self.targets[next].address, reason = %why, kept = self.kept.len(), "no connection; trying the next target");
                }
                self.active = next;
                self.targets[next].link = Link::Waiting(now + self.backoff);
                self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                Ok(())
            }
            SendMode::Mirror => {
                let t = &mut self.targets[target];
                if t.says(Role::Primary) {
                    t.failed_primary = true;
                }
                if was_connected {
                    warn!(source = %self.source, target = %address, reason = %why, "connection lost; reconnecting");
                } else {
                    debug!(source = %self.source, target = %address, reason = %why, "cannot connect; retrying");
                }
                t.link = Link::Waiting(now + t.backoff);
                t.backoff = (t.backoff * 2).min(MAX_BACKOFF);
                // A primary that is gone may leave blocks releasable on another one's acks; a standby
                // that is gone holds blocks back for `standby_grace` more (see `on_timers`).
                self.release_ready()
            }
        }
    }

    fn on_timers(&mut self, now: Instant) -> Result<(), PushError> {
        let stall = self.shared.opts.stall_timeout;
        let silence = self.shared.opts.silence_timeout;
        for t in 0..self.targets.len() {
            if matches!(self.targets[t].link, Link::Up { ready: false, ready_by, .. } if ready_by <= now)
            {
                self.make_ready(t);
            }
            if !self.kept.is_empty()
                && self.targets[t]
                    .silent_since(silence, self.kept_since)
                    .is_some_and(|at| now >= at)
            {
                let why = format!(
                    "connected, but silent for {silence:?} (no ack, no keepalive) with {} blocks kept",
                    self.kept.len()
                );
                self.lose(t, why)?;
                continue;
            }
            let target = &mut self.targets[t];
            if target.is_up() && target.unacked > 0 && now >= target.quiet_since + stall {
                if target.written.load(Ordering::Relaxed) != target.written_at_quiet {
                    // It took more of what it is sent: busy (a long group commit under load), not
                    // hung. A hung node stops reading once the socket buffers are full.
                    target.quiet_from(now);
                    continue;
                }
                let why = format!(
                    "connected, but no acknowledgement in {stall:?} for {} blocks outstanding",
                    target.unacked
                );
                self.lose(t, why)?;
            }
        }
        if self.mode() == SendMode::Mirror {
            // A standby's grace may have run out.
            self.release_ready()?;
        }
        let after = self.shared.opts.give_up_after;
        if now.duration_since(self.last_progress) >= after {
            return Err(PushError::GaveUp {
                targets: self.shared.opts.targets.clone(),
                after,
                last_error: self.what_happened(now),
            });
        }
        Ok(())
    }

    /// For [`PushError::GaveUp`]: what each target is doing now, and the last connection lost.
    fn what_happened(&self, now: Instant) -> String {
        let states: Vec<String> = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let state = match &t.link {
                    Link::Up { .. } => {
                        let acked = self.kept.iter().filter(|k| k.per[i].best.is_some()).count();
                        let role = t.role.map_or("no role yet".to_string(), |r| {
                            format!("{} at epoch {}", r.role, r.epoch)
                        });
                        format!(
                            "connected ({role}), last heard {} ms ago, acknowledged {acked} of the kept blocks",
                            now.duration_since(t.heard_at).as_millis()
                        )
                    }
                    Link::Connecting { .. } => "connecting".to_string(),
                    Link::Waiting(_) | Link::Idle => "not connected".to_string(),
                };
                format!("{}: {state}", t.address)
            })
            .collect();
        format!(
            "{} blocks kept, none released for the whole time; {}; last connection lost: {}",
            self.kept.len(),
            states.join("; "),
            self.last_error.as_deref().unwrap_or("none")
        )
    }

    /// Every block is released: half-close every connection after its last bytes.
    async fn close(&mut self) {
        let mut closing = Vec::new();
        for t in &mut self.targets {
            if let Link::Up { handle, .. } = std::mem::replace(&mut t.link, Link::Idle) {
                closing.push(handle.close(CLOSE_GRACE));
            }
        }
        futures::future::join_all(closing).await;
    }
}
