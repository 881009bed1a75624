//! Receivers: how images come in. Each configured source runs as its own task; every connection is its
//! own task, so one misbehaving sender can only ever close its own connection.
//!
//! - [`raw`]: the classic protocol, one image per connection up to EOF, as a listener (push) or by
//!   connecting out to a sender that serves images (pull). No acknowledgement: an image in flight when
//!   the node dies is lost to the sender (as with Spark's socket receiver). Use `framed` for the guarantee.
//! - [`framed`]: ours (docs/PROTOCOL.md): hello, CRC-checked blocks with sequence numbers, *durable*
//!   and *committed* acknowledgements.
//!
//! - [`pace`]: the timeouts both share — silence, not a block's duration, and a minimum rate.
//! - [`limits`]: descriptors — the open-files limit raised at start and `max_connections` checked
//!   against it.
//!
//! Bounded by construction: a block's bytes are reserved in the in-flight budget before its body is
//! read, each listener serves at most its share of `max_connections` (one over it is refused at once,
//! counted and logged once per [`REFUSAL_LOG_INTERVAL`]), and a framed connection's ack queue is
//! bounded, its writer giving up after `write_timeout`.
//!
//! The receivers sit below the node: they never name it. What they hand blocks to is an [`Intake`] —
//! the few things a connection needs of whoever makes its blocks durable (the in-flight budget,
//! `ingest`, the stop signal, the role to announce, the connection registry for committed acks). The
//! node implements it; tests may drive a receiver with anything else that does.

pub mod framed;
pub mod limits;
pub mod pace;
pub mod raw;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::{ReceiverConfig, SourceConfig};
use crate::protocol::{ProtocolError, RoleInfo, ServerFrame};

/// What an [`Intake::ingest`] did with a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ingested {
    pub seq: u64,
    /// It was durable already (or became so through another copy in flight); nothing new was stored.
    pub duplicate: bool,
    /// It is in a committed batch already.
    pub committed: bool,
}

/// The in-flight budget counts in units of this many bytes: [`Intake::reserve`] of `len` bytes takes
/// [`budget_units`]`(len)` permits, so a receiver can give back part of a reservation (`split`).
pub const BUDGET_UNIT: usize = 1024;

/// The permits a reservation of `len` bytes takes (at least one).
pub fn budget_units(len: usize) -> u32 {
    len.div_ceil(BUDGET_UNIT).max(1) as u32
}

/// Whoever makes the receivers' blocks durable: the node. Its contract, as the receivers rely on it:
///
/// - [`reserve`](Intake::reserve) waits for room for `len` bytes in flight ([`budget_units`] permits);
///   the receivers call it before they read a block's body, and drop the permit once the block is
///   durable or refused.
/// - [`ingest`](Intake::ingest) makes a block durable exactly once and returns only after the fdatasync
///   that covers it; `seq: None` gives it the source's next sequence number (raw sources). Only then
///   may a receiver acknowledge it. An error costs that block (and its connection), nothing else.
/// - [`stopped`](Intake::stopped) resolves once the intake is told to stop; listeners stop accepting.
/// - [`roles`](Intake::roles) is the role and epoch a protocol-v2 connection announces.
/// - [`register_conn`](Intake::register_conn) names the queue that gets a source's later (*committed*,
///   *checkpointed*) acks, replacing an older connection of that source, until
///   [`unregister_conn`](Intake::unregister_conn).
pub trait Intake: Clone + Send + Sync + 'static {
    /// Why a block was not made durable.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The receivers' limits, timeouts and sources.
    fn receiver_config(&self) -> &ReceiverConfig;
    fn reserve(&self, len: usize) -> impl Future<Output = OwnedSemaphorePermit> + Send;
    fn ingest(
        &self,
        source: &str,
        seq: Option<u64>,
        data: Bytes,
    ) -> impl Future<Output = Result<Ingested, Self::Error>> + Send;
    fn stopped(&self) -> impl Future<Output = ()> + Send + 'static;
    /// Whether a framed connection may call itself `source` (the node refuses a raw source's name);
    /// refused, the hello is answered with the error's ERROR frame.
    fn admit_source(&self, _source: &str) -> Result<(), ProtocolError> {
        Ok(())
    }
    /// Whether a framed block may be taken (the node bounds its per-source state); refused, the
    /// blocks already read are finished, then the ERROR frame, then the connection is closed.
    fn admit_block(&self, _source: &str, _seq: u64) -> Result<(), ProtocolError> {
        Ok(())
    }
    fn roles(&self) -> watch::Receiver<RoleInfo>;
    fn register_conn(&self, source: &str, tx: mpsc::UnboundedSender<ServerFrame>) -> u64;
    fn unregister_conn(&self, source: &str, id: u64);
    /// Counts an image or a connection refused for what its client sent.
    fn count_rejected(&self);
}

/// Why the receivers could not start.
#[derive(Debug, thiserror::Error)]
pub enum ReceiverError {
    #[error("{key}: cannot listen on {address}: {source}")]
    Bind {
        key: String,
        address: String,
        source: std::io::Error,
    },
}

