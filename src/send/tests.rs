//! The sender against small fake nodes that speak the framed protocol: they acknowledge (or not) as
//! told, announce a role that the test can change, and can die mid-stream.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use super::manifest::{read_manifest, ManifestWriter};
use super::push::{push, PushError, PushOptions, PushReport, SendMode, Timeline};
use crate::images::ImageSet;
use crate::protocol::{
    read_block, read_hello, AckLevel, ErrorCode, ProtocolError, Role, RoleInfo, ServerFrame,
    VERSION_1, VERSION_3,
};
use crate::receiver::framed::announce_roles;

/// How a fake node behaves.
#[derive(Clone, Debug)]
struct Behaviour {
    /// Refuses hellos above this version with UnsupportedVersion (1: a node older than version 2).
    max_version: u8,
    /// The role it announces to version 2 clients; None: it announces nothing.
    role: Option<RoleInfo>,
    /// The acks it sends for every block, in order; empty: it never acknowledges.
    acks: Vec<AckLevel>,
    ack_delay: Duration,
    /// Also acknowledges every block committed, this long after its other acks (a batch interval).
    commit_after: Option<Duration>,
    /// Dies (listener and every connection gone) once it has received this many blocks.
    die_after: Option<usize>,
    /// Writes its ROLE again on a version 2 connection idle for this long, as a real node does
    /// (`receiver.keepalive_interval`); None: a node that says nothing when it has nothing to say.
    keepalive: Option<Duration>,
    /// Reads the hello and then nothing more, keeping the connection (and its keepalives) open: a
    /// node whose data path is stuck, or an old primary cut off behind a full socket.
    never_reads: bool,
    /// This long after a connection starts, the node says nothing more on it (no ack, no keepalive)
    /// and keeps reading: a primary cut off by a partition, its connection half-open.
    mute_after: Option<Duration>,
    /// Answers HELD (protocol version 3; older clients: the durable ack) for a block it has received
    /// before, or whose seq is below `preheld` (blocks of an earlier run under the same source id).
    dedup: bool,
    preheld: u64,
    /// Closes the connection (once; the node and what it has seen stay) after this many blocks.
    drop_once_after: Option<usize>,
}

impl Behaviour {
    fn primary(epoch: u64) -> Behaviour {
        Behaviour {
            max_version: 2,
            role: Some(RoleInfo {
                role: Role::Primary,
                epoch,
            }),
            acks: vec![AckLevel::Durable],
            ack_delay: Duration::ZERO,
            commit_after: None,
            die_after: None,
            keepalive: Some(Duration::from_millis(50)),
            never_reads: false,
            mute_after: None,
            dedup: false,
            preheld: 0,
            drop_once_after: None,
        }
    }

    fn standby(epoch: u64) -> Behaviour {
        Behaviour {
            role: Some(RoleInfo {
                role: Role::Standby,
                epoch,
            }),
            ..Behaviour::primary(epoch)
        }
    }
}

#[derive(Default, Debug)]
struct Seen {
    /// Every block received, re-sends included.
    blocks: Vec<(String, u64)>,
    /// When the node sent its first ack for each block.
    acked_at: BTreeMap<(String, u64), Instant>,
    /// Blocks received and not yet acknowledged, now and at most.
    outstanding: i64,
    max_outstanding: i64,
    /// `drop_once_after` has happened.
    dropped: bool,
}

