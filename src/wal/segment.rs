//! Segment files: naming, the 32-byte header, creation, and the record scans recovery needs.
//!
//! Header layout (little-endian):
//!
//! ```text
//! 0..8    magic  b"HIWALSEG"
//! 8..12   format version (u32, currently 1)
//! 12..16  flags (u32); bit 0 = GAP_AFTER: salvage dropped records at the end of this
//!         segment, so the next segment may start at a higher LSN than this one ends at
//! 16..24  first LSN (u64); equals the number in the file name
//! 24..28  reserved, zero
//! 28..32  CRC32 of bytes 0..28
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{RecordHeader, MAX_RECORD_PAYLOAD, RECORD_HEADER_LEN};
use super::{Lsn, WalError};

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"HIWALSEG";
pub(crate) const FORMAT_VERSION: u32 = 1;
pub(crate) const SEGMENT_HEADER_LEN: u64 = 32;
/// Header flag: the records at the end of this segment were dropped by salvage.
pub(crate) const FLAG_GAP_AFTER: u32 = 1;

const SEGMENT_SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".wal.tmp";

/// `<dir>/<first lsn as 20 digits>.wal`
pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}{SEGMENT_SUFFIX}"))
}

/// The first LSN a segment file name stands for, if the name is one of ours.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn is_temporary(name: &str) -> bool {
    name.strip_suffix(TMP_SUFFIX)
        .and_then(|stem| parse_segment_name(&format!("{stem}{SEGMENT_SUFFIX}")))
        .is_some()
}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::io(path, op, source)
}

/// Evaluates failpoint `name` (see the module docs of [`super`]): `return` injects an I/O
/// error; `return(<dir>)` only for the WAL in `<dir>`.
pub(crate) fn failpoint(name: &'static str, dir: &Path) -> io::Result<()> {
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_lsn: Lsn,
    pub flags: u32,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut buf = [0u8; SEGMENT_HEADER_LEN as usize];
        buf[0..8].copy_from_slice(&SEGMENT_MAGIC);
        buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        buf[12..16].copy_from_slice(&self.flags.to_le_bytes());
        buf[16..24].copy_from_slice(&self.first_lsn.to_le_bytes());
        let crc = crc32fast::hash(&buf[0..28]);
        buf[28..32].copy_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes and verifies a header; the error is a human-readable reason.
    pub(crate) fn decode(buf: &[u8]) -> Result<SegmentHeader, String> {
        if buf.len() < SEGMENT_HEADER_LEN as usize {
            return Err(format!(
                "segment header is {} of {SEGMENT_HEADER_LEN} bytes",
                buf.len()
            ));
        }
        if buf[0..8] != SEGMENT_MAGIC {
            return Err("bad segment magic".to_string());
        }
        let word = |at: usize| u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let stored_crc = word(28);
        let crc = crc32fast::hash(&buf[0..28]);
        if stored_crc != crc {
            return Err(format!(
                "segment header CRC mismatch (stored {stored_crc:08x}, computed {crc:08x})"
            ));
        }
        let version = word(8);
        if version != FORMAT_VERSION {
            return Err(format!(
                "unsupported segment format version {version} (this build reads {FORMAT_VERSION})"
            ));
        }
        let mut lsn = [0u8; 8];
        lsn.copy_from_slice(&buf[16..24]);
        Ok(SegmentHeader {
            first_lsn: u64::from_le_bytes(lsn),
            flags: word(12),
        })
    }
}

/// Reads the header of an open segment (from offset 0, without moving the file cursor).
pub(crate) fn read_header(
    file: &File,
    path: &Path,
) -> Result<Result<SegmentHeader, String>, WalError> {
    let mut buf = [0u8; SEGMENT_HEADER_LEN as usize];
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(path, "read segment header")(e)),
        }
    }
    Ok(SegmentHeader::decode(&buf[..got]))
}

