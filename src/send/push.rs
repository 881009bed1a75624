//! `send push`: pushes images to a node, raw or framed, at a given rate and concurrency.
//!
//! Framed: every worker is one stream (`<source prefix>-<worker>`) with its own sequence numbers. It keeps
//! each block it sent until the node acknowledges it at the level asked for (`durable` by default), at
//! most `window` blocks at once (more waits: backpressure, never a drop). When the connection fails it
//! reconnects with backoff and re-sends every block still kept, in order; the node stores a re-sent block
//! once and acknowledges it again. An image goes into the manifest as acknowledged only when its ack arrives.
//!
//! Raw: every image is one connection; the worker writes it, closes its side and waits for the node to
//! close. The raw protocol has no acknowledgement, so raw images go into the manifest as sent, not acked.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::manifest::{sha256_hex, ManifestEntry, ManifestWriter};
use crate::images::ImageSet;
use crate::receiver::protocol::{
    block_header, AckLevel, ErrorCode, Hello, ProtocolError, ServerFrame, VERSION,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    Raw,
    Framed,
}

#[derive(Clone, Debug)]
pub struct PushOptions {
    pub address: String,
    pub protocol: Protocol,
    /// Images to send in all.
    pub count: u64,
    /// Connections (framed: streams) at once.
    pub concurrency: usize,
    /// Images per second over all workers; None = as fast as acks allow.
    pub rate: Option<f64>,
    /// Streams are named `<source_prefix>-<worker>`.
    pub source_prefix: String,
    pub token: Option<String>,
    /// Unacknowledged blocks a framed stream may keep.
    pub window: usize,
    /// The acknowledgement that lets a block go.
    pub ack: AckLevel,
    /// Give up after this long without progress (the node unreachable).
    pub give_up_after: Duration,
    /// Bytes acknowledged so far, for live progress (benchmarks).
    pub progress: Option<Arc<AtomicU64>>,
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            address: "127.0.0.1:9998".into(),
            protocol: Protocol::Framed,
            count: 100,
            concurrency: 4,
            rate: None,
            source_prefix: default_source_prefix(),
            token: None,
            window: 256,
            ack: AckLevel::Durable,
            give_up_after: Duration::from_secs(60),
            progress: None,
        }
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

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("node {address} refused the stream: {reason}")]
    Refused { address: String, reason: String },
    #[error("gave up on node {address} after {after:?} without progress: {last_error}")]
    GaveUp {
        address: String,
        after: Duration,
        last_error: String,
    },
    #[error("manifest: {0}")]
    Manifest(#[from] std::io::Error),
}

/// What a push did.
#[derive(Debug, Default, Clone)]
pub struct PushReport {
    pub sent: u64,
    pub acked: u64,
    pub bytes: u64,
    pub resent: u64,
    pub reconnects: u64,
    pub elapsed: Duration,
    /// Ack latency of every acknowledged block (framed).
    pub latencies: Vec<Duration>,
}

impl PushReport {
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v = self.latencies.clone();
        v.sort();
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        Some(v[i.min(v.len() - 1)])
    }

    fn merge(&mut self, o: PushReport) {
        self.sent += o.sent;
        self.acked += o.acked;
        self.bytes += o.bytes;
        self.resent += o.resent;
        self.reconnects += o.reconnects;
        self.latencies.extend(o.latencies);
    }
}

struct Shared {
    opts: PushOptions,
    images: ImageSet,
    next: AtomicU64,
    manifest: Option<Arc<ManifestWriter>>,
    started: Instant,
}

