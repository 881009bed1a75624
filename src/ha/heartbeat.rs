//! Heartbeats, the primary's end: the line it writes, an accept thread and one writer thread per
//! standby (the module doc of [`super`] says why threads), and the tick task whose age tells the
//! writers whether the node's runtime still makes progress.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tracing::{debug, info, warn};

use crate::config::StrategyConfig;
use crate::node::Node;

/// A primary whose runtime has not run its tick task for this many `failure_timeout`s withholds its
/// heartbeats (see the module doc).
pub const RUNTIME_STALL_TIMEOUTS: u32 = 10;

/// How often the primary's accept thread polls its nonblocking listener.
pub const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// The longest a heartbeat thread blocks in a read before it looks whether it was told to stop.
pub(super) const STOP_POLL: Duration = Duration::from_millis(50);

/// One heartbeat line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub node: String,
    pub epoch: u64,
    pub checkpoint: u64,
}

/// The Unix milliseconds the `takeover` line and the watcher's events carry.
pub(super) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A stop flag that heartbeat threads can sleep on.
#[derive(Default)]
pub(super) struct StopSignal {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl StopSignal {
    pub(super) fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.wake.notify_all();
    }

    pub(super) fn is_stopped(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sleeps for `d` or until told to stop; true if told to stop.
    pub(super) fn sleep(&self, d: Duration) -> bool {
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
pub(super) struct SenderTimes {
    /// Between two heartbeats on one connection.
    pub(super) every: Duration,
    /// A write blocked this long drops the connection (the standby reconnects).
    write_timeout: Duration,
    /// How often the runtime's tick task stamps its progress.
    tick: Duration,
    /// Heartbeats are withheld while the stamp is older than this.
    pub(super) stall_limit: Duration,
}

impl SenderTimes {
    pub(super) fn of(s: &StrategyConfig) -> SenderTimes {
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
pub(super) struct HeartbeatSender {
    stop: Arc<StopSignal>,
    pub(super) accept: Option<JoinHandle<()>>,
    ticker: tokio::task::JoinHandle<()>,
}

impl HeartbeatSender {
    /// Starts serving heartbeats on `listener`. Call it on the node's runtime: the tick task is
    /// spawned there.
    pub(super) fn start(
        node: Node,
        listener: TcpListener,
        times: SenderTimes,
    ) -> io::Result<HeartbeatSender> {
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
    pub(super) fn stop_and_join(mut self) {
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
