//! Heartbeats on their own threads, in process: a real node, real sockets, the node's runtime blocked
//! by the test itself (a `current_thread` runtime whose one worker thread the test puts to sleep).

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;

use super::heartbeat::{HeartbeatSender, SenderTimes};
use super::watch::{WatchEvent, Watcher};
use crate::config::{Config, StrategyConfig};
use crate::node::Node;
use strategies::Strategy;

/// Generous bound for things that take milliseconds; only a hang reaches it.
const HANG: Duration = Duration::from_secs(30);

fn config(root: &Path) -> Config {
    crate::node::tests::config(root, "primary", Strategy::UpstreamBackup)
}

fn times(every: Duration, failure_timeout: Duration) -> SenderTimes {
    let s = StrategyConfig {
        heartbeat_interval: every,
        failure_timeout,
        ..StrategyConfig::default()
    };
    SenderTimes::of(&s)
}

/// A primary node serving heartbeats on a free port, and that port.
async fn primary(root: &Path, times: SenderTimes) -> (Node, HeartbeatSender, String) {
    let node = Node::open(config(root)).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = listener.local_addr().unwrap().to_string();
    let sender = HeartbeatSender::start(node.clone(), listener, times).unwrap();
    (node, sender, peer)
}

fn watch(
    peer: &str,
    times: SenderTimes,
    timeout: Duration,
) -> (Watcher, mpsc::Receiver<WatchEvent>) {
    let (tx, rx) = mpsc::channel(64);
    let w = Watcher::start(peer.to_string(), times.every, timeout, tx).unwrap();
    (w, rx)
}

async fn first_heartbeat(rx: &mut mpsc::Receiver<WatchEvent>) {
    match tokio::time::timeout(HANG, rx.recv()).await {
        Ok(Some(WatchEvent::Heartbeat { .. })) => {}
        other => panic!("expected a first heartbeat, got {other:?}"),
    }
}

async fn join_off_runtime(what: &str, f: impl FnOnce() + Send + 'static) {
    tokio::time::timeout(HANG, tokio::task::spawn_blocking(f))
        .await
        .unwrap_or_else(|_| panic!("{what}: a thread stays blocked"))
        .unwrap();
}

#[tokio::test]
async fn a_standby_does_not_take_over_while_the_primarys_runtime_is_blocked_for_several_failure_timeouts(
) {
    let dir = tempfile::tempdir().unwrap();
    let failure_timeout = Duration::from_secs(1);
    let times = times(Duration::from_millis(50), failure_timeout);
    assert!(4 * failure_timeout < times.stall_limit);
    let (_node, sender, peer) = primary(dir.path(), times).await;
    let (watcher, mut rx) = watch(&peer, times, failure_timeout);
    first_heartbeat(&mut rx).await;

    // The runtime's only worker thread sleeps: no task of the node runs, its tick task neither.
    std::thread::sleep(4 * failure_timeout);

    let mut heartbeats = 0;
    loop {
        match rx.try_recv() {
            Ok(WatchEvent::Heartbeat { .. }) => heartbeats += 1,
            Ok(ev @ WatchEvent::PrimaryFailed { .. }) => {
                panic!(
                    "the standby took over from a primary whose runtime was only blocked: {ev:?}"
                )
            }
            Err(TryRecvError::Empty) => break,
            Err(TryRecvError::Disconnected) => panic!("the watcher ended"),
        }
    }
    assert!(
        heartbeats > 0,
        "heartbeats kept coming while the runtime was blocked"
    );
    join_off_runtime("watcher", move || watcher.stop_and_join()).await;
    join_off_runtime("sender", move || sender.stop_and_join()).await;
}

