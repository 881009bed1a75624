//! The classic raw protocol: one image per TCP connection, the bytes up to EOF are the image.
//!
//! As a listener, senders connect and write one image, then close their side. As a client
//! ([`connect`]), we connect out to a sender that serves one image per connection — the classic Java
//! image server binds its port anew for every image, so "connection refused" between images is normal:
//! we retry with bounded exponential backoff, log at debug, and never give up while the node runs.
//!
//! There is no acknowledgement in this protocol: an image still in flight when the node dies is lost to
//! the sender. A zero-length connection is not an image; an image over `max_block_size` is refused and
//! nothing of it is stored.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tracing::{debug, info, warn};

use super::pace::{grow, Cut, Pace};
use super::{budget_units, Gate, Intake};

/// What of a raw image the node holds without a reservation: raw has no length header, so the first
/// bytes are read before the node knows what to reserve. An image that ends within this is reserved
/// at its length; a longer one reserves `max_block_size` (its length is not known until EOF) and
/// gives back the rest at EOF. This is part of the fixed per-connection memory.
pub const UNRESERVED: usize = 256 * 1024;

/// Why a raw connection yielded no image.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("image is over max_block_size ({max} bytes); dropped")]
    TooLarge { max: u64 },
    #[error(transparent)]
    Cut(#[from] Cut),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one image: every byte up to EOF, reserving it in the node's in-flight budget as it grows
/// (see [`UNRESERVED`]). `Ok(None)` for a connection that sent nothing. Silence for `idle` or a rate
/// under `min_rate` after that grace cuts it ([`Pace`]).
pub async fn read_image<I: Intake>(
    node: &I,
    sock: &mut TcpStream,
    max: u64,
    idle: Duration,
    min_rate: u64,
) -> Result<Option<(Bytes, OwnedSemaphorePermit)>, RawError> {
    let mut pace = Pace::start(idle, min_rate);
    let mut buf: Vec<u8> = Vec::new();
    let mut permit: Option<OwnedSemaphorePermit> = None;
    // One byte past the limit tells an oversized image from one of exactly `max` bytes.
    let limit = max as usize + 1;
    loop {
        if buf.len() >= UNRESERVED && permit.is_none() {
            permit = Some(pace.pause(node.reserve(max as usize)).await);
        }
        let cap = if permit.is_some() {
            limit
        } else {
            UNRESERVED.min(limit)
        };
        grow(&mut buf, cap);
        let want = (cap - buf.len()) as u64;
        let n = pace.read(sock, &mut buf, want).await??;
        if n == 0 {
            break;
        }
        if buf.len() as u64 > max {
            return Err(RawError::TooLarge { max });
        }
    }
    if buf.is_empty() {
        return Ok(None);
    }
    let len = buf.len();
    let permit = match permit {
        Some(mut p) => {
            // Give back what the image did not need.
            let keep = budget_units(len) as usize;
            if p.num_permits() > keep {
                drop(p.split(p.num_permits() - keep));
            }
            p
        }
        None => pace.pause(node.reserve(len)).await,
    };
    Ok(Some((Bytes::from(buf), permit)))
}

async fn handle<I: Intake>(node: &I, mut sock: TcpStream, peer: String, source: &str) {
    let cfg = node.receiver_config();
    let max = cfg.max_block_size.as_u64();
    let (idle, min_rate) = (cfg.idle_timeout, cfg.min_rate.as_u64());
    match read_image(node, &mut sock, max, idle, min_rate).await {
        Ok(Some((image, permit))) => {
            let len = image.len();
            match node.ingest(source, None, image).await {
                Ok(i) => {
                    debug!(peer = %peer, source, seq = i.seq, bytes = len, "raw image durable")
                }
                Err(e) => warn!(peer = %peer, source, error = %e, "raw image not stored"),
            }
            drop(permit);
        }
        Ok(None) => {
            debug!(peer = %peer, source, "empty connection ignored (a zero-length connection is not an image)")
        }
        Err(e) => {
            node.count_rejected();
            warn!(peer = %peer, source, error = %e, "raw image refused")
        }
    }
}

/// Accepts senders until the node stops; each connection is one image. A connection over the
/// listener's share is closed at once (raw has no way to say why).
pub async fn listen<I: Intake>(node: I, listener: TcpListener, source: String, gate: Gate) {
    let n = node.clone();
    super::accept_loop(
        node,
        listener,
        gate,
        move |sock, peer| {
            let node = n.clone();
            let source = source.clone();
            async move { handle(&node, sock, peer, &source).await }
        },
        reset,
    )
    .await
}

/// Refuses a raw connection over the listener's share with a reset, not a clean close: raw has no
/// frame to say why, and a client that wrote its image and then saw a clean end of stream would take
/// the image for delivered. A reset makes its next read or write fail, so it sends again.
fn reset(sock: TcpStream) {
    // SO_LINGER 0: close() sends RST at once and does not block.
    let _ = socket2::SockRef::from(&sock).set_linger(Some(Duration::ZERO));
    drop(sock);
}

/// Pulls images from a sender that serves one per connection, for as long as the node runs.
pub async fn connect<I: Intake>(node: I, address: String, source: String, backoff_max: Duration) {
    let stopped = node.stopped();
    tokio::pin!(stopped);
    let first = Duration::from_millis(10);
    let mut backoff = first;
    let mut refused = 0u64;
    loop {
        let conn = tokio::select! {
            _ = &mut stopped => return,
            c = TcpStream::connect(&address) => c,
        };
        match conn {
            Ok(sock) => {
                if refused > 0 {
                    debug!(address = %address, attempts = refused, "sender accepting again");
                }
                backoff = first;
                refused = 0;
                let peer = sock
                    .peer_addr()
                    .map(|a: SocketAddr| a.to_string())
                    .unwrap_or_else(|_| address.clone());
                // Not raced against the stop: an image being read or ingested is finished first.
                handle(&node, sock, peer, &source).await;
            }
            Err(e) => {
                refused += 1;
                if refused == 1 || refused.is_multiple_of(1000) {
                    debug!(address = %address, error = %e, attempts = refused, "sender not accepting; retrying");
                }
                if refused == 100 {
                    info!(address = %address, error = %e, "sender has not accepted for 100 attempts; still retrying");
                }
                tokio::select! {
                    _ = &mut stopped => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(backoff_max);
            }
        }
    }
}
