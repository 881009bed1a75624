//! A standby's life: stand by (an active standby runs its node in standby mode and trims by the
//! primary's checkpoints), watch the primary's heartbeats, take over when they stop, and say so on
//! stdout with a `takeover` line.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use strategies::StandbyMode;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::heartbeat::unix_ms;
use super::watch::{WatchEvent, Watcher};
use crate::config::Config;
use crate::node::{open_store, start_node, Node, NodeError, RunningNode};

/// The `takeover` line a standby prints when it takes over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TakeoverEvent {
    pub node: String,
    pub epoch: u64,
    pub last_heartbeat_unix_ms: u64,
    pub detected_unix_ms: u64,
    pub serving_unix_ms: u64,
}

/// Becomes the primary: the mirror node promotes itself, or a node is opened as primary. A takeover
/// that fails after it claimed its epoch has fenced the old primary already, so giving up would leave
/// the pipeline with no primary at all: it is tried again, with a backoff from `failure_timeout`
/// doubling to eight times that, until it works or the role is shut down (`None`). What it does not
/// retry: a failure before its claim (nothing was fenced: the error stands, as at any start), and a
/// newer epoch claimed by another node (someone else took over: this node is fenced).
async fn take_over(
    cfg: &Config,
    mut mirror: Option<RunningNode>,
    shutdown: &mut (impl std::future::Future<Output = ()> + Unpin),
) -> anyhow::Result<Option<RunningNode>> {
    let store = open_store(cfg).await?;
    let me = &cfg.node.name;
    let mut attempt = 1u32;
    let mut retry_in = cfg.strategy.failure_timeout;
    loop {
        let before = strategies::epoch::latest(&*store).await?;
        let failed = match mirror.take() {
            Some(m) => match m.node.become_primary().await {
                Ok(()) => return Ok(Some(m)),
                Err(e) => {
                    let for_good =
                        matches!(e, NodeError::Fenced(_)) || m.node.stop_reason().is_some();
                    if for_good {
                        return Err(e.into());
                    }
                    mirror = Some(m);
                    anyhow::Error::from(e)
                }
            },
            None => match Node::open(cfg.clone()).await {
                Ok(node) => {
                    let running = start_node(node).await?;
                    println!("ready {}", running.addresses.join(" "));
                    return Ok(Some(running));
                }
                Err(e @ NodeError::Fenced(_)) => return Err(e.into()),
                Err(e) => anyhow::Error::from(e),
            },
        };
        let after = strategies::epoch::latest(&*store).await?;
        if after == before {
            return Err(failed.context("the takeover failed before it claimed an epoch"));
        }
        let claimant = match after {
            Some(e) => strategies::epoch::claim_of(&*store, e)
                .await?
                .map(|c| c.node),
            None => None,
        };
        if claimant.as_deref() != Some(me.as_str()) {
            return Err(failed.context(format!(
                "the takeover failed and epoch {} belongs to {}: another node took over",
                after.unwrap_or(0),
                claimant.unwrap_or_else(|| "nobody".into())
            )));
        }
        warn!(attempt, error = %format!("{failed:#}"), retry_in_ms = retry_in.as_millis() as u64,
              "the takeover failed after its claim; trying again (the old primary is fenced already)");
        attempt += 1;
        tokio::select! {
            _ = tokio::time::sleep(retry_in) => {}
            _ = &mut *shutdown => {
                if let Some(m) = mirror {
                    m.stop().await?;
                }
                return Ok(None);
            }
        }
        retry_in = (retry_in * 2).min(cfg.strategy.failure_timeout * 8);
    }
}

/// The standby's life until it takes over (`Some`) or is shut down (`None`).
pub(super) async fn watch_then_take_over(
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
        _ = &mut *shutdown => {
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
    let running = take_over(&cfg, mirror, shutdown).await?;
    let Some(running) = running else {
        return Ok(None);
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
