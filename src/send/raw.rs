//! A raw worker of `send push`: every image is one connection to the first target that takes it; the
//! worker writes it, closes its side and waits for the node to close. No acknowledgement, so the
//! manifest records raw images as sent.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use super::manifest::ManifestEntry;
use super::options::Stop;
use super::report::{PushError, PushReport};
use super::shared::Shared;

/// One raw worker: takes images until none are left, each one connection to the first target that
/// takes it. Told to stop, it takes no new image (the one it is sending is finished: a raw image cut
/// short would be stored cut short); told to stop now, it also stops retrying a target that fails.
pub(super) async fn run(shared: Arc<Shared>) -> Result<PushReport, PushError> {
    let opts = &shared.opts;
    let mut report = PushReport::default();
    let mut target = 0usize;
    loop {
        tokio::select! {
            biased;
            _ = shared.stopped(Stop::Drain) => break,
            _ = shared.pace() => {}
        }
        let Some(i) = shared.claim() else { break };
        let (label, data) = shared.images.get(i);
        let mut failing_since: Option<Instant> = None;
        let mut backoff = Duration::from_millis(10);
        loop {
            let address = &opts.targets[target];
            match send_raw(address, &data).await {
                Ok(()) => break,
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > opts.give_up_after {
                        return Err(PushError::GaveUp {
                            targets: opts.targets.clone(),
                            after: opts.give_up_after,
                            last_error: format!("{address}: {e}"),
                        });
                    }
                    debug!(address = %address, error = %e, "raw send failed; retrying");
                    report.resent += 1;
                    report.reconnects += 1;
                    target = (target + 1) % opts.targets.len();
                    tokio::select! {
                        _ = shared.stopped(Stop::Now) => {
                            // Some attempt may have reached the node: the image gets its line.
                            if let Some(m) = &shared.manifest {
                                m.append(&ManifestEntry::raw(label, &data))?;
                            }
                            report.unreleased += 1;
                            return Ok(report);
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
        shared.target_bytes[target].fetch_add(data.len() as u64, Ordering::Relaxed);
        if let Some(t) = &opts.timeline {
            t.add_bytes(&opts.targets[target], data.len() as u64);
        }
        report.sent += 1;
        report.bytes += data.len() as u64;
        if let Some(m) = &shared.manifest {
            m.append(&ManifestEntry::raw(label, &data))?;
        }
    }
    Ok(report)
}

async fn send_raw(address: &str, data: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(address).await?;
    s.write_all(data).await?;
    s.shutdown().await?;
    // The node closes once it has the image; wait for that so a run's end means the node has it all.
    let mut sink = [0u8; 64];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}
