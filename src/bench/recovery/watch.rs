//! Watching a `bench recovery` run, and what its observations come to: the figures of one run
//! ([`RunResult`]).
//!
//! A [`Watcher`] polls, every 5 ms on a thread of its own, what the nodes and the sender do not say
//! themselves: when each image's batch appeared in the output (a batch is published with one
//! rename, so a directory seen is complete), the checkpoint store's size (its peak is a figure; the
//! `--checkpoint-mb` variant waits on it), and after the kill the new node's `write_bytes` against
//! the bytes the sender has written (the replay rate). With the store and output on HDFS a task
//! polls them every 20 ms instead.
//!
//! The times are measured here too, all in ms after the SIGKILL: detection and serving from the
//! standby's `takeover` event (wall-clock milliseconds, the kill's wall clock taken next to its
//! [`Instant`]), the first new ack from the sender's [`Timeline`], the commit of every image sent
//! before the kill from its committed ack or else from its appearance in the output.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Serialize;

use super::plan::{OutputAt, RunPaths, StoreAt};
use crate::bench::child::proc_write_bytes;
use crate::bench::stats::ms_between;
use crate::ha::TakeoverEvent;
use crate::send::push::{Timeline, TimelineEntry};

/// Every figure of one run (ms are after the SIGKILL).
#[derive(Clone, Debug, Serialize)]
pub struct RunResult {
    pub strategy: String,
    pub run: usize,
    /// The standby took over this long *before* the kill: the primary's heartbeats stalled for more
    /// than `failure_timeout` under load (a false failover). The run's times are left out of the
    /// percentiles; its bytes still count.
    pub took_over_before_kill_ms: Option<f64>,
    /// The standby took over during the unpaced steady run, while the primary was alive.
    pub steady_false_takeover: bool,
    pub detection_ms: f64,
    pub serving_ms: f64,
    /// The first ack (any level) from the node serving after the fault.
    pub first_ack_ms: Option<f64>,
    pub new_ack_ms: Option<f64>,
    pub all_committed_ms: f64,
    pub all_sent_committed_ms: f64,
    /// Images released before the kill whose commit time is their appearance in the output: their
    /// committed ack never reached the sender (the node committed them before the sender's stream
    /// had reconnected to it).
    pub commits_seen_in_output: usize,
    pub throughput_images_s: Option<f64>,
    pub throughput_mb_s: Option<f64>,
    pub network_bytes: u64,
    pub image_bytes: u64,
    pub network_per_mb: f64,
    /// Network bytes per MB of images up to the kill (both nodes alive).
    pub network_per_mb_until_kill: f64,
    /// Bytes written to each node (primary first) in the steady and the failover phase.
    pub network_bytes_by_node: Vec<(u64, u64)>,
    pub storage_bytes: u64,
    pub storage_per_mb: f64,
    pub store_peak_bytes: u64,
    /// Serving − detection (`none`: the restart until ready).
    pub load_ms: f64,
    pub replayed_bytes: u64,
    pub replay_mb_s: Option<f64>,
    pub images_released: u64,
    pub resent: u64,
    pub failovers: u64,
    pub verify: String,
}

/// What the watcher thread saw.
#[derive(Default)]
pub(super) struct Seen {
    /// First time each image was in a published batch of the output.
    pub(super) in_output: HashMap<(String, u64), Instant>,
    pub(super) store_peak: u64,
    store_now: u64,
    /// After the kill: (when, the new node's write_bytes, bytes the sender wrote in all).
    pub(super) replay: Vec<(Instant, u64, u64)>,
}

/// Polls the output, the checkpoint store and (after the kill) the new node every 5 ms.
pub(super) struct Watcher {
    stop: Arc<AtomicBool>,
    new_pid: Arc<AtomicU32>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
    hdfs: Option<tokio::task::JoinHandle<()>>,
}

