//! The state every worker of one push shares, and the admission of the next image: a retention slot,
//! the pacing, then room for its bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manifest::ManifestWriter;
use super::options::{PushOptions, Stop};
use super::retention::{Gauge, Held, Retention};
use crate::images::ImageSet;
use tokio::sync::watch;

/// What every worker of one push shares: the options, the images and who takes which, the manifest,
/// the retention and the per-target byte counters.
pub(super) struct Shared {
    pub(super) opts: PushOptions,
    pub(super) images: ImageSet,
    next: AtomicU64,
    pub(super) manifest: Option<Arc<ManifestWriter>>,
    pub(super) started: Instant,
    retention: Retention,
    /// Bytes written to each target, by index.
    pub(super) target_bytes: Vec<Arc<AtomicU64>>,
    /// "running without standby" was logged.
    pub(super) warned_no_standby: AtomicBool,
    /// Whether the push has been told to stop (a signal, or another worker's failure).
    pub(super) stop: watch::Receiver<Stop>,
}

/// What a stream gets when it may take the next image.
pub(super) enum Admission {
    Image {
        label: String,
        data: bytes::Bytes,
        held: Held,
    },
    /// No images left (or, never in practice, the retention was closed).
    Exhausted,
}

impl Shared {
    pub(super) fn new(
        opts: PushOptions,
        images: ImageSet,
        manifest: Option<Arc<ManifestWriter>>,
        stop: watch::Receiver<Stop>,
    ) -> Shared {
        Shared {
            retention: Retention::new(opts.retention_max_blocks, opts.retention_max_bytes),
            target_bytes: opts
                .targets
                .iter()
                .map(|_| Arc::new(AtomicU64::new(0)))
                .collect(),
            warned_no_standby: AtomicBool::new(false),
            opts,
            images,
            next: AtomicU64::new(0),
            manifest,
            started: Instant::now(),
            stop,
        }
    }

    /// How far the push has been told to stop.
    pub(super) fn stop_level(&self) -> Stop {
        *self.stop.borrow()
    }

    /// Resolves once the push has been told to stop at `level` or further (never if it is not).
    pub(super) async fn stopped(&self, level: Stop) {
        let mut rx = self.stop.clone();
        if rx.wait_for(|s| *s >= level).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Waits until the rate allows the next image. Claims nothing, so it is safe to cancel (select!).
    pub(super) async fn pace(&self) {
        if let Some(rate) = self.opts.rate.filter(|r| *r > 0.0) {
            let i = self.next.load(Ordering::Relaxed);
            let due = self.started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }

    /// Claims the next image number, if any are left.
    pub(super) fn claim(&self) -> Option<u64> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.opts.count).then_some(i)
    }

    /// Takes the next image once the retention has room for it and the rate allows it: a block slot
    /// first (so a full retention stops the push before an image is taken), then the image, then room
    /// for its bytes. Not cancel-safe: a stream keeps this future until it completes.
    pub(super) async fn admit(self: Arc<Self>, worker: usize, k: u64) -> Admission {
        let i = worker as u64 + k * self.opts.concurrency.max(1) as u64;
        if i >= self.opts.count {
            return Admission::Exhausted;
        }
        let Some(mut held) = self.retention.block().await else {
            return Admission::Exhausted;
        };
        self.pace().await;
        // Counts admissions for the pacing; the image itself is fixed by (worker, k).
        self.next.fetch_add(1, Ordering::Relaxed);
        let (label, data) = self.images.get(i);
        let Some(bytes) = self.retention.bytes(data.len() as u64).await else {
            return Admission::Exhausted;
        };
        held.add_bytes(bytes, data.len() as u64);
        Admission::Image { label, data, held }
    }

    pub(super) fn gauge(&self) -> Arc<Gauge> {
        self.retention.gauge()
    }
}
