//! Heartbeats, the standby's end: a watcher thread that connects to the primary's control address,
//! reads heartbeat lines with a read timeout and makes the `failure_timeout` decision on its own
//! clock, telling the async side through a channel.

use std::io::{self, BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::heartbeat::{unix_ms, Heartbeat, StopSignal, STOP_POLL};

/// What the standby's watcher thread tells the async side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum WatchEvent {
    /// A heartbeat arrived, naming the primary's newest checkpoint.
    Heartbeat { checkpoint: u64 },
    /// No heartbeat for `failure_timeout`, after at least one was seen. The watcher has ended.
    PrimaryFailed {
        last_heartbeat_unix_ms: u64,
        detected_unix_ms: u64,
    },
}

/// The standby's watcher thread. Dropping it tells the thread to stop without waiting for it.
pub(super) struct Watcher {
    stop: Arc<StopSignal>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Watches `peer`'s heartbeats: connects every `poll / 2` until it can (each attempt bounded by
    /// `poll`), declares the primary failed after `timeout` without a heartbeat once one was seen.
    pub(super) fn start(
        peer: String,
        poll: Duration,
        timeout: Duration,
        events: mpsc::Sender<WatchEvent>,
    ) -> io::Result<Watcher> {
        let stop = Arc::new(StopSignal::default());
        let thread = std::thread::Builder::new()
            .name("heartbeat-watch".into())
            .spawn({
                let stop = stop.clone();
                move || watch_heartbeats(&peer, poll, timeout, &events, &stop)
            })?;
        Ok(Watcher {
            stop,
            thread: Some(thread),
        })
    }

    /// Tells the thread to stop and waits until it has (within about `poll`). Blocks: call it off
    /// the runtime.
    pub(super) fn stop_and_join(mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

/// Connects to the first of `peer`'s addresses that answers within `timeout`.
fn connect(peer: &str, timeout: Duration) -> Option<TcpStream> {
    let timeout = timeout.max(Duration::from_millis(1));
    peer.to_socket_addrs()
        .ok()?
        .find_map(|a| TcpStream::connect_timeout(&a, timeout).ok())
}

/// The watcher thread's loop (the rules are the module doc's). Sends `PrimaryFailed` and returns on a
/// failure; returns without a word when told to stop or when the receiver is gone.
fn watch_heartbeats(
    peer: &str,
    poll: Duration,
    timeout: Duration,
    events: &mpsc::Sender<WatchEvent>,
    stop: &StopSignal,
) {
    let gone = || stop.is_stopped() || events.is_closed();
    let overdue =
        |seen: Option<(Instant, u64)>| seen.is_some_and(|(at, _)| at.elapsed() >= timeout);
    let mut last_seen: Option<(Instant, u64)> = None;
    let mut waiting_logged = false;
    'watch: loop {
        if gone() {
            return;
        }
        let Some(sock) = connect(peer, poll) else {
            if overdue(last_seen) {
                break 'watch;
            }
            if last_seen.is_none() && !waiting_logged {
                info!(peer, "standby: waiting for the primary's first heartbeat");
                waiting_logged = true;
            }
            if stop.sleep(poll / 2) {
                return;
            }
            continue;
        };
        let _ = sock.set_nodelay(true);
        let mut reader = BufReader::new(sock);
        let mut line = Vec::new();
        loop {
            if gone() {
                return;
            }
            let wait = match last_seen {
                Some((at, _)) => timeout.saturating_sub(at.elapsed()),
                None => STOP_POLL,
            };
            if wait.is_zero() {
                break 'watch;
            }
            if reader
                .get_ref()
                .set_read_timeout(Some(wait.min(STOP_POLL)))
                .is_err()
            {
                break;
            }
            // A read that times out keeps what it read of a line in `line`; the next one goes on.
            match reader.read_until(b'\n', &mut line) {
                Ok(_) if line.last() == Some(&b'\n') => {
                    match serde_json::from_slice::<Heartbeat>(&line) {
                        Ok(hb) => {
                            last_seen = Some((Instant::now(), unix_ms()));
                            // Only the newest checkpoint matters: a full channel may drop this one.
                            let _ = events.try_send(WatchEvent::Heartbeat {
                                checkpoint: hb.checkpoint,
                            });
                        }
                        Err(_) => {
                            let text = String::from_utf8_lossy(&line);
                            warn!(peer, line = text.trim_end(), "not a heartbeat; ignored");
                        }
                    }
                    line.clear();
                }
                // Closed (a line cut short by the close is no heartbeat).
                Ok(_) => break,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => break,
            }
        }
        if overdue(last_seen) {
            break 'watch;
        }
        // The connection ended before the timeout: reconnect, not in a busy loop.
        if stop.sleep(poll / 2) {
            return;
        }
    }
    let detected_unix_ms = unix_ms();
    let last_heartbeat_unix_ms = last_seen.map_or(0, |(_, ms)| ms);
    let _ = events.blocking_send(WatchEvent::PrimaryFailed {
        last_heartbeat_unix_ms,
        detected_unix_ms,
    });
}
