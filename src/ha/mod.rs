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

mod heartbeat;
mod takeover;
mod watch;

pub use heartbeat::{Heartbeat, ACCEPT_POLL, RUNTIME_STALL_TIMEOUTS};
pub use takeover::TakeoverEvent;

use std::net::TcpListener;
#[cfg(feature = "failpoints")]
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use tracing::{debug, warn};

use crate::config::{Config, NodeRole};
use crate::node::{start_node, Node, RunningNode};
use heartbeat::{HeartbeatSender, SenderTimes};
use takeover::watch_then_take_over;

/// Runs one role until `shutdown` resolves or the node stops (fenced, failed).
pub async fn run_role(
    base: Config,
    role: NodeRole,
    start_as_standby: bool,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let cfg = base.for_role(role)?;
    // Descriptors first: a node that cannot serve its max_connections says so before it opens anything.
    crate::receiver::limits::prepare(&cfg)?;
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

#[cfg(test)]
mod tests;
