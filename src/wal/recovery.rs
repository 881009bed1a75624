//! Recovery: turns whatever a crash (or the storage) left in the directory into a log the
//! writer can append to, or refuses with the segment and offset of the damage. The rules
//! are in the module documentation of [`super`], section "Recovery".

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::segment::{
    create_segment, find_valid_after, io_err, is_temporary, open_rw, parse_segment_name,
    read_header, rewrite_header, scan_records, segment_path, sync_dir, SegmentHeader,
    FLAG_GAP_AFTER, SEGMENT_HEADER_LEN,
};
use super::{Lsn, RecoveryReport, SegMeta, WalError, WalOptions};

/// The recovered log, ready for the writer.
pub(crate) struct Recovered {
    pub segments: Vec<SegMeta>,
    pub active_file: File,
    pub active_first_lsn: Lsn,
    pub active_len: u64,
    pub next_lsn: Lsn,
    pub report: RecoveryReport,
}

/// A segment recovery keeps.
struct Kept {
    meta: SegMeta,
    header: SegmentHeader,
}

struct Recovery<'a> {
    dir: &'a Path,
    salvage: bool,
    kept: Vec<Kept>,
    /// The LSN after the last kept record.
    expected: Option<Lsn>,
    /// The next LSN may not be below this: salvage saw records up to `floor - 1` in dropped bytes.
    floor: Lsn,
    report: RecoveryReport,
}

pub(crate) fn recover(opts: &WalOptions) -> Result<Recovered, WalError> {
    let dir = opts.dir.as_path();
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let names = list_segments(dir)?;
    let mut r = Recovery {
        dir,
        salvage: opts.salvage,
        kept: Vec::new(),
        expected: None,
        floor: 1,
        report: RecoveryReport::default(),
    };
    let count = names.len();
    let mut last_file = None;
    for (i, (name_lsn, path)) in names.into_iter().enumerate() {
        if let Some(file) = r.segment(name_lsn, path, i + 1 == count)? {
            last_file = Some(file);
        }
    }
    r.finish(last_file)
}

/// Segment files in LSN order; leftover temporaries are deleted on the way.
fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let mut names = Vec::new();
    let mut removed_tmp = false;
    for entry in fs::read_dir(dir).map_err(io_err(dir, "list directory"))? {
        let entry = entry.map_err(io_err(dir, "list directory"))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(lsn) = parse_segment_name(name) {
            names.push((lsn, entry.path()));
        } else if is_temporary(name) {
            let path = entry.path();
            tracing::warn!(file = %path.display(), "deleting a segment left half-created by a crash");
            fs::remove_file(&path).map_err(io_err(&path, "delete temporary segment"))?;
            removed_tmp = true;
        }
    }
    if removed_tmp {
        sync_dir(dir)?;
    }
    names.sort();
    Ok(names)
}