struct FakeNode {
    address: String,
    seen: Arc<Mutex<Seen>>,
    roles: watch::Sender<RoleInfo>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeNode {
    async fn start(b: Behaviour) -> FakeNode {
        FakeNode::start_at("127.0.0.1:0", b).await
    }

    async fn start_at(address: &str, b: Behaviour) -> FakeNode {
        let l = TcpListener::bind(address).await.unwrap();
        let address = l.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (roles, roles_rx) = watch::channel(b.role.unwrap_or(RoleInfo {
            role: Role::Primary,
            epoch: 0,
        }));
        let (die, mut dying) = mpsc::unbounded_channel::<()>();
        let s = seen.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set: when the node dies they all go with it.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = dying.recv() => return,
                    a = l.accept() => {
                        let Ok((sock, _)) = a else { return };
                        conns.spawn(serve(sock, b.clone(), s.clone(), roles_rx.clone(), die.clone()));
                    }
                }
            }
        });
        FakeNode {
            address,
            seen,
            roles,
            task,
        }
    }

    fn received(&self) -> Vec<(String, u64)> {
        self.seen.lock().unwrap().blocks.clone()
    }

    fn acked_at(&self) -> BTreeMap<(String, u64), Instant> {
        self.seen.lock().unwrap().acked_at.clone()
    }

    fn max_outstanding(&self) -> i64 {
        self.seen.lock().unwrap().max_outstanding
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    sock: tokio::net::TcpStream,
    b: Behaviour,
    seen: Arc<Mutex<Seen>>,
    roles: watch::Receiver<RoleInfo>,
    die: mpsc::UnboundedSender<()>,
) {
    let (mut rd, mut wr) = sock.into_split();
    let hello = match read_hello(&mut rd).await {
        Ok(h) if h.version <= b.max_version => h,
        Ok(h) => {
            let e = ProtocolError::UnsupportedVersion(h.version);
            let _ = ServerFrame::Error {
                code: ErrorCode::UnsupportedVersion,
                message: e.to_string(),
            }
            .write(&mut wr)
            .await;
            return;
        }
        Err(_) => return,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<ServerFrame>();
    tx.send(ServerFrame::Welcome {
        version: hello.version,
        max_block_size: 1 << 20,
    })
    .unwrap();
    let current = roles.clone();
    let _announcer = b
        .role
        .and_then(|_| announce_roles(hello.version, roles, &tx));
    let keepalive = b.keepalive.filter(|_| b.role.is_some());
    let mute_at = b.mute_after.map(|d| tokio::time::Instant::now() + d);
    let writer = tokio::spawn(async move {
        let mut announced = false;
        loop {
            let f = match keepalive {
                Some(every) => match tokio::time::timeout(every, rx.recv()).await {
                    Ok(f) => f,
                    Err(_) => {
                        let r = *current.borrow();
                        Some(ServerFrame::Role {
                            role: r.role,
                            epoch: r.epoch,
                        })
                    }
                },
                None => rx.recv().await,
            };
            let Some(f) = f else { return };
            if mute_at.is_some_and(|at| tokio::time::Instant::now() >= at) {
                continue;
            }
            // A node that sends keepalives repeats its first ROLE at once, as a real one does.
            let first_role = keepalive.is_some()
                && !announced
                && matches!(f, ServerFrame::Role { .. })
                && f.visible_to(hello.version);
            if first_role {
                announced = true;
                if f.write(&mut wr).await.is_err() {
                    return;
                }
            }
            if f.visible_to(hello.version) && f.write(&mut wr).await.is_err() {
                return;
            }
        }
    });
    if b.never_reads {
        let _ = writer.await;
        return;
    }
    let mut acks = tokio::task::JoinSet::new();
    while let Ok(Some(block)) = read_block(&mut rd, 1 << 20).await {
        let key = (hello.source.clone(), block.seq);
        let (total, held, drop_now) = {
            let mut s = seen.lock().unwrap();
            let held = b.dedup && (key.1 < b.preheld || s.blocks.contains(&key));
            s.blocks.push(key.clone());
            s.outstanding += 1;
            s.max_outstanding = s.max_outstanding.max(s.outstanding);
            let drop_now = !s.dropped && b.drop_once_after.is_some_and(|n| s.blocks.len() >= n);
            s.dropped |= drop_now;
            (s.blocks.len(), held, drop_now)
        };
        if drop_now {
            writer.abort();
            return;
        }
        if b.die_after.is_some_and(|n| total >= n) {
            let _ = die.send(());
            return;
        }
        if b.acks.is_empty() {
            continue;
        }
        let (tx, seen, levels, delay) = (tx.clone(), seen.clone(), b.acks.clone(), b.ack_delay);
        let commit_after = b.commit_after;
        let held = held && hello.version >= VERSION_3;
        acks.spawn(async move {
            tokio::time::sleep(delay).await;
            {
                let mut s = seen.lock().unwrap();
                s.outstanding -= 1;
                s.acked_at.entry(key.clone()).or_insert_with(Instant::now);
            }
            for level in levels {
                let _ = tx.send(if held && level == AckLevel::Durable {
                    ServerFrame::Held { seq: key.1 }
                } else {
                    ServerFrame::Ack { level, seq: key.1 }
                });
            }
            if let Some(after) = commit_after {
                tokio::time::sleep(after).await;
                let _ = tx.send(ServerFrame::Ack {
                    level: AckLevel::Committed,
                    seq: key.1,
                });
            }
        });
    }
    while acks.join_next().await.is_some() {}
    drop(tx);
    drop(_announcer);
    let _ = writer.await;
}

fn small_images() -> ImageSet {
    ImageSet::Generated { size: 512, seed: 3 }
}

fn opts(targets: &[&FakeNode]) -> PushOptions {
    PushOptions {
        targets: targets.iter().map(|n| n.address.clone()).collect(),
        count: 100,
        concurrency: 2,
        window: 16,
        source_prefix: "t".into(),
        give_up_after: Duration::from_secs(20),
        ..PushOptions::default()
    }
}

/// Runs a push with a manifest and a timeline; fails the test if it hangs.
async fn run(
    o: PushOptions,
) -> (
    Result<PushReport, PushError>,
    Vec<(String, u64)>,
    Arc<Timeline>,
) {
    run_with(o, small_images()).await
}

async fn run_with(
    mut o: PushOptions,
    images: ImageSet,
) -> (
    Result<PushReport, PushError>,
    Vec<(String, u64)>,
    Arc<Timeline>,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&path).unwrap());
    let timeline = Arc::new(Timeline::new());
    o.timeline = Some(timeline.clone());
    let r = tokio::time::timeout(Duration::from_secs(60), push(o, images, Some(m)))
        .await
        .expect("a push must end on its own");
    // The manifest also has a line, not acknowledged, for each block sent and not released.
    let released = read_manifest(&path)
        .unwrap()
        .into_iter()
        .filter(|e| e.acked)
        .map(|e| (e.source.unwrap(), e.seq.unwrap()))
        .collect();
    (r, released, timeline)
}