impl Shared {
    /// Waits until the rate allows the next image. Claims nothing, so it is safe to cancel (select!).
    async fn pace(&self) {
        if let Some(rate) = self.opts.rate.filter(|r| *r > 0.0) {
            let i = self.next.load(Ordering::Relaxed);
            let due = self.started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// Claims the next image number, if any are left.
    fn claim(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.opts.count).then_some(i)
    }
}

/// Pushes `opts.count` images from `images`; records them in `manifest` if given.
pub async fn push(
    opts: PushOptions,
    images: ImageSet,
    manifest: Option<Arc<ManifestWriter>>,
) -> Result<PushReport, PushError> {
    let shared = Arc::new(Shared {
        opts: opts.clone(),
        images,
        next: AtomicU64::new(0),
        manifest,
        started: Instant::now(),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..opts.concurrency.max(1) {
        let shared = shared.clone();
        match opts.protocol {
            Protocol::Framed => tasks.spawn(framed_worker(shared, w)),
            Protocol::Raw => tasks.spawn(raw_worker(shared)),
        };
    }
    let mut report = PushReport::default();
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(r)) => report.merge(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(PushError::Refused {
                    address: opts.address.clone(),
                    reason: format!("worker panicked: {e}"),
                });
            }
        }
    }
    if let Some(m) = &shared.manifest {
        m.flush()?;
    }
    report.elapsed = shared.started.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

async fn raw_worker(shared: Arc<Shared>) -> Result<PushReport, PushError> {
    let mut report = PushReport::default();
    while let Some(i) = {
        shared.pace().await;
        shared.claim()
    } {
        let (label, data) = shared.images.get(i);
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(10);
        while let Err(e) = send_raw(&shared.opts.address, &data).await {
            let since = *failing_since.get_or_insert_with(Instant::now);
            if since.elapsed() > shared.opts.give_up_after {
                return Err(PushError::GaveUp {
                    address: shared.opts.address.clone(),
                    after: shared.opts.give_up_after,
                    last_error: e.to_string(),
                });
            }
            debug!(error = %e, "raw send failed; retrying");
            report.resent += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
        report.sent += 1;
        report.bytes += data.len() as u64;
        if let Some(m) = &shared.manifest {
            m.append(&ManifestEntry::raw(label, &data))?;
        }
    }
    Ok(report)
}

async fn send_raw(address: &str, data: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(address).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    // The node closes once it has the image; wait for that so a run's end means the node has it all.
    let mut sink = [0u8; 64];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

struct Kept {
    seq: u64,
    label: String,
    data: Bytes,
    sent_at: Instant,
    durable: bool,
}

enum ConnEnd {
    Done,
    Broken(String),
}

async fn framed_worker(shared: Arc<Shared>, worker: usize) -> Result<PushReport, PushError> {
    let source = format!("{}-{worker}", shared.opts.source_prefix);
    let mut report = PushReport::default();
    let mut kept: VecDeque<Kept> = VecDeque::new();
    let mut next_seq = 0u64;
    let mut exhausted = false;
    let mut backoff = Duration::from_millis(10);
    let mut last_progress = Instant::now();
    loop {
        let acked_before = report.acked;
        let end = framed_connection(
            &shared,
            &source,
            &mut kept,
            &mut next_seq,
            &mut exhausted,
            &mut report,
        )
        .await?;
        if report.acked > acked_before {
            last_progress = Instant::now();
            backoff = Duration::from_millis(10);
        }
        match end {
            ConnEnd::Done => return Ok(report),
            ConnEnd::Broken(why) => {
                if last_progress.elapsed() > shared.opts.give_up_after {
                    return Err(PushError::GaveUp {
                        address: shared.opts.address.clone(),
                        after: shared.opts.give_up_after,
                        last_error: why,
                    });
                }
                debug!(source = %source, error = %why, kept = kept.len(), "connection lost; reconnecting");
                report.reconnects += 1;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// One connection's life: hello, re-send what is kept, then send new images while reading acks.
async fn framed_connection(
    shared: &Shared,
    source: &str,
    kept: &mut VecDeque<Kept>,
    next_seq: &mut u64,
    exhausted: &mut bool,
    report: &mut PushReport,
) -> Result<ConnEnd, PushError> {
    let opts = &shared.opts;
    let sock = match TcpStream::connect(&opts.address).await {
        Ok(s) => s,
        Err(e) => return Ok(ConnEnd::Broken(format!("connect: {e}"))),
    };
    let _ = sock.set_nodelay(true);
    let (mut rd, wr) = sock.into_split();
    let mut wr = BufWriter::with_capacity(256 * 1024, wr);
    let hello = Hello {
        version: VERSION,
        source: source.to_string(),
        token: opts.token.clone(),
    };
    if let Err(e) = async {
        wr.write_all(&hello.encode()).await?;
        wr.flush().await
    }
    .await
    {
        return Ok(ConnEnd::Broken(format!("hello: {e}")));
    }
    // Acks are read by their own task: a read cut by select! would lose bytes.
    let (ack_tx, mut acks) = mpsc::unbounded_channel::<Result<ServerFrame, ProtocolError>>();
    let reader = tokio::spawn(async move {
        loop {
            match ServerFrame::read(&mut rd).await {
                Ok(Some(f)) => {
                    if ack_tx.send(Ok(f)).is_err() {
                        return;
                    }
                }
                Ok(None) => {
                    let _ = ack_tx.send(Err(ProtocolError::UnexpectedEof));
                    return;
                }
                Err(e) => {
                    let _ = ack_tx.send(Err(e));
                    return;
                }
            }
        }
    });
    let _abort_reader = AbortOnDrop(reader);

    match acks.recv().await {
        Some(Ok(ServerFrame::Welcome { .. })) => {}
        Some(Ok(ServerFrame::Error { code, message })) => {
            return match code {
                ErrorCode::Unauthorized
                | ErrorCode::BadMagic
                | ErrorCode::UnsupportedVersion
                | ErrorCode::InvalidSource => Err(PushError::Refused {
                    address: opts.address.clone(),
                    reason: message,
                }),
                _ => Ok(ConnEnd::Broken(message)),
            };
        }
        Some(Ok(other)) => return Ok(ConnEnd::Broken(format!("expected WELCOME, got {other:?}"))),
        Some(Err(e)) => return Ok(ConnEnd::Broken(format!("welcome: {e}"))),
        None => return Ok(ConnEnd::Broken("connection closed".into())),
    }
    let mut last_ack = Instant::now();
    // Re-send everything kept, in order.
    for k in kept.iter_mut() {
        if let Err(e) = write_block(&mut wr, k.seq, &k.data).await {
            return Ok(ConnEnd::Broken(format!("re-send: {e}")));
        }
        k.sent_at = Instant::now();
        report.resent += 1;
    }
    if let Err(e) = wr.flush().await {
        return Ok(ConnEnd::Broken(format!("re-send: {e}")));
    }
    loop {
        if *exhausted && kept.is_empty() {
            let _ = wr.shutdown().await;
            return Ok(ConnEnd::Done);
        }
        let room = kept.len() < opts.window && !*exhausted;
        let stalled_at = last_ack + opts.give_up_after;
        tokio::select! {
            biased;
            a = acks.recv() => {
                match a {
                    Some(Ok(ServerFrame::Ack { level, seq })) => {
                        last_ack = Instant::now();
                        on_ack(shared, source, kept, report, level, seq)?
                    }
                    Some(Ok(ServerFrame::Error { code, message })) => {
                        warn!(source, code = ?code, error = %message, "node reported an error");
                        if matches!(code, ErrorCode::BlockTooLarge) {
                            return Err(PushError::Refused { address: opts.address.clone(), reason: message });
                        }
                        return Ok(ConnEnd::Broken(message));
                    }
                    Some(Ok(other)) => return Ok(ConnEnd::Broken(format!("unexpected frame {other:?}"))),
                    Some(Err(e)) => return Ok(ConnEnd::Broken(e.to_string())),
                    None => return Ok(ConnEnd::Broken("connection closed".into())),
                }
            }
            _ = shared.pace(), if room => {
                let Some(i) = shared.claim() else {
                    *exhausted = true;
                    if let Err(e) = wr.flush().await {
                        return Ok(ConnEnd::Broken(e.to_string()));
                    }
                    continue;
                };
                let (label, data) = shared.images.get(i);
                let seq = *next_seq;
                *next_seq += 1;
                report.sent += 1;
                report.bytes += data.len() as u64;
                kept.push_back(Kept { seq, label, data: data.clone(), sent_at: Instant::now(), durable: false });
                let res = async {
                    write_block(&mut wr, seq, &data).await?;
                    // Flush unless more work is ready right now (keeps small frames together).
                    if kept.len() >= opts.window || opts.rate.is_some() || acks.is_empty() {
                        wr.flush().await?;
                    }
                    std::io::Result::Ok(())
                }.await;
                if let Err(e) = res {
                    return Ok(ConnEnd::Broken(e.to_string()));
                }
            }
            // Connected but answered nothing for a long time (a node that stopped committing, under
            // `--ack committed`): give up with an error rather than wait forever.
            _ = tokio::time::sleep_until(stalled_at.into()), if !kept.is_empty() => {
                return Err(PushError::GaveUp {
                    address: opts.address.clone(),
                    after: opts.give_up_after,
                    last_error: format!("connected, but no acknowledgement for {} blocks outstanding", kept.len()),
                });
            }
        }
    }
}

async fn write_block<W: tokio::io::AsyncWrite + Unpin>(
    wr: &mut W,
    seq: u64,
    data: &[u8],
) -> std::io::Result<()> {
    wr.write_all(&block_header(seq, data)).await?;
    wr.write_all(data).await
}

fn on_ack(
    shared: &Shared,
    source: &str,
    kept: &mut VecDeque<Kept>,
    report: &mut PushReport,
    level: AckLevel,
    seq: u64,
) -> Result<(), PushError> {
    let Some(pos) = kept.iter().position(|k| k.seq == seq) else {
        return Ok(()); // an ack for a block already let go (e.g. committed after durable)
    };
    if level == AckLevel::Durable && !kept[pos].durable {
        kept[pos].durable = true;
        report.latencies.push(kept[pos].sent_at.elapsed());
    }
    if !level.covers(shared.opts.ack) {
        return Ok(());
    }
    let k = kept.remove(pos).expect("position found above");
    if !k.durable {
        report.latencies.push(k.sent_at.elapsed());
    }
    report.acked += 1;
    if let Some(p) = &shared.opts.progress {
        p.fetch_add(k.data.len() as u64, Ordering::Relaxed);
    }
    if let Some(m) = &shared.manifest {
        m.append(&ManifestEntry {
            path: k.label,
            size: k.data.len() as u64,
            sha256: sha256_hex(&k.data),
            protocol: "framed".into(),
            source: Some(source.to_string()),
            seq: Some(k.seq),
            acked: true,
        })?;
    }
    if report.acked.is_multiple_of(10_000) {
        info!(source, acked = report.acked, "progress");
    }
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_node_that_accepts_but_never_acknowledges_makes_the_sender_give_up_with_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = l.local_addr().unwrap().to_string();
        let node = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            crate::receiver::protocol::read_hello(&mut s).await.unwrap();
            ServerFrame::Welcome {
                version: VERSION,
                max_block_size: 1 << 20,
            }
            .write(&mut s)
            .await
            .unwrap();
            // Read everything, acknowledge nothing.
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink).await;
        });
        let opts = PushOptions {
            address,
            count: 5,
            concurrency: 1,
            give_up_after: Duration::from_millis(500),
            ..PushOptions::default()
        };
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            push(
                opts,
                ImageSet::Generated {
                    size: 1024,
                    seed: 1,
                },
                None,
            ),
        )
        .await
        .expect("the sender must give up on its own, not hang");
        assert!(matches!(r, Err(PushError::GaveUp { .. })), "{r:?}");
        node.abort();
    }
}