#[tokio::test]
async fn a_primary_whose_runtime_makes_no_progress_for_ten_failure_timeouts_withholds_heartbeats_until_it_does(
) {
    let dir = tempfile::tempdir().unwrap();
    let failure_timeout = Duration::from_millis(200);
    let times = times(Duration::from_millis(50), failure_timeout);
    let (_node, sender, peer) = primary(dir.path(), times).await;
    let (watcher, mut rx) = watch(&peer, times, failure_timeout);
    first_heartbeat(&mut rx).await;

    // The runtime's only worker thread sleeps until the standby declares the primary failed.
    let deadline = Instant::now() + HANG;
    let failed = loop {
        match rx.try_recv() {
            Ok(WatchEvent::PrimaryFailed {
                last_heartbeat_unix_ms,
                ..
            }) => break Some(last_heartbeat_unix_ms),
            Ok(WatchEvent::Heartbeat { .. }) => {}
            Err(TryRecvError::Disconnected) => break None,
            Err(TryRecvError::Empty) if Instant::now() > deadline => break None,
            Err(TryRecvError::Empty) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let last_heartbeat =
        failed.expect("the standby declares the primary with a wedged runtime failed");
    assert!(last_heartbeat > 0, "after it saw a heartbeat");
    join_off_runtime("watcher", move || watcher.stop_and_join()).await;

    // The runtime runs again: a standby that connects now gets heartbeats.
    let (watcher, mut rx) = watch(&peer, times, failure_timeout);
    first_heartbeat(&mut rx).await;
    join_off_runtime("watcher", move || watcher.stop_and_join()).await;
    join_off_runtime("sender", move || sender.stop_and_join()).await;
}

#[tokio::test]
async fn when_the_node_stops_its_heartbeat_threads_end_and_the_standby_declares_the_primary_failed()
{
    let dir = tempfile::tempdir().unwrap();
    let failure_timeout = Duration::from_millis(200);
    let times = times(Duration::from_millis(50), failure_timeout);
    let (node, sender, peer) = primary(dir.path(), times).await;
    let (watcher, mut rx) = watch(&peer, times, failure_timeout);
    first_heartbeat(&mut rx).await;

    node.request_stop("test");
    let failed = tokio::time::timeout(HANG, async {
        loop {
            match rx.recv().await {
                Some(WatchEvent::Heartbeat { .. }) => {}
                other => return other,
            }
        }
    })
    .await
    .expect("the standby notices");
    assert!(
        matches!(failed, Some(WatchEvent::PrimaryFailed { last_heartbeat_unix_ms, .. }) if last_heartbeat_unix_ms > 0),
        "the standby declares the stopped primary failed: {failed:?}"
    );
    // Without being told: the node's stop alone ends the accept thread (and it joins its writers).
    let accept = sender.accept.as_ref().expect("accept thread");
    let deadline = Instant::now() + HANG;
    while !accept.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the accept thread ends when the node stops"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        TcpStream::connect(&peer).is_err(),
        "the control address is closed"
    );
    join_off_runtime("watcher", move || watcher.stop_and_join()).await;
    join_off_runtime("sender", move || sender.stop_and_join()).await;
}

#[tokio::test]
async fn a_standby_that_never_saw_a_heartbeat_never_declares_the_primary_failed() {
    let failure_timeout = Duration::from_millis(100);
    let times = times(Duration::from_millis(20), failure_timeout);
    // A peer that accepts (the backlog does) and says nothing, and one that refuses.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let refusing = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (w1, mut rx1) = watch(
        &silent.local_addr().unwrap().to_string(),
        times,
        failure_timeout,
    );
    let (w2, mut rx2) = watch(&refusing, times, failure_timeout);

    tokio::time::sleep(20 * failure_timeout).await;

    assert_eq!(rx1.try_recv(), Err(TryRecvError::Empty), "silent peer");
    assert_eq!(rx2.try_recv(), Err(TryRecvError::Empty), "refusing peer");
    join_off_runtime("watcher", move || w1.stop_and_join()).await;
    join_off_runtime("watcher", move || w2.stop_and_join()).await;
}