impl Recovery<'_> {
    fn corrupt(path: &Path, offset: u64, reason: String) -> WalError {
        WalError::Corrupt {
            segment: path.to_path_buf(),
            offset,
            reason,
        }
    }

    fn salvaged(&mut self, what: String) {
        tracing::error!(dir = %self.dir.display(), dropped = %what, "WAL salvage dropped data");
        self.report.salvaged.push(what);
    }

    /// Recovers one segment; returns its file if it is kept.
    fn segment(
        &mut self,
        name_lsn: Lsn,
        path: PathBuf,
        is_last: bool,
    ) -> Result<Option<File>, WalError> {
        let file = open_rw(&path)?;
        let mut len = file
            .metadata()
            .map_err(io_err(&path, "stat segment"))?
            .len();
        let mut header = match read_header(&file, &path)? {
            Ok(h) if h.first_lsn == name_lsn => h,
            Ok(h) => {
                let reason = format!(
                    "segment header says first LSN {} but the file name says {name_lsn}",
                    h.first_lsn
                );
                return self.set_aside(file, &path, len, name_lsn, reason);
            }
            Err(reason) => return self.set_aside(file, &path, len, name_lsn, reason),
        };
        if let Some(expected) = self.expected {
            if header.first_lsn < expected {
                let reason = format!(
                    "segment starts at LSN {} but the previous segment already holds LSNs up to {}",
                    header.first_lsn,
                    expected - 1
                );
                return self.set_aside(file, &path, len, name_lsn, reason);
            }
            if header.first_lsn > expected {
                self.gap(expected, header.first_lsn, &path)?;
            }
        }

        let scan = scan_records(&file, &path, len, header.first_lsn)?;
        if let Some(bad) = scan.bad {
            let found = if is_last || self.salvage {
                find_valid_after(&file, &path, bad.offset + 1, len, scan.next_lsn)?
            } else {
                None
            };
            let dropped = len - bad.offset;
            if is_last && found.is_none() {
                file.set_len(bad.offset)
                    .map_err(io_err(&path, "truncate torn tail"))?;
                file.sync_all().map_err(io_err(&path, "fsync"))?;
                tracing::warn!(
                    segment = %path.display(),
                    offset = bad.offset,
                    bytes = dropped,
                    lsn = scan.next_lsn,
                    reason = %bad.reason,
                    "truncated the torn tail of the last WAL segment"
                );
                self.report.truncated_bytes += dropped;
                len = bad.offset;
            } else if !self.salvage {
                let mut reason = bad.reason;
                if let Some(f) = found {
                    reason.push_str(&format!(
                        "; a valid record with LSN {} follows at offset {}, so this is not a torn tail",
                        f.lsn, f.offset
                    ));
                }
                return Err(Self::corrupt(&path, bad.offset, reason));
            } else {
                file.set_len(bad.offset)
                    .map_err(io_err(&path, "truncate salvaged segment"))?;
                header.flags |= FLAG_GAP_AFTER;
                rewrite_header(&file, &path, header)?;
                file.sync_all().map_err(io_err(&path, "fsync"))?;
                let lsns = match found {
                    Some(f) => {
                        self.floor = self.floor.max(f.max_lsn + 1);
                        format!("LSNs {} to at least {}", scan.next_lsn, f.max_lsn)
                    }
                    None => format!("LSNs from {}", scan.next_lsn),
                };
                self.salvaged(format!(
                    "{}: dropped {dropped} bytes from offset {} ({lsns}): {}",
                    path.display(),
                    bad.offset,
                    bad.reason
                ));
                len = bad.offset;
            }
        }
        self.report.records += scan.records;
        self.expected = Some(scan.next_lsn);
        self.kept.push(Kept {
            meta: SegMeta {
                first_lsn: header.first_lsn,
                path,
                size: len,
            },
            header,
        });
        Ok(Some(file))
    }

    /// A segment that cannot be part of the log: refuse, or (salvage) rename it out of the way.
    fn set_aside(
        &mut self,
        file: File,
        path: &Path,
        len: u64,
        name_lsn: Lsn,
        reason: String,
    ) -> Result<Option<File>, WalError> {
        if !self.salvage {
            return Err(Self::corrupt(path, 0, reason));
        }
        // Whatever LSNs it held may have been acknowledged: never hand them out again.
        let found = find_valid_after(&file, path, SEGMENT_HEADER_LEN, len, name_lsn)?;
        self.floor = self
            .floor
            .max(name_lsn)
            .max(found.map_or(0, |f| f.max_lsn + 1));
        drop(file);
        let mut aside = path.as_os_str().to_owned();
        aside.push(".corrupt");
        let aside = PathBuf::from(aside);
        fs::rename(path, &aside).map_err(io_err(path, "set aside corrupt segment"))?;
        sync_dir(self.dir)?;
        let lsns = match found {
            Some(f) => format!("LSNs {name_lsn} to at least {}", f.max_lsn),
            None => format!("no readable records, name says LSN {name_lsn}"),
        };
        self.salvaged(format!(
            "{}: set aside as {} ({len} bytes, {lsns}): {reason}",
            path.display(),
            aside.display()
        ));
        Ok(None)
    }

    /// LSNs `expected..first` are missing before `path`: accept it if salvage made the gap.
    fn gap(&mut self, expected: Lsn, first: Lsn, path: &Path) -> Result<(), WalError> {
        let Some(prev) = self.kept.last_mut() else {
            return Ok(());
        };
        if prev.header.flags & FLAG_GAP_AFTER != 0 {
            tracing::info!(
                segment = %path.display(),
                missing_from = expected,
                missing_to = first - 1,
                "LSN gap left by an earlier salvage"
            );
            return Ok(());
        }
        if !self.salvage {
            return Err(Self::corrupt(
                path,
                0,
                format!(
                    "LSN gap: the previous segment ends at LSN {} but this one starts at {first}; LSNs {expected} to {} are missing",
                    expected - 1,
                    first - 1
                ),
            ));
        }
        prev.header.flags |= FLAG_GAP_AFTER;
        let (prev_path, header) = (prev.meta.path.clone(), prev.header);
        rewrite_header(&open_rw(&prev_path)?, &prev_path, header)?;
        self.salvaged(format!(
            "{}: accepted an LSN gap before it, LSNs {expected} to {} are missing",
            path.display(),
            first - 1
        ));
        Ok(())
    }

    fn finish(mut self, last_file: Option<File>) -> Result<Recovered, WalError> {
        let next_lsn = self.expected.unwrap_or(1).max(self.floor);
        let reuse_last = match (self.expected, last_file) {
            (Some(expected), Some(file)) if expected == next_lsn => Some(file),
            (Some(expected), _) => {
                // Salvage dropped records above `expected`: continue after them in a new segment.
                self.gap(expected, next_lsn, &segment_path(self.dir, next_lsn))?;
                None
            }
            _ => None,
        };
        let (active_file, active_first_lsn, active_len) = match reuse_last {
            Some(mut file) => {
                let first = self.kept.last().map_or(next_lsn, |k| k.meta.first_lsn);
                let end = file
                    .seek(SeekFrom::End(0))
                    .map_err(io_err(&segment_path(self.dir, first), "seek"))?;
                (file, first, end)
            }
            None => {
                let file = create_segment(self.dir, next_lsn)?;
                let path = segment_path(self.dir, next_lsn);
                self.kept.push(Kept {
                    meta: SegMeta {
                        first_lsn: next_lsn,
                        path,
                        size: SEGMENT_HEADER_LEN,
                    },
                    header: SegmentHeader {
                        first_lsn: next_lsn,
                        flags: 0,
                    },
                });
                (file, next_lsn, SEGMENT_HEADER_LEN)
            }
        };
        self.report.segments = self.kept.len();
        self.report.last_lsn = next_lsn - 1;
        Ok(Recovered {
            segments: self.kept.into_iter().map(|k| k.meta).collect(),
            active_file,
            active_first_lsn,
            active_len,
            next_lsn,
            report: self.report,
        })
    }
}
