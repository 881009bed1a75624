//! A primary that is alive but cut off: real network partitions between real processes, one host (a
//! network namespace, `it::net`) each for the primary, the standby and the sender, with the output and
//! the checkpoint store either on the shared local file system or on HDFS — a MiniDFS on a host of its
//! own, so an isolated primary is cut from HDFS too. The test itself reads that HDFS from a fifth host
//! (`tester`: its thread and runtime enter that namespace).
//!
//! - **False takeover**: the primary–standby link is cut while the sender reaches both. The standby
//!   takes over; the old primary, alive, must fence itself and exit without committing anything after
//!   the new primary serves; the cut heals and the old primary rejoins as the new standby.
//! - **Isolated primary**: the primary's link goes down (it reaches no one, HDFS included). The same
//!   must hold once its link is back: it learns it was replaced and exits without committing.
//! - **Sender cut from the primary only**: no takeover (the pair still sees each other); the sender
//!   waits or fails over and back, and after the heal everything lands.
//!
//! Every run checks every image the sender released is in the output exactly once, byte for byte, and
//! that one more image pushed afterwards is committed. The cut lands at a seeded random moment after a
//! commit. Each test makes `IT_PARTITION_RUNS` runs (default 1; seeds from `IT_SEED`) and prints, per
//! run, the figures it measured: detection, the time from the cut to the takeover serving, and the
//! pause the sender saw (the largest gap between two releases after the cut). Runs are serial: the
//! timings mean something only when the machine is not also running another pipeline.
//!
//! The tests skip, printing why, where network namespaces cannot be made (not root).

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{ensure, Context};
use hdfs_ingest::send::manifest::read_manifest;
use it::log_unix_ms;
use it::minidfs::{MiniDfs, MiniDfsOptions};
use it::net::Net;
use it::pair::{
    check_all_committed, env_u64, push_one_more, ready_for_a_kill, seed, unix_ms, Pair,
};
use it::roles::{Pipeline, SendArgs, SenderProc, Storage};
use rand::{Rng, SeedableRng};

/// One partition run at a time (see the module doc).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where the pipeline keeps its checkpoints and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Local,
    /// A MiniDFS on a host of its own.
    Hdfs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    FalseTakeover,
    IsolatedPrimary,
    SenderCutFromPrimary,
}

/// What one run measured.
#[derive(Debug, Default)]
struct Figures {
    /// Standby: last heartbeat to detection.
    detection_ms: Option<u64>,
    /// The cut to the new primary serving.
    cut_to_serving_ms: Option<u64>,
    /// The largest gap between two consecutive releases (sender side) that ends after the cut; None
    /// when the sender had released everything before the cut.
    release_pause_ms: Option<u64>,
    images: u64,
}

