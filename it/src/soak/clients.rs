//! The soak's hostile clients: each kind a loop of [`crate::hostile`]'s clients against the node's two
//! listeners until told to stop, counting the connections it made and how each one ended. A loop
//! that finds the node down (killed a moment ago) waits and tries again; that is counted too.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdfs_ingest::protocol::ErrorCode;
use rand::{Rng, RngCore, SeedableRng};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::hostile::{self, error_code, frames_for, header_announcing, hello, MIB};

/// The kinds, in the order the summary prints them.
pub const KINDS: &[&str] = &[
    "flood",
    "slowloris",
    "oversize",
    "garbage",
    "pipelined",
    "never-reading",
];

/// What the node's listeners are and what it was configured to take.
#[derive(Clone, Debug)]
pub struct Target {
    pub raw: String,
    pub framed: String,
    /// `max_connections` / listeners: what one listener takes before it refuses.
    pub share: usize,
    pub max_block_size: u64,
    pub idle_timeout: Duration,
    pub pipelined_block: u64,
}

/// Per kind: connections made, and how they ended (`event → count`).
pub type Counts = BTreeMap<&'static str, (u64, BTreeMap<String, u64>)>;

/// [`Counts`], shared by the loops.
#[derive(Default)]
pub struct Tally {
    counts: Mutex<Counts>,
}

impl Tally {
    fn connections(&self, kind: &'static str, n: u64) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default()
            .0 += n;
    }

    fn event(&self, kind: &'static str, event: impl Into<String>, n: u64) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(kind)
            .or_default()
            .1
            .entry(event.into())
            .or_default() += n;
    }

    fn max(&self, kind: &'static str, event: &str, v: u64) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let e = c
            .entry(kind)
            .or_default()
            .1
            .entry(event.into())
            .or_default();
        *e = (*e).max(v);
    }

    /// Connections made and events, per kind.
    pub fn snapshot(&self) -> Counts {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Connections the node refused for being over a listener's share, as the flood saw them.
    pub fn refusals(&self) -> u64 {
        let c = self.snapshot();
        c.get("flood").map_or(0, |(_, e)| {
            e.iter()
                .filter(|(k, _)| k.starts_with("refused"))
                .map(|(_, v)| v)
                .sum()
        })
    }
}

/// Starts one loop per kind; they run until `stop` is set.
pub fn start(
    target: Target,
    seed: u64,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (i, kind) in KINDS.iter().enumerate() {
        let (t, tally, stop) = (target.clone(), tally.clone(), stop.clone());
        let rng = rand::rngs::StdRng::seed_from_u64(seed ^ (0x9e37_79b9 * (i as u64 + 1)));
        tasks.push(tokio::spawn(run_loop(kind, t, rng, tally, stop)));
    }
    tasks
}

async fn run_loop(
    kind: &'static str,
    t: Target,
    mut rng: rand::rngs::StdRng,
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
) {
    let mut round = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let pause = match kind {
            "flood" => flood(&t, round, &tally).await,
            "slowloris" => slowloris(&t, round, &tally).await,
            "oversize" => oversize(&t, round, &tally).await,
            "garbage" => garbage(&t, &mut rng, &tally).await,
            "pipelined" => pipelined(&t, round, &tally).await,
            _ => never_reading(&t, round, &tally).await,
        };
        round += 1;
        let jitter = rng.random_range(0.5..1.5);
        tokio::time::sleep(pause.mul_f64(jitter)).await;
    }
}

/// The node is down (a SIGKILL a moment ago): counted, and the loop tries again soon.
fn down(tally: &Tally, kind: &'static str) -> Duration {
    tally.event(kind, "connect failed (node down)", 1);
    Duration::from_millis(200)
}

