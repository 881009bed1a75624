//! The group-commit pipeline: a *writer* thread that owns the active segment and a *syncer*
//! thread that fdatasyncs it.
//!
//! Writer loop: block for one request, take every other request already waiting, write as
//! many of them as fit in the active segment with `writev` (rotating first if the segment is
//! full), hand the written batch to the syncer, repeat. Syncer loop: block for one written
//! batch, take every other batch already handed over, `fdatasync` once, answer all of them,
//! repeat. So while one fdatasync is in flight, the requests arriving meanwhile are already
//! being copied into the page cache, and the next fdatasync covers all of them: one sync per
//! group, and the disk never waits for the copy or for the answers.
//!
//! Before rotating, the writer waits until everything written to the old segment is synced,
//! so unsynced bytes can only ever be at the end of the last segment (recovery relies on it).
//!
//! After the first I/O error the stage that hit it records it in `Shared::failed` and answers
//! what it holds with it; every later append fails with [`WalError::Failed`]. A failed
//! fdatasync is never retried.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use crc32fast::Hasher;
use tokio::sync::oneshot;

use super::record::{encode_header, RECORD_HEADER_LEN};
use super::recovery::MAX_NEXT_LSN;
use super::segment::{create_segment, failpoint, io_err, segment_path, SEGMENT_HEADER_LEN};
use super::{lock, Lsn, RecordPos, SegMeta, Shared, WalError};

/// Most iovecs one `writev` accepts on Linux (`IOV_MAX`); more fail with `EINVAL`.
const IOV_MAX: usize = 1024;

type AppendReply = oneshot::Sender<Result<(Lsn, RecordPos), WalError>>;

pub(crate) struct AppendRequest {
    pub kind: u8,
    pub payload: Bytes,
    /// The payload's share of the record CRC, computed by the appender.
    pub crc: Hasher,
    pub reply: AppendReply,
}

pub(crate) enum Msg {
    Append(AppendRequest),
    Close(oneshot::Sender<Result<(), WalError>>),
}

/// Records written to a segment, waiting for the fdatasync that makes them durable.
struct Batch {
    file: Arc<File>,
    path: PathBuf,
    last_lsn: Lsn,
    /// The batch's segment and the offset its bytes end at (the durable mark once synced).
    segment: Lsn,
    end: u64,
    done: Vec<(AppendReply, Lsn, RecordPos)>,
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    file: Arc<File>,
    seg_first: Lsn,
    seg_len: u64,
    next_lsn: Lsn,
    pending: VecDeque<AppendRequest>,
    close: Option<oneshot::Sender<Result<(), WalError>>>,
    headers: Vec<[u8; RECORD_HEADER_LEN]>,
    to_syncer: Option<Sender<Batch>>,
    syncer: Option<JoinHandle<()>>,
    /// A refusal for lack of space was logged and nothing was written since.
    no_space_logged: bool,
}

/// Marks the WAL failed if a pipeline thread unwinds (e.g. a `panic` failpoint), and wakes
/// a writer waiting for the syncer.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.failed)
                .get_or_insert_with(|| "a WAL pipeline thread panicked".to_string());
            let _wake = lock(&self.0.sync_lock);
            self.0.synced.notify_all();
        }
    }
}

fn record_size(req: &AppendRequest) -> u64 {
    RECORD_HEADER_LEN as u64 + req.payload.len() as u64
}

fn failed_message(shared: &Shared) -> Option<String> {
    lock(&shared.failed).clone()
}