/// `IT_PARTITION_RUNS` runs of one experiment. A plain test: its runtime is built here, inside the
/// `tester` host when the output is on HDFS (see the module doc).
fn run(strategy: &str, fault: Fault, store: Store) -> anyhow::Result<()> {
    let _one_at_a_time = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // What needs the machine's own network is made before any thread enters a host.
    it::bin();
    if store == Store::Hdfs {
        it::minidfs::ensure_built()?;
    }
    it::roles::image_dir()?;
    let runs = env_u64("IT_PARTITION_RUNS", 1);
    let first = seed(0x9a27);
    let hosts: &[&str] = match store {
        Store::Local => &["primary", "standby", "sender"],
        Store::Hdfs => &["primary", "standby", "sender", "hdfs", "tester"],
    };
    for r in 0..runs {
        let Some(net) = it::net::for_test(hosts) else {
            return Ok(());
        };
        let entered = match store {
            Store::Hdfs => Some(net.enter("tester")?),
            Store::Local => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let outcome = rt.block_on(async {
            let dfs = match store {
                Store::Hdfs => Some(MiniDfs::start(MiniDfsOptions {
                    host: Some((net.ns("hdfs").to_string(), net.ip("hdfs").to_string())),
                    ..MiniDfsOptions::default()
                })?),
                Store::Local => None,
            };
            let storage = dfs.as_ref().map_or(Storage::Local, Storage::Hdfs);
            let p = Pipeline::on_net(strategy, storage, &net)?;
            p.check(one_run(&p, &net, fault, first + r).await)
        });
        drop(rt);
        drop(entered);
        let f = outcome?;
        println!(
            "FIGURES {strategy} {store:?} {fault:?} seed {}: detection {:?} ms, cut to serving {:?} ms, release pause {:?} ms, {} images",
            first + r,
            f.detection_ms,
            f.cut_to_serving_ms,
            f.release_pause_ms,
            f.images
        );
    }
    Ok(())
}

async fn one_run(p: &Pipeline, net: &Net, fault: Fault, seed: u64) -> anyhow::Result<Figures> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    // On HDFS a commit takes longer, and the cut waits for one: more load, so it lands mid-push.
    let images = match p.output {
        it::roles::OutputAt::Local(_) => 700,
        it::roles::OutputAt::Hdfs(_) => 1500,
    };
    let mut pair = Pair::start(p, &[])?;
    let manifest = p.dir().join("manifest.jsonl");
    let args = SendArgs {
        count: images,
        rate: 150.0,
        source_prefix: "part".into(),
        ..SendArgs::default()
    };
    let mut sender = SenderProc::start(p, &args, &manifest)?;
    ready_for_a_kill(&mut pair, &BTreeSet::new(), &mut sender, args.concurrency).await?;
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..800))).await;
    let cut_ms = unix_ms();
    let mut figures = Figures {
        images,
        ..Figures::default()
    };
    match fault {
        Fault::FalseTakeover => net.cut("primary", "standby")?,
        Fault::IsolatedPrimary => net.isolate("primary")?,
        Fault::SenderCutFromPrimary => net.cut("sender", "primary")?,
    }
    match fault {
        Fault::FalseTakeover | Fault::IsolatedPrimary => {
            let ev = pair.takeover()?;
            figures.detection_ms = Some(
                ev.detected_unix_ms
                    .saturating_sub(ev.last_heartbeat_unix_ms),
            );
            figures.cut_to_serving_ms = Some(ev.serving_unix_ms.saturating_sub(cut_ms));
            // An isolated primary may not reach its store either (HDFS on a host of its own): it
            // learns it was replaced once its link is back.
            if fault == Fault::IsolatedPrimary {
                net.rejoin("primary")?;
            }
            let old = pair.failed.as_mut().context("the replaced primary")?;
            let status = old
                .wait_exit(Duration::from_secs(30))?
                .context("the replaced primary is still running 30 s after the takeover")?;
            ensure!(
                !status.success(),
                "the replaced primary exits with an error: {status}"
            );
            let log = std::fs::read_to_string(&old.log)?;
            ensure!(
                log.contains("fenced"),
                "the replaced primary says it was fenced:\n{}",
                old.log_tail(20)
            );
            // The new primary serves once it has resolved every batch claimed before its epoch (voided
            // or counted as published). A batch the old primary renamed into place after that would be
            // output nobody accounts for; a commit after it, an ack at a level already superseded.
            let late: Vec<&str> = log
                .lines()
                .filter(|l| {
                    l.contains("batch committed")
                        || (l.contains("batch written") && l.contains("outcome=Published"))
                })
                .filter(|l| log_unix_ms(l).is_some_and(|t| t > ev.serving_unix_ms))
                .collect();
            ensure!(
                late.is_empty(),
                "the replaced primary published or committed after the new primary served: {late:?}"
            );
            if fault == Fault::FalseTakeover {
                net.heal("primary", "standby")?;
            }
            pair.rejoin()?;
        }
        Fault::SenderCutFromPrimary => {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1500..3000))).await;
            net.heal("sender", "primary")?;
            ensure!(
                !pair.standby().took_over(),
                "no takeover: the primary and its standby still see each other"
            );
        }
    }
    let summary = sender.wait(Duration::from_secs(180))?;
    println!("sender: {summary}");
    check_all_committed(p, &manifest, images).await?;
    push_one_more(p).await?;
    let mut released: Vec<u64> = read_manifest(&manifest)?
        .iter()
        .filter_map(|e| e.released_unix_ms)
        .collect();
    released.sort_unstable();
    figures.release_pause_ms = released
        .windows(2)
        .filter(|w| w[1] > cut_ms)
        .map(|w| w[1] - w[0].max(cut_ms))
        .max();
    Ok(figures)
}

