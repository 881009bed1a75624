//! The local write-ahead log: every block is durable here before the node acknowledges it.
//!
//! # Design
//!
//! The WAL is a directory of append-only *segment* files. One segment, the last, is *active*
//! and receives appends; the others are *sealed* and never change again (except that salvage,
//! on explicit request, may cut a damaged tail off one). Records get consecutive *log
//! sequence numbers* (LSNs) starting at 1; the node keeps a record's [`RecordPos`] to read it
//! back and trims the log with [`Wal::release_below`] once its checkpoint no longer needs the
//! records below a low-water mark.
//!
//! ## Files
//!
//! ```text
//! <dir>/00000000000000000001.wal      segment whose first record is LSN 1
//! <dir>/00000000000000004097.wal      next segment, first record LSN 4097
//! <dir>/<20 digits>.wal.tmp           a segment being created (deleted by recovery)
//! <dir>/<20 digits>.wal.corrupt       a segment salvage set aside (never read again)
//! ```
//!
//! A segment file name is its first LSN as 20 decimal digits, so names sort in LSN order, and
//! the *segment id* in [`RecordPos::segment`] is that LSN. Other files in the directory are
//! ignored.
//!
//! ## Segment header (32 bytes, little-endian)
//!
//! ```text
//! magic b"HIWALSEG" | version u32 = 1 | flags u32 | first LSN u64 | reserved u32 = 0 | crc32 u32
//! ```
//!
//! The CRC covers the 28 bytes before it. Flag bit 0 (`GAP_AFTER`) is set only by salvage: it
//! says records at the end of this segment were dropped on purpose, so the next segment may
//! start at a higher LSN than this one ends at. A segment is created as `<name>.wal.tmp`,
//! its header written and fdatasync'd, then renamed into place and the directory fsync'd; a
//! segment file therefore always has a complete header unless the storage damaged it.
//!
//! ## Records (little-endian)
//!
//! ```text
//! len u32 | crc32 u32 | lsn u64 | kind u8 | payload (len bytes)
//! ```
//!
//! 17 header bytes, then the payload. `len` is the payload length. The CRC32 (IEEE,
//! `crc32fast`) covers `len`, `lsn`, `kind` and the payload, in that order. `kind` is the
//! caller's: the WAL stores it and gives it back. The largest payload is
//! [`MAX_RECORD_PAYLOAD`] (64 MiB); larger appends fail with [`WalError::RecordTooLarge`].
//! [`RecordPos::offset`] is the byte offset of the record's `len` field in its segment file.
//!
//! ## Group commit
//!
//! Two dedicated OS threads form a pipeline. [`Wal::append`] computes the payload's share of
//! the CRC on the caller's task, sends the request over a channel and awaits a one-shot reply.
//! The *writer* thread owns the active segment: it takes every request that is waiting,
//! assigns LSNs in arrival order, writes them all with one `writev` (header and payload slices
//! side by side; the payload `Bytes` are never copied) and hands the written batch to the
//! *syncer* thread. The syncer takes every batch handed over, calls `fdatasync` once, and only
//! then replies to all of their appends. Requests that arrive while a sync is in flight are
//! written meanwhile and form the next group, covered by the next single fdatasync. So an
//! append resolves only after the fdatasync that covers it; the number of syncs grows with
//! the number of groups, not of records ([`Wal::sync_count`] counts them); and the disk never
//! idles while the next group is copied into the page cache or the previous one answered.
//! Dropping an append future does not withdraw the record: it may still be written, it just
//! is not acknowledged.
//!
//! ## Rotation
//!
//! Segment size counts the header. A group never spans segments: if the next record would
//! take a non-empty active segment past `segment_size`, the writer first rotates (creates the
//! next segment, named after the LSN that record gets, and fsyncs the directory), and a group
//! stops taking records at the first one that would not fit. A single record larger than
//! `segment_size` is written alone into a segment of its own. The old segment needs no
//! extra sync, but the writer waits until everything written to it is synced before it
//! creates the next one, so unsynced bytes are only ever at the end of the last segment.
//!
//! ## Failures while writing (fsyncgate)
//!
//! If a write or fdatasync fails, the appends of that group fail with [`WalError::Io`] and the
//! pipeline stops for good: every later append fails fast with [`WalError::Failed`] carrying the
//! first error. A failed fdatasync is never retried, because on Linux the failed pages may
//! already be marked clean and a retry would falsely succeed. Restarting the process runs
//! recovery, which trusts only what the checksums confirm.
//!
//! ## Recovery ([`Wal::open`])
//!
//! 1. Leftover `*.wal.tmp` files are deleted (a crash during segment creation).
//! 2. Segments are read in name order. Each header must be intact and name the same first
//!    LSN as the file name. Each segment must start at the LSN after the previous segment's
//!    last record (unless that segment carries `GAP_AFTER`); a gap or an overlap is
//!    corruption: records are missing or duplicated.
//! 3. Each segment's records are read from the header on while they are whole, CRC-clean and
//!    carry the next LSN.
//! 4. A bad record in the **last** segment is a *torn tail* (the unsynced end of the group the
//!    process died writing) only if no whole, CRC-clean record with an LSN at or after the
//!    bad record's expected LSN can be found at **any byte offset** after it. Then the file is
//!    truncated at the bad record, logged at `warn` with the offset and byte count, and counted
//!    in [`RecoveryReport::truncated_bytes`]. A bad record followed by a valid later record
//!    is a bit flip in the middle of the log, not a torn write, and is never truncated
//!    silently. Everything after the last completed fdatasync was never acknowledged, and
//!    only the last segment can hold such bytes, so a torn tail is a cut-off prefix of what
//!    the writer wrote last, with nothing valid after the cut.
//! 5. Anything else (a bad record in a sealed segment, a bad record in the last segment
//!    followed by valid ones, a bad header, an LSN gap or overlap) fails with
//!    [`WalError::Corrupt`] naming the segment and the byte offset — unless
//!    [`WalOptions::salvage`] is set. Salvage drops the bad record and everything after it in
//!    that segment (truncates the file and sets `GAP_AFTER`), or sets aside a segment with a
//!    bad header or an overlapping LSN range (renamed to `*.wal.corrupt`), or accepts a gap;
//!    it logs each drop at `error` with the LSN range and bytes, lists it in
//!    [`RecoveryReport::salvaged`], and carries on. After a salvage, the next LSN is above
//!    every LSN seen in the dropped bytes (a new segment is started if needed), so an LSN
//!    that may have been acknowledged is never given to a different record. A salvaged log
//!    opens again without `salvage`.
//!
//! A cleanly empty directory starts a log at LSN 1.
//!
//! ## Reading
//!
//! [`Wal::read`] preads one record by position and verifies its CRC. [`Wal::replay`] streams
//! every record with `lsn >= from` in LSN order; it covers the records that were durable
//! when it was called, verifies each CRC, and yields [`WalError::Corrupt`] (then stops) on
//! damage. Both are blocking and meant for `spawn_blocking` or start-up.
//!
//! ## Releasing
//!
//! [`Wal::release_below`]`(low_water)` deletes the oldest segments whose every record has an
//! LSN below `low_water` (a segment's records all lie below the next segment's first LSN),
//! oldest first, fsyncing the directory after each deletion so a crash never leaves a hole.
//! It never deletes the active segment. A replay still reading a released segment fails
//! with [`WalError::Io`].
//!
//! ## Failpoints
//!
//! Compiled in only with the `failpoints` feature (`fail` crate; `fail::cfg(name, action)`):
//!
//! | name                 | where                                                        |
//! |----------------------|--------------------------------------------------------------|
//! | `wal::write::before` | writer thread, before it writes a batch                      |
//! | `wal::sync::before`  | syncer thread, before a group's fdatasync                    |
//! | `wal::sync::after`   | syncer thread, after the fdatasync, before the group's appends are answered |
//! | `wal::rotate::before`| writer thread, before it creates the next segment            |
//!
//! Action `return` makes the operation fail with an injected I/O error (with the fsyncgate
//! consequences above); `return(<dir>)` does so only for the WAL whose directory is exactly
//! `<dir>`, so tests running in parallel do not disturb each other. `panic` panics that
//! thread (appends then fail with [`WalError::Failed`]); to kill the whole process at that
//! point, use `fail::cfg_callback(name, || std::process::abort())`.
//!
//! ## Not handled
//!
//! The WAL does not lock its directory: two processes opening the same directory will
//! corrupt it. After power loss (not a process crash), a file system that writes back the
//! pages of an unsynced group out of order could leave a hole followed by valid records of
//! that same, unacknowledged group; recovery then refuses to guess and reports
//! [`WalError::Corrupt`], which `salvage` resolves without losing acknowledged records.