/// Idle connections past a listener's share (framed and raw in turn), held 2.5 s: longer than a
/// well-behaved sender's reconnect backoff, so its reconnects meet the refusals too.
async fn flood(t: &Target, round: u64, tally: &Tally) -> Duration {
    let (addr, framed) = if round.is_multiple_of(2) {
        (&t.framed, true)
    } else {
        (&t.raw, false)
    };
    let mut held = hostile::flood(addr, t.share + 16, Duration::from_secs(1)).await;
    if held.is_empty() {
        return down(tally, "flood");
    }
    tally.connections("flood", held.len() as u64);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (mut refused, mut closed) = (0, 0);
    for s in &mut held {
        let (frames, was_closed) = frames_for(s, Duration::from_millis(2)).await;
        match error_code(&frames) {
            Some(ErrorCode::TooManyConnections) => refused += 1,
            Some(other) => tally.event("flood", format!("ERROR {other:?}"), 1),
            None if was_closed => closed += 1,
            None => {}
        }
    }
    if framed {
        tally.event("flood", "refused with ERROR TooManyConnections", refused);
        tally.event("flood", "closed without ERROR (framed)", closed);
    } else {
        tally.event("flood", "refused by an immediate close (raw)", closed);
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    Duration::from_secs(3)
}

/// A byte a second: framed (inside a block's body) and raw in turn; the node cuts it by its idle
/// timeout and minimum rate.
async fn slowloris(t: &Target, round: u64, tally: &Tally) -> Duration {
    let every = Duration::from_millis(1000);
    let at_most = 10 * t.idle_timeout.max(Duration::from_secs(1));
    if round.is_multiple_of(2) {
        let source = format!("slow-{round}");
        match hostile::framed_trickle(&t.framed, &source, 64 * 1024, every, at_most).await {
            Err(_) => return down(tally, "slowloris"),
            Ok(r) => {
                tally.connections("slowloris", 1);
                let how = match (r.cut_after < at_most, error_code(&r.frames)) {
                    (true, Some(code)) => format!("framed cut with ERROR {code:?}"),
                    (true, None) => "framed cut without ERROR".into(),
                    (false, _) => "framed NOT cut".into(),
                };
                tally.event("slowloris", how, 1);
            }
        }
    } else {
        let Ok(mut s) = TcpStream::connect(&t.raw).await else {
            return down(tally, "slowloris");
        };
        tally.connections("slowloris", 1);
        let how = match hostile::trickle(&mut s, every, at_most).await {
            Some(_) => "raw cut",
            None => "raw NOT cut",
        };
        tally.event("slowloris", how, 1);
    }
    Duration::from_millis(200)
}

/// Headers over `max_block_size` (by one, and the largest a header can say), one at `max_block_size`
/// (about the in-flight budget) whose body stops after 1 MiB, and a raw image 1 MiB over the limit.
async fn oversize(t: &Target, round: u64, tally: &Tally) -> Duration {
    let max = t.max_block_size;
    let variant = round % 4;
    if variant == 3 {
        let Ok(mut s) = TcpStream::connect(&t.raw).await else {
            return down(tally, "oversize");
        };
        tally.connections("oversize", 1);
        let chunk = vec![0xa5u8; MIB as usize];
        let mut written = 0;
        while written <= max {
            if s.write_all(&chunk).await.is_err() {
                break;
            }
            written += MIB;
        }
        let _ = s.shutdown().await;
        let (_, closed) = frames_for(&mut s, Duration::from_secs(5)).await;
        let how = match (written > max, closed) {
            (false, _) => "raw cut before the limit",
            (true, true) => "raw over the limit closed",
            (true, false) => "raw over the limit NOT closed",
        };
        tally.event("oversize", how, 1);
        return Duration::from_secs(1);
    }
    let Ok(mut s) = TcpStream::connect(&t.framed).await else {
        return down(tally, "oversize");
    };
    tally.connections("oversize", 1);
    let (len, what) = match variant {
        0 => (max + 1, "max_block_size + 1"),
        1 => (u32::MAX as u64, "u32::MAX"),
        _ => (max, "max_block_size, body stops after 1 MiB"),
    };
    let mut first = hello(&format!("big-{round}"));
    first.extend_from_slice(&header_announcing(0, len as u32));
    if s.write_all(&first).await.is_err() {
        return down(tally, "oversize");
    }
    if variant == 2 {
        let _ = s.write_all(&vec![0x5au8; MIB as usize]).await;
    }
    let wait = 3 * t.idle_timeout + Duration::from_secs(2);
    let (frames, closed) = frames_for(&mut s, wait).await;
    let how = match (error_code(&frames), closed) {
        (Some(code), _) => format!("{what}: ERROR {code:?}"),
        (None, true) => format!("{what}: closed without ERROR"),
        (None, false) => format!("{what}: NOT closed within {wait:?}"),
    };
    tally.event("oversize", how, 1);
    Duration::from_millis(500)
}

/// Random bytes where a HELLO belongs, or after a good HELLO where blocks belong.
async fn garbage(t: &Target, rng: &mut rand::rngs::StdRng, tally: &Tally) -> Duration {
    let Ok(mut s) = TcpStream::connect(&t.framed).await else {
        return down(tally, "garbage");
    };
    tally.connections("garbage", 1);
    let after_hello = rng.random_bool(0.5);
    let mut bytes = if after_hello {
        hello(&format!("junk-{}", rng.random::<u32>()))
    } else {
        Vec::new()
    };
    let mut junk = vec![0u8; rng.random_range(1..4096)];
    rng.fill_bytes(&mut junk);
    bytes.extend_from_slice(&junk);
    let _ = s.write_all(&bytes).await;
    let wait = 3 * t.idle_timeout + Duration::from_secs(2);
    let (frames, closed) = frames_for(&mut s, wait).await;
    let place = if after_hello {
        "after HELLO"
    } else {
        "as HELLO"
    };
    let how = match (error_code(&frames), closed) {
        (Some(code), _) => format!("{place}: ERROR {code:?}"),
        (None, true) => format!("{place}: closed without ERROR"),
        (None, false) => format!("{place}: NOT closed within {wait:?}"),
    };
    tally.event("garbage", how, 1);
    Duration::from_millis(300)
}

/// Two connections at once, each pipelining three blocks of `pipelined_block` bytes and reading its acks.
async fn pipelined(t: &Target, round: u64, tally: &Tally) -> Duration {
    let body: Arc<Vec<u8>> = Arc::new(
        (0..t.pipelined_block as usize)
            .map(|i| ((i as u64 + round) % 251) as u8)
            .collect(),
    );
    let written = Arc::new(AtomicU64::new(0));
    let mut conns = Vec::new();
    for c in 0..2 {
        let (addr, body, written) = (t.framed.clone(), body.clone(), written.clone());
        let source = format!("pipe-{round}-{c}");
        conns.push(tokio::spawn(async move {
            hostile::pipelined(&addr, &source, body, 3, written, Duration::from_secs(20)).await
        }));
    }
    for c in conns {
        match c.await {
            Ok(Ok(acked)) => {
                tally.connections("pipelined", 1);
                let how = if acked == 3 {
                    "3 of 3 blocks acked".to_string()
                } else {
                    format!("{acked} of 3 blocks acked")
                };
                tally.event("pipelined", how, 1);
            }
            Ok(Err(_)) => {
                tally.connections("pipelined", 1);
                tally.event("pipelined", "cut while writing (a kill)", 1);
            }
            Err(_) => tally.event("pipelined", "task failed", 1),
        }
    }
    Duration::from_secs(10)
}

/// A client that sends blocks and never reads its acks; the node disconnects it by its write timeout.
/// Every block says sequence number 0, so what the node stores of it is one file.
async fn never_reading(t: &Target, round: u64, tally: &Tally) -> Duration {
    let at_most = Duration::from_secs(30);
    match hostile::deaf(&t.framed, &format!("deaf-{round}"), at_most, true).await {
        Err(_) => down(tally, "never-reading"),
        Ok(d) => {
            tally.connections("never-reading", 1);
            if d.closed {
                tally.event("never-reading", "disconnected", 1);
            } else {
                let how = format!(
                    "NOT disconnected (writes went through for {:.1} s, {} blocks)",
                    d.cut_after.as_secs_f64(),
                    d.blocks
                );
                tally.event("never-reading", how, 1);
            }
            tally.event("never-reading", "blocks written", d.blocks);
            tally.max(
                "never-reading",
                "longest until cut (ms)",
                d.cut_after.as_millis() as u64,
            );
            Duration::from_secs(20)
        }
    }
}