impl Watcher {
    pub(super) fn start(paths: &RunPaths, timeline: Arc<Mutex<Option<Arc<Timeline>>>>) -> Watcher {
        let stop = Arc::new(AtomicBool::new(false));
        let new_pid = Arc::new(AtomicU32::new(0));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let thread = {
            let (stop, new_pid, seen) = (stop.clone(), new_pid.clone(), seen.clone());
            let output = match &paths.output {
                OutputAt::Local(p) => Some(p.clone()),
                OutputAt::Hdfs(_) => None,
            };
            let local_store = match &paths.store {
                StoreAt::Local(p) => Some(p.clone()),
                StoreAt::Hdfs(_) => None,
            };
            std::thread::spawn(move || {
                let mut batches = HashSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let store = local_store.as_deref().map(dir_size);
                    let pid = new_pid.load(Ordering::Relaxed);
                    let replay = (pid != 0).then(|| {
                        let sent = lock(&timeline).as_ref().map_or(0, |t| t.bytes_total());
                        (now, proc_write_bytes(pid).unwrap_or(0), sent)
                    });
                    let fresh = output
                        .as_deref()
                        .map_or_else(Vec::new, |o| new_batches(o, &mut batches));
                    {
                        let mut s = lock(&seen);
                        if let Some(b) = store {
                            s.store_peak = s.store_peak.max(b);
                            s.store_now = b;
                        }
                        if let Some(r) = replay {
                            s.replay.push(r);
                        }
                        for key in fresh {
                            s.in_output.entry(key).or_insert(now);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let hdfs = match &paths.store {
            StoreAt::Hdfs(url) => {
                let (stop, seen, url) = (stop.clone(), seen.clone(), url.clone());
                Some(tokio::spawn(async move {
                    let Ok((base, root)) = crate::config::split_hdfs_url(&url) else {
                        return;
                    };
                    let opts = strategies::store::hdfs::HdfsOptions::default();
                    let Ok(client) = strategies::store::hdfs::build_client(&base, &opts) else {
                        return;
                    };
                    let (store, output) = (format!("{root}/checkpoints"), format!("{root}/output"));
                    let mut batches = HashSet::new();
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(c) = client.get_content_summary(&store).await {
                            let mut s = lock(&seen);
                            s.store_peak = s.store_peak.max(c.length);
                            s.store_now = c.length;
                        }
                        let now = Instant::now();
                        let fresh = new_hdfs_batches(&client, &output, &mut batches).await;
                        {
                            let mut s = lock(&seen);
                            for key in fresh {
                                s.in_output.entry(key).or_insert(now);
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }))
            }
            StoreAt::Local(_) => None,
        };
        Watcher {
            stop,
            new_pid,
            seen,
            thread: Some(thread),
            hdfs,
        }
    }

    pub(super) async fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || t.join()).await;
        }
        if let Some(h) = self.hdfs.take() {
            let _ = h.await;
        }
        std::mem::take(&mut *lock(&self.seen))
    }

    /// From now on, samples `pid`'s `write_bytes` (the node that took over) for the replay rate.
    pub(super) fn follow(&self, pid: u32) {
        self.new_pid.store(pid, Ordering::Relaxed);
    }

    /// The checkpoint store's size at the last poll.
    pub(super) fn store_now(&self) -> u64 {
        lock(&self.seen).store_now
    }

    /// Waits until the output has every image of `entries`; an error naming how many it lacks at
    /// `deadline`.
    pub(super) async fn wait_for_output(
        &self,
        tag: &str,
        entries: &[TimelineEntry],
        deadline: Instant,
    ) -> anyhow::Result<()> {
        loop {
            let missing = {
                let seen = lock(&self.seen);
                entries
                    .iter()
                    .filter(|e| !seen.in_output.contains_key(&(e.source.clone(), e.seq)))
                    .count()
            };
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{tag}: {missing} released images are not in the output");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until every one of `entries` is committed ([`commit_of`]), or `deadline`; the ones that
    /// are not, described (`source-seq (released +12 ms)`).
    pub(super) async fn wait_committed(
        &self,
        entries: &[&TimelineEntry],
        kill: Instant,
        deadline: Instant,
    ) -> Vec<String> {
        loop {
            let uncommitted: Vec<String> = {
                let seen = lock(&self.seen);
                entries
                    .iter()
                    .filter(|e| commit_of(e, &seen).is_none())
                    .map(|e| {
                        format!(
                            "{}-{} (released {})",
                            e.source,
                            e.seq,
                            e.released.map_or("never".into(), |r| format!(
                                "{:+.0} ms",
                                ms_between(kill, r)
                            ))
                        )
                    })
                    .collect()
            };
            if uncommitted.is_empty() || Instant::now() > deadline {
                return uncommitted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = &self.hdfs {
            h.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes of the regular files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The `(source, seq)` of the images in one file of a batch: the file itself, or the images of a
/// packed part file.
fn images_of(name: &str, data: impl FnOnce() -> Option<bytes::Bytes>) -> Vec<(String, u64)> {
    let names: Vec<String> = match crate::layout::Format::of_part_name(name) {
        Some(format) => data()
            .and_then(|d| crate::layout::read::decode_part(format, d).ok())
            .map(|images| images.into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default(),
        None => vec![name.to_owned()],
    };
    names
        .iter()
        .filter_map(|n| crate::verify::parse_image_name(n).map(|(s, q)| (s.to_string(), q)))
        .collect()
}

/// The images of batch directories published since the last call (a batch is published with one
/// rename, so a directory seen is complete), in any layout.
fn new_batches(output: &Path, known: &mut HashSet<String>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(batches) = crate::layout::read::local_batch_dirs(output) else {
        return out;
    };
    for batch in batches {
        if known.contains(&batch) {
            continue;
        }
        let dir = output.join(&batch);
        if let Ok(files) = crate::layout::read::local_batch_files(&dir) {
            for f in files {
                let fname = f
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                out.extend(images_of(&fname, || {
                    std::fs::read(&f).ok().map(bytes::Bytes::from)
                }));
            }
        }
        known.insert(batch);
    }
    out
}

/// [`new_batches`] for an output on HDFS.
async fn new_hdfs_batches(
    client: &hdfs_native::Client,
    output: &str,
    known: &mut HashSet<String>,
) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(all) = client.list_status(output, true).await else {
        return out;
    };
    // Every file's batch is its directory; staging and hidden names are skipped.
    let mut by_batch: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for f in all.into_iter().filter(|f| !f.isdir) {
        let Some(rel) = f
            .path
            .strip_prefix(output)
            .map(|r| r.trim_start_matches('/'))
        else {
            continue;
        };
        let Some((batch, name)) = rel.rsplit_once('/') else {
            continue;
        };
        if batch.split('/').any(|p| p.starts_with(['_', '.'])) || name.starts_with(['_', '.']) {
            continue;
        }
        by_batch
            .entry(batch.to_owned())
            .or_default()
            .push(name.to_owned());
    }
    for (batch, files) in by_batch {
        if known.contains(&batch) {
            continue;
        }
        for name in files {
            let data = if crate::layout::Format::of_part_name(&name).is_some() {
                match client.read(&format!("{output}/{batch}/{name}")).await {
                    Ok(r) => r.read_range(0, r.file_length()).await.ok(),
                    Err(_) => None,
                }
            } else {
                None
            };
            out.extend(images_of(&name, || data));
        }
        known.insert(batch);
    }
    out
}

/// Steady-state throughput, end to end: every image of the unpaced run over the time from the first
/// send until the last image *landed* — its committed ack, or its batch seen in the output, whichever
/// came first. Every strategy pays the same tail (the last batch's interval and commit), so the
/// ratios compare like with like; the release rate does not, since a strategy that releases on a
/// commit releases in bursts, one per batch, and one that releases on *durable* ends its push before
/// its output has the images.
pub(super) fn landing_rate(
    entries: &[TimelineEntry],
    in_output: &HashMap<(String, u64), Instant>,
    image_len: u64,
) -> Option<(f64, f64)> {
    let first_send = entries.iter().map(|e| e.sent).min()?;
    let mut last = first_send;
    for e in entries {
        let out = in_output.get(&(e.source.clone(), e.seq)).copied();
        let landed = match (e.committed, out) {
            (Some(c), Some(o)) => c.min(o),
            (c, o) => c.or(o)?,
        };
        last = last.max(landed);
    }
    let secs = last.duration_since(first_send).as_secs_f64();
    let n = entries.len() as f64;
    (secs > 0.0).then(|| (n / secs, n * image_len as f64 / 1e6 / secs))
}

/// An image's commit: its committed ack, or else when it appeared in the output (`true`: the ack
/// never reached the sender, whose stream had not reconnected when the node committed it).
fn commit_of(e: &TimelineEntry, seen: &Seen) -> Option<(Instant, bool)> {
    let out = seen.in_output.get(&(e.source.clone(), e.seq)).copied();
    match (e.committed, out) {
        (Some(c), _) => Some((c, false)),
        (None, Some(o)) => Some((o, true)),
        (None, None) => None,
    }
}

/// A standby's takeover against the kill.
pub(super) struct Takeover {
    pub(super) serving: Instant,
    pub(super) detection_ms: f64,
    /// The standby detected the primary's silence this long *before* the kill.
    pub(super) early_ms: Option<f64>,
}

/// Reads the takeover event's wall-clock times against the kill's (`kill_wall`, taken next to
/// `kill`).
pub(super) fn takeover_times(ev: &TakeoverEvent, kill: Instant, kill_wall: SystemTime) -> Takeover {
    let kill_ms = unix_ms_f64(kill_wall);
    let early_ms =
        ((ev.detected_unix_ms as f64) < kill_ms).then_some(kill_ms - ev.detected_unix_ms as f64);
    let serving_ms = ev.serving_unix_ms as f64 - kill_ms;
    Takeover {
        serving: kill + Duration::from_secs_f64(serving_ms.max(0.0) / 1e3),
        detection_ms: ev.detected_unix_ms as f64 - kill_ms,
        early_ms,
    }
}

/// From when a release or an ack can be the recovered node's: before it served (minus 5 ms for clock
/// rounding) they can only be the dead node's, still in the sender's socket buffer.
fn recovered_from(kill: Instant, serving: Instant) -> Instant {
    serving
        .checked_sub(Duration::from_millis(5))
        .unwrap_or(kill)
        .max(kill)
}

/// The first ack of any level from the node that serves after the fault (`survivor`, its address),
/// in ms after the fault: how soon the sender talks to the new primary.
pub(super) fn first_ack_ms(
    timeline: &crate::send::push::Timeline,
    survivor: &str,
    kill: Instant,
    serving: Instant,
) -> Option<f64> {
    timeline
        .first_ack_from(survivor, recovered_from(kill, serving))
        .map(|t| ms_between(kill, t))
}

/// The first release after the kill that the recovered node sent.
pub(super) fn new_ack_ms(
    entries: &[TimelineEntry],
    kill: Instant,
    serving: Instant,
) -> Option<f64> {
    let not_before = recovered_from(kill, serving);
    entries
        .iter()
        .filter_map(|e| e.released)
        .filter(|r| *r >= not_before)
        .min()
        .map(|r| ms_between(kill, r))
}

/// When the images sent before the kill were committed, in ms after it.
#[derive(Default)]
pub(super) struct Commits {
    /// The latest commit of an image released before the kill.
    pub(super) all_committed_ms: f64,
    /// The latest commit of an image sent before the kill.
    pub(super) all_sent_committed_ms: f64,
    /// Images released before the kill whose commit is their appearance in the output.
    pub(super) seen_in_output: usize,
}

/// [`Commits`] of `before_kill`, every one of which must be committed.
pub(super) fn commit_times(
    before_kill: &[&TimelineEntry],
    seen: &Seen,
    kill: Instant,
) -> anyhow::Result<Commits> {
    let mut c = Commits::default();
    for e in before_kill {
        let (at, from_output) = commit_of(e, seen).context("checked above")?;
        c.all_sent_committed_ms = c.all_sent_committed_ms.max(ms_between(kill, at));
        if e.released.is_some_and(|r| r < kill) {
            c.seen_in_output += usize::from(from_output);
            c.all_committed_ms = c.all_committed_ms.max(ms_between(kill, at));
        }
    }
    Ok(c)
}

/// How fast the new node wrote what the sender re-sent after the kill, in MB/s: from the first
/// re-sent byte (64 KiB past `sent_at_kill`) until its `write_bytes` had grown by `replayed_bytes`.
pub(super) fn replay_rate(seen: &Seen, sent_at_kill: u64, replayed_bytes: u64) -> Option<f64> {
    let start = seen
        .replay
        .iter()
        .find(|(_, _, sent)| *sent > sent_at_kill + 65_536)
        .map(|(t, _, _)| *t);
    let base = seen.replay.first().map_or(0, |(_, w, _)| *w);
    let end = seen
        .replay
        .iter()
        .find(|(_, w, _)| w.saturating_sub(base) >= replayed_bytes)
        .map(|(t, _, _)| *t);
    match (start, end) {
        (Some(a), Some(b)) if b > a => {
            Some(replayed_bytes as f64 / 1e6 / b.duration_since(a).as_secs_f64())
        }
        _ => None,
    }
}

fn unix_ms_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throughput_is_every_image_over_first_send_to_the_last_landing_whichever_sign_came_first() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let entry = |seq: u64, committed: Option<u64>| TimelineEntry {
            source: "s".into(),
            seq,
            sent: at(seq * 100),
            released: Some(at(seq * 100 + 10)),
            committed: committed.map(at),
        };
        // seq 0: committed ack at 900, in the output at 800 (the ack came late); seq 1: no ack, in
        // the output at 2000; seq 2: acked at 1500, never seen in the output (polled past it).
        let e = vec![entry(0, Some(900)), entry(1, None), entry(2, Some(1500))];
        let out: HashMap<_, _> = [
            (("s".to_string(), 0), at(800)),
            (("s".to_string(), 1), at(2000)),
        ]
        .into_iter()
        .collect();
        let (images_s, mb_s) = landing_rate(&e, &out, 1_000_000).unwrap();
        assert!((images_s - 1.5).abs() < 1e-9, "3 images in 2 s: {images_s}");
        assert!((mb_s - 1.5).abs() < 1e-9, "{mb_s}");
        // An image that never landed leaves no figure rather than a wrong one.
        let e = vec![entry(0, Some(900)), entry(3, None)];
        assert!(landing_rate(&e, &out, 1).is_none());
    }
}
