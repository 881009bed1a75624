//! One framed connection from a sender's stream to one node: three small tasks that never block the
//! stream's own loop.
//!
//! - The *connect* task dials, sends the hello (version 3; a node that answers UnsupportedVersion is
//!   dialled again with version 2, then 1, so an older node still works — one older than version 2
//!   counts as primary, one older than version 3 never says a block was held already)
//!   and waits for WELCOME, all within a timeout. Then it reports [`Event::Up`] with a [`LinkHandle`].
//! - The *reader* task turns every server frame into an [`Event::Frame`] (a read cut by `select!` would
//!   lose bytes, so reads live in their own task).
//! - The *writer* task writes the blocks queued on the handle, flushing whenever the queue runs dry, and
//!   counts the bytes it wrote to the node (the network cost of a strategy).
//!
//! Every event carries the target's index and the connection's generation number, so the stream can
//! ignore what a connection it has already given up on still says. Dropping a handle aborts its tasks;
//! [`LinkHandle::close`] instead lets the writer finish and half-close the connection (the node then
//! sees a clean end of stream).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::timeline::Timeline;
use crate::protocol::{
    block_header, ErrorCode, Hello, ProtocolError, ServerFrame, VERSION_1, VERSION_2, VERSION_3,
};

/// What a connection tells its stream.
#[derive(Debug)]
pub(crate) enum Event {
    /// Handshake done; `version` is the one the node welcomed.
    Up {
        target: usize,
        generation: u64,
        link: LinkHandle,
        version: u8,
    },
    Frame {
        target: usize,
        generation: u64,
        frame: ServerFrame,
    },
    /// The connection failed or ended. `fatal`: the node refused the stream for a reason a retry
    /// cannot fix (wrong token, invalid source id).
    Down {
        target: usize,
        generation: u64,
        why: String,
        fatal: bool,
    },
}

/// Everything a connection needs to know.
#[derive(Clone, Debug)]
pub(crate) struct LinkSpec {
    pub target: usize,
    pub generation: u64,
    pub address: String,
    pub source: String,
    pub token: Option<String>,
    /// For connect + hello + WELCOME together.
    pub timeout: Duration,
    pub events: mpsc::UnboundedSender<Event>,
    /// Bytes written to this target by every connection of the push.
    pub bytes: Arc<AtomicU64>,
    pub timeline: Option<Arc<Timeline>>,
    /// The most block bytes queued for the writer at once (the push's retention bound: a node that
    /// takes more than that much behind is not keeping up and is given up on, see [`LinkHandle::send`]).
    pub max_queued: u64,
}

/// Aborts a task when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A connection that is up. Dropping it aborts its reader and writer.
#[derive(Debug)]
pub(crate) struct LinkHandle {
    blocks: Option<mpsc::UnboundedSender<(u64, Bytes)>>,
    /// Block bytes queued and not yet handed to the socket.
    queued: Arc<AtomicU64>,
    max_queued: u64,
    writer: Option<JoinHandle<()>>,
    _reader: AbortOnDrop,
}

impl LinkHandle {
    /// Queues a block for the writer; never blocks. False, and nothing queued, when the queue already
    /// holds `max_queued` bytes: the node stopped taking what it is sent (a silent or cut-off node in
    /// mirror mode, while the other node releases blocks), and the caller gives up on the connection —
    /// so what a sender holds for one node is bounded whatever that node does.
    pub(crate) fn send(&self, seq: u64, data: Bytes) -> bool {
        let len = data.len() as u64;
        if self.queued.load(Ordering::Relaxed) + len > self.max_queued.max(len) {
            return false;
        }
        if let Some(b) = &self.blocks {
            self.queued.fetch_add(len, Ordering::Relaxed);
            // A closed queue means the writer failed; it has reported Down already.
            let _ = b.send((seq, data));
        }
        true
    }

    /// Lets the writer write what is queued and half-close the connection, waiting at most `grace`.
    pub(crate) async fn close(mut self, grace: Duration) {
        self.blocks = None;
        if let Some(w) = self.writer.take() {
            let abort = w.abort_handle();
            if tokio::time::timeout(grace, w).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for LinkHandle {
    fn drop(&mut self) {
        if let Some(w) = &self.writer {
            w.abort();
        }
    }
}

/// Starts connecting; the outcome arrives as an [`Event`].
pub(crate) fn connect(spec: LinkSpec) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        let (target, generation) = (spec.target, spec.generation);
        let events = spec.events.clone();
        let down = |why: String, fatal: bool| Event::Down {
            target,
            generation,
            why,
            fatal,
        };
        match tokio::time::timeout(spec.timeout, handshake(&spec)).await {
            Err(_) => {
                let _ = events.send(down(format!("no WELCOME within {:?}", spec.timeout), false));
            }
            Ok(Err(Refusal { why, fatal, .. })) => {
                let _ = events.send(down(why, fatal));
            }
            Ok(Ok((rd, wr, version))) => {
                let (link, go) = start(&spec, rd, wr);
                let _ = events.send(Event::Up {
                    target,
                    generation,
                    link,
                    version,
                });
                // Only now may the reader pass frames on: a ROLE frame right behind WELCOME must
                // reach the stream after `Up`, or the stream drops it as a frame of a link not up yet.
                let _ = go.send(());
            }
        }
    }))
}

