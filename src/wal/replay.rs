//! The iterator behind [`super::Wal::replay`]: a snapshot of the segment list and of the
//! durable end, read sequentially with every CRC checked. It stops for good after the first
//! error it yields.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::Bytes;

use super::record::{RecordHeader, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN};
use super::segment::{io_err, read_header, SEGMENT_HEADER_LEN};
use super::{Lsn, Record, RecordPos, WalError};

struct Cursor {
    path: PathBuf,
    segment: Lsn,
    reader: BufReader<File>,
    offset: u64,
    expected: Lsn,
}

pub(crate) struct Replay {
    segments: VecDeque<(Lsn, PathBuf)>,
    from: Lsn,
    /// The last LSN that was durable when the replay was created.
    end: Lsn,
    cursor: Option<Cursor>,
    done: bool,
}

/// Reads until `buf` is full or EOF; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

impl Replay {
    pub(crate) fn new(segments: Vec<(Lsn, PathBuf)>, from: Lsn, end: Lsn) -> Replay {
        Replay {
            segments: segments.into(),
            from,
            end,
            cursor: None,
            done: false,
        }
    }

    fn open(&self, segment: Lsn, path: PathBuf) -> Result<Cursor, WalError> {
        let file = File::open(&path).map_err(io_err(&path, "open segment for replay"))?;
        let corrupt = |reason| WalError::Corrupt {
            segment: path.clone(),
            offset: 0,
            reason,
        };
        let header = read_header(&file, &path)?.map_err(corrupt)?;
        if header.first_lsn != segment {
            return Err(corrupt(format!(
                "segment header says first LSN {} but the file name says {segment}",
                header.first_lsn
            )));
        }
        let mut reader = BufReader::with_capacity(256 * 1024, file);
        reader
            .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
            .map_err(io_err(&path, "seek"))?;
        Ok(Cursor {
            path,
            segment,
            reader,
            offset: SEGMENT_HEADER_LEN,
            expected: segment,
        })
    }

    fn step(&mut self) -> Result<Option<Record>, WalError> {
        loop {
            let cursor = match self.cursor.take() {
                Some(c) => c,
                None => {
                    let Some((segment, path)) = self.segments.pop_front() else {
                        return Ok(None);
                    };
                    if segment > self.end {
                        return Ok(None);
                    }
                    self.open(segment, path)?
                }
            };
            let c = self.cursor.insert(cursor);
            if c.expected > self.end {
                return Ok(None);
            }
            let corrupt = |c: &Cursor, reason: String| WalError::Corrupt {
                segment: c.path.clone(),
                offset: c.offset,
                reason,
            };
            let mut hbuf = [0u8; RECORD_HEADER_LEN];
            let got = read_full(&mut c.reader, &mut hbuf)
                .map_err(io_err(&c.path, "read record header"))?;
            if got == 0 {
                // A sealed segment ends at a record boundary; go on with the next one.
                self.cursor = None;
                continue;
            }
            if got < RECORD_HEADER_LEN {
                return Err(corrupt(
                    c,
                    format!("torn record header: {got} of {RECORD_HEADER_LEN} bytes"),
                ));
            }
            let h = RecordHeader::decode(&hbuf);
            if h.lsn != c.expected {
                return Err(corrupt(
                    c,
                    format!(
                        "record carries LSN {} where LSN {} was expected",
                        h.lsn, c.expected
                    ),
                ));
            }
            if h.len as usize > MAX_RECORD_PAYLOAD {
                return Err(corrupt(
                    c,
                    format!(
                        "record length {} exceeds the maximum {MAX_RECORD_PAYLOAD}",
                        h.len
                    ),
                ));
            }
            if h.lsn < self.from {
                c.reader
                    .seek_relative(i64::from(h.len))
                    .map_err(io_err(&c.path, "seek"))?;
                c.offset += h.record_len();
                c.expected += 1;
                continue;
            }
            let mut payload = vec![0u8; h.len as usize];
            let got = read_full(&mut c.reader, &mut payload)
                .map_err(io_err(&c.path, "read record payload"))?;
            if got < payload.len() {
                return Err(corrupt(
                    c,
                    format!("record payload cut short: {got} of {} bytes", h.len),
                ));
            }
            if !h.matches(&payload) {
                return Err(corrupt(
                    c,
                    format!("CRC mismatch in the record carrying LSN {}", h.lsn),
                ));
            }
            let record = Record {
                lsn: h.lsn,
                kind: h.kind,
                payload: Bytes::from(payload),
                pos: RecordPos {
                    segment: c.segment,
                    offset: c.offset,
                    len: h.len,
                },
            };
            c.offset += h.record_len();
            c.expected += 1;
            return Ok(Some(record));
        }
    }
}

impl Iterator for Replay {
    type Item = Result<Record, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(record)) => Some(Ok(record)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(err) => {
                self.done = true;
                Some(Err(err))
            }
        }
    }
}
