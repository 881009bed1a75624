//! Hostile clients against a real node process: memory, descriptors and slots stay bounded whatever
//! they do. Each test starts `hdfs-ingest run` (with its own descriptor limits where it matters),
//! misbehaves at it over loopback, and measures the node from `/proc/<pid>/status` (VmHWM, VmSize) and
//! `/proc/<pid>/fd`, against the budgets its configuration sets. The budgets are small so the numbers
//! come in seconds.
//!
//! `HOSTILE_NODE_BIN=/path/to/hdfs-ingest` runs the same clients against another build.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdfs_ingest::protocol::{block_header, ErrorCode};
use it::hostile::{
    self, durable, error_code, frames_for, header_announcing, hello, raise_own_nofile, MIB,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn node_bin() -> PathBuf {
    std::env::var_os("HOSTILE_NODE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(it::bin)
}

/// A node process whose log (stderr) the test reads.
struct Node {
    child: Child,
    addresses: Vec<String>,
    log: Arc<Mutex<Vec<String>>>,
}

/// How a node process ended before it was ready.
struct Refused {
    log: String,
}

fn spawn(config: &Path, nofile: Option<(u64, u64)>) -> anyhow::Result<Result<Node, Refused>> {
    let mut cmd = Command::new(node_bin());
    cmd.args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((soft, hard)) = nofile {
        // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit {
                    rlim_cur: soft,
                    rlim_max: hard,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("spawn hdfs-ingest run")?;
    let log = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().context("stderr")?;
    let l = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            l.lock().unwrap().push(line);
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().context("stdout")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("ready ") {
                let _ = tx.send(
                    rest.split_whitespace()
                        .map(String::from)
                        .collect::<Vec<_>>(),
                );
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addresses) => Ok(Ok(Node {
            child,
            addresses,
            log,
        })),
        Err(_) => {
            let _ = child.kill();
            child.wait()?;
            std::thread::sleep(Duration::from_millis(100));
            let log = log.lock().unwrap().join("\n");
            Ok(Err(Refused { log }))
        }
    }
}

fn start(config: &Path, nofile: Option<(u64, u64)>) -> anyhow::Result<Node> {
    match spawn(config, nofile)? {
        Ok(n) => Ok(n),
        Err(r) => bail!("node did not become ready:\n{}", r.log),
    }
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn peak_rss(&self) -> u64 {
        hostile::peak_rss(self.pid())
    }
    fn vm_size(&self) -> u64 {
        hostile::vm_size(self.pid())
    }
    fn fds(&self) -> usize {
        hostile::fds(self.pid())
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
    fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &Path, receiver: &str, sources: &str) -> anyhow::Result<PathBuf> {
    it::write_config(
        dir,
        &format!(
            "[receiver]\n{receiver}\n{sources}\n[analysis]\nenabled = false\n[batch]\ninterval = \"200ms\"\n"
        ),
    )
}

const FRAMED: &str = "[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:0\"\n";

/// A raw listener (on a port of its own: two listeners may not both say port 0).
fn raw() -> String {
    format!(
        "[[receiver.sources]]\nkind = \"raw-listen\"\naddress = \"127.0.0.1:{}\"\nsource = \"raw\"\n",
        it::free_port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_pipelining_30_mib_blocks_keep_the_node_under_its_budget(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let budget = 32 * MIB;
    let cfg = config(
        dir.path(),
        "max_block_size = \"31 MiB\"\ninflight_budget = \"32 MiB\"\nmax_connections = 64",
        FRAMED,
    )?;
    let node = start(&cfg, None)?;
    let base = node.peak_rss();
    let addr = node.addresses[0].clone();
    let body: Arc<Vec<u8>> = Arc::new((0..30 * MIB as usize).map(|i| (i % 251) as u8).collect());
    let conns = 32;
    let written = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut clients = Vec::new();
    for c in 0..conns {
        let (addr, body, written) = (addr.clone(), body.clone(), written.clone());
        clients.push(tokio::spawn(async move {
            let source = format!("big-{c}");
            let _ = hostile::pipelined(&addr, &source, body, 3, written, Duration::ZERO).await;
        }));
    }
    // Until the node has taken 12 blocks' worth, which the node before this change held all at
    // once, or 30 s.
    let target = 12 * 30 * MIB;
    let started = Instant::now();
    while written.load(std::sync::atomic::Ordering::Relaxed) < target
        && started.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = written.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "clients wrote {} MiB in {:?}",
        sent / MIB,
        started.elapsed()
    );
    let peak = node.peak_rss();
    for c in clients {
        c.abort();
    }
    // The budget, the node's two copies of a block while the WAL appends it (the record and the
    // write), a block's worth of slack for the moment one is freed and the next one arrives, and a
    // fixed amount per connection.
    let allowed = base + 4 * budget + conns * MIB;
    println!(
        "{conns} connections x 3 pipelined 30 MiB blocks: peak RSS {} MiB (at start {} MiB, allowed {} MiB, budget {} MiB)",
        peak / MIB,
        base / MIB,
        allowed / MIB,
        budget / MIB
    );
    assert!(
        peak <= allowed,
        "peak RSS {} MiB over {} MiB",
        peak / MIB,
        allowed / MIB
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_headers_announcing_32_mib_and_then_silence_cost_no_memory(
) -> anyhow::Result<()> {
    raise_own_nofile();
    let dir = tempfile::tempdir()?;
    let cfg = config(
        dir.path(),
        "max_block_size = \"32 MiB\"\ninflight_budget = \"64 MiB\"\nmax_connections = 600\nidle_timeout = \"30s\"",
        FRAMED,
    )?;
    let node = start(&cfg, None)?;
    let (rss0, vm0) = (node.peak_rss(), node.vm_size());
    let addr = node.addresses[0].clone();
    let mut silent = Vec::new();
    for c in 0..500u64 {
        let mut s = TcpStream::connect(&addr).await?;
        s.write_all(&hello(&format!("silent-{c}"))).await?;
        s.write_all(&header_announcing(0, 32 << 20)).await?;
        silent.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, vm) = (node.peak_rss(), node.vm_size());
    // An honest client still gets its block in: the silent ones hold none of the budget.
    let mut honest = TcpStream::connect(&addr).await?;
    honest.write_all(&hello("honest")).await?;
    let data = vec![7u8; 256 * 1024];
    honest.write_all(&block_header(1, &data)).await?;
    honest.write_all(&data).await?;
    let (frames, _) = frames_for(&mut honest, Duration::from_secs(3)).await;
    println!(
        "500 silent 32 MiB headers: VmSize {} -> {} MiB, peak RSS {} -> {} MiB, {} descriptors",
        vm0 / MIB,
        vm / MIB,
        rss0 / MIB,
        rss / MIB,
        node.fds()
    );
    assert!(
        vm < vm0 + 1024 * MIB,
        "VmSize grew from {} to {} MiB",
        vm0 / MIB,
        vm / MIB
    );
    assert!(rss < rss0 + 64 * MIB, "peak RSS {} MiB", rss / MIB);
    assert_eq!(durable(&frames), vec![1], "{frames:?}");
    drop(silent);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_no_acks_is_disconnected_with_a_reason() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(
        dir.path(),
        "write_timeout = \"1s\"\ninflight_budget = \"64 MiB\"",
        FRAMED,
    )?;
    let node = start(&cfg, None)?;
    let base = node.peak_rss();
    let hostile::Deaf {
        cut_after, closed, ..
    } = hostile::deaf(&node.addresses[0], "deaf", Duration::from_secs(15), false).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reasons = node.log_lines("does not take its acks");
    println!(
        "deaf client cut after {cut_after:?}, closed: {closed}, peak RSS {} -> {} MiB, log: {reasons:?}",
        base / MIB,
        node.peak_rss() / MIB
    );
    assert!(
        cut_after < Duration::from_secs(15) && closed,
        "a client that reads no acks was not disconnected"
    );
    assert!(
        reasons
            .iter()
            .any(|l| l.contains("receiver.write_timeout") && l.contains("deaf")),
        "the reason is logged: {reasons:?}"
    );
    assert!(node.peak_rss() < base + 64 * MIB);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_raises_its_open_files_soft_limit_to_the_hard_one_and_logs_both(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(dir.path(), "max_connections = 64", FRAMED)?;
    let node = start(&cfg, Some((256, 4096)))?;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", node.pid()))?;
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    let logged = node.log_lines("RLIMIT_NOFILE");
    println!("{line}\n{logged:?}");
    let nums: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(nums, vec!["4096", "4096"], "{line}");
    assert!(
        logged
            .iter()
            .any(|l| l.contains("soft_was=256") && l.contains("hard=4096")),
        "{logged:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_max_connections_the_descriptor_limit_cannot_serve_is_refused_at_start(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(
        dir.path(),
        "max_connections = 1024",
        &format!("{}{FRAMED}", raw()),
    )?;
    let refused = match spawn(&cfg, Some((1024, 1024)))? {
        Ok(_) => bail!("the node started with 1024 connections and 1024 descriptors"),
        Err(r) => r,
    };
    println!("{}", refused.log);
    let log = refused.log;
    assert!(
        log.contains("receiver.max_connections")
            && log.contains("RLIMIT_NOFILE) is 1024")
            && log.contains("1024 + 130 for the node itself")
            && log.contains("at most 894"),
        "{log}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_flood_at_the_descriptor_limit_neither_kills_the_node_nor_locks_framed_senders_out(
) -> anyhow::Result<()> {
    raise_own_nofile();
    let dir = tempfile::tempdir()?;
    // 880 connections and 1024 descriptors: 440 for each listener, the node's own 130 beside them.
    let cfg = config(
        dir.path(),
        "max_connections = 880\nidle_timeout = \"30s\"",
        &format!("{}{FRAMED}\n[wal]\nsegment_size = \"1 MiB\"\n", raw()),
    )?;
    let mut node = start(&cfg, Some((1024, 1024)))?;
    let (raw, framed) = (node.addresses[0].clone(), node.addresses[1].clone());
    let flood = hostile::flood(&raw, 1100, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let fds_flooded = node.fds();
    // A framed sender is served, and its blocks go into new WAL segments (each needs a descriptor).
    // Within a few seconds: the flood's connections stay for their 30 s idle timeout.
    let started = Instant::now();
    let framed_sender = async {
        let mut s = TcpStream::connect(&framed).await?;
        s.write_all(&hello("after-flood")).await?;
        let data = vec![9u8; 64 * 1024];
        for seq in 0..64 {
            s.write_all(&block_header(seq, &data)).await?;
            s.write_all(&data).await?;
        }
        anyhow::Ok(frames_for(&mut s, Duration::from_secs(5)).await.0)
    };
    let frames = tokio::time::timeout(Duration::from_secs(10), framed_sender)
        .await
        .unwrap_or(Ok(Vec::new()))?;
    let acked = durable(&frames).len();
    println!(
        "{} raw connections opened, node at {fds_flooded} descriptors, framed blocks acked within {:?}: {acked}, alive: {}, frames {:?}",
        flood.len(),
        started.elapsed(),
        node.alive(),
        error_code(&frames)
    );
    assert!(node.alive(), "the node died: {}", node.log());
    assert!(fds_flooded <= 1024, "{fds_flooded} descriptors");
    assert_eq!(acked, 64, "{frames:?}");
    drop(flood);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_a_listeners_share_are_refused_at_once_counted_and_logged_once_per_interval(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(
        dir.path(),
        "max_connections = 4\nidle_timeout = \"30s\"",
        &format!("{}{FRAMED}", raw()),
    )?;
    let node = start(&cfg, None)?;
    let (raw, framed) = (node.addresses[0].clone(), node.addresses[1].clone());
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(&framed).await?;
        s.write_all(&hello(&format!("held-{i}"))).await?;
        held.push(s);
        held.push(TcpStream::connect(&raw).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Framed: an ERROR frame saying why, then the close.
    let mut third = TcpStream::connect(&framed).await?;
    let (frames, closed) = frames_for(&mut third, Duration::from_secs(2)).await;
    println!("third framed connection: {frames:?}, closed {closed}");
    assert_eq!(
        error_code(&frames),
        Some(ErrorCode::TooManyConnections),
        "{frames:?}"
    );
    assert!(closed);
    // Raw: reset at once (a clean close would read as a delivered image).
    if let Ok(mut third) = TcpStream::connect(&raw).await {
        let (_, closed) = frames_for(&mut third, Duration::from_secs(2)).await;
        assert!(closed, "a raw connection over the share is closed at once");
    }
    // A flood of refusals is logged once per interval with its count, not once per connection.
    for _ in 0..100 {
        let _ = TcpStream::connect(&framed).await?;
        // A refused raw connection is reset; the reset can reach a connect still in progress.
        let _ = TcpStream::connect(&raw).await;
    }
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let lines = node.log_lines("over this listener's share");
    println!("{}", lines.join("\n"));
    for protocol in ["raw", "framed"] {
        let mine: Vec<_> = lines
            .iter()
            .filter(|l| l.contains(&format!("protocol=\"{protocol}\"")))
            .collect();
        let counted = hostile::refused_logged(mine.iter().map(|l| l.as_str()));
        assert!(
            (1..=2).contains(&mine.len()) && counted == 101,
            "{protocol}: {mine:?}"
        );
    }
    drop(held);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_framed_sender_at_200_kib_per_second_is_not_cut_inside_a_long_block(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(dir.path(), "idle_timeout = \"1s\"", FRAMED)?;
    let node = start(&cfg, None)?;
    let mut s = TcpStream::connect(&node.addresses[0]).await?;
    s.write_all(&hello("slow-but-honest")).await?;
    // 600 KiB at 200 KiB/s: three seconds for one block, three idle timeouts.
    let data: Vec<u8> = (0..600 * 1024).map(|i| (i % 13) as u8).collect();
    s.write_all(&block_header(0, &data)).await?;
    let started = Instant::now();
    for chunk in data.chunks(20 * 1024) {
        if s.write_all(chunk).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let (frames, _) = frames_for(&mut s, Duration::from_secs(2)).await;
    println!("600 KiB block at 200 KiB/s over {took:?}: {frames:?}");
    assert_eq!(durable(&frames), vec![0], "{frames:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_client_is_cut_by_the_minimum_rate_on_both_protocols() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(
        dir.path(),
        "idle_timeout = \"1s\"\nmin_rate = \"1 KiB\"",
        &format!("{}{FRAMED}", raw()),
    )?;
    let node = start(&cfg, None)?;
    // A byte every 300 ms: never a second of silence, far under 1 KiB/s.
    let every = Duration::from_millis(300);
    let mut raw = TcpStream::connect(&node.addresses[0]).await?;
    let raw_cut = hostile::trickle(&mut raw, every, Duration::from_secs(6)).await;
    // Framed: a header announcing 64 KiB, then the body a byte at a time; the cut says why.
    let hostile::FramedTrickle {
        cut_after: framed_cut,
        frames,
    } = hostile::framed_trickle(
        &node.addresses[1],
        "trickle",
        64 * 1024,
        every,
        Duration::from_secs(6),
    )
    .await?;
    println!("raw trickle cut after {raw_cut:?}; framed trickle after {framed_cut:?}: {frames:?}");
    assert!(
        raw_cut.is_some_and(|d| d < Duration::from_secs(3)),
        "the raw trickle holds its slot: {raw_cut:?}"
    );
    assert!(framed_cut < Duration::from_secs(3), "{framed_cut:?}");
    assert_eq!(error_code(&frames), Some(ErrorCode::Timeout), "{frames:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_bytes_in_a_client_chosen_source_id_reach_the_log_escaped() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(dir.path(), "", FRAMED)?;
    let node = start(&cfg, None)?;
    let mut s = TcpStream::connect(&node.addresses[0]).await?;
    s.write_all(&hello("evil\nFORGED LINE\u{1b}[31m\0")).await?;
    let (frames, _) = frames_for(&mut s, Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = node.log();
    println!("{frames:?}\n{}", node.log_lines("evil").join("\n"));
    assert_eq!(error_code(&frames), Some(ErrorCode::InvalidSource));
    assert!(log.contains("evil"), "the refusal is logged: {log}");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED LINE")),
        "a newline from the client started a log line: {log}"
    );
    assert!(
        !log.contains('\u{1b}') && !log.contains('\0'),
        "raw ESC or NUL in the log"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_cannot_bind_names_its_config_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let cfg = config(
        dir.path(),
        "",
        &format!("{FRAMED}[[receiver.sources]]\nkind = \"raw-listen\"\naddress = \"{addr}\"\n"),
    )?;
    let refused = match spawn(&cfg, None)? {
        Ok(_) => bail!("the node started on a port in use"),
        Err(r) => r,
    };
    println!("{}", refused.log);
    assert!(
        refused.log.contains("receiver.sources[1].address")
            && refused.log.contains(&addr.to_string()),
        "{}",
        refused.log
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_image_refused_over_the_listeners_share_is_sent_again_not_taken_for_delivered(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let cfg = config(
        dir.path(),
        "max_connections = 4\nidle_timeout = \"30s\"",
        &format!("{}{FRAMED}", raw()),
    )?;
    let mut node = start(&cfg, None)?;
    let raw = node.addresses[0].clone();
    // The raw listener's whole share (2) held by idle connections for the first 2 s of the push.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(TcpStream::connect(&raw).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let manifest = dir.path().join("raw.jsonl");
    let mut sender = std::process::Command::new(node_bin())
        .args(["send", "push", "--protocol", "raw", "--address", &raw])
        .args(["--count", "20", "--concurrency", "1", "--manifest"])
        .arg(&manifest)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = sender.try_wait()? {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the raw push never ended"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.success(),
        "the push ends once every image got in: {status}"
    );
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(node.pid() as i32, libc::SIGTERM) };
    let st = node.child.wait()?;
    assert!(st.success(), "{}", node.log());
    let entries = hdfs_ingest::send::manifest::read_manifest(&manifest)?;
    assert_eq!(entries.len(), 20, "one line per image");
    let report = hdfs_ingest::verify::verify(&entries, &dir.path().join("data/output"), true)?;
    println!("{}", report.summary());
    assert!(
        report.lost.is_empty(),
        "raw images the sender counted as sent are not in the output: {:?}",
        report.lost
    );
    assert_eq!(report.found, 20);
    Ok(())
}