/// Every image released exactly once: `count` manifest lines, all distinct, all acked.
fn assert_released_exactly_once(released: &[(String, u64)], count: usize) {
    let distinct: BTreeSet<_> = released.iter().collect();
    assert_eq!(released.len(), count, "released {released:?}");
    assert_eq!(distinct.len(), count, "a block was released twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_moves_to_the_second_target_when_the_first_dies_and_every_image_is_released_once()
{
    let first = FakeNode::start(Behaviour {
        die_after: Some(40),
        ..Behaviour::primary(1)
    })
    .await;
    let second = FakeNode::start(Behaviour::primary(2)).await;
    let (r, released, timeline) = run(opts(&[&first, &second])).await;
    let r = r.unwrap();
    assert_eq!(r.acked, 100);
    assert_released_exactly_once(&released, 100);
    assert!(r.failovers >= 1, "{r:?}");
    assert!(
        r.resent >= 1,
        "blocks the first node never acked are re-sent"
    );
    let on_second: BTreeSet<_> = second.received().into_iter().collect();
    let acked_by_first = first.acked_at();
    for e in timeline.entries() {
        let key = (e.source.clone(), e.seq);
        assert!(e.released.is_some(), "{key:?} released");
        assert!(
            acked_by_first.contains_key(&key) || on_second.contains(&key),
            "{key:?} was acked by neither node"
        );
    }
    assert!(first.received().len() < 100, "the first node died part-way");
    let bytes = timeline.bytes_by_target();
    assert!(bytes[&first.address] > 0 && bytes[&second.address] > 0);
    assert_eq!(r.bytes_sent_total, timeline.bytes_total());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_primary_that_accepts_but_never_acknowledges_makes_the_worker_fail_over() {
    let stalled = FakeNode::start(Behaviour {
        acks: vec![],
        ..Behaviour::primary(1)
    })
    .await;
    let working = FakeNode::start(Behaviour::primary(1)).await;
    let o = PushOptions {
        stall_timeout: Duration::from_millis(300),
        count: 40,
        ..opts(&[&stalled, &working])
    };
    let started = Instant::now();
    let (r, released, _) = run(o).await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 40);
    assert!(r.failovers >= 1, "{r:?}");
    assert!(
        !stalled.received().is_empty(),
        "the stalled node got blocks"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "not before the stall timeout"
    );
    let on_working: BTreeSet<_> = working.received().into_iter().collect();
    assert!(released.iter().all(|k| on_working.contains(k)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_reads_everything_but_acknowledges_late_is_busy_not_stalled() {
    // Every block acknowledged a second after it arrived (a long group commit under load), while the
    // node goes on reading what it is sent and keeps its connection alive: the stall timer (300 ms)
    // must not give up on it. A sender that counted acks alone would reconnect (and re-send
    // everything) before the first ack.
    let node = FakeNode::start(Behaviour {
        ack_delay: Duration::from_secs(1),
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        count: 150,
        concurrency: 1,
        rate: Some(100.0),
        window: 1000,
        stall_timeout: Duration::from_millis(300),
        ..opts(&[&node])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 150);
    assert_eq!(r.reconnects, 0, "{r:?}");
    assert_eq!(node.received().len(), 150, "nothing was re-sent");
}

/// A primary cut off mid-push (a partition): it acknowledged every block durable and then says
/// nothing more — no commit, no keepalive — while the connection stays open. Every kept block is
/// acknowledged, so only the silence tells; the sender must move on to the node that took over
/// instead of waiting for the cut to heal (or giving up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_that_goes_silent_is_left_even_when_every_kept_block_is_acknowledged_durable() {
    let cut_off = FakeNode::start(Behaviour {
        mute_after: Some(Duration::from_millis(400)),
        ..Behaviour::primary(1)
    })
    .await;
    let took_over = FakeNode::start(Behaviour {
        acks: vec![AckLevel::Durable, AckLevel::Committed],
        ..Behaviour::primary(2)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        count: 30,
        release: AckLevel::Committed,
        // Only the silence timer can leave it before the push gives up: the no-progress timer has
        // nothing to wait for (every block is acknowledged) and is set far beyond give_up_after.
        stall_timeout: Duration::from_secs(60),
        silence_timeout: Duration::from_millis(300),
        give_up_after: Duration::from_secs(5),
        ..opts(&[&cut_off, &took_over])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 30);
    assert!(r.failovers >= 1, "{r:?}");
    assert!(
        !cut_off.acked_at().is_empty(),
        "the first node acknowledged blocks durable before it went silent"
    );
    let on_second: BTreeSet<_> = took_over.received().into_iter().collect();
    assert!(released.iter().all(|k| on_second.contains(k)));
}

/// A push of 20 images released on their commit, which `node` sends 900 ms after the durable ack,
/// with 300 ms stall and silence timeouts: the sender must keep waiting on that node — no reconnect,
/// no re-send.
async fn a_commit_is_waited_for_on(node: FakeNode) {
    let (r, released, _) = run(PushOptions {
        count: 20,
        release: AckLevel::Committed,
        stall_timeout: Duration::from_millis(300),
        silence_timeout: Duration::from_millis(300),
        ..opts(&[&node])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 20);
    assert_eq!(r.reconnects, 0, "{} reconnects", r.reconnects);
    assert_eq!(node.received().len(), 20, "nothing was re-sent");
}

/// A node that never repeats its ROLE (one from before keepalives, or one that announces no role) is
/// never left for being quiet: its silence says nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_sends_no_keepalives_is_not_left_for_being_quiet_while_a_commit_is_due() {
    let node = FakeNode::start(Behaviour {
        keepalive: None,
        commit_after: Some(Duration::from_millis(900)),
        ..Behaviour::primary(1)
    })
    .await;
    a_commit_is_waited_for_on(node).await;
}

/// The other side of the same rule: a node that has nothing to acknowledge but keeps its connection
/// alive (keepalives) is idle, not gone, and is not left while blocks wait for its commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_only_keeps_its_connection_alive_while_a_commit_is_due_is_not_left() {
    let node = FakeNode::start(Behaviour {
        commit_after: Some(Duration::from_millis(900)),
        ..Behaviour::primary(1)
    })
    .await;
    a_commit_is_waited_for_on(node).await;
}

/// Mirror mode after a takeover: the old primary is still connected, keeps its connection alive and
/// reads nothing (cut off behind a full socket), while the new primary releases every block. What the
/// sender queues for the old one is bounded by the retention bytes: past that it gives the
/// connection up instead of queueing without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_gives_up_a_connection_whose_queue_reaches_the_retention_bound() {
    let old = FakeNode::start(Behaviour {
        never_reads: true,
        ..Behaviour::primary(1)
    })
    .await;
    let new = FakeNode::start(Behaviour::primary(2)).await;
    let (r, released, _) = run_with(
        PushOptions {
            mode: SendMode::Mirror,
            count: 400,
            concurrency: 1,
            window: 64,
            retention_max_bytes: 1 << 20,
            stall_timeout: Duration::from_secs(60),
            standby_grace: Duration::from_millis(100),
            ..opts(&[&old, &new])
        },
        ImageSet::Generated {
            size: 64 * 1024,
            seed: 5,
        },
    )
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 400);
    assert!(
        r.reconnects >= 1,
        "the connection to the node that takes nothing was given up: {} reconnects, {} bytes sent",
        r.reconnects,
        r.bytes_sent_total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_says_it_is_a_standby_is_left_for_the_next_target_before_any_block_is_sent() {
    let standby = FakeNode::start(Behaviour::standby(1)).await;
    let primary = FakeNode::start(Behaviour::primary(1)).await;
    let (r, released, _) = run(opts(&[&standby, &primary])).await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 100);
    assert!(standby.received().is_empty(), "{:?}", standby.received());
    assert!(r.failovers >= 2, "every stream moved on: {r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_speaks_only_version_1_counts_as_primary() {
    let old = FakeNode::start(Behaviour {
        max_version: VERSION_1,
        role: None,
        ..Behaviour::primary(0)
    })
    .await;
    let (r, released, _) = run(opts(&[&old])).await;
    assert_eq!(r.unwrap().failovers, 0);
    assert_released_exactly_once(&released, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_is_released_by_a_stronger_ack_than_the_release_level() {
    let node = FakeNode::start(Behaviour {
        acks: vec![AckLevel::Durable, AckLevel::Committed],
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, timeline) = run(PushOptions {
        release: AckLevel::Checkpointed,
        ..opts(&[&node])
    })
    .await;
    r.unwrap();
    assert_released_exactly_once(&released, 100);
    assert!(
        timeline.entries().iter().all(|e| e.committed.is_some()),
        "committed acks are in the timeline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_acknowledged_only_durable_is_not_released_at_checkpointed() {
    let node = FakeNode::start(Behaviour::primary(1)).await;
    let (r, released, _) = run(PushOptions {
        release: AckLevel::Checkpointed,
        count: 5,
        give_up_after: Duration::from_millis(500),
        ..opts(&[&node])
    })
    .await;
    assert!(matches!(r, Err(PushError::GaveUp { .. })), "{r:?}");
    assert!(released.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_sends_every_block_to_both_and_releases_it_only_after_both_acked() {
    let primary = FakeNode::start(Behaviour::primary(1)).await;
    let standby = FakeNode::start(Behaviour {
        ack_delay: Duration::from_millis(30),
        ..Behaviour::standby(1)
    })
    .await;
    let (r, released, timeline) = run(PushOptions {
        mode: SendMode::Mirror,
        ..opts(&[&primary, &standby])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 100);
    let (p, s) = (primary.acked_at(), standby.acked_at());
    for e in timeline.entries() {
        let key = (e.source.clone(), e.seq);
        let released = e.released.expect("released");
        assert!(
            released >= p[&key] && released >= s[&key],
            "{key:?} released before both acked"
        );
    }
    // Two copies on the wire.
    let bytes = timeline.bytes_by_target();
    assert!(bytes[&primary.address] >= r.bytes && bytes[&standby.address] >= r.bytes);
    assert!(r.bytes_sent_total >= 2 * r.bytes, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_never_releases_a_block_on_a_standbys_ack_alone() {
    let silent_primary = FakeNode::start(Behaviour {
        acks: vec![],
        ..Behaviour::primary(1)
    })
    .await;
    let standby = FakeNode::start(Behaviour::standby(1)).await;
    let (r, released, timeline) = run(PushOptions {
        mode: SendMode::Mirror,
        count: 10,
        give_up_after: Duration::from_millis(800),
        // The standby first: a sender that went by the order of targets would take it for the primary.
        ..opts(&[&standby, &silent_primary])
    })
    .await;
    assert!(matches!(r, Err(PushError::GaveUp { .. })), "{r:?}");
    assert!(released.is_empty(), "{released:?}");
    assert!(timeline.entries().iter().all(|e| e.released.is_none()));
    assert!(
        !standby.acked_at().is_empty(),
        "the standby did acknowledge blocks"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_keeps_going_when_the_standby_is_gone() {
    let primary = FakeNode::start(Behaviour::primary(1)).await;
    let standby = FakeNode::start(Behaviour {
        die_after: Some(20),
        ..Behaviour::standby(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        mode: SendMode::Mirror,
        standby_grace: Duration::from_millis(300),
        ..opts(&[&primary, &standby])
    })
    .await;
    r.unwrap();
    assert_released_exactly_once(&released, 100);
    assert!(standby.received().len() < 100, "the standby died part-way");
}

/// An address nothing listens on yet (bound once to pick a free port, then let go).
fn free_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_holds_every_block_back_until_a_standby_that_is_still_starting_has_it() {
    // The primary acks at once; the standby's address refuses connections for the first 600 ms. A
    // sender that released on the primary's ack alone meanwhile would lose those blocks if the primary
    // then died: the standby never had them.
    let primary = FakeNode::start(Behaviour::primary(1)).await;
    let standby_address = free_address();
    let late = standby_address.clone();
    let standby = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(600)).await;
        FakeNode::start_at(&late, Behaviour::standby(1)).await
    });
    let (r, released, timeline) = run(PushOptions {
        targets: vec![primary.address.clone(), standby_address],
        mode: SendMode::Mirror,
        count: 40,
        ..opts(&[])
    })
    .await;
    r.unwrap();
    let standby = standby.await.unwrap();
    assert_released_exactly_once(&released, 40);
    let s = standby.acked_at();
    for e in timeline.entries() {
        let key = (e.source.clone(), e.seq);
        let acked = s.get(&key);
        assert!(
            acked.is_some_and(|a| e.released.unwrap() >= *a),
            "{key:?} released before the standby acknowledged it ({acked:?})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_releases_on_the_primary_alone_once_a_standby_stayed_away_for_the_grace() {
    let primary = FakeNode::start(Behaviour::primary(1)).await;
    let grace = Duration::from_millis(400);
    let started = Instant::now();
    let (r, released, timeline) = run(PushOptions {
        targets: vec![primary.address.clone(), free_address()],
        mode: SendMode::Mirror,
        count: 20,
        standby_grace: grace,
        ..opts(&[])
    })
    .await;
    r.unwrap();
    assert_released_exactly_once(&released, 20);
    for e in timeline.entries() {
        let at = e.released.unwrap();
        assert!(
            at >= started + grace,
            "seq {} released {:?} after the start, within the grace",
            e.seq,
            at - started
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_announces_primary_with_a_higher_epoch_becomes_the_primary() {
    // The old primary hangs: connected, never acknowledging. Nothing can be released until the
    // standby promotes itself.
    let hung = FakeNode::start(Behaviour {
        acks: vec![],
        ..Behaviour::primary(1)
    })
    .await;
    let standby = FakeNode::start(Behaviour::standby(1)).await;
    let roles = standby.roles.clone();
    let promote = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let at = Instant::now();
        roles
            .send(RoleInfo {
                role: Role::Primary,
                epoch: 2,
            })
            .unwrap();
        at
    });
    let (r, released, timeline) = run(PushOptions {
        mode: SendMode::Mirror,
        count: 30,
        // The superseded primary is a failed primary, not an absent standby: it holds nothing back
        // (were it given the grace, nothing would be released before the push gives up).
        standby_grace: Duration::from_secs(3600),
        ..opts(&[&hung, &standby])
    })
    .await;
    let promoted_at = promote.await.unwrap();
    r.unwrap();
    assert_released_exactly_once(&released, 30);
    for e in timeline.entries() {
        assert!(
            e.released.unwrap() >= promoted_at,
            "seq {} released before the promotion",
            e.seq
        );
    }
    assert!(hung.acked_at().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_bounds_blocks_in_flight_and_blocks_waiting_for_a_commit_only_count_against_retention(
) {
    // Durable at once, committed 300 ms later: a window of 4 kept blocks would release at most 4 per
    // 300 ms; 4 *in flight* lets the stream keep far more, waiting for their commit.
    let node = FakeNode::start(Behaviour {
        commit_after: Some(Duration::from_millis(300)),
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        concurrency: 1,
        window: 4,
        count: 60,
        release: AckLevel::Committed,
        retention_max_blocks: 40,
        ..opts(&[&node])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 60);
    assert!(node.max_outstanding() <= 4, "{}", node.max_outstanding());
    assert!(
        r.peak_retained_blocks > 8,
        "blocks waiting for their commit were held to the window: {r:?}"
    );
    assert!(r.peak_retained_blocks <= 40, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_goes_on_at_once_after_the_primary_dies_and_the_standby_promotes_itself() {
    let primary = FakeNode::start(Behaviour {
        die_after: Some(30),
        ..Behaviour::primary(1)
    })
    .await;
    let standby = FakeNode::start(Behaviour::standby(1)).await;
    let (roles, seen) = (standby.roles.clone(), primary.seen.clone());
    tokio::spawn(async move {
        while seen.lock().unwrap().blocks.len() < 30 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        roles
            .send(RoleInfo {
                role: Role::Primary,
                epoch: 2,
            })
            .unwrap();
    });
    let (r, released, _) = run(PushOptions {
        mode: SendMode::Mirror,
        // The dead primary holds nothing back once the standby is primary: with a grace this long,
        // a sender that waited for it would give up first.
        standby_grace: Duration::from_secs(3600),
        ..opts(&[&primary, &standby])
    })
    .await;
    r.unwrap();
    assert_released_exactly_once(&released, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_retention_is_backpressure_nothing_is_dropped_and_the_bounds_always_hold() {
    let node = FakeNode::start(Behaviour {
        ack_delay: Duration::from_millis(5),
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        concurrency: 4,
        window: 100,
        count: 80,
        retention_max_blocks: 5,
        ..opts(&[&node])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 80);
    assert!(r.peak_retained_blocks <= 5, "{r:?}");
    assert!(
        r.peak_retained_blocks >= 2,
        "the streams did fill it: {r:?}"
    );
    assert!(node.max_outstanding() <= 5, "{}", node.max_outstanding());

    let largest = (0..40)
        .map(|i| small_images().get(i).1.len())
        .max()
        .unwrap() as u64;
    let node = FakeNode::start(Behaviour {
        ack_delay: Duration::from_millis(5),
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        concurrency: 4,
        window: 100,
        count: 40,
        retention_max_bytes: 3 * largest,
        ..opts(&[&node])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 40);
    assert!(r.peak_retained_bytes <= 3 * largest, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_accepts_but_never_acknowledges_makes_the_sender_give_up_naming_the_targets() {
    let silent = FakeNode::start(Behaviour {
        acks: vec![],
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        count: 5,
        give_up_after: Duration::from_millis(500),
        ..opts(&[&silent])
    })
    .await;
    let err = r.unwrap_err();
    assert!(matches!(err, PushError::GaveUp { .. }), "{err:?}");
    assert!(err.to_string().contains(&silent.address), "{err}");
    assert!(released.is_empty());
}

/// The give-up error says what happened: here a node that was connected, said it was primary and
/// kept its connection alive, but acknowledged nothing — not "never connected".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_says_that_the_node_was_connected_and_acknowledged_nothing() {
    let node = FakeNode::start(Behaviour {
        acks: vec![],
        ..Behaviour::primary(1)
    })
    .await;
    let (r, _, _) = run(PushOptions {
        count: 5,
        give_up_after: Duration::from_millis(500),
        ..opts(&[&node])
    })
    .await;
    let text = r.unwrap_err().to_string();
    assert!(
        text.contains(&format!("{}: connected (primary at epoch 1)", node.address)),
        "{text}"
    );
    assert!(text.contains("acknowledged 0 of the kept blocks"), "{text}");
    assert!(!text.contains("never connected"), "{text}");
}

#[tokio::test]
async fn a_wrong_token_fails_the_push_instead_of_retrying_forever() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = l.local_addr().unwrap().to_string();
    let node = tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let _ = read_hello(&mut s).await;
            let _ = ServerFrame::Error {
                code: ErrorCode::Unauthorized,
                message: "wrong token".into(),
            }
            .write(&mut s)
            .await;
            let _ = s.shutdown().await;
        }
    });
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        push(PushOptions::to(address.clone()), small_images(), None),
    )
    .await
    .expect("refused at once");
    assert!(
        matches!(&r, Err(PushError::Refused { address: a, .. }) if *a == address),
        "{r:?}"
    );
    node.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_gives_up_still_writes_a_line_not_acked_for_every_block_it_sent() {
    let silent = FakeNode::start(Behaviour {
        acks: vec![],
        ..Behaviour::primary(1)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&path).unwrap());
    let r = push(
        PushOptions {
            count: 6,
            concurrency: 2,
            give_up_after: Duration::from_millis(500),
            ..opts(&[&silent])
        },
        small_images(),
        Some(m.clone()),
    )
    .await;
    assert!(matches!(r, Err(PushError::GaveUp { .. })), "{r:?}");
    m.flush().unwrap();
    let lines = read_manifest(&path).unwrap();
    let sent: BTreeSet<_> = lines
        .iter()
        .map(|e| (e.source.clone().unwrap(), e.seq.unwrap()))
        .collect();
    assert_eq!(sent.len(), 6, "one line per block sent: {lines:?}");
    assert!(lines.iter().all(|e| !e.acked), "none was acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_held_a_streams_first_blocks_already_fails_the_push_naming_source_and_seqs() {
    // The node holds seqs 0..5 of every source: an earlier run used the same prefix.
    let node = FakeNode::start(Behaviour {
        max_version: VERSION_3,
        dedup: true,
        preheld: 5,
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        count: 10,
        concurrency: 1,
        source_prefix: "again".into(),
        ..opts(&[&node])
    })
    .await;
    let err = r.unwrap_err();
    let PushError::SourceReused {
        source_id, seqs, ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(source_id, "again-0");
    // Acks come in any order: some of the held seqs 0..5, and only those.
    let named: Vec<u64> = seqs
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        seqs.starts_with("seq") && !named.is_empty() && named.iter().all(|&n| n < 5),
        "{seqs}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&node.address) && text.contains("--source-prefix"),
        "{text}"
    );
    assert!(
        released.iter().all(|(_, seq)| *seq >= 5),
        "no held block counts as released: {released:?}"
    );
    // The same run, saying it continues the earlier one, re-sends.
    let (r, released, _) = run(PushOptions {
        count: 10,
        concurrency: 1,
        source_prefix: "again".into(),
        resume: true,
        ..opts(&[&node])
    })
    .await;
    r.unwrap();
    assert_released_exactly_once(&released, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_answer_to_a_block_re_sent_after_a_reconnect_is_not_an_error() {
    // It takes 20 blocks, acks none of them yet, and drops the connection: the sender re-sends what
    // it kept on its next connection, and the node answers HELD for each.
    let node = FakeNode::start(Behaviour {
        max_version: VERSION_3,
        dedup: true,
        ack_delay: Duration::from_millis(300),
        drop_once_after: Some(20),
        ..Behaviour::primary(1)
    })
    .await;
    let (r, released, _) = run(PushOptions {
        count: 40,
        concurrency: 1,
        ..opts(&[&node])
    })
    .await;
    let r = r.unwrap();
    assert_released_exactly_once(&released, 40);
    assert!(r.resent > 0 && r.reconnects >= 1, "{r:?}");
    let received = node.received();
    assert!(
        received.len() > 40,
        "the node got re-sends: {}",
        received.len()
    );
}
