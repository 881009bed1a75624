//! Receivers: how images come in. Each configured source runs as its own task; every connection is its
//! own task, so one misbehaving sender can only ever close its own connection.
//!
//! - [`raw`]: the classic protocol, one image per connection up to EOF, as a listener (push) or by
//!   connecting out to a sender that serves images (pull). No acknowledgement: an image in flight when
//!   the node dies is lost to the sender (as with Spark's socket receiver). Use `framed` for the guarantee.
//! - [`framed`]: ours (docs/PROTOCOL.md): hello, CRC-checked blocks with sequence numbers, *durable*
//!   and *committed* acknowledgements.
//!
//! The receivers sit below the node: they never name it. What they hand blocks to is an [`Intake`] —
//! the few things a connection needs of whoever makes its blocks durable (the in-flight budget,
//! `ingest`, the stop signal, the role to announce, the connection registry for committed acks). The
//! node implements it; tests may drive a receiver with anything else that does.

pub mod framed;
pub mod raw;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// Whoever makes the receivers' blocks durable: the node. Its contract, as the receivers rely on it:
///
/// - [`reserve`](Intake::reserve) waits for room for `len` bytes in flight; the permit is dropped once
///   the block is durable or refused.
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
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
}

/// Binds every listener (so bind errors surface before the node reports ready) and spawns every source.
/// Returns the addresses actually bound, in configuration order (port 0 gets a real port).
pub async fn start<I: Intake>(
    node: &I,
    tasks: &mut JoinSet<()>,
) -> Result<Vec<String>, ReceiverError> {
    let conns = Arc::new(Semaphore::new(node.receiver_config().max_connections));
    let mut bound = Vec::new();
    for src in node.receiver_config().sources.clone() {
        match src {
            SourceConfig::RawListen { address, source } => {
                let l = bind(&address).await?;
                let local = l.local_addr().map(|a| a.to_string()).unwrap_or(address);
                info!(address = %local, source = %source, protocol = "raw", "listening");
                bound.push(local);
                tasks.spawn(raw::listen(node.clone(), l, source, conns.clone()));
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
                let l = bind(&address).await?;
                let local = l.local_addr().map(|a| a.to_string()).unwrap_or(address);
                info!(address = %local, protocol = "framed", "listening");
                bound.push(local);
                tasks.spawn(framed::listen(node.clone(), l, token, conns.clone()));
            }
        }
    }
    Ok(bound)
}

/// Accepts connections until the node stops, each served by `serve` in its own task, at most
/// `max_connections` at once over all listeners (more wait in the kernel's accept queue); then waits
/// for the connections to finish.
pub(crate) async fn accept_loop<I, F, Fut>(
    node: I,
    listener: TcpListener,
    conns: Arc<Semaphore>,
    serve: F,
) where
    I: Intake,
    F: Fn(TcpStream, String) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let stopped = node.stopped();
    tokio::pin!(stopped);
    // Connections are this loop's children: when the node stops, the loop waits for them (each
    // finishes the blocks it has read), so nothing is still ingesting when the WAL closes.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            _ = &mut stopped => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((sock, peer)) => {
                let Ok(permit) = conns.clone().acquire_owned().await else {
                    break;
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
    while connections.join_next().await.is_some() {}
}

async fn bind(address: &str) -> Result<TcpListener, ReceiverError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| ReceiverError::Bind {
            address: address.to_string(),
            source,
        })
}
