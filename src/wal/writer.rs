//! The group-commit writer thread: the only code that writes to the active segment.
//!
//! Loop: block for one request, take every other request already waiting, write as many of
//! them as fit in the active segment with `writev` (rotating first if the segment is full),
//! `fdatasync` once, answer them, repeat. Requests that arrive meanwhile queue in the channel
//! and form the next group. After the first I/O error the writer answers everything it holds
//! with that error, records it in `Shared::failed` and exits.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use bytes::Bytes;
use crc32fast::Hasher;
use tokio::sync::oneshot;

use super::record::{encode_header, RECORD_HEADER_LEN};
use super::segment::{create_segment, segment_path, SEGMENT_HEADER_LEN};
use super::{lock, Lsn, RecordPos, SegMeta, Shared, WalError};

/// Most iovecs one `writev` accepts on Linux (`IOV_MAX`); more fail with `EINVAL`.
const IOV_MAX: usize = 1024;

pub(crate) struct AppendRequest {
    pub kind: u8,
    pub payload: Bytes,
    /// The payload's share of the record CRC, computed by the appender.
    pub crc: Hasher,
    pub reply: oneshot::Sender<Result<(Lsn, RecordPos), WalError>>,
}

pub(crate) enum Msg {
    Append(AppendRequest),
    Close(oneshot::Sender<Result<(), WalError>>),
}

pub(crate) struct Writer {
    shared: Arc<Shared>,
    rx: Receiver<Msg>,
    file: File,
    seg_first: Lsn,
    seg_len: u64,
    next_lsn: Lsn,
    pending: VecDeque<AppendRequest>,
    close: Option<oneshot::Sender<Result<(), WalError>>>,
    headers: Vec<[u8; RECORD_HEADER_LEN]>,
}

/// Marks the WAL failed if the writer thread unwinds (e.g. a `panic` failpoint).
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if std::thread::panicking() {
            lock(&self.0.failed)
                .get_or_insert_with(|| "the WAL writer thread panicked".to_string());
        }
    }
}

fn record_size(req: &AppendRequest) -> u64 {
    RECORD_HEADER_LEN as u64 + req.payload.len() as u64
}

/// Evaluates failpoint `name` (see the module docs of [`super`]): `return` injects an I/O
/// error; `return(<dir>)` only for the WAL in `<dir>`.
fn failpoint(name: &'static str, dir: &Path) -> io::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |arg: Option<String>| match arg {
        Some(only) if Path::new(&only) != dir => Ok(()),
        _ => Err(io::Error::other(format!(
            "injected fault at failpoint {name}"
        ))),
    });
    #[cfg(not(feature = "failpoints"))]
    let _ = (name, dir);
    Ok(())
}

/// `write_all` for iovecs, at most [`IOV_MAX`] per call, resuming after short writes.
fn write_all_vectored(file: &mut File, mut bufs: &mut [IoSlice<'_>]) -> io::Result<()> {
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let upto = bufs.len().min(IOV_MAX);
        match file.write_vectored(&bufs[..upto]) {
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
    ) -> Writer {
        Writer {
            shared,
            rx,
            file,
            seg_first,
            seg_len,
            next_lsn,
            pending: VecDeque::new(),
            close: None,
            headers: Vec::new(),
        }
    }

    pub(crate) fn run(mut self) {
        let _guard = PanicGuard(Arc::clone(&self.shared));
        loop {
            if self.pending.is_empty() {
                if let Some(reply) = self.close.take() {
                    tracing::info!(dir = %self.shared.dir.display(), next_lsn = self.next_lsn, "WAL closed");
                    let _ = reply.send(Ok(()));
                    return;
                }
                match self.rx.recv() {
                    Ok(msg) => self.accept(msg),
                    // Every handle is gone and nothing is pending.
                    Err(_) => return,
                }
            }
            while let Ok(msg) = self.rx.try_recv() {
                self.accept(msg);
            }
            if self.pending.is_empty() {
                continue;
            }
            if let Err(err) = self.commit_group() {
                self.fail(err);
                return;
            }
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

    /// The first I/O error: every request held gets it, every later append gets `Failed`.
    fn fail(&mut self, err: WalError) {
        tracing::error!(dir = %self.shared.dir.display(), error = %err, "WAL writer failed; no more appends until restart");
        *lock(&self.shared.failed) = Some(err.to_string());
        for req in self.pending.drain(..) {
            let _ = req.reply.send(Err(duplicate(&err)));
        }
        if let Some(reply) = self.close.take() {
            let _ = reply.send(Err(duplicate(&err)));
        }
    }

    /// Writes, syncs and answers the longest prefix of `pending` that fits the active segment.
    fn commit_group(&mut self) -> Result<(), WalError> {
        let segment_size = self.shared.segment_size;
        let Some(first) = self.pending.front() else {
            return Ok(());
        };
        if self.seg_len > SEGMENT_HEADER_LEN && self.seg_len + record_size(first) > segment_size {
            self.rotate()?;
        }
        let mut count = 0usize;
        let mut bytes = 0u64;
        for req in &self.pending {
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
        self.next_lsn = first_lsn + count as u64;
        self.shared.next_lsn.store(self.next_lsn, Ordering::Release);

        let dir = self.shared.dir.as_path();
        let path = segment_path(dir, self.seg_first);
        let io = |op: &'static str| {
            let path = path.clone();
            move |source| WalError::Io { path, op, source }
        };
        failpoint("wal::write::before", dir).map_err(io("write"))?;
        write_all_vectored(&mut self.file, &mut slices).map_err(io("write"))?;
        failpoint("wal::sync::before", dir).map_err(io("fdatasync"))?;
        self.file.sync_data().map_err(io("fdatasync"))?;
        self.shared.sync_count.fetch_add(1, Ordering::AcqRel);
        failpoint("wal::sync::after", dir).map_err(io("fdatasync"))?;

        let mut offset = self.seg_len;
        self.seg_len += bytes;
        self.shared
            .active_bytes
            .store(self.seg_len, Ordering::Release);
        self.shared
            .durable_lsn
            .store(self.next_lsn - 1, Ordering::Release);
        tracing::trace!(first_lsn, records = count, bytes, "WAL group committed");
        for (i, req) in self.pending.drain(..count).enumerate() {
            let len = req.payload.len() as u32;
            let pos = RecordPos {
                segment: self.seg_first,
                offset,
                len,
            };
            offset += RECORD_HEADER_LEN as u64 + u64::from(len);
            let _ = req.reply.send(Ok((first_lsn + i as u64, pos)));
        }
        Ok(())
    }

    /// Seals the active segment and starts the next one at `next_lsn`.
    fn rotate(&mut self) -> Result<(), WalError> {
        let dir = self.shared.dir.clone();
        failpoint("wal::rotate::before", &dir).map_err(|source| WalError::Io {
            path: segment_path(&dir, self.next_lsn),
            op: "create segment",
            source,
        })?;
        let file = create_segment(&dir, self.next_lsn)?;
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
        self.file = file;
        self.seg_first = self.next_lsn;
        self.seg_len = SEGMENT_HEADER_LEN;
        Ok(())
    }
}
