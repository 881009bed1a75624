//! High availability at run time: a role runs as primary or standby, heartbeats, takeover.
//!
//! # Roles
//!
//! `hdfs-ingest run --role primary|standby` picks the `[strategy.primary]` or `[strategy.standby]` table
//! (the node's identity: name, WAL directory, framed and control addresses). A node starts as primary
//! (`--role primary`) or as standby (`--role standby`, or any role with `--standby`: how a failed
//! primary rejoins). A standby watches the *other* table's control address.
//!
//! # Heartbeats and failure detection
//!
//! The primary accepts connections on its control address and writes one JSON line per
//! `heartbeat_interval` to each: `{"node":…,"epoch":…,"checkpoint":…}`. The standby reads them; once it
//! has seen one, `failure_timeout` without a line (connection refused, closed or silent — a SIGSTOPped
//! primary keeps its socket open but sends nothing) means the primary failed, and it takes over:
//! [`Node::become_primary`] claims the next epoch, which fences the old primary out of every later
//! claim and checkpoint. A standby that never saw a heartbeat waits (it logs why): a standby started
//! before its primary must not take over a pipeline that was never running.
//!
//! Under `active-standby` the standby runs a node in standby mode from the start (it receives and
//! makes durable every block); each heartbeat naming a newer checkpoint makes it read that checkpoint
//! and trim its WAL of what the primary committed. Under `passive-standby` and `upstream-backup` the
//! standby opens nothing until it takes over.
//!
//! # Heartbeats run on their own threads
//!
//! Both ends of the heartbeat run on dedicated OS threads with blocking std sockets, not as tasks on
//! the node's tokio runtime. The runtime carries the data path (receivers, WAL group commit, batch
//! commits); under full ingest on a small machine its tasks can wait longer than `failure_timeout` to
//! be polled. A heartbeat written by a runtime task was then late, and a standby took over from a
//! primary that was alive but busy — a false takeover, safe (the old primary is fenced) but a failover
//! the pipeline pays for. The same holds on the standby: under `active-standby` its runtime ingests
//! every block too, so a watcher on it read late and timed out late or spuriously, and it read the
//! primary's checkpoint (an await on the store) between two heartbeat reads. A busy runtime must not
//! look like a dead node.
//!
//! - Primary: one accept thread (a nonblocking listener polled every [`ACCEPT_POLL`]) and one writer
//!   thread per standby connection (`TCP_NODELAY`, a write timeout of `failure_timeout`). A writer reads
//!   the node's name, epoch, checkpoint id and stop reason through [`Node`]'s sync getters: an atomic,
//!   a short `std::sync::Mutex` section, and the stop `watch` channel's value — no async lock, nothing
//!   that waits for the runtime. The threads end when the node stops (or the role shuts down): the
//!   writers close their connections, which the standby counts as a failure, as before.
//! - Standby: one watcher thread connects (timeout `heartbeat_interval`), reads lines with a read
//!   timeout and makes the `failure_timeout` decision itself, with the clock of its own thread. It
//!   tells the async side through a tokio channel: "heartbeat naming checkpoint N" (the async side
//!   reads that checkpoint when N is new) and "primary failed" (with the Unix milliseconds of the last
//!   heartbeat and of the detection, which the `takeover` line prints).
//!
//! # What heartbeats do not detect
//!
//! A heartbeat says the *process* is alive and scheduled, not that its data path works. A node
//! whose runtime is wedged (a deadlock, a task that never yields) while the process runs would keep
//! heartbeating from its own threads forever. What covers a hung data path: the sender's stall
//! timeout (a stream that gets no ack for `2 × failure_timeout` moves to its other target — which
//! helps once that target is primary), the fence check (a primary that was replaced stops at its next
//! check or claim), and this guard: a tokio task on the
//! node's runtime stamps a tick every `min(heartbeat_interval, failure_timeout)`; a writer thread
//! withholds heartbeats (keeps the connection open and silent, like a SIGSTOPped process) while the
//! tick is older than [`RUNTIME_STALL_TIMEOUTS`] × `failure_timeout` (3 s with the shipped configs),
//! so the standby takes over from a node whose runtime has made no progress at all for that long, and
//! heartbeats resume when the runtime does. The bound is ten times the timeout so that a runtime that
//! is merely saturated — its tasks polled late, but polled — never trips it; a runtime that cannot
//! poll a trivial timer task for seconds is not ingesting either. A runtime that polls its tasks but
//! whose data path is stuck in an await (a hung store, a lost wakeup) is *not* detected by heartbeats:
//! that is the sender's stall timeout's job.
//!
//! # What a run prints on stdout
//!
//! `ready <addresses>` once serving (as primary, or as an active standby), `standby <peer control
//! address>` while an idle standby watches, and one `takeover {json}` line when a standby takes over,
//! with the Unix milliseconds of the last heartbeat seen, the detection, and the moment it serves.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strategies::StandbyMode;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::{Config, NodeRole, StrategyConfig};
use crate::node::Node;
use crate::node::{start_node, RunningNode};

