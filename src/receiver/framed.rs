//! The framed protocol's node side (the wire format is in [`crate::protocol`] and docs/PROTOCOL.md).
//!
//! One task reads frames, one writes acks. Every block is made durable by its own task, so a connection
//! pipelines: it keeps reading while earlier blocks wait for the group commit. A protocol error (bad
//! magic, version or token; an oversized or CRC-failing block; a malformed frame) first lets the blocks
//! already read finish and be acknowledged, then sends an ERROR frame naming the reason and closes —
//! nothing else is lost, and other connections never notice.
//!
//! Versions: the WELCOME carries the version the client's hello asked for, and the writer drops every
//! frame that version cannot parse ([`ServerFrame::visible_to`]): a version 1 client never sees a ROLE
//! frame or a checkpointed ack, whatever the node queues for it. A version 2 client is told the node's
//! role and epoch right after WELCOME and again on every change ([`announce_roles`]).

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info, warn};

use super::Intake;
use crate::protocol::{
    read_block, read_hello, AckLevel, ErrorCode, ProtocolError, RoleInfo, ServerFrame, VERSION_2,
};

/// Accepts framed connections until the node stops.
pub async fn listen<I: Intake>(
    node: I,
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

async fn serve<I: Intake>(node: I, sock: TcpStream, peer: String, token: Arc<Option<String>>) {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(256 * 1024, rd);
    let idle = node.receiver_config().idle_timeout;
    let max = node.receiver_config().max_block_size.as_u64();

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
    if let Err(e) = node.admit_source(&hello.source) {
        return refuse(&mut wr, &peer, Some(&hello.source), &e).await;
    }
    let source = hello.source;
    let version = hello.version;
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerFrame>();
    let _ = tx.send(ServerFrame::Welcome {
        version,
        max_block_size: max as u32,
    });
    // Version 2: ROLE is the second frame, then one on every change of role or epoch.
    let _roles = announce_roles(version, node.roles(), &tx);
    let conn_id = node.register_conn(&source, tx.clone());
    info!(peer = %peer, source = %source, version, "framed connection");

    // The writer: acks in the order they are ready, flushed when the queue runs dry; only the frames
    // the client's version can parse. On a version 2 connection it writes the last ROLE again when it
    // has written nothing for `keepalive_interval` (docs/PROTOCOL.md: keepalives).
    let keepalive = node.receiver_config().keepalive_interval;
    let writer = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(4096);
        let mut last_role: Option<ServerFrame> = None;
        loop {
            let next = if version >= VERSION_2 {
                match tokio::time::timeout(keepalive, rx.recv()).await {
                    Ok(f) => f,
                    Err(_) => match &last_role {
                        Some(role) => Some(role.clone()),
                        None => continue,
                    },
                }
            } else {
                rx.recv().await
            };
            let Some(f) = next else { break };
            let mut take = |f: ServerFrame| {
                if !f.visible_to(version) {
                    return;
                }
                f.encode(&mut buf);
                if matches!(f, ServerFrame::Role { .. }) {
                    // The first ROLE goes out twice: a repeat is a keepalive, and saying one at
                    // once tells the client this node sends them (docs/PROTOCOL.md).
                    if last_role.is_none() {
                        f.encode(&mut buf);
                    }
                    last_role = Some(f);
                }
            };
            take(f);
            while let Ok(f) = rx.try_recv() {
                take(f);
            }
            if buf.is_empty() {
                continue;
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
                if let Err(e) = node.admit_block(&source, block.seq) {
                    break Err(e);
                }
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
        node.count_rejected();
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

/// Tells a version 2 client the node's role: queues a ROLE frame for the current value of `roles` now
/// (call it right after queueing WELCOME, so ROLE is the second frame), then one for every change.
/// Version 1 clients get nothing (the writer would drop the frames anyway). The task holds only a weak
/// sender, so it never keeps the connection's writer open; it ends when the returned guard is dropped,
/// when the connection's queue is gone, or when the node drops its side of `roles`.
pub fn announce_roles(
    version: u8,
    mut roles: watch::Receiver<RoleInfo>,
    tx: &mpsc::UnboundedSender<ServerFrame>,
) -> Option<RoleAnnouncer> {
    if version < VERSION_2 {
        return None;
    }
    let role_frame = |r: RoleInfo| ServerFrame::Role {
        role: r.role,
        epoch: r.epoch,
    };
    let mut last = *roles.borrow_and_update();
    tx.send(role_frame(last)).ok()?;
    let tx = tx.downgrade();
    Some(RoleAnnouncer(tokio::spawn(async move {
        while roles.changed().await.is_ok() {
            let now = *roles.borrow_and_update();
            if now == last {
                continue;
            }
            last = now;
            let Some(tx) = tx.upgrade() else { return };
            if tx.send(role_frame(now)).is_err() {
                return;
            }
        }
    })))
}

/// Stops announcing roles when dropped (see [`announce_roles`]).
#[derive(Debug)]
pub struct RoleAnnouncer(JoinHandle<()>);

impl RoleAnnouncer {
    /// Whether the task has ended on its own.
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for RoleAnnouncer {
    fn drop(&mut self) {
        self.0.abort();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Role, VERSION_1};
    use std::time::Duration;

    #[tokio::test]
    async fn a_version_2_connection_is_told_the_role_first_and_then_every_change() {
        let (set, roles) = watch::channel(RoleInfo {
            role: Role::Standby,
            epoch: 3,
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        let announcer = announce_roles(VERSION_2, roles, &tx).expect("a version 2 client is told");
        assert_eq!(
            rx.try_recv().ok(),
            Some(ServerFrame::Role {
                role: Role::Standby,
                epoch: 3
            }),
            "the current role is queued before announce_roles returns"
        );
        set.send(RoleInfo {
            role: Role::Primary,
            epoch: 4,
        })
        .unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(
            next.unwrap(),
            Some(ServerFrame::Role {
                role: Role::Primary,
                epoch: 4
            })
        );
        // The announcer holds no strong sender: once the connection drops its own, the queue closes
        // (the writer would end) even though the announcer is still running.
        drop(tx);
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert_eq!(closed.unwrap(), None);
        assert!(!announcer.is_finished());
        drop(announcer);
    }

    #[tokio::test]
    async fn a_version_1_connection_is_never_told_a_role() {
        let (_set, roles) = watch::channel(RoleInfo {
            role: Role::Primary,
            epoch: 1,
        });
        let (tx, mut rx) = mpsc::unbounded_channel();
        assert!(announce_roles(VERSION_1, roles, &tx).is_none());
        drop(tx);
        assert!(rx.recv().await.is_none(), "nothing was queued");
    }
}
