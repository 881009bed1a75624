//! Recovery: turns whatever a crash (or the storage) left in the directory into a log the
//! writer can append to, or refuses with the segment and offset of the damage. The rules
//! are in the module documentation of [`super`], section "Recovery".

use std::fs::{self, File};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::manifest::{self, Extent, Found, Manifest, Mark};
use super::segment::{
    create_segment, failpoint, find_valid_after, io_err, is_temporary, open_rw, parse_segment_name,
    read_header, rewrite_header, scan_records, segment_path, sync_dir, SegmentHeader,
    FLAG_GAP_AFTER, SEGMENT_HEADER_LEN,
};
use super::{Lsn, RecoveryReport, SegMeta, WalError, WalOptions};

/// The largest LSN recovery lets the log go on from: 2^32 short of the end, so `first + count` for
/// any batch of appends cannot overflow. A log numbered there did not get there by appending (a
/// billion appends a second would take centuries); its segment names are damaged or foreign.
pub const MAX_NEXT_LSN: Lsn = u64::MAX - (1 << 32);

/// The LSN after `lsn`, if the log may go on from there (at most [`MAX_NEXT_LSN`]).
fn next_lsn_above(lsn: Lsn) -> Option<Lsn> {
    lsn.checked_add(1).filter(|next| *next <= MAX_NEXT_LSN)
}

/// The recovered log, ready for the writer.
pub(crate) struct Recovered {
    pub segments: Vec<SegMeta>,
    pub active_file: File,
    pub active_first_lsn: Lsn,
    pub active_len: u64,
    pub next_lsn: Lsn,
    pub report: RecoveryReport,
    pub manifest: Option<Manifest>,
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
    /// The durable mark of the manifest: records up to its LSN were synced (acknowledged).
    mark: Option<Mark>,
}

pub(crate) fn recover(opts: &WalOptions) -> Result<Recovered, WalError> {
    let dir = opts.dir.as_path();
    if !dir.is_dir() {
        fs::create_dir_all(dir).map_err(io_err(dir, "create directory"))?;
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            sync_dir(parent)?;
        }
    }
    let mut r = Recovery {
        dir,
        salvage: opts.salvage,
        kept: Vec::new(),
        expected: None,
        floor: 1,
        report: RecoveryReport::default(),
        mark: None,
    };
    let found = match opts.manifest.as_deref().map(manifest::read).transpose() {
        Ok(found) => found.flatten(),
        Err(e) if opts.salvage => {
            r.salvaged(format!("{e}: rebuilt from the segments found"), 0);
            None
        }
        Err(e) => return Err(e),
    };
    r.mark = found.as_ref().and_then(|f| f.mark);
    let names = list_segments(dir)?;
    let count = names.len();
    let mut last_file = None;
    for (i, (name_lsn, path)) in names.into_iter().enumerate() {
        if let Some(file) = r.segment(name_lsn, path, i + 1 == count)? {
            last_file = Some(file);
        }
    }
    let extent = found.as_ref().and_then(|f| f.extent);
    r.check_missing(extent, opts)?;
    let mut recovered = r.finish(last_file)?;
    recovered.manifest = record_manifest(opts, found.as_ref(), &recovered)?;
    Ok(recovered)
}