/// A primary whose runtime has not run its tick task for this many `failure_timeout`s withholds its
/// heartbeats (see the module doc).
pub const RUNTIME_STALL_TIMEOUTS: u32 = 10;

/// How often the primary's accept thread polls its nonblocking listener.
pub const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The longest a heartbeat thread blocks in a read before it looks whether it was told to stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// One heartbeat line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub epoch: u64,
    pub checkpoint: u64,
}

/// The `takeover` line a standby prints when it takes over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverEvent {
    pub node: String,
    pub epoch: u64,
    pub last_heartbeat_unix_ms: u64,
    pub detected_unix_ms: u64,
    pub serving_unix_ms: u64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Runs one role until `shutdown` resolves or the node stops (fenced, failed).
pub async fn run_role(
    base: Config,
    role: NodeRole,
    start_as_standby: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let cfg = base.for_role(role)?;
    let strategy = cfg.strategy.kind;
    if !strategy.has_standby() {
        return crate::node::run_node(cfg, shutdown).await;
    }
    let standby = start_as_standby || role == NodeRole::Standby;
    tokio::pin!(shutdown);
    let running = if standby {
        let peer = match role {
            NodeRole::Primary => base.strategy.standby.control.clone(),
            NodeRole::Standby => base.strategy.primary.control.clone(),
        };
        match watch_then_take_over(cfg.clone(), &peer, &mut shutdown).await? {
            Some(r) => r,
            None => return Ok(()),
        }
    } else {
        let running = start_node(Node::open(cfg.clone()).await?).await?;
        println!("ready {}", running.addresses.join(" "));
        running
    };
    serve_as_primary(cfg, running, shutdown).await
}

/// The primary's life: heartbeats on the control address (on their own threads), a fence check every
/// `failure_timeout`, until shutdown or until the node stops.
async fn serve_as_primary(
    cfg: Config,
    running: RunningNode,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let node = running.node.clone();
    let control = cfg
        .strategy
        .primary_or_standby_control(&cfg.node.name)
        .to_string();
    let listener = bind_retrying(&control, &node).await?;
    let hb = HeartbeatSender::start(node.clone(), listener, SenderTimes::of(&cfg.strategy))
        .context("cannot start the heartbeat threads")?;
    #[cfg(feature = "failpoints")]
    let blockers = block_runtime_hook(&node);
    let fence = {
        let node = node.clone();
        let every = cfg.strategy.failure_timeout;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                if node.stop_reason().is_some() {
                    return;
                }
                if let Err(e) = node.check_fence().await {
                    warn!(error = %e, "fence check");
                    if matches!(e, crate::node::NodeError::Fenced(_)) {
                        return;
                    }
                }
            }
        })
    };
    tokio::select! {
        _ = shutdown => node.request_stop("shutdown requested"),
        _ = node.stopped() => {}
    }
    fence.abort();
    #[cfg(feature = "failpoints")]
    blockers.into_iter().for_each(|b| b.abort());
    // The node is stopping: the writers close their connections at their next heartbeat.
    let hb = tokio::task::spawn_blocking(move || hb.stop_and_join());
    let stopped = running.stop().await;
    let _ = hb.await;
    stopped
}