/// `write_all` for iovecs, at most [`IOV_MAX`] per call, resuming after short writes.
fn write_all_vectored(w: &mut impl Write, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let upto = bufs.len().min(IOV_MAX);
        match w.write_vectored(&bufs[..upto]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A copy of an error for each of the requests it failed.
fn duplicate(err: &WalError) -> WalError {
    match err {
        WalError::Io { path, op, source } => WalError::Io {
            path: path.clone(),
            op,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        WalError::Corrupt {
            segment,
            offset,
            reason,
        } => WalError::Corrupt {
            segment: segment.clone(),
            offset: *offset,
            reason: reason.clone(),
        },
        WalError::RecordTooLarge { len, max } => WalError::RecordTooLarge {
            len: *len,
            max: *max,
        },
        WalError::InUse { dir, lock } => WalError::InUse {
            dir: dir.clone(),
            lock: lock.clone(),
        },
        WalError::LsnExhausted { dir, next_lsn, max } => WalError::LsnExhausted {
            dir: dir.clone(),
            next_lsn: *next_lsn,
            max: *max,
        },
        WalError::NoSpace { path, op, source } => WalError::NoSpace {
            path: path.clone(),
            op,
            source: io::Error::new(source.kind(), source.to_string()),
        },
        WalError::Missing {
            dir,
            missing,
            salvage,
        } => WalError::Missing {
            dir: dir.clone(),
            missing: missing.clone(),
            salvage: salvage.clone(),
        },
        WalError::Manifest { path, reason } => WalError::Manifest {
            path: path.clone(),
            reason: reason.clone(),
        },
        WalError::Closed => WalError::Closed,
        WalError::Failed(msg) => WalError::Failed(msg.clone()),
    }
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        rx: Receiver<Msg>,
        file: File,
        seg_first: Lsn,
        seg_len: u64,
        next_lsn: Lsn,
    ) -> Result<Writer, WalError> {
        let (to_syncer, batches) = mpsc::channel();
        let syncer_shared = Arc::clone(&shared);
        let syncer = std::thread::Builder::new()
            .name("wal-syncer".to_string())
            .spawn(move || run_syncer(syncer_shared, batches))
            .map_err(io_err(&shared.dir, "spawn syncer thread"))?;
        Ok(Writer {
            shared,
            rx,
            file: Arc::new(file),
            seg_first,
            seg_len,
            next_lsn,
            pending: VecDeque::new(),
            close: None,
            headers: Vec::new(),
            to_syncer: Some(to_syncer),
            syncer: Some(syncer),
            no_space_logged: false,
        })
    }

    pub(crate) fn run(mut self) {
        let _guard = PanicGuard(Arc::clone(&self.shared));
        if let Err(err) = self.serve() {
            self.fail(err);
        }
        // The syncer finishes what was written, then stops.
        drop(self.to_syncer.take());
        if let Some(syncer) = self.syncer.take() {
            if syncer.join().is_err() {
                tracing::error!(dir = %self.shared.dir.display(), "WAL syncer thread panicked");
            }
        }
        if let Some(reply) = self.close.take() {
            let result = match failed_message(&self.shared) {
                Some(msg) => Err(WalError::Failed(msg)),
                None => Ok(()),
            };
            tracing::info!(dir = %self.shared.dir.display(), next_lsn = self.next_lsn, "WAL closed");
            let _ = reply.send(result);
        }
    }

    fn serve(&mut self) -> Result<(), WalError> {
        loop {
            if self.pending.is_empty() {
                if self.close.is_some() {
                    return Ok(());
                }
                match self.rx.recv() {
                    Ok(msg) => self.accept(msg),
                    // Every handle is gone and nothing is pending.
                    Err(_) => return Ok(()),
                }
            }
            while let Ok(msg) = self.rx.try_recv() {
                self.accept(msg);
            }
            if self.pending.is_empty() {
                continue;
            }
            if let Some(msg) = failed_message(&self.shared) {
                return Err(WalError::Failed(msg));
            }
            match self.write_group() {
                Ok(()) => {}
                // Nothing of it was kept and the log is intact: the appenders retry when there is room.
                Err(err) if err.is_no_space() => self.refuse_pending(&err),
                Err(err) => return Err(err),
            }
        }
    }

    /// Answers every request held with `err` (no space), leaving the log usable.
    fn refuse_pending(&mut self, err: &WalError) {
        if !std::mem::replace(&mut self.no_space_logged, true) {
            tracing::warn!(dir = %self.shared.dir.display(), error = %err, appends = self.pending.len(),
                           "WAL append refused for lack of disk space; nothing of it was kept");
        }
        for req in self.pending.drain(..) {
            let _ = req.reply.send(Err(duplicate(err)));
        }
    }

    fn accept(&mut self, msg: Msg) {
        match msg {
            Msg::Append(req) if self.close.is_some() => {
                let _ = req.reply.send(Err(WalError::Closed));
            }
            Msg::Append(req) => self.pending.push_back(req),
            Msg::Close(reply) if self.close.is_some() => {
                let _ = reply.send(Ok(()));
            }
            Msg::Close(reply) => self.close = Some(reply),
        }
    }

    /// Every request the writer holds gets the error; every later append gets `Failed`.
    fn fail(&mut self, err: WalError) {
        let first = {
            let mut failed = lock(&self.shared.failed);
            let first = failed.is_none();
            failed.get_or_insert_with(|| err.to_string());
            first
        };
        if first {
            tracing::error!(dir = %self.shared.dir.display(), error = %err, "WAL writer failed; no more appends until restart");
        }
        for req in self.pending.drain(..) {
            let _ = req.reply.send(Err(duplicate(&err)));
        }
    }

    /// Writes the longest prefix of `pending` that fits the active segment and hands it to
    /// the syncer.
    fn write_group(&mut self) -> Result<(), WalError> {
        let segment_size = self.shared.segment_size;
        if self.pending.is_empty() {
            return Ok(());
        }
        // Records stop below MAX_NEXT_LSN, the highest next LSN recovery goes on from, so that a
        // log that took an append always opens again.
        if self.next_lsn >= MAX_NEXT_LSN {
            let err = WalError::LsnExhausted {
                dir: self.shared.dir.clone(),
                next_lsn: self.next_lsn,
                max: MAX_NEXT_LSN - 1,
            };
            for req in self.pending.drain(..) {
                let _ = req.reply.send(Err(duplicate(&err)));
            }
            return Ok(());
        }
        let first = record_size(&self.pending[0]);
        if self.seg_len > SEGMENT_HEADER_LEN && self.seg_len + first > segment_size {
            self.rotate()?;
        }
        let room = usize::try_from(MAX_NEXT_LSN - self.next_lsn).unwrap_or(usize::MAX);
        let mut count = 0usize;
        let mut bytes = 0u64;
        for req in self.pending.iter().take(room) {
            let size = record_size(req);
            if count > 0 && self.seg_len + bytes + size > segment_size {
                break;
            }
            count += 1;
            bytes += size;
        }

        let first_lsn = self.next_lsn;
        self.headers.clear();
        for (i, req) in self.pending.iter().take(count).enumerate() {
            let len = req.payload.len() as u32; // bounded by MAX_RECORD_PAYLOAD in append
            self.headers
                .push(encode_header(len, first_lsn + i as u64, req.kind, &req.crc));
        }
        let mut slices = Vec::with_capacity(2 * count);
        for (header, req) in self.headers.iter().zip(self.pending.iter()) {
            slices.push(IoSlice::new(header));
            if !req.payload.is_empty() {
                slices.push(IoSlice::new(&req.payload));
            }
        }
        let path = segment_path(&self.shared.dir, self.seg_first);
        let write_err = |source| WalError::io(&path, "write", source);
        failpoint("wal::write::before", &self.shared.dir).map_err(write_err)?;
        if let Err(e) = write_all_vectored(&mut &*self.file, &mut slices) {
            let err = write_err(e);
            if err.is_no_space() {
                // Cut off what part of the group was written; it was never acknowledged.
                let undo = self.file.set_len(self.seg_len).and_then(|()| {
                    (&*self.file)
                        .seek(SeekFrom::Start(self.seg_len))
                        .map(|_| ())
                });
                undo.map_err(|source| WalError::Io {
                    path: path.clone(),
                    op: "truncate a write that ran out of space",
                    source,
                })?;
            }
            return Err(err);
        }
        // Published only now: an append's LSN is never below a next LSN anyone read.
        self.no_space_logged = false;
        self.next_lsn = first_lsn + count as u64;
        self.shared.next_lsn.store(self.next_lsn, Ordering::Release);

        let mut offset = self.seg_len;
        self.seg_len += bytes;
        self.shared
            .active_bytes
            .store(self.seg_len, Ordering::Release);
        let done = self
            .pending
            .drain(..count)
            .enumerate()
            .map(|(i, req)| {
                let len = req.payload.len() as u32;
                let pos = RecordPos {
                    segment: self.seg_first,
                    offset,
                    len,
                };
                offset += RECORD_HEADER_LEN as u64 + u64::from(len);
                (req.reply, first_lsn + i as u64, pos)
            })
            .collect();
        tracing::trace!(first_lsn, records = count, bytes, "WAL batch written");
        let batch = Batch {
            file: Arc::clone(&self.file),
            path,
            last_lsn: self.next_lsn - 1,
            segment: self.seg_first,
            end: self.seg_len,
            done,
        };
        let Some(to_syncer) = self.to_syncer.as_ref() else {
            return Err(WalError::Failed("the WAL syncer is gone".to_string()));
        };
        if let Err(mpsc::SendError(batch)) = to_syncer.send(batch) {
            let msg = failed_message(&self.shared)
                .unwrap_or_else(|| "the WAL syncer thread stopped".to_string());
            for (reply, _, _) in batch.done {
                let _ = reply.send(Err(WalError::Failed(msg.clone())));
            }
            return Err(WalError::Failed(msg));
        }
        Ok(())
    }

    /// Blocks until every record written so far is synced (or the syncer failed).
    fn wait_synced(&self) -> Result<(), WalError> {
        let upto = self.next_lsn - 1;
        let mut guard = lock(&self.shared.sync_lock);
        while self.shared.durable_lsn.load(Ordering::Acquire) < upto {
            if let Some(msg) = failed_message(&self.shared) {
                return Err(WalError::Failed(msg));
            }
            guard = self
                .shared
                .synced
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
        Ok(())
    }

    /// Seals the active segment (once all of it is synced) and starts the next one at `next_lsn`.
    fn rotate(&mut self) -> Result<(), WalError> {
        self.wait_synced()?;
        let dir = self.shared.dir.clone();
        failpoint("wal::rotate::before", &dir).map_err(|source| WalError::Io {
            path: segment_path(&dir, self.next_lsn),
            op: "create segment",
            source,
        })?;
        let file = create_segment(&dir, self.next_lsn)?;
        // The manifest names the new segment only once it exists: a crash in between leaves a
        // segment newer than the manifest says, never a missing one.
        if let Some(m) = lock(&self.shared.manifest).as_mut() {
            let extent = super::manifest::Extent {
                last_segment: self.next_lsn,
                ..m.extent()
            };
            m.set_extent(extent)?;
        }
        {
            let mut segments = lock(&self.shared.segments);
            if let Some(active) = segments.last_mut() {
                active.size = self.seg_len;
            }
            segments.push(SegMeta {
                first_lsn: self.next_lsn,
                path: segment_path(&dir, self.next_lsn),
                size: SEGMENT_HEADER_LEN,
            });
            self.shared
                .active_bytes
                .store(SEGMENT_HEADER_LEN, Ordering::Release);
        }
        tracing::debug!(
            sealed = self.seg_first,
            sealed_bytes = self.seg_len,
            first_lsn = self.next_lsn,
            "rotated WAL segment"
        );
        self.file = Arc::new(file);
        self.seg_first = self.next_lsn;
        self.seg_len = SEGMENT_HEADER_LEN;
        Ok(())
    }
}

/// fdatasyncs one file, with the sync failpoints around it.
fn sync_file(shared: &Shared, file: &File, path: &Path) -> Result<(), WalError> {
    let sync_err = |source| WalError::Io {
        path: path.to_path_buf(),
        op: "fdatasync",
        source,
    };
    failpoint("wal::sync::before", &shared.dir).map_err(sync_err)?;
    file.sync_data().map_err(sync_err)?;
    shared.sync_count.fetch_add(1, Ordering::AcqRel);
    failpoint("wal::sync::after", &shared.dir).map_err(sync_err)?;
    Ok(())
}

/// Writes the durable mark after a group's fdatasync, before its appends are answered (not synced
/// itself: a stale mark only makes recovery take a damaged last record for a torn tail, as it did
/// before there was a mark). A failure is logged once and costs only that check.
fn record_mark(shared: &Shared, newest: &Batch, failed: &mut bool) {
    let guard = lock(&shared.manifest);
    let Some(m) = guard.as_ref() else { return };
    let mark = super::manifest::Mark {
        wal_id: m.extent().wal_id,
        lsn: newest.last_lsn,
        segment: newest.segment,
        offset: newest.end,
    };
    match m.set_mark(mark) {
        Ok(()) => *failed = false,
        Err(e) if !*failed => {
            *failed = true;
            tracing::warn!(manifest = %m.path().display(), error = %e,
                           "could not record the WAL's durable mark; recovery will treat damage to the last records as a torn tail");
        }
        Err(_) => {}
    }
}

fn run_syncer(shared: Arc<Shared>, batches: Receiver<Batch>) {
    let _guard = PanicGuard(Arc::clone(&shared));
    // After its own failure the syncer never syncs again (fsyncgate), it only answers.
    let mut own_failure: Option<String> = None;
    let mut mark_failed = false;
    while let Ok(first) = batches.recv() {
        let mut group = vec![first];
        while let Ok(more) = batches.try_recv() {
            group.push(more);
        }
        if let Some(msg) = &own_failure {
            for (reply, _, _) in group.into_iter().flat_map(|b| b.done) {
                let _ = reply.send(Err(WalError::Failed(msg.clone())));
            }
            continue;
        }
        let mut result = Ok(());
        for (i, batch) in group.iter().enumerate() {
            let seen = group[..i].iter().any(|b| Arc::ptr_eq(&b.file, &batch.file));
            if !seen {
                result = sync_file(&shared, &batch.file, &batch.path);
                if result.is_err() {
                    break;
                }
            }
        }
        match result {
            Ok(()) => {
                let last = group.iter().map(|b| b.last_lsn).max().unwrap_or(0);
                if let Some(newest) = group.iter().max_by_key(|b| b.last_lsn) {
                    record_mark(&shared, newest, &mut mark_failed);
                }
                shared.durable_lsn.fetch_max(last, Ordering::AcqRel);
                {
                    let _wake = lock(&shared.sync_lock);
                    shared.synced.notify_all();
                }
                tracing::trace!(
                    durable_lsn = last,
                    batches = group.len(),
                    "WAL group synced"
                );
                for (reply, lsn, pos) in group.into_iter().flat_map(|b| b.done) {
                    let _ = reply.send(Ok((lsn, pos)));
                }
            }
            Err(err) => {
                tracing::error!(dir = %shared.dir.display(), error = %err, "WAL fdatasync failed; no more appends until restart");
                let msg = err.to_string();
                lock(&shared.failed).get_or_insert_with(|| msg.clone());
                own_failure = Some(msg);
                {
                    let _wake = lock(&shared.sync_lock);
                    shared.synced.notify_all();
                }
                for (reply, _, _) in group.into_iter().flat_map(|b| b.done) {
                    let _ = reply.send(Err(duplicate(&err)));
                }
            }
        }
    }
}
