//! Hostile clients of a node, written once: the hostile-client tests (`it/tests/hostile_clients.rs`)
//! run each of them once against a fresh node and measure it; the soak ([`crate::soak`]) runs them in
//! loops for as long as it lasts, across SIGKILLs. Also what both read of a node process from `/proc`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdfs_ingest::protocol::{block_header, AckLevel, ErrorCode, Hello, ServerFrame, VERSION};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const MIB: u64 = 1 << 20;

/// A `/proc/<pid>/status` field in KiB (0 if the process or the field is gone).
pub fn status_kib(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The peak resident set of a process so far (VmHWM), in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    status_kib(pid, "VmHWM") << 10
}

/// The resident set of a process now (VmRSS), in bytes.
pub fn rss(pid: u32) -> u64 {
    status_kib(pid, "VmRSS") << 10
}

/// The virtual memory of a process (VmSize), in bytes.
pub fn vm_size(pid: u32) -> u64 {
    status_kib(pid, "VmSize") << 10
}

/// The descriptors a process has open (entries of `/proc/<pid>/fd`).
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// This process may need as many descriptors as it opens connections: its soft limit goes to the hard one.
pub fn raise_own_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on structs we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// A framed HELLO for `source`.
pub fn hello(source: &str) -> Vec<u8> {
    Hello {
        version: VERSION,
        source: source.into(),
        token: None,
    }
    .encode()
    .to_vec()
}

/// A block header whose length field says `len`, whatever follows it.
pub fn header_announcing(seq: u64, len: u32) -> [u8; 17] {
    let mut h = block_header(seq, b"x");
    h[9..13].copy_from_slice(&len.to_be_bytes());
    h
}

/// Every frame `s` gets within `d` (or until it closes), and whether it closed.
pub async fn frames_for(s: &mut TcpStream, d: Duration) -> (Vec<ServerFrame>, bool) {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    let mut chunk = [0u8; 4096];
    let mut closed = false;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break,
        }
    }
    (parse_frames(&buf).await, closed)
}

/// The whole frames at the start of `buf`.
pub async fn parse_frames(buf: &[u8]) -> Vec<ServerFrame> {
    let mut r = buf;
    let mut out = Vec::new();
    while let Ok(Some(f)) = ServerFrame::read(&mut r).await {
        out.push(f);
    }
    out
}

/// The code of the first ERROR frame among `frames`.
pub fn error_code(frames: &[ServerFrame]) -> Option<ErrorCode> {
    frames.iter().find_map(|f| match f {
        ServerFrame::Error { code, .. } => Some(*code),
        _ => None,
    })
}

/// The sequence numbers of the durable acks among `frames`.
pub fn durable(frames: &[ServerFrame]) -> Vec<u64> {
    frames
        .iter()
        .filter_map(|f| match f {
            ServerFrame::Ack {
                level: AckLevel::Durable,
                seq,
            } => Some(*seq),
            _ => None,
        })
        .collect()
}

/// The connections a node's log says it refused for being over a listener's share: the sum of
/// `refused=` over its rate-limited lines among `lines`.
pub fn refused_logged<'a>(lines: impl IntoIterator<Item = &'a str>) -> u64 {
    lines
        .into_iter()
        .filter(|l| l.contains("over this listener's share"))
        .filter_map(|l| {
            l.split("refused=")
                .nth(1)?
                .split(' ')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

/// Idle connections to `addr`, up to `n` of them, each made within `timeout` (stops at the first that
/// is not). The node counts every one against the listener's share; the caller holds them.
pub async fn flood(addr: &str, n: usize, timeout: Duration) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            _ => break,
        }
    }
    held
}

/// A byte every `every`, for at most `for_at_most`, reading what comes back between bytes: how long
/// until the node cut the connection (`None`: it did not).
pub async fn trickle(
    s: &mut TcpStream,
    every: Duration,
    for_at_most: Duration,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < for_at_most {
        if s.write_all(b"x").await.is_err() {
            return Some(started.elapsed());
        }
        let mut b = [0u8; 64];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(every, s.read(&mut b)).await {
            return Some(started.elapsed());
        }
    }
    None
}

/// How a framed slowloris ended.
#[derive(Debug)]
pub struct FramedTrickle {
    /// From the first body byte to the node's close (or to `for_at_most`).
    pub cut_after: Duration,
    /// Every frame the node sent.
    pub frames: Vec<ServerFrame>,
}