/// Test hook (`failpoints` builds): once the node has committed a batch, each time the failpoint
/// `ha::primary::block_runtime` fires with `return(MS)` one task per runtime worker blocks its worker
/// thread with `std::thread::sleep` for MS milliseconds — a runtime saturated by its data path, as
/// under full ingest on a small machine (`FAILPOINTS="ha::primary::block_runtime=4*return(1500)"`:
/// four such blocks, then none).
#[cfg(feature = "failpoints")]
fn block_runtime_hook(node: &Node) -> Vec<tokio::task::JoinHandle<()>> {
    let workers = tokio::runtime::Handle::current().metrics().num_workers();
    (0..workers)
        .map(|worker| {
            let node = node.clone();
            tokio::spawn(async move {
                while node.stats().batches.load(Ordering::Relaxed) == 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                loop {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    let ms = fail::eval("ha::primary::block_runtime", |arg| {
                        arg.and_then(|a| a.parse::<u64>().ok()).unwrap_or(1000)
                    });
                    if let Some(ms) = ms {
                        warn!(worker, ms, "failpoint ha::primary::block_runtime: blocking a runtime worker thread");
                        std::thread::sleep(Duration::from_millis(ms));
                    }
                }
            })
        })
        .collect()
}

/// Binds the control address, retrying for a while (a fenced predecessor on this host may still hold it).
async fn bind_retrying(address: &str, node: &Node) -> anyhow::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(address) {
            Ok(l) => return Ok(l),
            Err(e) if Instant::now() < deadline && node.stop_reason().is_none() => {
                debug!(address, error = %e, "control address busy; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot listen on control address {address}"))
            }
        }
    }
}

/// A stop flag that heartbeat threads can sleep on.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps for `d` or until told to stop; true if told to stop.
    fn sleep(&self, d: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (stopped, _) = self
            .wake
            .wait_timeout_while(stopped, d, |s| !*s)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }
}

/// When the node's runtime last polled the tick task: the heartbeat threads' evidence that the
/// runtime of the data path still runs.
struct RuntimeProgress {
    base: Instant,
    last_ms: AtomicU64,
}

impl RuntimeProgress {
    fn new() -> RuntimeProgress {
        RuntimeProgress {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    fn bump(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Release);
    }

    /// How long ago the runtime last polled the tick task.
    fn age(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Acquire)),
        )
    }
}

/// The primary's heartbeat timing, from `[strategy]`.
#[derive(Clone, Copy, Debug)]
struct SenderTimes {
    /// Between two heartbeats on one connection.
    every: Duration,
    /// A write blocked this long drops the connection (the standby reconnects).
    write_timeout: Duration,
    /// How often the runtime's tick task stamps its progress.
    tick: Duration,
    /// Heartbeats are withheld while the stamp is older than this.
    stall_limit: Duration,
}

impl SenderTimes {
    fn of(s: &StrategyConfig) -> SenderTimes {
        let least = Duration::from_millis(1);
        SenderTimes {
            every: s.heartbeat_interval.max(least),
            write_timeout: s.failure_timeout.max(least),
            tick: s.heartbeat_interval.min(s.failure_timeout).max(least),
            stall_limit: s.failure_timeout * RUNTIME_STALL_TIMEOUTS,
        }
    }
}

/// The primary's heartbeats: an accept thread and one writer thread per standby connection, and the
/// tick task on the node's runtime. Dropping it tells the threads to stop without waiting for them.
struct HeartbeatSender {
    stop: Arc<StopSignal>,
    accept: Option<JoinHandle<()>>,
    ticker: tokio::task::JoinHandle<()>,
}

