//! A block's way into the node: de-duplication by `(source, seq)`, the append and fdatasync that make
//! it durable, and the WAL's disk budget — ingest waits for room, and releasing committed segments
//! makes it.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::record::{encode_block, KIND_BLOCK};
use super::state::Outcome;
use super::{Inner, Node, NodeError};
use crate::receiver::Ingested;
use crate::size::ByteSize;
use crate::wal::{free_space, Lsn, WalError};

impl Node {
    /// Makes a block durable, once. `seq: None` gives it the source's next sequence number (raw sources).
    /// Returns only after the fdatasync that covers it.
    pub async fn ingest(
        &self,
        source: &str,
        seq: Option<u64>,
        data: Bytes,
    ) -> Result<Ingested, NodeError> {
        enum Step {
            Done(Ingested),
            Wait(u64, watch::Receiver<Outcome>),
            Append(u64, watch::Sender<Outcome>, Lsn),
        }
        let step = {
            let mut st = self.state();
            let e = st.entry(source);
            e.last_seen_ms = e.last_seen_ms.max(super::now_ms());
            let seq = match seq {
                Some(s) => s,
                None => {
                    e.raw = true;
                    // Never wraps: a wrapped counter would take every later image for a re-send.
                    if e.next_raw == u64::MAX {
                        return Err(NodeError::Refused(format!(
                            "raw source `{source}` has used every sequence number"
                        )));
                    }
                    e.next_raw += 1;
                    e.next_raw - 1
                }
            };
            if e.durable.contains(seq) {
                Step::Done(Ingested {
                    seq,
                    duplicate: true,
                    committed: e.committed.contains(seq),
                })
            } else if let Some(tx) = e.inflight.get(&seq) {
                Step::Wait(seq, tx.subscribe())
            } else {
                let (tx, _) = watch::channel(None);
                e.inflight.insert(seq, tx.clone());
                let floor = self.inner.wal.next_lsn();
                st.start_append(floor);
                Step::Append(seq, tx, floor)
            }
        };
        match step {
            Step::Done(i) => {
                self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                Ok(i)
            }
            Step::Wait(seq, mut rx) => {
                let outcome = rx.wait_for(|v| v.is_some()).await.map(|v| v.clone());
                match outcome {
                    Ok(Some(Ok(_))) => {
                        self.inner.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        let committed = self.state().is_committed(source, seq);
                        Ok(Ingested {
                            seq,
                            duplicate: true,
                            committed,
                        })
                    }
                    Ok(Some(Err(e))) => Err(NodeError::Failed(e)),
                    _ => Err(NodeError::Failed(
                        "the first copy of this block was abandoned".into(),
                    )),
                }
            }
            Step::Append(seq, tx, floor) => {
                let len = data.len() as u64;
                let record = encode_block(source, seq, &data);
                // The record is the block from here on: one copy held while it waits for its
                // fsync, not two (the receiver's reservation counts one).
                drop(data);
                let res = loop {
                    self.wait_for_wal_room().await;
                    match self.inner.wal.append(KIND_BLOCK, record.clone()).await {
                        // The disk filled between the check and the write: nothing was kept, so wait
                        // for room and write it again (the sender sees backpressure, not an error).
                        Err(e) if e.is_no_space() && self.stop_reason().is_none() => {
                            self.disk_full(&e);
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                        r => break r,
                    }
                };
                // Tests hold an append here, durable and not yet marked, while a standby trims.
                fail::fail_point!("node::ingest::before_mark");
                let mut st = self.state();
                st.entry(source).inflight.remove(&seq);
                st.end_append(floor);
                match res {
                    Ok((lsn, _)) => {
                        let committed = st.mark_durable(source, seq, lsn);
                        drop(st);
                        if self.inner.low_disk.load(Ordering::Acquire)
                            && self.low_disk().is_none()
                            && self.inner.low_disk.swap(false, Ordering::AcqRel)
                        {
                            info!(min_free = %self.inner.cfg.wal.min_free, "disk space freed; taking blocks again");
                        }
                        self.inner.last_block_lsn.fetch_max(lsn, Ordering::AcqRel);
                        self.inner.stats.blocks.fetch_add(1, Ordering::Relaxed);
                        self.inner.stats.bytes.fetch_add(len, Ordering::Relaxed);
                        let _ = tx.send(Some(Ok(lsn)));
                        Ok(Ingested {
                            seq,
                            duplicate: false,
                            committed,
                        })
                    }
                    Err(e) => {
                        drop(st);
                        let msg = e.to_string();
                        let _ = tx.send(Some(Err(msg.clone())));
                        // A record too large is that block's problem, no space (at a stop) is not a
                        // failure; any other WAL error is the node's.
                        if !matches!(
                            e,
                            WalError::RecordTooLarge { .. } | WalError::NoSpace { .. }
                        ) {
                            self.fail(format!("WAL append failed: {msg}"));
                        }
                        Err(e.into())
                    }
                }
            }
        }
    }

    /// Waits while the WAL is at its disk budget, or a disk of the WAL or the local output has less
    /// than `wal.min_free` free: the caller's block is not read further, so senders feel backpressure
    /// instead of losing anything. Returns at once when the node stops.
    async fn wait_for_wal_room(&self) {
        let budget = self.inner.cfg.wal.disk_budget.as_u64();
        let min_free = self.inner.cfg.wal.min_free;
        loop {
            let notified = self.inner.wal_freed.notified();
            let used = self.inner.wal.disk_bytes();
            let low = self.low_disk();
            if used < budget && low.is_none() {
                if self.inner.over_budget.swap(false, Ordering::AcqRel) {
                    info!(
                        used,
                        budget, "WAL back under its disk budget; taking blocks again"
                    );
                }
                return;
            }
            if used >= budget && !self.inner.over_budget.swap(true, Ordering::AcqRel) {
                warn!(used, budget, dir = %self.inner.wal.dir().display(),
                      "WAL disk budget reached: applying backpressure to senders until a batch commits and frees segments");
            }
            if let Some((path, free)) = low {
                if !self.inner.low_disk.swap(true, Ordering::AcqRel) {
                    warn!(path = %path.display(), free = %ByteSize(free), %min_free,
                          "disk space under wal.min_free: applying backpressure to senders until space is freed");
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = self.stopped() => return,
            }
        }
    }

    /// The first of the WAL's and the local output's directories whose file system has less than
    /// `wal.min_free` free, with what it has.
    fn low_disk(&self) -> Option<(PathBuf, u64)> {
        let cfg = &self.inner.cfg;
        let min_free = cfg.wal.min_free.as_u64();
        if min_free == 0 {
            return None;
        }
        let mut dirs = vec![self.inner.wal.dir().to_path_buf()];
        if cfg.hdfs_output().is_none() {
            dirs.push(cfg.output_dir());
        }
        dirs.into_iter().find_map(|d| match free_space(&d) {
            Ok(free) if free < min_free => Some((d, free)),
            _ => None,
        })
    }

    /// A WAL append found the disk full: logged once per episode, as backpressure.
    fn disk_full(&self, e: &WalError) {
        if !self.inner.low_disk.swap(true, Ordering::AcqRel) {
            warn!(dir = %self.inner.wal.dir().display(), error = %e, min_free = %self.inner.cfg.wal.min_free,
                  "disk full under the WAL: applying backpressure to senders until space is freed");
        }
    }
}

impl Inner {
    pub(super) async fn wal_release(&self, low_water: Lsn) -> Result<(), NodeError> {
        let wal = self.wal.clone();
        let n = tokio::task::spawn_blocking(move || wal.release_below(low_water)).await??;
        self.wal_freed.notify_waiters();
        if n > 0 {
            debug!(segments = n, low_water, "WAL segments released");
        }
        Ok(())
    }
}
