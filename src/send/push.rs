//! `send push`: pushes images to one or more nodes, raw or framed, at a given rate and concurrency —
//! the upstream that the fault-tolerance strategies rely on.
//!
//! # Framed: streams, retention, release
//!
//! Every worker is one stream (`<source prefix>-<worker>`) with its own sequence numbers. It *keeps*
//! every block it sent until the block is *released*, and releases it only when the nodes have
//! acknowledged it at `release` level (a stronger ack also releases: durable < checkpointed <
//! committed). What each strategy needs: `none` and `active-standby` release on *durable*,
//! `passive-standby` on *checkpointed* (a block not yet in a checkpoint must be re-sent to a standby
//! that takes over from that checkpoint), `upstream-backup` on *committed* (only the output is safe).
//! An image goes into the manifest as acknowledged only when it is released.
//!
//! The kept blocks are the *retention log*. It is bounded over all streams by `retention_max_blocks`
//! and `retention_max_bytes`; per stream, `window` bounds the blocks *in flight* (sent and not yet
//! acknowledged at any level by the node that has the most of them) — flow control, apart from
//! retention, so that a release level slower than the WAL (a checkpoint, a commit) does not cap the
//! flow at `window` blocks per commit latency. When a bound is reached the streams stop taking new
//! images (backpressure: the push slows down to what the nodes acknowledge and release) and never drop
//! one; see `send::retention`.
//!
//! # Framed: modes
//!
//! - [`SendMode::Failover`] (strategies none, upstream-backup, passive-standby): a stream talks to one
//!   node at a time, starting with the first target. It moves on to the next target (round-robin,
//!   backoff 10 ms doubling to 500 ms, reset by an ack) when the connection fails, when the node says
//!   ROLE standby, when a version 2 node has said nothing at all (no ack, no ROLE, no keepalive) for
//!   `silence_timeout` while the stream keeps any block not yet released — a node cut off by a partition
//!   or a half-open connection, even if every kept block was acknowledged durable and only waits for a
//!   commit — or when it is connected but for `stall_timeout`, while blocks are outstanding, neither
//!   acknowledges anything nor takes any more bytes (a node that still reads what it is sent is busy —
//!   a long group commit under load — not hung; a hung one stops reading once the socket buffers are
//!   full); it then re-sends every block it keeps, in order. A node that sends no ROLE (a
//!   version 1 node, or one that does not announce roles) counts as primary.
//! - [`SendMode::Mirror`] (active-standby): a stream keeps a connection to every target and sends every
//!   block to all of them. The *primary* is the target whose latest ROLE says primary with the highest
//!   epoch (a version 1 node counts as primary at epoch 0; a version 2 node is nothing until its ROLE
//!   arrives). A block is released when the primary acked it at `release` level **and** every other
//!   target that is connected and says standby acked it durable. A standby target that is not connected
//!   (or not yet said standby) holds blocks back for `standby_grace` — from the start of the stream, or
//!   from when it went away — so a standby that is still connecting, or whose connection is being
//!   re-made, never misses a block the primary alone released; only a standby gone for longer than that
//!   stops holding blocks back (a warning says "running without standby", once per push). A standby's
//!   ack alone never releases anything. A standby that says ROLE primary with a higher epoch is the primary
//!   from then on. A target that reconnects is re-sent every kept block. Each target has its own
//!   reconnect backoff and stall timeout.
//!
//! A node's acks for a target count only from the connection they arrived on: a reconnect forgets
//! them and re-sends (a fresh node behind the same address knows nothing of the old one's acks). The
//! node stores a re-sent block once and acknowledges it again.
//!
//! A stream that releases nothing for `give_up_after` (over all targets) while it has blocks kept or
//! no node to send to fails the push with [`PushError::GaveUp`], naming the targets.
//!
//! # Framed: a source id used before
//!
//! Streams speak protocol version 3 where the node does: a node answers HELD, in place of the
//! durable ack, to a block it held already. For a block's *first send* in the run (to no connection
//! before, and to the target whose acks count: failover the active one, mirror the primary) that
//! means the source id was used before — an earlier run with the same `--source-prefix` counts from
//! seq 0 again, and the node would ack its images without storing them — and the stream fails with
//! [`PushError::SourceReused`], naming the source, the node and the seqs. HELD for a re-send (after a
//! reconnect or a failover) or for a copy to a standby is what a re-send is for, and
//! [`PushOptions::resume`] (a sender started again to re-send what an earlier run sent) turns the
//! check off. A block's first send is released only once the node answered it itself (a durable ack
//! or HELD), so a committed ack that overtakes a HELD answer (a block committed long ago) does not
//! release it first.
//!
//! # Stopping early
//!
//! [`push_until`] takes a [`Stop`] watch (`send push` turns SIGINT and SIGTERM into it, see
//! `send::interrupt`): at `Drain` no stream takes a new image and each ends once what it sent is
//! released; at `Now` each ends at once. A stream that ends with blocks kept — stopped now, or failing
//! — writes them into the manifest as not acknowledged, and one failing stream stops the others now,
//! so the manifest always has a line for every image sent: `acked` exactly for those released.
//!
//! # Raw
//!
//! Every image is one connection to the first target that takes it; the worker writes it, closes its
//! side and waits for the node to close. The raw protocol has no acknowledgement, so raw images go into
//! the manifest as sent, not acked.
//!
//! # Measuring
//!
//! [`PushReport`] has the totals (`bytes_sent_total`: every byte written to every node, re-sends and
//! mirror copies included). A [`Timeline`] given in the options records, per block, when it was first
//! sent, released and first acknowledged committed by any node, and the bytes written to each target.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::link::AbortOnDrop;
use super::manifest::ManifestWriter;
pub use super::options::{
    default_source_prefix, release_level, Protocol, PushOptions, SendMode, Stop,
    DEFAULT_STANDBY_GRACE, DEFAULT_TARGET,
};
pub use super::report::{PushError, PushReport};
use super::shared::Shared;
pub use super::timeline::{Timeline, TimelineEntry};
use super::{raw, stream};
use crate::images::ImageSet;
use tokio::sync::watch;