/// A framed slowloris: HELLO, a header announcing `len` bytes, then the body a byte every `every`,
/// for at most `for_at_most` or until the node closes the connection.
pub async fn framed_trickle(
    addr: &str,
    source: &str,
    len: usize,
    every: Duration,
    for_at_most: Duration,
) -> std::io::Result<FramedTrickle> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(&hello(source)).await?;
    let data = vec![1u8; len];
    s.write_all(&block_header(0, &data)).await?;
    let (mut rd, mut wr) = s.into_split();
    let reader = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = rd.read_to_end(&mut buf).await;
        buf
    });
    let started = Instant::now();
    while started.elapsed() < for_at_most {
        if wr.write_all(b"x").await.is_err() || reader.is_finished() {
            break;
        }
        tokio::time::sleep(every).await;
    }
    let cut_after = started.elapsed();
    drop(wr);
    let buf = match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok(b)) => b,
        _ => Vec::new(),
    };
    Ok(FramedTrickle {
        cut_after,
        frames: parse_frames(&buf).await,
    })
}

/// How a client that reads none of its acks ended.
#[derive(Debug)]
pub struct Deaf {
    /// From the first block to the moment its writes stopped going through (or `for_at_most`).
    pub cut_after: Duration,
    /// The node closed the connection (a read saw the end or a reset within 5 s of the cut).
    pub closed: bool,
    /// Blocks written before the writes stopped.
    pub blocks: u64,
}

/// A client that never reads: a small receive buffer, then small blocks as fast as the node takes
/// them, never a read, until a write does not go through within 10 s, fails, or `for_at_most` passes.
/// `same_seq`: every block says sequence number 0 (the node stores the first and acknowledges the
/// rest as duplicates: the same pressure on its acks, one file in the output instead of thousands).
pub async fn deaf(
    addr: &str,
    source: &str,
    for_at_most: Duration,
    same_seq: bool,
) -> anyhow::Result<Deaf> {
    let sock = TcpSocket::new_v4()?;
    sock.set_recv_buffer_size(4096)?;
    let mut s = sock.connect(addr.parse()?).await?;
    s.write_all(&hello(source)).await?;
    let started = Instant::now();
    let mut frames = Vec::new();
    let mut blocks = 0;
    for seq in 0..u64::MAX {
        let data = seq.to_be_bytes();
        let data = if same_seq { &[0u8; 8] } else { &data };
        frames.extend_from_slice(&block_header(if same_seq { 0 } else { seq }, data));
        frames.extend_from_slice(data);
        if frames.len() < 64 * 1024 {
            continue;
        }
        let sent = tokio::time::timeout(Duration::from_secs(10), s.write_all(&frames)).await;
        frames.clear();
        if !matches!(sent, Ok(Ok(()))) || started.elapsed() > for_at_most {
            break;
        }
        blocks = seq + 1;
    }
    let cut_after = started.elapsed();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .is_ok();
    Ok(Deaf {
        cut_after,
        closed,
        blocks,
    })
}

/// A greedy client: HELLO, then `blocks` blocks of `body` back to back (pipelined; nothing waits for an
/// ack), adding to `written` every MiB that went through. Its acks are read on a task of their own;
/// it returns the count of durable acks seen once all came, the node closed, or `ack_wait` passed
/// after the last block.
pub async fn pipelined(
    addr: &str,
    source: &str,
    body: Arc<Vec<u8>>,
    blocks: u64,
    written: Arc<AtomicU64>,
    ack_wait: Duration,
) -> std::io::Result<u64> {
    let s = TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = s.into_split();
    let acked = Arc::new(AtomicU64::new(0));
    let counted = acked.clone();
    let mut acks = tokio::spawn(async move {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 4096];
        while let Ok(n) = rd.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let n = durable(&parse_frames(&buf).await).len() as u64;
            counted.store(n, Ordering::Relaxed);
            if n >= blocks {
                break;
            }
        }
    });
    let sent = async {
        wr.write_all(&hello(source)).await?;
        for seq in 0..blocks {
            wr.write_all(&block_header(seq, &body)).await?;
            for chunk in body.chunks(MIB as usize) {
                wr.write_all(chunk).await?;
                written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
        }
        std::io::Result::Ok(())
    }
    .await;
    if sent.is_ok() {
        // Our side stays open until the acks had their time: a half-close ends the stream.
        let _ = tokio::time::timeout(ack_wait, &mut acks).await;
    }
    acks.abort();
    drop(wr);
    sent.map(|()| acked.load(Ordering::Relaxed))
}
