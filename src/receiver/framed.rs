//! The framed protocol's node side (the wire format is in [`crate::protocol`] and docs/PROTOCOL.md).
//!
//! One task reads frames, one writes acks. Every block is made durable by its own task, so a connection
//! pipelines: it keeps reading while earlier blocks wait for the group commit. A protocol error (bad
//! magic, version or token; an oversized or CRC-failing block; a malformed frame) first lets the blocks
//! already read finish and be acknowledged, then sends an ERROR frame naming the reason and closes —
//! nothing else is lost, and other connections never notice.
//!
//! Versions: the WELCOME carries the version the client's hello asked for, and the writer drops every
//! frame that version cannot parse, or writes what it always got instead ([`ServerFrame::for_version`]):
//! a version 1 client never sees a ROLE frame or a checkpointed ack, whatever the node queues for it,
//! and a version 1 or 2 client gets a durable ACK where a version 3 one gets HELD (a block the node
//! held already). A version 2 client is told the node's
//! role and epoch right after WELCOME and again on every change ([`announce_roles`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::pace::{grow, Pace};
use super::{Gate, Intake};
use crate::protocol::{
    read_hello, AckLevel, Block, BlockHeader, ErrorCode, ProtocolError, RoleInfo, ServerFrame,
    TAG_BLOCK, VERSION_2,
};

/// Frames of a connection's own (WELCOME aside: durable acks, errors) queued and not yet written. The
/// reader takes a slot before it reads a block and the block's ack fills it, so a client that reads
/// none of its acks stops being read once they are all queued: its acks cannot pile up.
pub const ACK_QUEUE: usize = 1024;

/// Encoded frames the writer holds for the socket at most; past it, it takes no more from its queues.
pub const WRITE_BUFFER: usize = 64 * 1024;

/// The read buffer of a framed connection.
const READ_BUFFER: usize = 64 * 1024;

/// The kernel's send buffer of a framed connection (it carries acks only, 10 bytes each): a fixed
/// size, so a client that reads nothing is noticed after a few thousand acks, not after the
/// megabytes an autotuned buffer would hold.
pub const SEND_BUFFER: usize = 64 * 1024;

/// Accepts framed connections until the node stops. One over the listener's share gets an ERROR
/// (TooManyConnections) and is closed.
pub async fn listen<I: Intake>(node: I, listener: TcpListener, token: Option<String>, gate: Gate) {
    let token = Arc::new(token);
    let n = node.clone();
    super::accept_loop(
        node,
        listener,
        gate,
        move |sock, peer| {
            let _ = sock.set_nodelay(true);
            let _ = socket2::SockRef::from(&sock).set_send_buffer_size(SEND_BUFFER);
            serve(n.clone(), sock, peer, token.clone())
        },
        refuse_over_limit,
    )
    .await
}