/// Pushes `opts.count` images from `images`; records them in `manifest` if given.
pub async fn push(
    opts: PushOptions,
    images: ImageSet,
    manifest: Option<Arc<ManifestWriter>>,
) -> Result<PushReport, PushError> {
    let (_never, stop) = watch::channel(Stop::Running);
    push_until(opts, images, manifest, stop).await
}

/// [`push`], told by `stop` when to stop early: at [`Stop::Drain`] it takes no new image and ends
/// once every image sent is released (or `stop` says [`Stop::Now`]); at `Stop::Now` it ends at once.
/// Either way the manifest has a line for every image sent (not acknowledged for those not
/// released) and the report says it was interrupted. A worker that fails stops the others the same
/// way (now), so their lines are written too.
pub async fn push_until(
    opts: PushOptions,
    images: ImageSet,
    manifest: Option<Arc<ManifestWriter>>,
    mut stop: watch::Receiver<Stop>,
) -> Result<PushReport, PushError> {
    if opts.targets.is_empty() {
        return Err(PushError::Options("no target node to send to".into()));
    }
    if opts.protocol == Protocol::Raw && opts.mode == SendMode::Mirror {
        return Err(PushError::Options(
            "mirror mode needs the framed protocol (raw has no acknowledgements)".into(),
        ));
    }
    // The workers' own stop: the caller's, or "now" once one of them failed.
    let (stop_workers, workers_stop) = watch::channel(*stop.borrow());
    let shared = Arc::new(Shared::new(opts.clone(), images, manifest, workers_stop));
    let forward = {
        let stop_workers = stop_workers.clone();
        tokio::spawn(async move {
            while stop.changed().await.is_ok() {
                let level = *stop.borrow_and_update();
                stop_workers.send_if_modified(|s| {
                    let raise = level > *s;
                    if raise {
                        *s = level;
                    }
                    raise
                });
            }
        })
    };
    let _forward = AbortOnDrop(forward);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..opts.concurrency.max(1) {
        let shared = shared.clone();
        match opts.protocol {
            Protocol::Framed => tasks.spawn(stream::run(shared, w)),
            Protocol::Raw => tasks.spawn(raw::run(shared)),
        };
    }
    let mut report = PushReport::default();
    let mut first_err = None;
    while let Some(r) = tasks.join_next().await {
        match r {
            Ok(Ok(r)) => report.merge(r),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
                // One stream failing fails the push: stop the others now instead of waiting for
                // them (they write what they sent and did not release into the manifest).
                let _ = stop_workers.send(Stop::Now);
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(PushError::Options(format!("worker panicked: {e}")));
                let _ = stop_workers.send(Stop::Now);
            }
        }
    }
    if let Some(m) = &shared.manifest {
        m.flush()?;
    }
    report.elapsed = shared.started.elapsed();
    report.interrupted = shared.stop_level() > Stop::Running && report.sent < opts.count;
    report.bytes_sent_total = shared
        .target_bytes
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .sum();
    (report.peak_retained_blocks, report.peak_retained_bytes) = shared.gauge().peak();
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}