/// Writes what the recovered log is into its manifest: its extent and, since the open made the
/// tail durable, a durable mark at its end.
fn record_manifest(
    opts: &WalOptions,
    found: Option<&Found>,
    rec: &Recovered,
) -> Result<Option<Manifest>, WalError> {
    let Some(path) = opts.manifest.as_deref() else {
        return Ok(None);
    };
    let wal_id = found
        .and_then(|f| f.extent)
        .map_or_else(rand::random::<u64>, |e| e.wal_id);
    let extent = Extent {
        wal_id,
        first_segment: rec.segments.first().map_or(rec.next_lsn, |s| s.first_lsn),
        last_segment: rec.active_first_lsn,
    };
    let mark = Mark {
        wal_id,
        lsn: rec.next_lsn - 1,
        segment: rec.active_first_lsn,
        offset: rec.active_len,
    };
    let manifest = match found.filter(|f| f.extent.is_some()) {
        Some(f) => {
            let mut m = Manifest::open(path, f)?;
            m.set_extent(extent)?;
            m.sync_mark(mark)?;
            m
        }
        None => {
            let m = Manifest::create(path, extent, mark)?;
            tracing::info!(manifest = %path.display(), wal_id = format!("{wal_id:016x}"),
                           first_segment = extent.first_segment, "recorded a new WAL manifest");
            m
        }
    };
    Ok(Some(manifest))
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

    /// Salvage gave up on `what`, `lsns` LSNs of it.
    fn salvaged(&mut self, what: String, lsns: u64) {
        tracing::error!(dir = %self.dir.display(), dropped = %what, lsns, "WAL salvage dropped data");
        self.report.salvaged.push(what);
        self.report.salvaged_lsns = self.report.salvaged_lsns.saturating_add(lsns);
    }

    /// The next LSN must go above `lsn` (a record that was there, or was synced, may have been
    /// acknowledged). Refuses when that leaves no LSN the log may give out: `lsn` comes from bytes
    /// on disk (a record salvage found, the manifest's durable mark), and `lsn + 1` is arithmetic
    /// that must not overflow.
    fn floor_above(&mut self, lsn: Lsn) -> Result<(), WalError> {
        let next = next_lsn_above(lsn).ok_or_else(|| WalError::LsnExhausted {
            dir: self.dir.to_path_buf(),
            next_lsn: lsn.saturating_add(1),
            max: MAX_NEXT_LSN,
        })?;
        self.floor = self.floor.max(next);
        Ok(())
    }

    fn name(&self, segment: Lsn) -> String {
        segment_path(self.dir, segment).display().to_string()
    }

    /// Records `from..=to` are missing, as `what` says. Below the checkpoint's low-water mark
    /// they are committed and only warned about; otherwise a refusal, or (salvage) a logged loss.
    /// Either way the next LSN goes above them.
    fn missing(
        &mut self,
        from: Lsn,
        to: Option<Lsn>,
        what: String,
        low_water: Option<Lsn>,
    ) -> Result<(), WalError> {
        let committed = matches!((to, low_water), (Some(to), Some(low)) if to < low);
        if let Some(to) = to {
            self.floor_above(to)?;
        }
        if committed {
            tracing::warn!(dir = %self.dir.display(), missing = %what,
                           "WAL records missing below the checkpoint's low-water mark: they are committed, nothing is lost");
            self.report.missing_committed.push(what);
            return Ok(());
        }
        let next = self.expected.unwrap_or(1).max(self.floor);
        // What lies below the checkpoint's low-water mark is committed: only the rest is lost.
        let from = low_water.map_or(from, |low| from.max(low));
        let (count, lsns) = match to {
            Some(to) => (
                to + 1 - from,
                format!("LSNs {from} to {to} ({} records)", to + 1 - from),
            ),
            None => (
                1,
                format!("every record from LSN {from} on (how many is unknown)"),
            ),
        };
        if !self.salvage {
            return Err(WalError::Missing {
                dir: self.dir.to_path_buf(),
                missing: what,
                salvage: format!("accept the loss of {lsns} and go on with LSN {next}"),
            });
        }
        self.salvaged(format!("{what}: accepted the loss of {lsns}"), count);
        Ok(())
    }

    /// Compares what recovery found with what the manifest and the checkpoint say the log held.
    fn check_missing(&mut self, extent: Option<Extent>, opts: &WalOptions) -> Result<(), WalError> {
        let low = opts.checkpoint_low_water.filter(|l| *l > 1);
        let manifest = opts
            .manifest
            .as_deref()
            .map_or_else(String::new, |p| p.display().to_string());
        let first_kept = self.kept.first().map(|k| k.meta.first_lsn);
        let mark = self.mark;
        if let Some(ext) = extent {
            match first_kept {
                None => {
                    let to = mark.map(|m| m.lsn);
                    if to.is_some_and(|to| to < ext.first_segment) {
                        // Nothing was ever synced into what is gone (an empty new segment).
                        self.floor = self.floor.max(ext.last_segment);
                    } else {
                        let what = format!(
                            "every segment is missing: the manifest {manifest} lists segments {} to {}{}",
                            self.name(ext.first_segment),
                            self.name(ext.last_segment),
                            mark.map_or_else(String::new, |m| format!(
                                ", and records up to LSN {} were synced",
                                m.lsn
                            )),
                        );
                        self.floor = self.floor.max(ext.last_segment);
                        self.missing(ext.first_segment, to, what, low)?;
                    }
                }
                Some(first) if first > ext.first_segment => {
                    let what = format!(
                        "the oldest segments are missing: the manifest {manifest} says the log starts with {}, but the first segment present is {} (LSNs {} to {} are gone)",
                        self.name(ext.first_segment),
                        self.name(first),
                        ext.first_segment,
                        first - 1
                    );
                    self.missing(ext.first_segment, Some(first - 1), what, low)?;
                }
                Some(_) => {}
            }
        }
        if let (Some(m), Some(_)) = (mark, first_kept) {
            let have = self.expected.unwrap_or(1).max(self.floor);
            if m.lsn >= have {
                let seg_present = self.kept.iter().any(|k| k.meta.first_lsn == m.segment);
                let what = format!(
                    "records up to LSN {} were synced and acknowledged (the durable mark in {manifest} says so, ending at offset {} of {}{}), but the log ends at LSN {}",
                    m.lsn,
                    m.offset,
                    self.name(m.segment),
                    if seg_present { "" } else { ", which is missing" },
                    have - 1
                );
                self.missing(have, Some(m.lsn), what, low)?;
            }
        }
        if let (Some(ext), None, Some(last)) = (extent, mark, self.kept.last()) {
            if last.meta.first_lsn < ext.last_segment {
                let from = self
                    .expected
                    .unwrap_or(1)
                    .max(self.floor)
                    .max(ext.last_segment);
                let what = format!(
                    "the newest segment {} the manifest {manifest} lists is missing (the last one present is {})",
                    self.name(ext.last_segment),
                    self.name(last.meta.first_lsn)
                );
                self.missing(from, None, what, low)?;
                self.floor = self.floor.max(from);
            }
        }
        if let Some(low) = low {
            let next = self.expected.unwrap_or(1).max(self.floor);
            if next < low {
                let what = format!(
                    "the newest checkpoint of this log says every record below LSN {low} is committed and the log reached LSN {}, but the log ends at LSN {}: the WAL is younger than its checkpoint (its segments were lost or replaced), and whatever it held from LSN {low} on is gone",
                    low - 1,
                    next - 1
                );
                self.floor = self.floor.max(low);
                self.missing(low, None, what, None)?;
            }
        }
        Ok(())
    }

    /// Recovers one segment; returns its file if it is kept.
    fn segment(
        &mut self,
        name_lsn: Lsn,
        path: PathBuf,
        is_last: bool,
    ) -> Result<Option<File>, WalError> {
        // A name at the end of the LSN range is not this log's (see MAX_NEXT_LSN): refuse it before
        // any LSN arithmetic on it can overflow, salvage or not.
        if name_lsn > MAX_NEXT_LSN {
            return Err(WalError::LsnExhausted {
                dir: self.dir.to_path_buf(),
                next_lsn: name_lsn,
                max: MAX_NEXT_LSN,
            });
        }
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
                self.gap(expected, header.first_lsn, &path, true)?;
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
            // A record the durable mark covers was synced and acknowledged: never a torn tail.
            let synced = self.mark.filter(|m| m.lsn >= scan.next_lsn);
            let mut bad = bad;
            if let Some(m) = synced {
                bad.reason.push_str(&format!(
                    "; the durable mark says records up to LSN {} were synced and acknowledged, so this is damage, not a torn tail",
                    m.lsn
                ));
            }
            if is_last && found.is_none() && synced.is_none() {
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
                let hi = found
                    .map(|f| f.max_lsn)
                    .into_iter()
                    .chain(synced.map(|m| m.lsn))
                    .max();
                // Refuse before the segment is cut if no LSN is left above what it held.
                if let Some(hi) = hi {
                    self.floor_above(hi)?;
                }
                file.set_len(bad.offset)
                    .map_err(io_err(&path, "truncate salvaged segment"))?;
                header.flags |= FLAG_GAP_AFTER;
                rewrite_header(&file, &path, header)?;
                file.sync_all().map_err(io_err(&path, "fsync"))?;
                let (lsns, count) = match hi {
                    // `hi` is at least `scan.next_lsn` (found after it, or synced past it).
                    Some(hi) => (
                        format!("LSNs {} to at least {hi}", scan.next_lsn),
                        (hi - scan.next_lsn).saturating_add(1),
                    ),
                    None => (format!("LSNs from {}", scan.next_lsn), 1),
                };
                self.salvaged(
                    format!(
                        "{}: dropped {dropped} bytes from offset {} ({lsns}): {}",
                        path.display(),
                        bad.offset,
                        bad.reason
                    ),
                    count,
                );
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
        self.floor = self.floor.max(name_lsn);
        if let Some(f) = found {
            // Before the rename: a refusal leaves the segment where it was.
            self.floor_above(f.max_lsn)?;
        }
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
        // Found records carry LSNs from `name_lsn` on (find_valid_after's `min_lsn`).
        let count = found.map_or(1, |f| (f.max_lsn - name_lsn).saturating_add(1));
        self.salvaged(
            format!(
                "{}: set aside as {} ({len} bytes, {lsns}): {reason}",
                path.display(),
                aside.display()
            ),
            count,
        );
        Ok(None)
    }

    /// LSNs `expected..first` are missing before `path`: accept it if salvage made the gap. From
    /// `finish` (`found: false`) the gap is one recovery decided on (records dropped or missing, or
    /// committed ones missing), already reported and counted: only the flag is set.
    fn gap(&mut self, expected: Lsn, first: Lsn, path: &Path, found: bool) -> Result<(), WalError> {
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
        if !self.salvage && found {
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
        if !found {
            tracing::info!(dir = %self.dir.display(), missing_from = expected, next_lsn = first,
                           "WAL continues above records it no longer has");
            if self.salvage {
                self.report.salvaged.push(format!(
                    "{}: continues above LSNs {expected} to {} it no longer has",
                    path.display(),
                    first - 1
                ));
            }
            return Ok(());
        }
        self.salvaged(
            format!(
                "{}: accepted an LSN gap before it, LSNs {expected} to {} are missing",
                path.display(),
                first - 1
            ),
            first - expected,
        );
        Ok(())
    }

    fn finish(mut self, last_file: Option<File>) -> Result<Recovered, WalError> {
        let next_lsn = self.expected.unwrap_or(1).max(self.floor);
        if next_lsn > MAX_NEXT_LSN {
            return Err(WalError::LsnExhausted {
                dir: self.dir.to_path_buf(),
                next_lsn,
                max: MAX_NEXT_LSN,
            });
        }
        let reuse_last = match (self.expected, last_file) {
            (Some(expected), Some(file)) if expected == next_lsn => Some(file),
            (Some(expected), _) => {
                // Records above `expected` were dropped by salvage or are missing: continue after
                // them in a new segment, the last one flagged so the gap reads as deliberate.
                self.gap(expected, next_lsn, &segment_path(self.dir, next_lsn), false)?;
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
                // Bytes a killed process wrote may still be only in the page cache: make them
                // durable before anything recovered counts as durable (and is acknowledged again).
                let path = segment_path(self.dir, first);
                failpoint("wal::open::sync", self.dir)
                    .and_then(|()| file.sync_data())
                    .map_err(io_err(&path, "fdatasync the recovered tail"))?;
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
            manifest: None,
        })
    }
}