macro_rules! partition_test {
    ($name:ident, $strategy:literal, $fault:ident, $store:ident) => {
        #[test]
        fn $name() -> anyhow::Result<()> {
            run($strategy, Fault::$fault, Store::$store)
        }
    };
}

partition_test!(
    a_false_takeover_fences_the_live_old_primary_and_loses_nothing_under_passive_standby,
    "passive-standby",
    FalseTakeover,
    Local
);
partition_test!(
    an_isolated_primary_is_replaced_and_loses_nothing_under_passive_standby,
    "passive-standby",
    IsolatedPrimary,
    Local
);
partition_test!(
    a_sender_cut_from_the_primary_alone_loses_nothing_and_causes_no_takeover_under_passive_standby,
    "passive-standby",
    SenderCutFromPrimary,
    Local
);
partition_test!(
    a_false_takeover_fences_the_live_old_primary_and_loses_nothing_on_hdfs_under_passive_standby,
    "passive-standby",
    FalseTakeover,
    Hdfs
);
partition_test!(
    a_primary_isolated_from_everyone_and_hdfs_is_replaced_and_loses_nothing_under_passive_standby,
    "passive-standby",
    IsolatedPrimary,
    Hdfs
);
partition_test!(
    a_sender_cut_from_the_primary_alone_loses_nothing_on_hdfs_under_passive_standby,
    "passive-standby",
    SenderCutFromPrimary,
    Hdfs
);
partition_test!(
    a_false_takeover_fences_the_live_old_primary_and_loses_nothing_under_active_standby,
    "active-standby",
    FalseTakeover,
    Local
);
partition_test!(
    an_isolated_primary_is_replaced_and_loses_nothing_under_active_standby,
    "active-standby",
    IsolatedPrimary,
    Local
);
partition_test!(
    a_sender_cut_from_the_primary_alone_loses_nothing_and_causes_no_takeover_under_active_standby,
    "active-standby",
    SenderCutFromPrimary,
    Local
);
partition_test!(
    a_false_takeover_fences_the_live_old_primary_and_loses_nothing_on_hdfs_under_active_standby,
    "active-standby",
    FalseTakeover,
    Hdfs
);
partition_test!(
    a_primary_isolated_from_everyone_and_hdfs_is_replaced_and_loses_nothing_under_active_standby,
    "active-standby",
    IsolatedPrimary,
    Hdfs
);
partition_test!(
    a_sender_cut_from_the_primary_alone_loses_nothing_on_hdfs_under_active_standby,
    "active-standby",
    SenderCutFromPrimary,
    Hdfs
);
partition_test!(
    a_false_takeover_fences_the_live_old_primary_and_loses_nothing_under_upstream_backup,
    "upstream-backup",
    FalseTakeover,
    Local
);
partition_test!(
    an_isolated_primary_is_replaced_and_loses_nothing_under_upstream_backup,
    "upstream-backup",
    IsolatedPrimary,
    Local
);
partition_test!(
    a_sender_cut_from_the_primary_alone_loses_nothing_and_causes_no_takeover_under_upstream_backup,
    "upstream-backup",
    SenderCutFromPrimary,
    Local
);
partition_test!(
    a_false_takeover_fences_the_live_old_primary_and_loses_nothing_on_hdfs_under_upstream_backup,
    "upstream-backup",
    FalseTakeover,
    Hdfs
);
partition_test!(
    a_primary_isolated_from_everyone_and_hdfs_is_replaced_and_loses_nothing_under_upstream_backup,
    "upstream-backup",
    IsolatedPrimary,
    Hdfs
);
partition_test!(
    a_sender_cut_from_the_primary_alone_loses_nothing_on_hdfs_under_upstream_backup,
    "upstream-backup",
    SenderCutFromPrimary,
    Hdfs
);