mod record;
mod recovery;
mod replay;
mod segment;
mod writer;

#[cfg(test)]
mod fuzz_regressions;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

pub use record::{MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN};

use record::RecordHeader;
use segment::{io_err, segment_path, sync_dir};
use writer::{AppendRequest, Msg};

/// Log sequence number. The first record of a log gets 1; each append gets the next one.
pub type Lsn = u64;

/// Where a record lives: the segment id (the segment's first LSN), the byte offset of the
/// record header in that file, and the payload length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordPos {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

/// One record read back from the log.
#[derive(Clone, Debug)]
pub struct Record {
    pub lsn: Lsn,
    pub kind: u8,
    pub payload: Bytes,
    pub pos: RecordPos,
}

/// How to open a WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// The directory of segment files; created if missing.
    pub dir: PathBuf,
    /// Size (header included) past which the active segment is rotated.
    pub segment_size: u64,
    /// Drop corrupt records (and the rest of their segment) instead of refusing to open.
    pub salvage: bool,
}

/// What recovery found and did.
#[derive(Clone, Debug, Default)]
pub struct RecoveryReport {
    /// Segment files in the log after recovery.
    pub segments: usize,
    /// Valid records in the log after recovery.
    pub records: u64,
    /// Bytes cut off the last segment as a torn tail.
    pub truncated_bytes: u64,
    /// The LSN before the one the next append gets (0 for a new log).
    pub last_lsn: Lsn,
    /// What salvage dropped, human readable (empty unless `salvage` was set and needed).
    pub salvaged: Vec<String>,
}

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("wal I/O error: {op} {path}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "corrupt WAL record in {segment} at offset {offset}: {reason} (start with salvage to drop it and everything after it in that segment)"
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("WAL record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("the WAL is closed")]
    Closed,
    #[error("the WAL writer failed earlier and accepts no more appends: {0}")]
    Failed(String),
}

/// A segment the log currently consists of.
#[derive(Clone, Debug)]
pub(crate) struct SegMeta {
    pub first_lsn: Lsn,
    pub path: PathBuf,
    /// Final size of a sealed segment; for the active (last) one see `Shared::active_bytes`.
    pub size: u64,
}

/// State shared by the handles and the writer thread.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub segment_size: u64,
    /// Oldest first; the last one is the active segment.
    pub segments: Mutex<Vec<SegMeta>>,
    pub active_bytes: AtomicU64,
    pub next_lsn: AtomicU64,
    /// Highest LSN covered by a completed fdatasync.
    pub durable_lsn: AtomicU64,
    pub sync_count: AtomicU64,
    pub failed: Mutex<Option<String>>,
    /// Paired with `synced`: the writer waits on it for the syncer before rotating.
    pub sync_lock: Mutex<()>,
    pub synced: Condvar,
    pub closed: AtomicBool,
    /// Read-only handles for [`Wal::read`], by segment id.
    pub readers: Mutex<HashMap<u64, Arc<File>>>,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Disconnecting the channel stops the writer once it has answered what it holds.
        drop(self.tx.take());
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "WAL writer thread panicked");
            }
        }
    }
}

