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
//! Beside the directory, *outside* it, lives the log's manifest ([`WalOptions::manifest`]; the
//! node puts it at `<wal dir>.manifest`, by default `<data_dir>/wal.manifest`), so that losing
//! the directory, or any of its segments, never loses the record of what the log held.
//!
//! ## Manifest and durable mark (192 bytes, little-endian)
//!
//! ```text
//! 0..64    extent slot A ┐ magic b"HIWALMAN" | version u32 = 1 | reserved u32 | generation u64 |
//! 64..128  extent slot B ┘ wal id u64 | first segment u64 | last segment u64 | reserved (12) | crc32 u32
//! 128..192 durable mark:   magic b"HIWALDUR" | version u32 = 1 | reserved u32 | wal id u64 |
//!                          durable LSN u64 | segment u64 | end offset u64 | reserved (12) | crc32 u32
//! ```
//!
//! Each CRC covers the 60 bytes before it. The *wal id* is random, chosen when the manifest is
//! created, and names the log in messages.
//!
//! The **extent** says which segments the log consists of: the id of the oldest segment it keeps
//! and of the newest one it created. It is updated in place, always over the older of the two
//! slots and then fdatasync'd (a torn write leaves the other slot intact; readers take the valid
//! slot with the higher generation), so an update needs no free disk space. The order makes it a
//! bound that is never wrong in the dangerous direction: the writer records a new segment only
//! after creating it (a crash in between leaves a segment newer than the extent says), and
//! [`Wal::release_below`] records the new first segment before deleting the old ones (a crash in
//! between leaves segments older than it says). So recovery may find *more* than the extent, never
//! less, unless segments were lost.
//!
//! The **durable mark** is the highest LSN a completed group fdatasync covers, with its segment
//! and the offset where that group ends. The syncer writes it after each fdatasync and *before*
//! answering the group's appends, so every acknowledged record lies at or below the mark. The mark
//! is written with `pwrite` and not synced by itself (that would double the syncs): after a
//! process crash the page cache still has it; after a power loss it may be older than the last
//! acknowledgement, which only makes recovery as lenient as it was before there was a mark (a
//! damaged last record then reads as a torn tail). Opening the log writes a fresh mark at the
//! recovered end, after syncing it, and fdatasyncs it.
//!
//! The mark is what tells a **torn tail** from **damage**: a torn tail is the unsynced end of the
//! group the process died writing, so it lies *above* the mark (its LSN was never acknowledged).
//! A bad record whose LSN is at or below the mark was synced and acknowledged: that is damage,
//! refused like damage anywhere else, however it looks (short, CRC mismatch, cut off).
//!
//! Without a manifest (`manifest: None`, a bare log as in unit tests) none of these checks is
//! made and recovery behaves as if every log were new to it.
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
//! One failure is not fatal: a **full disk** (ENOSPC or EDQUOT) on a *write* or on creating a
//! segment. Then nothing of the group is kept — a partly written group is cut off again with
//! `ftruncate`, a half-created segment deleted — its LSNs are handed out again, every append the
//! writer holds fails with [`WalError::NoSpace`], and the log goes on working: the caller waits
//! for room and appends again (the node does, as backpressure). Nothing of such a group was
//! synced or acknowledged, and the next LSN is published only after a write succeeded, so an
//! append's LSN is never below a [`Wal::next_lsn`] anyone read. An fdatasync that fails, for
//! whatever reason, stays fatal. [`free_space`] is what callers check their reserve against.
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
//!    With a manifest, a bad record whose LSN is at or below the durable mark is never a torn
//!    tail (see above): it is damage, step 5.
//! 5. Anything else (a bad record in a sealed segment, a bad record in the last segment
//!    followed by valid ones or covered by the durable mark, a bad header, an LSN gap or
//!    overlap) fails with [`WalError::Corrupt`] naming the segment and the byte offset — unless
//!    [`WalOptions::salvage`] is set. Salvage drops the bad record and everything after it in
//!    that segment (truncates the file and sets `GAP_AFTER`), or sets aside a segment with a
//!    bad header or an overlapping LSN range (renamed to `*.wal.corrupt`), or accepts a gap;
//!    it logs each drop at `error` with the LSN range and bytes, lists it in
//!    [`RecoveryReport::salvaged`], and carries on. After a salvage, the next LSN is above
//!    every LSN seen in the dropped bytes (a new segment is started if needed), so an LSN
//!    that may have been acknowledged is never given to a different record. A salvaged log
//!    opens again without `salvage`.
//!
//! 6. **Missing records** ([`WalError::Missing`]). What was found is compared with what the
//!    log should hold: the extent's first segment must be there (else the oldest segments were
//!    deleted); every LSN up to the durable mark must be there (else the newest segments were
//!    deleted, or synced records cut off at a record boundary); with no mark, the extent's last
//!    segment must be there; and the log must reach [`WalOptions::checkpoint_low_water`], the
//!    low-water mark of the newest checkpoint made from it (else the log is younger than its
//!    checkpoint: the directory was lost — the manifest with it, or not — or replaced). Records
//!    missing wholly *below* the checkpoint's low-water mark are committed: that is logged at
//!    `warn` and listed in [`RecoveryReport::missing_committed`], nothing more. Anything else
//!    refuses to open, naming what is missing (segment files, LSN range, the manifest or
//!    checkpoint that says so) and what salvage would do. With `salvage`, the loss is accepted,
//!    logged at `error` with the LSN count, and counted in [`RecoveryReport::salvaged_lsns`].
//!    Either way the next LSN is above everything the missing part, the durable mark, the extent
//!    and the checkpoint's low-water mark account for, so a new record never gets an LSN the
//!    checkpoint already counts as committed (a new segment starts there; the last kept one is
//!    flagged `GAP_AFTER`).
//! 7. The tail of the last segment is fdatasync'd: a killed process leaves its last writes in
//!    the page cache, synced or not, and recovery must not count them as durable (and the node
//!    acknowledge re-sends of them) before they are. Then the manifest is written: its extent
//!    and a durable mark at the recovered end (created, by temporary file and rename, if there
//!    was none — a log from before manifests, or a new one).
//!
//! A damaged manifest (neither extent slot intact) is refused with [`WalError::Manifest`];
//! salvage rebuilds it from the segments found. A cleanly empty directory with no manifest starts
//! a log at LSN 1 (or at the checkpoint's low-water mark, with salvage).
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
//! | `wal::open::sync`    | recovery, before it fdatasyncs the recovered tail            |
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
//! [`WalError::Corrupt`], which `salvage` resolves without losing acknowledged records. The wal
//! id is kept in the manifest only, not in the segments: a directory swapped for a complete copy
//! of another log that happens to cover the manifest's extent and mark is not detected.