struct Refusal {
    why: String,
    fatal: bool,
    /// The node does not speak the version the hello asked for.
    old_node: bool,
}

impl Refusal {
    fn retry(why: String) -> Refusal {
        Refusal {
            why,
            fatal: false,
            old_node: false,
        }
    }
}

type Connected = (BufReader<OwnedReadHalf>, BufWriter<OwnedWriteHalf>, u8);

/// Dials and says hello with version 3, falling back to 2, then 1, for a node that does not speak it.
async fn handshake(spec: &LinkSpec) -> Result<Connected, Refusal> {
    for version in [VERSION_3, VERSION_2] {
        match hello(spec, version).await {
            Err(Refusal { old_node: true, .. }) => continue,
            r => return r,
        }
    }
    hello(spec, VERSION_1).await
}

async fn hello(spec: &LinkSpec, version: u8) -> Result<Connected, Refusal> {
    let sock = TcpStream::connect(&spec.address)
        .await
        .map_err(|e| Refusal::retry(format!("connect: {e}")))?;
    let _ = sock.set_nodelay(true);
    let (rd, wr) = sock.into_split();
    let mut rd = BufReader::with_capacity(64 * 1024, rd);
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    let hello = Hello {
        version,
        source: spec.source.clone(),
        token: spec.token.clone(),
    }
    .encode();
    let sent = async {
        wr.write_all(&hello).await?;
        wr.flush().await
    };
    sent.await
        .map_err(|e| Refusal::retry(format!("hello: {e}")))?;
    count(spec, hello.len() as u64);
    match ServerFrame::read(&mut rd).await {
        Ok(Some(ServerFrame::Welcome { version: v, .. })) => Ok((rd, wr, v.min(version))),
        Ok(Some(ServerFrame::Error { code, message })) => Err(match code {
            ErrorCode::UnsupportedVersion => Refusal {
                old_node: true,
                ..Refusal::retry(message)
            },
            ErrorCode::Unauthorized | ErrorCode::BadMagic | ErrorCode::InvalidSource => Refusal {
                fatal: true,
                ..Refusal::retry(message)
            },
            _ => Refusal::retry(message),
        }),
        Ok(Some(other)) => Err(Refusal::retry(format!("expected WELCOME, got {other:?}"))),
        Ok(None) => Err(Refusal::retry("closed before WELCOME".into())),
        Err(e) => Err(Refusal::retry(format!("welcome: {e}"))),
    }
}

fn count(spec: &LinkSpec, n: u64) {
    spec.bytes.fetch_add(n, Ordering::Relaxed);
    if let Some(t) = &spec.timeline {
        t.add_bytes(&spec.address, n);
    }
}

fn start(
    spec: &LinkSpec,
    mut rd: BufReader<OwnedReadHalf>,
    mut wr: BufWriter<OwnedWriteHalf>,
) -> (LinkHandle, tokio::sync::oneshot::Sender<()>) {
    let (target, generation) = (spec.target, spec.generation);
    let events = spec.events.clone();
    let (go, up_sent) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        if up_sent.await.is_err() {
            return;
        }
        loop {
            let why = match ServerFrame::read(&mut rd).await {
                Ok(Some(frame)) => {
                    let ev = Event::Frame {
                        target,
                        generation,
                        frame,
                    };
                    if events.send(ev).is_err() {
                        return;
                    }
                    continue;
                }
                Ok(None) => "connection closed".to_string(),
                Err(ProtocolError::UnexpectedEof) => "connection closed inside a frame".into(),
                Err(e) => e.to_string(),
            };
            let _ = events.send(Event::Down {
                target,
                generation,
                why,
                fatal: false,
            });
            return;
        }
    });
    let (tx, mut blocks) = mpsc::unbounded_channel::<(u64, Bytes)>();
    let queued = Arc::new(AtomicU64::new(0));
    let max_queued = spec.max_queued;
    let spec = spec.clone();
    let in_queue = queued.clone();
    let writer = tokio::spawn(async move {
        let result = async {
            while let Some((seq, data)) = blocks.recv().await {
                // Counted per block as it goes into the buffered writer (which writes to the socket
                // whenever its buffer fills): the stall timer takes growing counts as the node still
                // reading, so they must not wait for a whole queue of blocks to be flushed.
                let n = write_block(&mut wr, seq, &data).await?;
                count(&spec, n);
                in_queue.fetch_sub(data.len() as u64, Ordering::Relaxed);
                while let Ok((seq, data)) = blocks.try_recv() {
                    let n = write_block(&mut wr, seq, &data).await?;
                    count(&spec, n);
                    in_queue.fetch_sub(data.len() as u64, Ordering::Relaxed);
                }
                wr.flush().await?;
            }
            wr.shutdown().await
        }
        .await;
        if let Err(e) = result {
            let _ = spec.events.send(Event::Down {
                target: spec.target,
                generation: spec.generation,
                why: format!("write: {e}"),
                fatal: false,
            });
        }
    });
    (
        LinkHandle {
            blocks: Some(tx),
            queued,
            max_queued,
            writer: Some(writer),
            _reader: AbortOnDrop(reader),
        },
        go,
    )
}

async fn write_block<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    seq: u64,
    data: &[u8],
) -> std::io::Result<u64> {
    let h = block_header(seq, data);
    wr.write_all(&h).await?;
    wr.write_all(data).await?;
    Ok((h.len() + data.len()) as u64)
}
