//! `hdfs-ingest bench recovery`: every fault-tolerance strategy on one seeded workload, its primary
//! killed with SIGKILL mid-stream, measured side by side.
//!
//! # One run
//!
//! For each strategy and run, in a fresh directory:
//!
//! 1. A configuration is written from the shipped `config/<strategy>.toml` (embedded in the binary),
//!    with free ports, `heartbeat_interval = 100ms`, `failure_timeout = 300ms`, `batch.interval = 1s`
//!    and the chosen checkpoint store (a local directory, or a fresh directory under an HDFS URL,
//!    which then holds the output too: `<run dir>/checkpoints` and `<run dir>/output`).
//! 2. The primary, and for the two-node strategies the standby, are started as child processes of
//!    this executable (`run --config .. --role ..`); their stdout is read for `ready`, `standby` and
//!    `takeover {json}`, their stderr goes to `<out>/logs/`.
//! 3. **Steady run** (skipped by the `--checkpoint-mb` variant), on its own nodes: the sender pushes
//!    `--steady-images` images *unpaced*, with the strategy's targets, mode and release level; then
//!    the nodes are stopped and the output verified. The steady-state throughput is end to end: every
//!    image over the time from the first send until the last one landed in the output (see
//!    `landing_rate`). It is a separate run, not a
//!    first phase on the same nodes, so that the failover is measured from a steady state at
//!    `--rate` and not in the wake of the unpaced backlog (batch commits of hundreds of MB, a full
//!    page cache) — and so that a standby that takes over from a live primary under the unpaced load
//!    (heartbeats stalled for longer than `failure_timeout`) is reported as such without spoiling the
//!    failover figures.
//! 4. **Failover run**, on fresh nodes: the sender pushes at `--rate` for `kill-after + after-kill`;
//!    at `kill-after` the primary gets SIGKILL. `none` is restarted in place at once (that is its
//!    recovery); the two-node strategies' standby detects the silence and takes over. The sender fails over on its
//!    own (the [`crate::send::push`] library, in this process, with a [`Timeline`](crate::send::push::Timeline)).
//! 5. Once the push is done and everything sent before the kill is committed, the surviving node
//!    is stopped with SIGTERM and the output is verified against the sender's manifest of released
//!    images ([`crate::verify`]): a lost, duplicated or corrupt image fails the bench.
//!
//! # What is measured (all relative to the SIGKILL, in ms)
//!
//! - **detection**: the standby's `takeover.detected_unix_ms` − kill (`none`: 0, nothing detects; a
//!   supervisor restarts it).
//! - **serving**: `takeover.serving_unix_ms` − kill (`none`: until the restarted node printed `ready`).
//! - **first ack**: the first acknowledgement of any level (durable first) from the node that serves
//!   after the kill — how soon the sender talks to the new primary; the same 5 ms rule as below.
//! - **new ack**: the first release after the kill. Releases before the recovered node served (minus
//!   5 ms for clock rounding) can only be acks the dead node sent before it died that were still in the
//!   sender's socket buffer; they do not count.
//! - **all committed**: the latest commit of an image released before the kill. A commit is the
//!   committed ack, or, when that ack could not reach the sender (a node commits a recovered batch
//!   before the sender's stream has reconnected and registered), the moment the image appeared in
//!   the output, polled every 5 ms. Under `upstream-backup` a release *is* a commit, so this is ≤ 0;
//!   **all sent committed** (every image *sent* before the kill) shows the cost of its replay.
//! - **throughput**: images/s and MB/s of the steady run (above).
//! - **network**: bytes the sender wrote to all nodes (hellos, frames, re-sends, mirror copies) per MB
//!   of images, over both runs, and up to the kill only (both nodes alive: mirror mode's 2×).
//! - **storage**: `write_bytes` of `/proc/<pid>/io` of the node processes — in the steady run every
//!   node at its end, in the failover run the primary just before the kill plus the survivor
//!   (standby or restarted node) at the end — per MB of images; and the checkpoint store's peak size
//!   (sampled every 5 ms).
//! - the `--checkpoint-mb` variant also reports **load** (serving − detection: opening the WAL, the
//!   checkpoint and loading its blocks) and **replay** MB/s: bytes the sender wrote after the kill
//!   (re-sends only: no image is new after the kill in this variant) over the time from the first
//!   re-sent byte until the new node had written as many bytes (its `write_bytes`, sampled every 5 ms).
//!
//! Runs are interleaved (run 1 of every strategy, then run 2, …) so drift on the machine hits all
//! alike. Every figure is reported as p50 and p99 over runs (nearest rank), throughput and bytes also
//! as a ratio to `none`'s p50. The table goes to stdout and `<out>/recovery.md` (with the command line
//! and the machine), every run's figures to `<out>/recovery.json`, the chart to `<out>/recovery.svg`.
//!
//! # The `--checkpoint-mb` variant
//!
//! Shows a takeover that must load a large checkpoint: the batch interval is made long
//! (`kill-after + 7s`), the sender pushes `--checkpoint-mb` MB unpaced and stops, and the primary is
//! killed once every image is released (for `upstream-backup`, whose release needs a commit: once every
//! image was sent) and `kill-after` has passed — so `passive-standby`'s takeover loads a checkpoint of
//! that many MB of uncommitted blocks and `upstream-backup` replays that many MB from the sender.
//! Time to all committed then includes waiting for the long batch interval where the strategy's new
//! primary does not commit at once.
//!
//! # Layout
//!
//! By stage, each file importing only the ones before it in this list: `plan` (the arguments resolved,
//! the image pool, a run's configuration), `watch` (the watcher and every figure of a run), `run`
//! (the node processes, the sender, the fault: one run from start to verify), `report` (the line per
//! run, the table, the JSON and the chart). This file wires them: plan, run every strategy's runs,
//! report. Percentiles and cell formats are the benches' shared [`crate::bench::stats`].

mod plan;
mod report;
mod run;
mod watch;

use std::process::ExitCode;

use anyhow::Context;

pub use crate::bench::stats::Spread;
pub use plan::RecoveryArgs;
pub use report::{Machine, Summary};
pub use watch::RunResult;

/// `bench recovery`: every strategy's runs, interleaved, then the report.
pub async fn recovery(a: RecoveryArgs) -> anyhow::Result<ExitCode> {
    let plan = plan::Plan::new(&a)?;
    std::fs::create_dir_all(&plan.out)
        .with_context(|| format!("cannot create {}", plan.out.display()))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let m = report::machine();
    report::print_plan(&plan, &m);
    let mut results = Vec::new();
    for run in 0..plan.runs {
        for &s in &plan.strategies {
            let r = run::run_one(&plan, s, run)
                .await
                .with_context(|| format!("{s}, run {}", run + 1))?;
            report::print_run(s, &r);
            results.push(r);
        }
    }
    report::write(&plan, &command, &m, &results)?;
    Ok(ExitCode::SUCCESS)
}