impl HeartbeatSender {
    /// Starts serving heartbeats on `listener`. Call it on the node's runtime: the tick task is
    /// spawned there.
    fn start(node: Node, listener: TcpListener, times: SenderTimes) -> io::Result<HeartbeatSender> {
        listener.set_nonblocking(true)?;
        let stop = Arc::new(StopSignal::default());
        let progress = Arc::new(RuntimeProgress::new());
        progress.bump();
        let ticker = {
            let progress = progress.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(times.tick);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    progress.bump();
                }
            })
        };
        let accept = std::thread::Builder::new()
            .name("heartbeat-accept".into())
            .spawn({
                let stop = stop.clone();
                move || accept_standbys(&node, listener, times, &progress, &stop)
            });
        let accept = match accept {
            Ok(t) => t,
            Err(e) => {
                ticker.abort();
                return Err(e);
            }
        };
        Ok(HeartbeatSender {
            stop,
            accept: Some(accept),
            ticker,
        })
    }

    /// Tells the threads to stop and waits until they have (each within about a heartbeat interval,
    /// or a write timeout). Blocks: call it off the runtime.
    fn stop_and_join(mut self) {
        self.stop.stop();
        self.ticker.abort();
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HeartbeatSender {
    fn drop(&mut self) {
        self.stop.stop();
        self.ticker.abort();
    }
}

/// The accept thread: a writer thread per standby that connects, until the node stops or `stop`.
fn accept_standbys(
    node: &Node,
    listener: TcpListener,
    times: SenderTimes,
    progress: &Arc<RuntimeProgress>,
    stop: &Arc<StopSignal>,
) {
    info!(address = ?listener.local_addr().ok(), "serving heartbeats");
    let mut writers: Vec<JoinHandle<()>> = Vec::new();
    while !stop.is_stopped() && node.stop_reason().is_none() {
        match listener.accept() {
            Ok((sock, peer)) => {
                writers.retain(|w| !w.is_finished());
                let spawned = std::thread::Builder::new()
                    .name("heartbeat-writer".into())
                    .spawn({
                        let (node, progress, stop) = (node.clone(), progress.clone(), stop.clone());
                        move || write_heartbeats(&node, sock, peer, times, &progress, &stop)
                    });
                match spawned {
                    Ok(w) => writers.push(w),
                    Err(e) => warn!(%peer, error = %e, "cannot start a heartbeat writer thread"),
                }
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    debug!(error = %e, "accepting a heartbeat connection");
                }
                stop.sleep(ACCEPT_POLL);
            }
        }
    }
    drop(listener);
    for w in writers {
        let _ = w.join();
    }
}

/// A writer thread: one heartbeat line per `times.every` to one standby, until the node stops,
/// `stop`, or the connection fails. Withholds heartbeats while the runtime makes no progress.
fn write_heartbeats(
    node: &Node,
    mut sock: TcpStream,
    peer: SocketAddr,
    times: SenderTimes,
    progress: &RuntimeProgress,
    stop: &StopSignal,
) {
    let set_up = sock
        .set_nonblocking(false)
        .and_then(|()| sock.set_nodelay(true))
        .and_then(|()| sock.set_write_timeout(Some(times.write_timeout)));
    if let Err(e) = set_up {
        debug!(%peer, error = %e, "heartbeat connection");
        return;
    }
    debug!(%peer, "standby connected for heartbeats");
    let name = node.config().node.name.clone();
    let mut withholding = false;
    loop {
        if stop.is_stopped() || node.stop_reason().is_some() {
            return;
        }
        let stalled = progress.age();
        if stalled > times.stall_limit {
            if !withholding {
                warn!(%peer, stalled_ms = stalled.as_millis() as u64,
                      "the node's runtime made no progress; heartbeats withheld so that the standby takes over");
                withholding = true;
            }
        } else {
            if withholding {
                info!(%peer, "the node's runtime makes progress again; heartbeats resume");
                withholding = false;
            }
            let hb = Heartbeat {
                node: name.clone(),
                epoch: node.epoch(),
                checkpoint: node.checkpoint_id(),
            };
            let mut line = serde_json::to_vec(&hb).expect("heartbeat encodes");
            line.push(b'\n');
            if let Err(e) = sock.write_all(&line) {
                debug!(%peer, error = %e, "heartbeat connection lost");
                return;
            }
        }
        if stop.sleep(times.every) {
            return;
        }
    }
}

