//! What a push is told: protocol, mode, targets, pacing, retention bounds and timeouts, and their
//! defaults for a configuration's strategy.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use strategies::Release;

use super::timeline::Timeline;
use crate::config::Config;
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

/// How far a push has been told to stop (`send push` on SIGINT or SIGTERM); the levels only go up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stop {
    /// Taking images until `count` are released.
    #[default]
    Running,
    /// Take no new image; finish releasing what was sent (every kept block), then end.
    Drain,
    /// End now: what is sent and not released yet goes into the manifest as not acknowledged.
    Now,
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
    /// This run continues an earlier one with the same `source_prefix` and images (a sender killed
    /// and started again re-sends from the first image): a node that already holds a block is not
    /// an error. Without it, a node answering a block's first send with HELD fails the push
    /// ([`super::report::PushError::SourceReused`]).
    pub resume: bool,
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
    /// no more bytes is given up on (failover: the next target). Also bounds connect + hello. What one
    /// stream queues for one node is bounded by `retention_max_bytes` (so `concurrency` times that per
    /// node).
    pub stall_timeout: Duration,
    /// A connected node that sends keepalives (protocol v2) and says nothing at all — no ack, no ROLE,
    /// no keepalive — for this long while blocks are kept is given up on, whatever the kernel buffers
    /// still take. Shorter than `stall_timeout` can be, since a live node's keepalives arrive every
    /// `receiver.keepalive_interval` however busy it is; with a standby it is the failure timeout the
    /// standby judges the primary by.
    pub silence_timeout: Duration,
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
            resume: false,
            token: None,
            window: 256,
            release: AckLevel::Durable,
            retention_max_bytes: 1 << 30,
            retention_max_blocks: 1 << 16,
            stall_timeout: Duration::from_secs(10),
            silence_timeout: Duration::from_secs(10),
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
    /// a stall timeout of twice `strategy.failure_timeout` and a silence timeout of
    /// `strategy.failure_timeout + receiver.keepalive_interval`: a primary that says nothing, not even
    /// a keepalive, for as long as its standby waits for its heartbeats (and one keepalive period
    /// more, so that a node slowed for a moment is not left before its standby would take over) is
    /// left about when the standby takes over, and one that talks but makes no progress later. (With `none` there is no one to fail over to, so both
    /// stay at the defaults: a node slowed by backpressure is not reconnected to over and over.)
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
            o.silence_timeout = st.failure_timeout + cfg.receiver.keepalive_interval;
        } else {
            // A node's keepalives may be up to a minute apart: never call a live node silent.
            o.silence_timeout = o.silence_timeout.max(3 * cfg.receiver.keepalive_interval);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sender_reading_a_config_whose_keepalives_are_far_apart_does_not_take_the_node_for_silent()
    {
        let mut cfg = Config::default();
        cfg.receiver.keepalive_interval = Duration::from_secs(30);
        let o = PushOptions::for_config(&cfg);
        assert!(
            o.silence_timeout >= 3 * cfg.receiver.keepalive_interval,
            "silence timeout {:?} under three keepalive intervals",
            o.silence_timeout
        );
        assert_eq!(
            PushOptions::for_config(&Config::default()).silence_timeout,
            PushOptions::default().silence_timeout,
            "the default keepalive keeps the default silence timeout"
        );
    }
}