/// A handle to an open write-ahead log; cheap to clone, usable from many tasks.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .field("next_lsn", &self.next_lsn())
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating the dir if needed), runs recovery, starts the group-commit writer thread.
    pub fn open(opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        let recovered = recovery::recover(&opts)?;
        let report = recovered.report;
        let shared = Arc::new(Shared {
            dir: opts.dir.clone(),
            segment_size: opts.segment_size,
            segments: Mutex::new(recovered.segments),
            active_bytes: AtomicU64::new(recovered.active_len),
            next_lsn: AtomicU64::new(recovered.next_lsn),
            durable_lsn: AtomicU64::new(recovered.next_lsn - 1),
            sync_count: AtomicU64::new(0),
            failed: Mutex::new(None),
            sync_lock: Mutex::new(()),
            synced: Condvar::new(),
            closed: AtomicBool::new(false),
            readers: Mutex::new(HashMap::new()),
        });
        let (tx, rx) = mpsc::channel();
        let writer = writer::Writer::new(
            Arc::clone(&shared),
            rx,
            recovered.active_file,
            recovered.active_first_lsn,
            recovered.active_len,
            recovered.next_lsn,
        )?;
        let handle = std::thread::Builder::new()
            .name("wal-writer".to_string())
            .spawn(move || writer.run())
            .map_err(io_err(&opts.dir, "spawn writer thread"))?;
        tracing::info!(
            dir = %opts.dir.display(),
            segments = report.segments,
            records = report.records,
            truncated_bytes = report.truncated_bytes,
            last_lsn = report.last_lsn,
            salvaged = report.salvaged.len(),
            "WAL opened"
        );
        let inner = Inner {
            shared,
            tx: Some(tx),
            writer: Some(handle),
        };
        Ok((
            Wal {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Why the writer no longer answers.
    fn stopped_error(&self) -> WalError {
        if let Some(msg) = lock(&self.shared().failed).clone() {
            WalError::Failed(msg)
        } else if self.shared().closed.load(Ordering::Acquire) {
            WalError::Closed
        } else {
            WalError::Failed("the WAL writer thread stopped unexpectedly".to_string())
        }
    }

    /// Appends one record; resolves only after the fdatasync that covers it. Callable from
    /// many tokio tasks at once.
    pub async fn append(&self, kind: u8, payload: Bytes) -> Result<(Lsn, RecordPos), WalError> {
        if payload.len() > MAX_RECORD_PAYLOAD {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: MAX_RECORD_PAYLOAD,
            });
        }
        if let Some(msg) = lock(&self.shared().failed).clone() {
            return Err(WalError::Failed(msg));
        }
        if self.shared().closed.load(Ordering::Acquire) {
            return Err(WalError::Closed);
        }
        let crc = record::payload_hasher(&payload);
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            kind,
            payload,
            crc,
            reply,
        };
        let Some(tx) = self.inner.tx.as_ref() else {
            return Err(WalError::Closed);
        };
        if tx.send(Msg::Append(request)).is_err() {
            return Err(self.stopped_error());
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.stopped_error()),
        }
    }

    /// Every record with lsn >= from, in LSN order (blocking file reads; the caller runs it in
    /// spawn_blocking or at start-up). Covers the records durable when it is called.
    pub fn replay(
        &self,
        from: Lsn,
    ) -> Result<impl Iterator<Item = Result<Record, WalError>> + Send + 'static, WalError> {
        let segments = lock(&self.shared().segments);
        // Read under the segment lock: the writer adds a segment before it writes into it,
        // so every durable LSN seen here lies in a segment of this snapshot.
        let end = self.shared().durable_lsn.load(Ordering::Acquire);
        let relevant: Vec<(Lsn, PathBuf)> = segments
            .iter()
            .enumerate()
            .filter(|(i, _)| segments.get(i + 1).is_none_or(|next| next.first_lsn > from))
            .map(|(_, s)| (s.first_lsn, s.path.clone()))
            .collect();
        drop(segments);
        Ok(replay::Replay::new(relevant, from, end))
    }

    /// Reads one record back by position (blocking pread), verifying its CRC.
    pub fn read(&self, pos: RecordPos) -> Result<Record, WalError> {
        let path = segment_path(&self.shared().dir, pos.segment);
        let file = self.reader(pos.segment, &path)?;
        let total = RECORD_HEADER_LEN + pos.len as usize;
        let mut buf = vec![0u8; total];
        file.read_exact_at(&mut buf, pos.offset)
            .map_err(io_err(&path, "read record"))?;
        let corrupt = |reason: String| WalError::Corrupt {
            segment: path.clone(),
            offset: pos.offset,
            reason,
        };
        let mut hbuf = [0u8; RECORD_HEADER_LEN];
        hbuf.copy_from_slice(&buf[..RECORD_HEADER_LEN]);
        let h = RecordHeader::decode(&hbuf);
        if h.len != pos.len {
            return Err(corrupt(format!(
                "record header says {} payload bytes, the position says {}",
                h.len, pos.len
            )));
        }
        let mut payload = Bytes::from(buf);
        let payload = payload.split_off(RECORD_HEADER_LEN);
        if !h.matches(&payload) {
            return Err(corrupt(format!(
                "CRC mismatch in the record carrying LSN {}",
                h.lsn
            )));
        }
        Ok(Record {
            lsn: h.lsn,
            kind: h.kind,
            payload,
            pos,
        })
    }

    fn reader(&self, segment: u64, path: &Path) -> Result<Arc<File>, WalError> {
        let mut readers = lock(&self.shared().readers);
        if let Some(f) = readers.get(&segment) {
            return Ok(Arc::clone(f));
        }
        let f = Arc::new(File::open(path).map_err(io_err(path, "open segment for reading"))?);
        readers.insert(segment, Arc::clone(&f));
        Ok(f)
    }

    /// Deletes every segment all of whose records have lsn < low_water (never the active
    /// segment). Returns how many.
    pub fn release_below(&self, low_water: Lsn) -> Result<usize, WalError> {
        let shared = self.shared();
        let mut segments = lock(&shared.segments);
        let mut released = 0;
        // A segment's records all lie below the next segment's first LSN; the last one is active.
        while segments.len() > 1 && segments[1].first_lsn <= low_water {
            let seg = segments.remove(0);
            lock(&shared.readers).remove(&seg.first_lsn);
            fs::remove_file(&seg.path).map_err(io_err(&seg.path, "delete segment"))?;
            sync_dir(&shared.dir)?;
            tracing::debug!(segment = %seg.path.display(), bytes = seg.size, low_water, "released WAL segment");
            released += 1;
        }
        if released > 0 {
            tracing::info!(dir = %shared.dir.display(), released, low_water, "released WAL segments");
        }
        Ok(released)
    }

    /// The LSN the next append will get.
    pub fn next_lsn(&self) -> Lsn {
        self.shared().next_lsn.load(Ordering::Acquire)
    }

    /// Bytes of all segment files on disk now.
    pub fn disk_bytes(&self) -> u64 {
        let shared = self.shared();
        let segments = lock(&shared.segments);
        let sealed: u64 = segments.iter().rev().skip(1).map(|s| s.size).sum();
        sealed + shared.active_bytes.load(Ordering::Acquire)
    }

    /// How many fdatasyncs of groups the writer has completed since open (for tests and metrics).
    pub fn sync_count(&self) -> u64 {
        self.shared().sync_count.load(Ordering::Acquire)
    }

    pub fn dir(&self) -> &Path {
        &self.shared().dir
    }

    /// Stops the writer thread after syncing what it has (appends after close fail with
    /// WalError::Closed).
    pub async fn close(&self) -> Result<(), WalError> {
        if self.shared().closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let sent = self
            .inner
            .tx
            .as_ref()
            .is_some_and(|tx| tx.send(Msg::Close(reply)).is_ok());
        let result = if sent { answer.await.ok() } else { None };
        match result {
            Some(r) => r,
            // The writer was already gone: fine after a failure is reported, odd otherwise.
            None => match lock(&self.shared().failed).clone() {
                Some(msg) => Err(WalError::Failed(msg)),
                None => Ok(()),
            },
        }
    }
}