/// What the standby's watcher thread tells the async side.
#[derive(Clone, Debug, PartialEq, Eq)]
enum WatchEvent {
    /// A heartbeat arrived, naming the primary's newest checkpoint.
    Heartbeat { checkpoint: u64 },
    /// No heartbeat for `failure_timeout`, after at least one was seen. The watcher has ended.
    PrimaryFailed {
        last_heartbeat_unix_ms: u64,
        detected_unix_ms: u64,
    },
}

/// The standby's watcher thread. Dropping it tells the thread to stop without waiting for it.
struct Watcher {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `peer`'s heartbeats: connects every `poll / 2` until it can (each attempt bounded by
    /// `poll`), declares the primary failed after `timeout` without a heartbeat once one was seen.
    fn start(
        peer: String,
        poll: Duration,
        timeout: Duration,
        events: mpsc::Sender<WatchEvent>,
    ) -> io::Result<Watcher> {
        let stop = Arc::new(StopSignal::default());
        let thread = std::thread::Builder::new()
            .name("heartbeat-watch".into())
            .spawn({
                let stop = stop.clone();
                move || watch_heartbeats(&peer, poll, timeout, &events, &stop)
            })?;
        Ok(Watcher {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop and waits until it has (within about `poll`). Blocks: call it off
    /// the runtime.
    fn stop_and_join(mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Connects to the first of `peer`'s addresses that answers within `timeout`.
fn connect(peer: &str, timeout: Duration) -> Option<TcpStream> {
    let timeout = timeout.max(Duration::from_millis(1));
    peer.to_socket_addrs()
        .ok()?
        .find_map(|a| TcpStream::connect_timeout(&a, timeout).ok())
}

/// The watcher thread's loop (the rules are the module doc's). Sends `PrimaryFailed` and returns on a
/// failure; returns without a word when told to stop or when the receiver is gone.
fn watch_heartbeats(
    peer: &str,
    poll: Duration,
    timeout: Duration,
    events: &mpsc::Sender<WatchEvent>,
    stop: &StopSignal,
) {
    let gone = || stop.is_stopped() || events.is_closed();
    let overdue =
        |seen: Option<(Instant, u64)>| seen.is_some_and(|(at, _)| at.elapsed() >= timeout);
    let mut last_seen: Option<(Instant, u64)> = None;
    let mut waiting_logged = false;
    'watch: loop {
        if gone() {
            return;
        }
        let Some(sock) = connect(peer, poll) else {
            if overdue(last_seen) {
                break 'watch;
            }
            if last_seen.is_none() && !waiting_logged {
                info!(peer, "standby: waiting for the primary's first heartbeat");
                waiting_logged = true;
            }
            if stop.sleep(poll / 2) {
                return;
            }
            continue;
        };
        let _ = sock.set_nodelay(true);
        let mut reader = BufReader::new(sock);
        let mut line = Vec::new();
        loop {
            if gone() {
                return;
            }
            let wait = match last_seen {
                Some((at, _)) => timeout.saturating_sub(at.elapsed()),
                None => STOP_POLL,
            };
            if wait.is_zero() {
                break 'watch;
            }
            if reader
                .get_ref()
                .set_read_timeout(Some(wait.min(STOP_POLL)))
                .is_err()
            {
                break;
            }
            // A read that times out keeps what it read of a line in `line`; the next one goes on.
            match reader.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    match serde_json::from_slice::<Heartbeat>(&line) {
                        Ok(hb) => {
                            last_seen = Some((Instant::now(), unix_ms()));
                            // Only the newest checkpoint matters: a full channel may drop this one.
                            let _ = events.try_send(WatchEvent::Heartbeat {
                                checkpoint: hb.checkpoint,
                            });
                        }
                        Err(_) => {
                            let text = String::from_utf8_lossy(&line);
                            warn!(peer, line = text.trim_end(), "not a heartbeat; ignored");
                        }
                    }
                    line.clear();
                }
                // Closed (a line cut short by the close is no heartbeat).
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        if overdue(last_seen) {
            break 'watch;
        }
        // The connection ended before the timeout: reconnect, not in a busy loop.
        if stop.sleep(poll / 2) {
            return;
        }
    }
    let detected_unix_ms = unix_ms();
    let last_heartbeat_unix_ms = last_seen.map_or(0, |(_, ms)| ms);
    let _ = events.blocking_send(WatchEvent::PrimaryFailed {
        last_heartbeat_unix_ms,
        detected_unix_ms,
    });
}

/// The standby's life until it takes over (`Some`) or is shut down (`None`).
async fn watch_then_take_over(
    cfg: Config,
    peer: &str,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<Option<RunningNode>> {
    let mode = cfg.strategy.kind.policy().standby;
    let mirror = if mode == StandbyMode::Mirror {
        let running = start_node(Node::open_standby(cfg.clone()).await?).await?;
        println!("ready {}", running.addresses.join(" "));
        Some(running)
    } else {
        println!("standby {peer}");
        None
    };
    let (events, mut heard) = mpsc::channel(64);
    let watcher = Watcher::start(
        peer.to_string(),
        cfg.strategy.heartbeat_interval,
        cfg.strategy.failure_timeout,
        events,
    )
    .context("cannot start the heartbeat watcher thread")?;
    let mut last_checkpoint = 0;
    let failed = async {
        while let Some(ev) = heard.recv().await {
            match ev {
                WatchEvent::Heartbeat { checkpoint } => {
                    if checkpoint == last_checkpoint {
                        continue;
                    }
                    last_checkpoint = checkpoint;
                    if let Some(m) = &mirror {
                        if let Err(e) = m.node.refresh_committed().await {
                            warn!(error = %e, "standby: could not read the primary's checkpoint");
                        }
                    }
                }
                WatchEvent::PrimaryFailed {
                    last_heartbeat_unix_ms,
                    detected_unix_ms,
                } => return Some((last_heartbeat_unix_ms, detected_unix_ms)),
            }
        }
        None
    };
    let (last_hb, detected) = tokio::select! {
        f = failed => f.context("the heartbeat watcher thread ended")?,
        _ = shutdown => {
            tokio::task::spawn_blocking(move || watcher.stop_and_join()).await?;
            if let Some(m) = mirror {
                m.stop().await?;
            }
            return Ok(None);
        }
    };
    // The thread has ended after its report.
    drop(watcher);
    warn!(
        peer,
        silent_ms = detected.saturating_sub(last_hb),
        "primary failed: no heartbeat within failure_timeout; taking over"
    );
    let running = match mirror {
        Some(m) => {
            m.node.become_primary().await?;
            m
        }
        None => {
            let running = start_node(Node::open(cfg.clone()).await?).await?;
            println!("ready {}", running.addresses.join(" "));
            running
        }
    };
    let ev = TakeoverEvent {
        node: cfg.node.name.clone(),
        epoch: running.node.epoch(),
        last_heartbeat_unix_ms: last_hb,
        detected_unix_ms: detected,
        serving_unix_ms: unix_ms(),
    };
    println!("takeover {}", serde_json::to_string(&ev)?);
    info!(
        epoch = ev.epoch,
        detection_ms = detected - last_hb,
        takeover_ms = ev.serving_unix_ms - detected,
        "took over"
    );
    Ok(Some(running))
}

#[cfg(test)]
mod tests;
