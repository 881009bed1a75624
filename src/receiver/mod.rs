//! Receivers: how images come in. Each configured source runs as its own task; every connection is its
//! own task, so one misbehaving sender can only ever close its own connection.
//!
//! - [`raw`]: the classic protocol, one image per connection up to EOF, as a listener (push) or by
//!   connecting out to a sender that serves images (pull). No acknowledgement: an image in flight when
//!   the node dies is lost to the sender (as with Spark's socket receiver). Use `framed` for the guarantee.
//! - [`framed`]: ours (docs/PROTOCOL.md): hello, CRC-checked blocks with sequence numbers, *durable*
//!   and *committed* acknowledgements.

pub mod framed;
pub mod raw;

use std::sync::Arc;

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::SourceConfig;
use crate::error::NodeError;
use crate::node::Node;

/// Binds every listener (so bind errors surface before the node reports ready) and spawns every source.
/// Returns the addresses actually bound, in configuration order (port 0 gets a real port).
pub async fn start(node: &Node, tasks: &mut JoinSet<()>) -> Result<Vec<String>, NodeError> {
    let conns = Arc::new(Semaphore::new(node.config().receiver.max_connections));
    let mut bound = Vec::new();
    for src in node.config().receiver.sources.clone() {
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
pub(crate) async fn accept_loop<F, Fut>(
    node: Node,
    listener: TcpListener,
    conns: Arc<Semaphore>,
    serve: F,
) where
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

async fn bind(address: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Bind {
            address: address.to_string(),
            source,
        })
}
