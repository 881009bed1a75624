//! The retention log's bounds over all workers of a push: at most `max_blocks` blocks and `max_bytes`
//! bytes kept (sent or about to be sent, not yet released). A worker takes a block slot *before* it
//! takes the next image and the bytes right after, and gives both back when the block is released.
//! When either bound is reached the workers stop taking new images — backpressure on the source of
//! images — and nothing already taken is ever dropped.
//!
//! A block larger than `max_bytes` takes all of `max_bytes` (it waits until nothing else is kept),
//! so one oversized image slows the push down but cannot wedge it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[derive(Debug)]
pub(crate) struct Retention {
    blocks: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_bytes: u64,
    gauge: Arc<Gauge>,
}

/// Blocks and bytes kept now, and the most ever kept at once.
#[derive(Debug, Default)]
pub(crate) struct Gauge {
    blocks: AtomicU64,
    bytes: AtomicU64,
    peak_blocks: AtomicU64,
    peak_bytes: AtomicU64,
}

impl Gauge {
    pub(crate) fn peak(&self) -> (u64, u64) {
        (
            self.peak_blocks.load(Ordering::Relaxed),
            self.peak_bytes.load(Ordering::Relaxed),
        )
    }
}

/// A block slot; with [`Held::add_bytes`], the block's bytes too. Dropping it gives both back.
#[derive(Debug)]
pub(crate) struct Held {
    _block: OwnedSemaphorePermit,
    bytes: Option<(OwnedSemaphorePermit, u64)>,
    gauge: Arc<Gauge>,
}

impl Held {
    pub(crate) fn add_bytes(&mut self, permit: OwnedSemaphorePermit, len: u64) {
        let now = self.gauge.bytes.fetch_add(len, Ordering::Relaxed) + len;
        self.gauge.peak_bytes.fetch_max(now, Ordering::Relaxed);
        self.bytes = Some((permit, len));
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauge.blocks.fetch_sub(1, Ordering::Relaxed);
        if let Some((_, len)) = &self.bytes {
            self.gauge.bytes.fetch_sub(*len, Ordering::Relaxed);
        }
    }
}

impl Retention {
    pub(crate) fn new(max_blocks: u64, max_bytes: u64) -> Retention {
        let cap = |n: u64| (n.max(1) as usize).min(Semaphore::MAX_PERMITS);
        Retention {
            blocks: Arc::new(Semaphore::new(cap(max_blocks))),
            bytes: Arc::new(Semaphore::new(cap(max_bytes))),
            max_bytes: cap(max_bytes) as u64,
            gauge: Arc::new(Gauge::default()),
        }
    }

    pub(crate) fn gauge(&self) -> Arc<Gauge> {
        self.gauge.clone()
    }

    /// Waits for a block slot. `None` only if the semaphore was closed, which never happens.
    pub(crate) async fn block(&self) -> Option<Held> {
        let p = self.blocks.clone().acquire_owned().await.ok()?;
        let now = self.gauge.blocks.fetch_add(1, Ordering::Relaxed) + 1;
        self.gauge.peak_blocks.fetch_max(now, Ordering::Relaxed);
        Some(Held {
            _block: p,
            bytes: None,
            gauge: self.gauge.clone(),
        })
    }

    /// Waits until `len` bytes (at most `max_bytes`, at most `u32::MAX`: a block's length is a u32)
    /// may be kept. `None` only if the semaphore was closed, which never happens.
    pub(crate) async fn bytes(&self, len: u64) -> Option<OwnedSemaphorePermit> {
        let n = len.min(self.max_bytes).min(u32::MAX as u64) as u32;
        self.bytes.clone().acquire_many_owned(n).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_retention_makes_the_next_block_wait_until_one_is_released() {
        let r = Retention::new(2, 1000);
        let a = r.block().await.unwrap();
        let _b = r.block().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(50), r.block()).await;
        assert!(third.is_err(), "a third block slot must wait");
        drop(a);
        let third = tokio::time::timeout(Duration::from_secs(5), r.block()).await;
        assert!(third.is_ok(), "a released slot is taken by the waiter");
        assert_eq!(r.gauge().peak().0, 2);
    }

    #[tokio::test]
    async fn bytes_are_bounded_and_an_oversized_block_takes_the_whole_budget_instead_of_wedging() {
        let r = Retention::new(10, 100);
        let mut a = r.block().await.unwrap();
        a.add_bytes(r.bytes(60).await.unwrap(), 60);
        let more = tokio::time::timeout(Duration::from_millis(50), r.bytes(50)).await;
        assert!(more.is_err(), "60 + 50 is over 100");
        drop(a);
        let mut big = r.block().await.unwrap();
        let p = tokio::time::timeout(Duration::from_secs(5), r.bytes(5000))
            .await
            .expect("a block over the budget gets the whole budget")
            .unwrap();
        big.add_bytes(p, 5000);
        assert_eq!(r.gauge().peak(), (1, 5000));
    }
}