mod manifest;
mod record;
mod recovery;
mod replay;
mod segment;
mod space;
mod writer;

#[cfg(test)]
mod fuzz_regressions;
#[cfg(test)]
mod loss_tests;
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
pub use recovery::MAX_NEXT_LSN;
pub use space::{free_space, is_no_space};

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
    /// Drop corrupt records (and the rest of their segment) instead of refusing to open, and
    /// accept the loss of missing segments or synced records instead of refusing.
    pub salvage: bool,
    /// The manifest file (see "Manifest" above); outside `dir`, so that it survives the loss of
    /// the directory. `None`: no manifest, and no check of missing segments or synced records
    /// (a bare log, as in tests). [`WalOptions::manifest_beside`] gives the usual place.
    pub manifest: Option<PathBuf>,
    /// The low-water mark of the newest checkpoint made from this log, if any: every record
    /// below it is committed elsewhere (it may be missing), and the log reached it (its next LSN
    /// is at least this). A log that ends below it lost records; see "Missing records" above.
    pub checkpoint_low_water: Option<Lsn>,
}

impl WalOptions {
    /// Options for the log in `dir` with its manifest beside it (`<dir>.manifest`), no salvage and
    /// no checkpoint.
    pub fn new(dir: impl Into<PathBuf>, segment_size: u64) -> WalOptions {
        let dir = dir.into();
        WalOptions {
            manifest: Some(WalOptions::manifest_beside(&dir)),
            dir,
            segment_size,
            salvage: false,
            checkpoint_low_water: None,
        }
    }

    /// `<dir>.manifest`: the manifest of the log in `dir`, in the same parent directory.
    pub fn manifest_beside(dir: &Path) -> PathBuf {
        match dir.file_name() {
            Some(name) => {
                let mut name = name.to_owned();
                name.push(".manifest");
                dir.with_file_name(name)
            }
            None => dir.join("wal.manifest"),
        }
    }
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
    /// LSNs salvage gave up on (dropped records, or records of missing segments; an upper bound
    /// where the end of what is missing is unknown).
    pub salvaged_lsns: u64,
    /// Missing records below the checkpoint's low-water mark: committed, so accepted with a warning.
    pub missing_committed: Vec<String>,
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
    /// The disk (or quota) is full: nothing of the append was kept, and the log still works; the
    /// caller retries once there is room.
    #[error("no space left for the WAL: {op} {path}: {source}")]
    NoSpace {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "corrupt WAL record in {segment} at offset {offset}: {reason} (start with --salvage-wal, or wal.salvage = true, to drop it and everything after it in that segment)"
    )]
    Corrupt {
        segment: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Records that may have been acknowledged are gone: segments deleted, the directory lost or
    /// replaced, synced records cut off.
    #[error("the WAL in {dir} lost records that may have been acknowledged: {missing}. Start with --salvage-wal (or wal.salvage = true) to {salvage}")]
    Missing {
        dir: PathBuf,
        missing: String,
        salvage: String,
    },
    /// Another open log (another node process, or another handle in this one) holds the directory.
    #[error("the WAL in {dir} is in use: {lock} is locked by another open of this log (one node process per node name and WAL directory)")]
    InUse { dir: PathBuf, lock: PathBuf },
    /// Recovery would hand out LSNs at the end of their range: a segment whose name, header or
    /// records, or a durable mark, that is not this log's (an LSN counter does not get there in use).
    #[error("the WAL in {dir} would number records from {next_lsn}, past the last LSN it may give out ({max}): a segment there (or the manifest's durable mark, or the checkpoint's low-water mark) is not this log's; move the segment away")]
    LsnExhausted {
        dir: PathBuf,
        next_lsn: Lsn,
        max: Lsn,
    },
    #[error("the WAL manifest {path} is damaged: {reason} (start with --salvage-wal, or wal.salvage = true, to rebuild it from the segments found)")]
    Manifest { path: PathBuf, reason: String },
    #[error("WAL record of {len} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge { len: usize, max: usize },
    #[error("the WAL is closed")]
    Closed,
    #[error("the WAL writer failed earlier and accepts no more appends: {0}")]
    Failed(String),
}

