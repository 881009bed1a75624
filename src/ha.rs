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
//! # What a run prints on stdout
//!
//! `ready <addresses>` once serving (as primary, or as an active standby), `standby <peer control
//! address>` while an idle standby watches, and one `takeover {json}` line when a standby takes over,
//! with the Unix milliseconds of the last heartbeat seen, the detection, and the moment it serves.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strategies::StandbyMode;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::cli::{start_node, RunningNode};
use crate::config::{Config, NodeRole};
use crate::node::Node;

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
        return crate::cli::run_node(cfg, shutdown).await;
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

/// The primary's life: heartbeats on the control address, a fence check every `failure_timeout`, until
/// shutdown or until the node stops.
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
    let hb = tokio::spawn(serve_heartbeats(
        node.clone(),
        listener,
        cfg.strategy.heartbeat_interval,
    ));
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
                    if matches!(e, crate::error::NodeError::Fenced(_)) {
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
    hb.abort();
    fence.abort();
    running.stop().await
}

/// Binds the control address, retrying for a while (a fenced predecessor on this host may still hold it).
async fn bind_retrying(address: &str, node: &Node) -> anyhow::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(address).await {
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

async fn serve_heartbeats(node: Node, listener: TcpListener, every: Duration) {
    info!(address = ?listener.local_addr().ok(), "serving heartbeats");
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let node = node.clone();
        tokio::spawn(async move {
            let _ = sock.set_nodelay(true);
            debug!(%peer, "standby connected for heartbeats");
            loop {
                if node.stop_reason().is_some() {
                    return;
                }
                let hb = Heartbeat {
                    node: node.config().node.name.clone(),
                    epoch: node.epoch(),
                    checkpoint: node.checkpoint_id(),
                };
                let mut line = serde_json::to_vec(&hb).expect("heartbeat encodes");
                line.push(b'\n');
                if sock.write_all(&line).await.is_err() {
                    return;
                }
                tokio::time::sleep(every).await;
            }
        });
    }
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
    let timeout = cfg.strategy.failure_timeout;
    let poll = cfg.strategy.heartbeat_interval;
    let mut last_seen: Option<(Instant, u64)> = None;
    let mut last_checkpoint = 0;
    let mut waiting_logged = false;
    let watch = async {
        loop {
            let conn = tokio::time::timeout(poll, TcpStream::connect(peer)).await;
            let Ok(Ok(sock)) = conn else {
                if let Some((seen, _)) = last_seen {
                    if seen.elapsed() >= timeout {
                        return;
                    }
                } else if !waiting_logged {
                    info!(peer, "standby: waiting for the primary's first heartbeat");
                    waiting_logged = true;
                }
                tokio::time::sleep(poll / 2).await;
                continue;
            };
            let mut lines = BufReader::new(sock).lines();
            loop {
                let wait = match last_seen {
                    Some((seen, _)) => timeout.saturating_sub(seen.elapsed()),
                    None => Duration::from_secs(3600),
                };
                match tokio::time::timeout(wait, lines.next_line()).await {
                    Ok(Ok(Some(line))) => {
                        let Ok(hb) = serde_json::from_str::<Heartbeat>(&line) else {
                            warn!(peer, line, "not a heartbeat; ignored");
                            continue;
                        };
                        last_seen = Some((Instant::now(), unix_ms()));
                        if hb.checkpoint != last_checkpoint {
                            last_checkpoint = hb.checkpoint;
                            if let Some(m) = &mirror {
                                if let Err(e) = m.node.refresh_committed().await {
                                    warn!(error = %e, "standby: could not read the primary's checkpoint");
                                }
                            }
                        }
                    }
                    Ok(Ok(None)) | Ok(Err(_)) => break,
                    Err(_) => return,
                }
            }
            if last_seen.is_some_and(|(seen, _)| seen.elapsed() >= timeout) {
                return;
            }
        }
    };
    tokio::select! {
        _ = watch => {}
        _ = shutdown => {
            if let Some(m) = mirror {
                m.stop().await?;
            }
            return Ok(None);
        }
    }
    let detected = unix_ms();
    let last_hb = last_seen.map_or(0, |(_, ms)| ms);
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
