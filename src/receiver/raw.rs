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
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::Intake;

/// Why a raw connection yielded no image.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    #[error("image is over max_block_size ({max} bytes); dropped")]
    TooLarge { max: u64 },
    #[error("no data for {0:?}; connection dropped")]
    Idle(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one image: every byte up to EOF. `Ok(None)` for a connection that sent nothing.
pub async fn read_image(
    sock: &mut TcpStream,
    max: u64,
    idle: Duration,
) -> Result<Option<Bytes>, RawError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(buf.len().clamp(64 * 1024, 4 << 20));
        }
        let n = tokio::time::timeout(idle, sock.read_buf(&mut buf))
            .await
            .map_err(|_| RawError::Idle(idle))??;
        if n == 0 {
            break;
        }
        if buf.len() as u64 > max {
            return Err(RawError::TooLarge { max });
        }
    }
    Ok(if buf.is_empty() {
        None
    } else {
        Some(buf.freeze())
    })
}

async fn handle<I: Intake>(node: &I, mut sock: TcpStream, peer: String, source: &str) {
    let max = node.receiver_config().max_block_size.as_u64();
    let idle = node.receiver_config().idle_timeout;
    match read_image(&mut sock, max, idle).await {
        Ok(Some(image)) => {
            let len = image.len();
            let _permit = node.reserve(len).await;
            match node.ingest(source, None, image).await {
                Ok(i) => {
                    debug!(peer = %peer, source, seq = i.seq, bytes = len, "raw image durable")
                }
                Err(e) => warn!(peer = %peer, source, error = %e, "raw image not stored"),
            }
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

/// Accepts senders until the node stops; each connection is one image.
pub async fn listen<I: Intake>(
    node: I,
    listener: TcpListener,
    source: String,
    conns: Arc<Semaphore>,
) {
    let n = node.clone();
    super::accept_loop(node, listener, conns, move |sock, peer| {
        let node = n.clone();
        let source = source.clone();
        async move { handle(&node, sock, peer, &source).await }
    })
    .await
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