/// Rewrites a segment's header in place (used only by salvage to set [`FLAG_GAP_AFTER`]).
pub(crate) fn rewrite_header(
    file: &File,
    path: &Path,
    header: SegmentHeader,
) -> Result<(), WalError> {
    file.write_all_at(&header.encode(), 0)
        .map_err(io_err(path, "rewrite segment header"))?;
    file.sync_data().map_err(io_err(path, "fdatasync"))
}

/// fsyncs a directory so that file creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    let d = File::open(dir).map_err(io_err(dir, "open directory"))?;
    d.sync_all().map_err(io_err(dir, "fsync directory"))
}

/// Creates segment `first_lsn`: header into `<name>.wal.tmp`, fdatasync, rename into place,
/// fsync the directory. A crash leaves either no segment or a complete header (a leftover
/// temporary is deleted by recovery; one that fails, for lack of space say, is deleted at once).
/// Returns the file opened for writing, positioned after the header.
pub(crate) fn create_segment(dir: &Path, first_lsn: Lsn) -> Result<File, WalError> {
    let tmp = dir.join(format!("{first_lsn:020}{TMP_SUFFIX}"));
    let created = try_create_segment(dir, first_lsn, &tmp);
    if created.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    created
}

fn try_create_segment(dir: &Path, first_lsn: Lsn, tmp: &Path) -> Result<File, WalError> {
    let path = segment_path(dir, first_lsn);
    let tmp = tmp.to_path_buf();
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp, "create segment"))?;
    file.write_all(
        &SegmentHeader {
            first_lsn,
            flags: 0,
        }
        .encode(),
    )
    .map_err(io_err(&tmp, "write segment header"))?;
    file.sync_data().map_err(io_err(&tmp, "fdatasync"))?;
    fs::rename(&tmp, &path).map_err(io_err(&path, "rename segment into place"))?;
    sync_dir(dir)?;
    Ok(file)
}

/// A record recovery could not accept.
#[derive(Clone, Debug)]
pub(crate) struct BadRecord {
    pub offset: u64,
    pub reason: String,
}

/// What a sequential scan of one segment's records found.
#[derive(Clone, Debug)]
pub(crate) struct Scan {
    /// Valid records, all consecutive from the segment's first LSN.
    pub records: u64,
    /// The LSN after the last valid record.
    pub next_lsn: Lsn,
    /// The first record that is not valid, if the scan stopped before the end of the file.
    pub bad: Option<BadRecord>,
}

/// Reads records from the end of the header while they are whole, CRC-clean and carry the
/// next LSN. Stops at the first one that is not.
pub(crate) fn scan_records(
    file: &File,
    path: &Path,
    file_len: u64,
    first_lsn: Lsn,
) -> Result<Scan, WalError> {
    // A buffer no larger than the file: recovery scans every segment, most of them small.
    let mut reader = BufReader::with_capacity(file_len.clamp(4 << 10, 1 << 20) as usize, file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN))
        .map_err(io_err(path, "seek"))?;
    let mut offset = SEGMENT_HEADER_LEN;
    let mut expected = first_lsn;
    let mut payload = Vec::new();
    let bad = loop {
        let remaining = file_len - offset;
        if remaining == 0 {
            break None;
        }
        if remaining < RECORD_HEADER_LEN as u64 {
            break Some(format!(
                "torn record header: {remaining} of {RECORD_HEADER_LEN} bytes"
            ));
        }
        let mut hbuf = [0u8; RECORD_HEADER_LEN];
        reader
            .read_exact(&mut hbuf)
            .map_err(io_err(path, "read record header"))?;
        let h = RecordHeader::decode(&hbuf);
        if h.len as usize > MAX_RECORD_PAYLOAD {
            break Some(format!(
                "record length {} exceeds the maximum {MAX_RECORD_PAYLOAD}",
                h.len
            ));
        }
        if h.record_len() > remaining {
            break Some(format!(
                "record of {} bytes runs past the end of the file ({remaining} bytes left)",
                h.record_len()
            ));
        }
        payload.resize(h.len as usize, 0);
        reader
            .read_exact(&mut payload)
            .map_err(io_err(path, "read record payload"))?;
        if !h.matches(&payload) {
            break Some(format!(
                "CRC mismatch in the record expected to carry LSN {expected}"
            ));
        }
        if h.lsn != expected {
            break Some(format!(
                "record carries LSN {} where LSN {expected} was expected",
                h.lsn
            ));
        }
        offset += h.record_len();
        expected += 1;
    };
    Ok(Scan {
        records: expected - first_lsn,
        next_lsn: expected,
        bad: bad.map(|reason| BadRecord { offset, reason }),
    })
}