/// Tells a connection over the limit why, without waiting (this runs on the accept loop): the frame
/// is small enough for a fresh socket's send buffer. What the client sent already is read first, so
/// that closing does not reset the connection before it reads the frame.
fn refuse_over_limit(sock: TcpStream) {
    let mut sink = [0u8; 4096];
    while matches!(sock.try_read(&mut sink), Ok(n) if n > 0) {}
    let mut frame = BytesMut::new();
    ServerFrame::Error {
        code: ErrorCode::TooManyConnections,
        message: "over this listener's share of receiver.max_connections; retry later".into(),
    }
    .encode(&mut frame);
    let _ = sock.try_write(&frame);
    if let Ok(std) = sock.into_std() {
        let _ = std.shutdown(std::net::Shutdown::Write);
    }
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

/// What the reader got next.
enum Next {
    Block(Block, OwnedSemaphorePermit, mpsc::OwnedPermit<ServerFrame>),
    /// No block began within the idle timeout.
    Idle,
    Eof,
}

/// Reads the next block: an ack slot first, then its header; once the body's first byte is there,
/// its length is reserved in the in-flight budget (waiting for room is not the client's time), then
/// the body is read into a buffer that grows as the bytes arrive. Silence or a rate under `min_rate` inside a block cuts it ([`Pace`]).
async fn next_block<I: Intake>(
    node: &I,
    rd: &mut BufReader<OwnedReadHalf>,
    own: &mpsc::Sender<ServerFrame>,
    max: u64,
) -> Result<Next, ProtocolError> {
    let cfg = node.receiver_config();
    let (idle, min_rate) = (cfg.idle_timeout, cfg.min_rate.as_u64());
    let Ok(slot) = own.clone().reserve_owned().await else {
        return Ok(Next::Eof);
    };
    let mut tag = [0u8; 1];
    match tokio::time::timeout(idle, rd.read(&mut tag)).await {
        Err(_) => return Ok(Next::Idle),
        Ok(Ok(0)) => return Ok(Next::Eof),
        Ok(Ok(_)) if tag[0] != TAG_BLOCK => {
            return Err(ProtocolError::Malformed(format!(
                "unknown frame tag 0x{:02x}",
                tag[0]
            )))
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e.into()),
    }
    let mut pace = Pace::start(idle, min_rate);
    pace.count(1);
    let mut h = [0u8; 16];
    if !pace
        .read_exact(rd, &mut h)
        .await
        .map_err(|c| ProtocolError::Timeout(c.to_string()))??
    {
        return Err(ProtocolError::UnexpectedEof);
    }
    let header = BlockHeader::parse(&h, max)?;
    let len = header.len as usize;
    // A header alone reserves nothing: its body's first byte comes first.
    if !pace
        .wait_readable(rd)
        .await
        .map_err(|c| ProtocolError::Timeout(format!("block {}: {c}", header.seq)))??
    {
        return Err(ProtocolError::UnexpectedEof);
    }
    let permit = pace.pause(node.reserve(len)).await;
    let mut data = Vec::new();
    while data.len() < len {
        grow(&mut data, len);
        let want = (len - data.len()) as u64;
        let n = pace
            .read(rd, &mut data, want)
            .await
            .map_err(|c| ProtocolError::Timeout(format!("block {}: {c}", header.seq)))??;
        if n == 0 {
            return Err(ProtocolError::UnexpectedEof);
        }
    }
    let block = header.check(Bytes::from(data))?;
    Ok(Next::Block(block, permit, slot))
}

async fn serve<I: Intake>(node: I, sock: TcpStream, peer: String, token: Arc<Option<String>>) {
    let (rd, mut wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(READ_BUFFER, rd);
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
    // Two queues into the writer: the node's (WELCOME, ROLE, committed and checkpointed acks; what
    // the node registers), and the connection's own, bounded (durable acks and errors).
    let (tx, rx) = mpsc::unbounded_channel::<ServerFrame>();
    let (own, own_rx) = mpsc::channel::<ServerFrame>(ACK_QUEUE);
    let _ = tx.send(ServerFrame::Welcome {
        version,
        max_block_size: max as u32,
    });
    // Version 2: ROLE is the second frame, then one on every change of role or epoch.
    let _roles = announce_roles(version, node.roles(), &tx);
    let conn_id = node.register_conn(&source, tx.clone());
    info!(peer = %peer, source = %source, version, "framed connection");

    let cfg = node.receiver_config();
    let mut writer = tokio::spawn(write_frames(
        wr,
        version,
        cfg.keepalive_interval,
        cfg.write_timeout,
        rx,
        own_rx,
    ));
    let mut writer_result = None;

    let mut inflight = JoinSet::new();
    let outcome: Result<(), ProtocolError> = loop {
        // Reap finished blocks so the set does not grow.
        while inflight.try_join_next().is_some() {}
        let next = tokio::select! {
            biased;
            _ = node.stopped() => break Err(ProtocolError::Refused { code: ErrorCode::ShuttingDown, message: "node is stopping".into() }),
            w = &mut writer => {
                writer_result = Some(w);
                break Ok(());
            }
            r = next_block(&node, &mut rd, &own, max) => r,
        };
        match next {
            Ok(Next::Idle) => {
                debug!(peer = %peer, source = %source, "idle timeout; closed");
                break Ok(());
            }
            Ok(Next::Eof) => break Ok(()),
            Err(e) => break Err(e),
            Ok(Next::Block(block, permit, slot)) => {
                // Its body is read already (within the reserved budget); a seq outside the source's
                // window or gap bound is refused before anything of it is stored.
                if let Err(e) = node.admit_block(&source, block.seq) {
                    drop(permit);
                    break Err(e);
                }
                let node = node.clone();
                let tx = tx.clone();
                let source = source.clone();
                inflight.spawn(async move {
                    let seq = block.seq;
                    let res = node.ingest(&source, Some(seq), block.data).await;
                    drop(permit);
                    match res {
                        Ok(i) => {
                            // Version 3 is told the node held it already (nothing new stored);
                            // the writer turns HELD into the durable ACK for older clients.
                            slot.send(if i.duplicate {
                                ServerFrame::Held { seq }
                            } else {
                                ServerFrame::Ack {
                                    level: AckLevel::Durable,
                                    seq,
                                }
                            });
                            if i.committed {
                                let _ = tx.send(ServerFrame::Ack {
                                    level: AckLevel::Committed,
                                    seq,
                                });
                            }
                        }
                        Err(e) => {
                            slot.send(ServerFrame::Error {
                                code: ErrorCode::Internal,
                                message: e.to_string(),
                            });
                        }
                    }
                });
            }
        }
    };
    // Blocks already read are finished and acknowledged before any error frame.
    while inflight.join_next().await.is_some() {}
    if let Err(e) = &outcome {
        node.count_rejected();
        warn!(peer = %peer, source = %source, error = %e, "framed connection refused");
        let frame = ServerFrame::Error {
            code: e.code(),
            message: e.to_string(),
        };
        // The writer may be gone or stuck (it gives up after write_timeout): never wait longer.
        let _ = tokio::time::timeout(cfg.write_timeout, own.send(frame)).await;
    }
    node.unregister_conn(&source, conn_id);
    drop(tx);
    drop(own);
    let written = match writer_result {
        Some(w) => w,
        None => writer.await,
    };
    match written {
        Ok(Ok(mut wr)) => {
            let _ = wr.shutdown().await;
        }
        Ok(Err(reason)) => {
            node.count_rejected();
            warn!(peer = %peer, source = %source, reason = %reason, "framed connection closed: the client does not take its acks");
        }
        Err(_) => {}
    }
    debug!(peer = %peer, source = %source, "framed connection closed");
}

/// The writer: frames in the order they are ready, only those the client's version can parse. It
/// keeps at most [`WRITE_BUFFER`] bytes encoded (the rest waits in its queues: the connection's own is
/// bounded, see [`ACK_QUEUE`]) and gives up — `Err` with the reason — when it has had something to
/// write for `write_timeout` and the client took none of it. On a version 2 connection it writes the
/// last ROLE again when it has written nothing for `keepalive` (docs/PROTOCOL.md: keepalives).
/// Ends, handing the socket back, once both queues are closed and everything is written.
async fn write_frames(
    mut wr: OwnedWriteHalf,
    version: u8,
    keepalive: Duration,
    write_timeout: Duration,
    mut node_rx: mpsc::UnboundedReceiver<ServerFrame>,
    mut own_rx: mpsc::Receiver<ServerFrame>,
) -> Result<OwnedWriteHalf, String> {
    let mut buf = BytesMut::with_capacity(4096);
    let mut last_role: Option<ServerFrame> = None;
    let (mut node_open, mut own_open) = (true, true);
    let mut last_written = Instant::now();
    // Since when the writer has had bytes for the client and the client took none.
    let mut stuck_since = Instant::now();
    let take = |f: ServerFrame,
                buf: &mut BytesMut,
                stuck_since: &mut Instant,
                last_role: &mut Option<ServerFrame>| {
        let Some(f) = f.for_version(version) else {
            return;
        };
        if buf.is_empty() {
            *stuck_since = Instant::now();
        }
        f.encode(buf);
        if matches!(f, ServerFrame::Role { .. }) {
            // The first ROLE goes out twice: a repeat is a keepalive, and saying one at
            // once tells the client this node sends them (docs/PROTOCOL.md).
            if last_role.is_none() {
                f.encode(buf);
            }
            *last_role = Some(f);
        }
    };
    loop {
        if !node_open && !own_open && buf.is_empty() {
            return Ok(wr);
        }
        let room = buf.len() < WRITE_BUFFER;
        let keepalive_due = (version >= VERSION_2 && buf.is_empty())
            .then(|| last_role.clone())
            .flatten();
        tokio::select! {
            biased;
            w = wr.write(&buf), if !buf.is_empty() => match w {
                Ok(n) if n > 0 => {
                    buf.advance(n);
                    let now = Instant::now();
                    last_written = now;
                    stuck_since = now;
                }
                Ok(_) => return Err("the connection is closed".into()),
                Err(e) => return Err(format!("write failed: {e}")),
            },
            f = node_rx.recv(), if node_open && room => match f {
                Some(f) => {
                    take(f, &mut buf, &mut stuck_since, &mut last_role);
                    while buf.len() < WRITE_BUFFER {
                        let Ok(f) = node_rx.try_recv() else { break };
                        take(f, &mut buf, &mut stuck_since, &mut last_role);
                    }
                }
                None => node_open = false,
            },
            f = own_rx.recv(), if own_open && room => match f {
                Some(f) => {
                    take(f, &mut buf, &mut stuck_since, &mut last_role);
                    while buf.len() < WRITE_BUFFER {
                        let Ok(f) = own_rx.try_recv() else { break };
                        take(f, &mut buf, &mut stuck_since, &mut last_role);
                    }
                }
                None => own_open = false,
            },
            _ = tokio::time::sleep_until(stuck_since + write_timeout), if !buf.is_empty() => {
                return Err(format!(
                    "{} bytes of acks not taken by the client for {} (receiver.write_timeout)",
                    buf.len(),
                    humantime::format_duration(write_timeout)
                ));
            }
            _ = tokio::time::sleep_until(last_written + keepalive), if keepalive_due.is_some() => {
                take(keepalive_due.expect("guarded"), &mut buf, &mut stuck_since, &mut last_role);
            }
        }
    }
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