impl WalError {
    /// An I/O error; [`WalError::NoSpace`] if it says the disk or quota is full.
    pub(crate) fn io(path: &Path, op: &'static str, source: std::io::Error) -> WalError {
        let path = path.to_path_buf();
        if is_no_space(&source) {
            WalError::NoSpace { path, op, source }
        } else {
            WalError::Io { path, op, source }
        }
    }

    /// Whether this is [`WalError::NoSpace`]: the append may be retried once there is room.
    pub fn is_no_space(&self) -> bool {
        matches!(self, WalError::NoSpace { .. })
    }
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
    /// The manifest, if the log has one: the writer records each new segment in it, release
    /// each new first segment, the syncer the durable mark.
    pub manifest: Mutex<Option<manifest::Manifest>>,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Msg>>,
    writer: Option<JoinHandle<()>>,
    /// The exclusive lock on the directory ([`LOCK_FILE`]); dropped after the writer is joined.
    _lock: File,
}

/// The file in the WAL directory that an open log holds an exclusive `flock` on: a second process
/// (or a second open) of the same log is refused, so whatever a node's start-up clears of its own
/// (its staging, its segments) no other live process of that node can still be writing.
pub const LOCK_FILE: &str = "LOCK";

/// Takes the exclusive lock on `dir` (created if missing), or says who holds it.
fn lock_dir(dir: &Path) -> Result<File, WalError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err(&path, "open lock file"))?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock only reads the descriptor, which `file` keeps open for the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(WalError::InUse {
                    dir: dir.to_path_buf(),
                    lock: path,
                });
            }
            return Err(io_err(&path, "lock")(err));
        }
    }
    Ok(file)
}

/// The state the handles (and the writer, if one starts) share, from what recovery found.
fn shared_state(opts: &WalOptions, recovered: &mut recovery::Recovered) -> Arc<Shared> {
    Arc::new(Shared {
        dir: opts.dir.clone(),
        segment_size: opts.segment_size,
        segments: Mutex::new(std::mem::take(&mut recovered.segments)),
        active_bytes: AtomicU64::new(recovered.active_len),
        next_lsn: AtomicU64::new(recovered.next_lsn),
        durable_lsn: AtomicU64::new(recovered.next_lsn - 1),
        sync_count: AtomicU64::new(0),
        failed: Mutex::new(None),
        sync_lock: Mutex::new(()),
        synced: Condvar::new(),
        closed: AtomicBool::new(false),
        readers: Mutex::new(HashMap::new()),
        manifest: Mutex::new(recovered.manifest.take()),
    })
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
        let lock = lock_dir(&opts.dir)?;
        let mut recovered = recovery::recover(&opts)?;
        let report = std::mem::take(&mut recovered.report);
        let shared = shared_state(&opts, &mut recovered);
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
            salvaged_lsns = report.salvaged_lsns,
            "WAL opened"
        );
        let inner = Inner {
            shared,
            tx: Some(tx),
            writer: Some(handle),
            _lock: lock,
        };
        Ok((
            Wal {
                inner: Arc::new(inner),
            },
            report,
        ))
    }

    /// Runs recovery on `opts.dir` as [`Wal::open`] does (the same lock, the same decisions, and
    /// the same truncations, renames and new segment on disk) but starts no writer: the handle
    /// replays and reads the recovered log, and refuses appends with [`WalError::Closed`]. For
    /// checking what recovery makes of a directory without a writer and a syncer thread per open
    /// (the fuzz targets do, on every input).
    pub fn recover(opts: WalOptions) -> Result<(Wal, RecoveryReport), WalError> {
        let lock = lock_dir(&opts.dir)?;
        let mut recovered = recovery::recover(&opts)?;
        let report = std::mem::take(&mut recovered.report);
        let shared = shared_state(&opts, &mut recovered);
        shared.closed.store(true, Ordering::Release);
        let inner = Inner {
            shared,
            tx: None,
            writer: None,
            _lock: lock,
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
        let keep_from = segments
            .iter()
            .skip(1)
            .take_while(|s| s.first_lsn <= low_water)
            .count();
        if keep_from == 0 {
            return Ok(0);
        }
        // The manifest names the new first segment before the old ones go: a crash in between leaves
        // segments older than it says, never a missing one.
        if let Some(m) = lock(&shared.manifest).as_mut() {
            let extent = manifest::Extent {
                first_segment: segments[keep_from].first_lsn,
                ..m.extent()
            };
            m.set_extent(extent)?;
        }
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