/// Valid records found after a bad one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FoundAfter {
    pub offset: u64,
    pub lsn: Lsn,
    pub max_lsn: Lsn,
}

/// Searches every byte offset from `start` on for a whole, CRC-clean record whose LSN is
/// one that could follow `min_lsn - 1` (at least `min_lsn`, at most as many past it as
/// records could fit). Finding one means the bad record is damage in the middle of the log,
/// not a torn tail. Returns the first such record and the highest LSN among all found.
pub(crate) fn find_valid_after(
    file: &File,
    path: &Path,
    start: u64,
    file_len: u64,
    min_lsn: Lsn,
) -> Result<Option<FoundAfter>, WalError> {
    if file_len <= start {
        return Ok(None);
    }
    let mut buf = vec![0u8; (file_len - start) as usize];
    file.read_exact_at(&mut buf, start)
        .map_err(io_err(path, "read segment tail"))?;
    let max_plausible = min_lsn.saturating_add(buf.len() as u64 / RECORD_HEADER_LEN as u64);
    let mut found: Option<FoundAfter> = None;
    let mut p = 0usize;
    while p + RECORD_HEADER_LEN <= buf.len() {
        let mut hbuf = [0u8; RECORD_HEADER_LEN];
        hbuf.copy_from_slice(&buf[p..p + RECORD_HEADER_LEN]);
        let h = RecordHeader::decode(&hbuf);
        let end = p as u64 + h.record_len();
        let plausible = h.lsn >= min_lsn
            && h.lsn <= max_plausible
            && h.len as usize <= MAX_RECORD_PAYLOAD
            && end <= buf.len() as u64;
        if plausible && h.matches(&buf[p + RECORD_HEADER_LEN..end as usize]) {
            let f = found.get_or_insert(FoundAfter {
                offset: start + p as u64,
                lsn: h.lsn,
                max_lsn: h.lsn,
            });
            f.max_lsn = f.max_lsn.max(h.lsn);
            p = end as usize;
        } else {
            p += 1;
        }
    }
    Ok(found)
}

/// Opens a segment for reading and writing.
pub(crate) fn open_rw(path: &Path) -> Result<File, WalError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io_err(path, "open segment"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_foreign_names_are_ignored() {
        let p = segment_path(Path::new("/x"), 123);
        let name = p.file_name().and_then(|n| n.to_str()).expect("utf-8 name");
        assert_eq!(name, "00000000000000000123.wal");
        assert_eq!(parse_segment_name(name), Some(123));
        assert_eq!(parse_segment_name("123.wal"), None);
        assert_eq!(parse_segment_name("0000000000000000012x.wal"), None);
        assert_eq!(parse_segment_name("00000000000000000123.wal.tmp"), None);
        assert!(is_temporary("00000000000000000123.wal.tmp"));
        assert!(!is_temporary("notes.tmp"));
    }

    #[test]
    fn a_segment_header_round_trips_and_any_damage_is_named() {
        let h = SegmentHeader {
            first_lsn: 77,
            flags: FLAG_GAP_AFTER,
        };
        let buf = h.encode();
        assert_eq!(SegmentHeader::decode(&buf), Ok(h));
        let mut bad = buf;
        bad[17] ^= 1;
        assert!(SegmentHeader::decode(&bad).unwrap_err().contains("CRC"));
        assert!(SegmentHeader::decode(&buf[..10])
            .unwrap_err()
            .contains("10 of 32"));
        let mut magic = buf;
        magic[0] = b'X';
        assert!(SegmentHeader::decode(&magic).unwrap_err().contains("magic"));
    }
}
