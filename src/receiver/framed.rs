//! The framed protocol's node side (the wire format is in [`super::protocol`] and docs/PROTOCOL.md).
//!
//! One task reads frames, one writes acks. Every block is made durable by its own task, so a connection
//! pipelines: it keeps reading while earlier blocks wait for the group commit. A protocol error (bad
//! magic, version or token; an oversized or CRC-failing block; a malformed frame) first lets the blocks
//! already read finish and be acknowledged, then sends an ERROR frame naming the reason and closes —
//! nothing else is lost, and other connections never notice.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use super::protocol::{
    read_block, read_hello, AckLevel, ErrorCode, ProtocolError, ServerFrame, VERSION,
};
use crate::node::Node;

/// Accepts framed connections until the node stops.
pub async fn listen(
    node: Node,
    listener: TcpListener,
    token: Option<String>,
    conns: Arc<Semaphore>,
) {
    let token = Arc::new(token);
    let n = node.clone();
    super::accept_loop(node, listener, conns, move |sock, peer| {
        let _ = sock.set_nodelay(true);
        serve(n.clone(), sock, peer, token.clone())
    })
    .await
}

fn tokens_match(expected: &str, got: &str) -> bool {
    // Length leaks, content does not.
    expected.len() == got.len()
        && expected
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn serve(node: Node, sock: TcpStream, peer: String, token: Arc<Option<String>>) {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    let idle = node.config().receiver.idle_timeout;
    let max = node.config().receiver.max_block_size.as_u64();

    let hello = match tokio::time::timeout(idle, read_hello(&mut rd)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return refuse(&mut wr, &peer, None, &e).await,
        Err(_) => return debug!(peer = %peer, "no hello before the idle timeout; closed"),
    };
    if let Some(expected) = token.as_deref() {
        if !hello
            .token
            .as_deref()
            .is_some_and(|t| tokens_match(expected, t))
        {
            return refuse(
                &mut wr,
                &peer,
                Some(&hello.source),
                &ProtocolError::Unauthorized(hello.source.clone()),
            )
            .await;
        }
    }
    let source = hello.source;
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerFrame>();
    let _ = tx.send(ServerFrame::Welcome {
        version: VERSION,
        max_block_size: max as u32,
    });
    let conn_id = node.register_conn(&source, tx.clone());
    info!(peer = %peer, source = %source, "framed connection");

    // The writer: acks in the order they are ready, flushed when the queue runs dry.
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(4096);
        while let Some(f) = rx.recv().await {
            f.encode(&mut buf);
            while let Ok(f) = rx.try_recv() {
                f.encode(&mut buf);
            }
            if wr.write_all(&buf).await.is_err() {
                return None;
            }
            buf.clear();
        }
        Some(wr)
    });

    let mut inflight = JoinSet::new();
    let outcome: Result<(), ProtocolError> = loop {
        // Reap finished blocks so the set does not grow.
        while inflight.try_join_next().is_some() {}
        let next = tokio::select! {
            r = tokio::time::timeout(idle, read_block(&mut rd, max)) => r,
            _ = node.stopped() => break Err(ProtocolError::Refused { code: ErrorCode::ShuttingDown, message: "node is stopping".into() }),
        };
        match next {
            Err(_) => {
                debug!(peer = %peer, source = %source, "idle timeout; closed");
                break Ok(());
            }
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e),
            Ok(Ok(Some(block))) => {
                let permit = node.reserve(block.data.len()).await;
                let node = node.clone();
                let tx = tx.clone();
                let source = source.clone();
                inflight.spawn(async move {
                    let seq = block.seq;
                    match node.ingest(&source, Some(seq), block.data).await {
                        Ok(i) => {
                            let _ = tx.send(ServerFrame::Ack {
                                level: AckLevel::Durable,
                                seq,
                            });
                            if i.committed {
                                let _ = tx.send(ServerFrame::Ack {
                                    level: AckLevel::Committed,
                                    seq,
                                });
                            }
                        }
                        Err(e) => {
                            let _ = tx.send(ServerFrame::Error {
                                code: ErrorCode::Internal,
                                message: e.to_string(),
                            });
                        }
                    }
                    drop(permit);
                });
            }
        }
    };
    // Blocks already read are finished and acknowledged before any error frame.
    while inflight.join_next().await.is_some() {}
    if let Err(e) = &outcome {
        node.stats()
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        warn!(peer = %peer, source = %source, error = %e, "framed connection refused");
        let _ = tx.send(ServerFrame::Error {
            code: e.code(),
            message: e.to_string(),
        });
    }
    node.unregister_conn(&source, conn_id);
    drop(tx);
    if let Ok(Some(mut wr)) = writer.await {
        let _ = wr.shutdown().await;
    }
    debug!(peer = %peer, source = %source, "framed connection closed");
}

async fn refuse(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    peer: &str,
    source: Option<&str>,
    e: &ProtocolError,
) {
    warn!(peer = %peer, source = source.unwrap_or("-"), error = %e, "framed hello refused");
    let _ = ServerFrame::Error {
        code: e.code(),
        message: e.to_string(),
    }
    .write(wr)
    .await;
    let _ = wr.shutdown().await;
}