/// Binds every listener (so bind errors surface before the node reports ready) and spawns every source.
/// Returns the addresses actually bound, in configuration order (port 0 gets a real port). Each listener
/// gets its own share of `max_connections` ([`shares`]).
pub async fn start<I: Intake>(
    node: &I,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<String>, ReceiverError> {
    let sources = node.receiver_config().sources.clone();
    let mut shares = shares(node.receiver_config()).into_iter();
    let mut bound = Vec::new();
    for (i, src) in sources.into_iter().enumerate() {
        let key = format!("receiver.sources[{i}].address");
        match src {
            SourceConfig::RawListen { address, source } => {
                let l = bind(&key, &address).await?;
                let local = l.local_addr().map(|a| a.to_string()).unwrap_or(address);
                let share = shares.next().unwrap_or(1);
                info!(address = %local, source = %source, protocol = "raw", max_connections = share, "listening");
                let gate = Gate::new(share, "raw", &local);
                bound.push(local);
                tasks.spawn(raw::listen(node.clone(), l, source, gate));
            }
            SourceConfig::RawConnect {
                address,
                source,
                backoff_max,
            } => {
                info!(address = %address, source = %source, protocol = "raw", "pulling images from a sender");
                bound.push(address.clone());
                tasks.spawn(raw::connect(node.clone(), address, source, backoff_max));
            }
            SourceConfig::FramedListen { address, token } => {
                let l = bind(&key, &address).await?;
                let local = l.local_addr().map(|a| a.to_string()).unwrap_or(address);
                let share = shares.next().unwrap_or(1);
                info!(address = %local, protocol = "framed", max_connections = share, "listening");
                let gate = Gate::new(share, "framed", &local);
                bound.push(local);
                tasks.spawn(framed::listen(node.clone(), l, token, gate));
            }
        }
    }
    Ok(bound)
}

/// Each listener's share of `max_connections`, in configuration order: an equal part (the first ones
/// get one more when it does not divide), so a flood on one listener cannot lock another's senders out.
pub fn shares(cfg: &ReceiverConfig) -> Vec<usize> {
    let n = cfg
        .sources
        .iter()
        .filter(|s| !matches!(s, SourceConfig::RawConnect { .. }))
        .count();
    if n == 0 {
        return Vec::new();
    }
    let (each, extra) = (cfg.max_connections / n, cfg.max_connections % n);
    (0..n)
        .map(|i| (each + usize::from(i < extra)).max(1))
        .collect()
}

/// How often at most a listener logs the connections it refused for being over its share.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// One listener's share of the connections, and the count of those it refused.
pub struct Gate {
    slots: Arc<Semaphore>,
    share: usize,
    protocol: &'static str,
    address: String,
    refused_total: u64,
    /// Refused since the last log line.
    unlogged: u64,
    last_log: Option<Instant>,
}

impl Gate {
    pub fn new(share: usize, protocol: &'static str, address: &str) -> Gate {
        Gate {
            slots: Arc::new(Semaphore::new(share)),
            share,
            protocol,
            address: address.to_string(),
            refused_total: 0,
            unlogged: 0,
            last_log: None,
        }
    }

    /// Counts one refused connection; logs at most once per [`REFUSAL_LOG_INTERVAL`] (the first one at
    /// once, later ones when the interval is over: see [`Gate::flush_at`]).
    fn refused(&mut self) {
        self.refused_total += 1;
        self.unlogged += 1;
        if self
            .last_log
            .is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL)
        {
            self.log();
        }
    }

    /// When the refusals not yet logged are due, if there are any.
    fn flush_at(&self) -> Option<Instant> {
        (self.unlogged > 0).then(|| {
            self.last_log
                .map_or_else(Instant::now, |t| t + REFUSAL_LOG_INTERVAL)
        })
    }

    fn log(&mut self) {
        if self.unlogged == 0 {
            return;
        }
        warn!(
            protocol = self.protocol,
            address = %self.address,
            max_connections = self.share,
            refused = self.unlogged,
            refused_total = self.refused_total,
            "connections over this listener's share of receiver.max_connections refused"
        );
        self.unlogged = 0;
        self.last_log = Some(Instant::now());
    }
}

/// Accepts connections until the node stops, each served by `serve` in its own task, at most the
/// gate's share at once; one over it is handed to `refuse` at once (which must not wait: it is on the
/// accept loop) and closed. Then waits for the connections to finish.
pub(crate) async fn accept_loop<I, F, Fut, R>(
    node: I,
    listener: TcpListener,
    mut gate: Gate,
    serve: F,
    refuse: R,
) where
    I: Intake,
    F: Fn(TcpStream, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
    R: Fn(TcpStream),
{
    let stopped = node.stopped();
    tokio::pin!(stopped);
    // Connections are this loop's children: when the node stops, the loop waits for them (each
    // finishes the blocks it has read), so nothing is still ingesting when the WAL closes.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let flush = gate.flush_at();
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            a = listener.accept() => a,
            _ = async { tokio::time::sleep_until(flush.expect("guarded")).await }, if flush.is_some() => {
                gate.log();
                continue;
            }
        };
        match accepted {
            Ok((sock, peer)) => {
                let Ok(permit) = gate.slots.clone().try_acquire_owned() else {
                    node.count_rejected();
                    gate.refused();
                    refuse(sock);
                    continue;
                };
                let task = serve(sock, peer.to_string());
                connections.spawn(async move {
                    task.await;
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    gate.log();
    while connections.join_next().await.is_some() {}
}

async fn bind(key: &str, address: &str) -> Result<TcpListener, ReceiverError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ReceiverError::Bind {
            key: key.to_string(),
            address: address.to_string(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn each_listener_gets_an_equal_share_and_outbound_sources_none() {
        let mut cfg = Config::default().receiver;
        assert_eq!(shares(&cfg), vec![256, 256]);
        cfg.max_connections = 5;
        cfg.sources.push(SourceConfig::RawConnect {
            address: "127.0.0.1:1".into(),
            source: "c".into(),
            backoff_max: Duration::from_secs(1),
        });
        cfg.sources.push(SourceConfig::FramedListen {
            address: "127.0.0.1:2".into(),
            token: None,
        });
        assert_eq!(shares(&cfg), vec![2, 2, 1]);
    }
}
