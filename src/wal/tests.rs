//! Tests of the WAL as the node uses it: append, crash, recover, replay, release.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;

use super::record::{encode_header, payload_hasher, RECORD_HEADER_LEN};
use super::segment::{segment_path, SEGMENT_HEADER_LEN};
use super::*;

pub(super) fn opts(dir: &Path, segment_size: u64) -> WalOptions {
    WalOptions {
        dir: dir.to_path_buf(),
        segment_size,
        salvage: false,
        manifest: None,
        checkpoint_low_water: None,
    }
}

pub(super) fn salvage(dir: &Path, segment_size: u64) -> WalOptions {
    WalOptions {
        salvage: true,
        ..opts(dir, segment_size)
    }
}

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub(super) fn open(o: WalOptions) -> (Wal, RecoveryReport) {
    Wal::open(o).expect("open WAL")
}

pub(super) fn payload(lsn: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (lsn as usize * 31 + i * 7) as u8)
        .collect()
}

/// Appends one record per entry, one after another; returns the positions.
pub(super) fn append_all(wal: &Wal, records: &[(u8, Vec<u8>)]) -> Vec<(Lsn, RecordPos)> {
    let rt = rt();
    records
        .iter()
        .map(|(kind, p)| {
            rt.block_on(wal.append(*kind, Bytes::from(p.clone())))
                .expect("append")
        })
        .collect()
}

pub(super) fn replay_all(wal: &Wal, from: Lsn) -> Vec<(Lsn, u8, Vec<u8>)> {
    wal.replay(from)
        .expect("replay")
        .map(|r| {
            let r = r.expect("replayed record");
            (r.lsn, r.kind, r.payload.to_vec())
        })
        .collect()
}

pub(super) fn numbered(records: &[(u8, Vec<u8>)], first: Lsn) -> Vec<(Lsn, u8, Vec<u8>)> {
    records
        .iter()
        .enumerate()
        .map(|(i, (k, p))| (first + i as u64, *k, p.clone()))
        .collect()
}

pub(super) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    files.sort();
    files
}

pub(super) fn flip_bit(path: &Path, offset: u64, bit: u8) {
    let mut bytes = fs::read(path).expect("read segment");
    bytes[offset as usize] ^= 1 << bit;
    fs::write(path, bytes).expect("write segment");
}

fn copy_dir(from: &Path, to: &Path) {
    for f in segment_files(from) {
        fs::copy(&f, to.join(f.file_name().expect("name"))).expect("copy segment");
    }
}

pub(super) fn expect_corrupt(
    result: Result<(Wal, RecoveryReport), WalError>,
) -> (PathBuf, u64, String) {
    match result {
        Err(WalError::Corrupt {
            segment,
            offset,
            reason,
        }) => (segment, offset, reason),
        Err(other) => panic!("expected Corrupt, got {other}"),
        Ok(_) => panic!("expected Corrupt, the WAL opened"),
    }
}

pub(super) fn sample(n: usize, len: usize) -> Vec<(u8, Vec<u8>)> {
    (1..=n)
        .map(|i| ((i % 5) as u8, payload(i as u64, len + i)))
        .collect()
}

/// Two live opens of one log would both append and both clear what they take to be their own: the
/// second is refused while the first holds the directory, and goes through once it is closed.
#[test]
fn a_second_open_of_a_log_in_use_is_refused_naming_its_lock_until_the_first_is_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    let (first, _) = open(opts(&dir, 4096));
    let err = Wal::open(opts(&dir, 4096)).expect_err("the log is in use");
    assert!(
        matches!(&err, WalError::InUse { lock, .. } if lock == &dir.join(LOCK_FILE)),
        "{err}"
    );
    assert!(err.to_string().contains("is in use"), "{err}");
    drop(first);
    let (again, _) = open(opts(&dir, 4096));
    assert_eq!(again.next_lsn(), 1);
}

#[test]
fn a_fresh_directory_is_created_and_starts_at_lsn_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("nested").join("wal");
    let (wal, report) = open(opts(&dir, 4096));
    assert_eq!(report.last_lsn, 0);
    assert_eq!(
        (report.segments, report.records, report.truncated_bytes),
        (1, 0, 0)
    );
    assert_eq!(wal.next_lsn(), 1);
    assert_eq!(wal.dir(), dir.as_path());
    assert_eq!(segment_files(&dir), vec![segment_path(&dir, 1)]);
    assert_eq!(wal.disk_bytes(), SEGMENT_HEADER_LEN);
    let (lsn, pos) = rt()
        .block_on(wal.append(9, Bytes::from_static(b"first")))
        .unwrap();
    assert_eq!(lsn, 1);
    assert_eq!(
        pos,
        RecordPos {
            segment: 1,
            offset: SEGMENT_HEADER_LEN,
            len: 5
        }
    );
    assert_eq!(wal.next_lsn(), 2);
    assert_eq!(
        wal.disk_bytes(),
        SEGMENT_HEADER_LEN + RECORD_HEADER_LEN as u64 + 5
    );
}

#[test]
fn the_handle_its_append_future_and_replay_can_move_across_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>(_: &T) {}
    fn assert_send<T: Send + 'static>(_: &T) {}
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 4096));
    assert_send_sync(&wal);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handle = wal.clone();
    let appended = runtime.block_on(
        runtime.spawn(async move { handle.append(4, Bytes::from_static(b"moved")).await }),
    );
    assert_eq!(appended.unwrap().unwrap().0, 1);
    let replay = wal.replay(1).unwrap();
    assert_send(&replay);
    let back = std::thread::spawn(move || replay.map(|r| r.unwrap().payload).collect::<Vec<_>>())
        .join()
        .unwrap();
    assert_eq!(back, vec![Bytes::from_static(b"moved")]);
}

#[test]
fn an_append_resolves_only_after_its_record_is_synced_to_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 1 << 20));
    let before = wal.sync_count();
    let (lsn, pos) = rt()
        .block_on(wal.append(1, Bytes::from_static(b"durable")))
        .unwrap();
    assert!(
        wal.sync_count() > before,
        "the append resolved without a sync"
    );
    let on_disk = fs::metadata(segment_path(tmp.path(), pos.segment))
        .unwrap()
        .len();
    assert_eq!(on_disk, pos.offset + RECORD_HEADER_LEN as u64 + 7);
    let rec = wal.read(pos).unwrap();
    assert_eq!(
        (rec.lsn, rec.kind, &rec.payload[..]),
        (lsn, 1, &b"durable"[..])
    );
}

#[test]
fn records_survive_a_reopen_and_lsns_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(20, 30);
    {
        let (wal, _) = open(opts(tmp.path(), 300));
        append_all(&wal, &records);
    }
    let (wal, report) = open(opts(tmp.path(), 300));
    assert_eq!(report.records, 20);
    assert_eq!(report.last_lsn, 20);
    assert_eq!(report.segments, segment_files(tmp.path()).len());
    assert!(
        report.segments > 2,
        "the test needs rotation, got {} segments",
        report.segments
    );
    assert_eq!(replay_all(&wal, 1), numbered(&records, 1));
    let (lsn, _) = rt()
        .block_on(wal.append(0, Bytes::from_static(b"next")))
        .unwrap();
    assert_eq!(lsn, 21);
}

#[test]
fn truncating_the_last_record_at_every_byte_offset_loses_only_that_record() {
    let src = tempfile::tempdir().unwrap();
    let records = sample(9, 40);
    let positions = {
        let (wal, _) = open(opts(src.path(), 400));
        append_all(&wal, &records)
    };
    let (last_lsn, last_pos) = *positions.last().unwrap();
    assert!(
        last_pos.segment > 1,
        "the last record should sit in a later segment"
    );
    let record_len = RECORD_HEADER_LEN as u64 + u64::from(last_pos.len);
    for kept in 0..record_len {
        let tmp = tempfile::tempdir().unwrap();
        copy_dir(src.path(), tmp.path());
        let last = segment_path(tmp.path(), last_pos.segment);
        fs::OpenOptions::new()
            .write(true)
            .open(&last)
            .unwrap()
            .set_len(last_pos.offset + kept)
            .unwrap();

        let (wal, report) = open(opts(tmp.path(), 400));
        assert_eq!(
            report.truncated_bytes, kept,
            "cut after {kept} bytes of the record"
        );
        assert_eq!(report.records, last_lsn - 1);
        assert_eq!(report.last_lsn, last_lsn - 1);
        assert_eq!(fs::metadata(&last).unwrap().len(), last_pos.offset);
        assert_eq!(
            replay_all(&wal, 1),
            numbered(&records[..records.len() - 1], 1)
        );
        assert_eq!(wal.next_lsn(), last_lsn);
        let (lsn, pos) = rt()
            .block_on(wal.append(7, Bytes::from_static(b"after the crash")))
            .unwrap();
        assert_eq!(lsn, last_lsn);
        assert_eq!(pos.offset, last_pos.offset);
        assert_eq!(
            wal.read(pos).unwrap().payload,
            Bytes::from_static(b"after the crash")
        );
    }
}

#[test]
fn a_bit_flip_in_a_sealed_segment_is_refused_with_its_segment_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(12, 40);
    let positions = {
        let (wal, _) = open(opts(tmp.path(), 300));
        append_all(&wal, &records)
    };
    let (_, victim) = positions[2];
    assert_eq!(
        victim.segment, 1,
        "the victim must be in the first, sealed segment"
    );
    assert!(positions.last().unwrap().1.segment > victim.segment);
    let path = segment_path(tmp.path(), victim.segment);
    // A payload bit, then (after undoing it) a bit of the LSN field.
    for (at, bit) in [
        (victim.offset + RECORD_HEADER_LEN as u64 + 3, 5),
        (victim.offset + 9, 0),
    ] {
        flip_bit(&path, at, bit);
        let (segment, offset, reason) = expect_corrupt(Wal::open(opts(tmp.path(), 300)));
        assert_eq!(segment, path);
        assert_eq!(offset, victim.offset, "{reason}");
        flip_bit(&path, at, bit);
    }
    flip_bit(&path, victim.offset + RECORD_HEADER_LEN as u64 + 3, 5);
    let err = Wal::open(opts(tmp.path(), 300)).unwrap_err().to_string();
    assert!(err.contains("start with --salvage-wal"), "{err}");
}

#[test]
fn salvage_drops_the_corrupt_record_and_the_rest_of_its_sealed_segment_and_reports_it() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(12, 40);
    let positions = {
        let (wal, _) = open(opts(tmp.path(), 300));
        append_all(&wal, &records)
    };
    let (victim_lsn, victim) = positions[2];
    let second_segment = positions
        .iter()
        .find(|(_, p)| p.segment != victim.segment)
        .unwrap()
        .0;
    let path = segment_path(tmp.path(), victim.segment);
    flip_bit(&path, victim.offset + RECORD_HEADER_LEN as u64, 0);

    let (wal, report) = open(salvage(tmp.path(), 300));
    assert_eq!(report.salvaged.len(), 1, "{:?}", report.salvaged);
    let note = &report.salvaged[0];
    assert!(
        note.contains(&path.display().to_string())
            && note.contains(&format!("offset {}", victim.offset)),
        "{note}"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        victim.offset,
        "the segment is cut at the bad record"
    );
    let expected: Vec<_> = numbered(&records, 1)
        .into_iter()
        .filter(|(lsn, _, _)| *lsn < victim_lsn || *lsn >= second_segment)
        .collect();
    assert_eq!(replay_all(&wal, 1), expected);
    assert_eq!(report.records, expected.len() as u64);
    assert_eq!(wal.next_lsn(), 13);
    drop(wal);

    // The drop is remembered: a plain open accepts the gap it left.
    let (wal, report) = open(opts(tmp.path(), 300));
    assert!(report.salvaged.is_empty());
    assert_eq!(replay_all(&wal, 1), expected);
}

#[test]
fn a_bit_flip_in_the_middle_of_the_last_segment_is_refused_not_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(6, 40);
    let positions = {
        let (wal, _) = open(opts(tmp.path(), 1 << 20));
        append_all(&wal, &records)
    };
    let (_, victim) = positions[2];
    let path = segment_path(tmp.path(), 1);
    let len = fs::metadata(&path).unwrap().len();
    flip_bit(&path, victim.offset + RECORD_HEADER_LEN as u64 + 10, 3);

    let (segment, offset, reason) = expect_corrupt(Wal::open(opts(tmp.path(), 1 << 20)));
    assert_eq!((segment, offset), (path.clone(), victim.offset));
    assert!(
        reason.contains("not a torn tail") && reason.contains("LSN 4"),
        "{reason}"
    );
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        len,
        "a refused open must not touch the file"
    );
}

#[test]
fn salvage_in_the_last_segment_never_hands_out_a_dropped_lsn_again() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(6, 40);
    let positions = {
        let (wal, _) = open(opts(tmp.path(), 1 << 20));
        append_all(&wal, &records)
    };
    let (_, victim) = positions[2];
    flip_bit(&segment_path(tmp.path(), 1), victim.offset + 2, 7);

    let (wal, report) = open(salvage(tmp.path(), 1 << 20));
    assert_eq!(report.salvaged.len(), 1, "{:?}", report.salvaged);
    assert!(
        report.salvaged[0].contains("LSNs 3 to at least 6"),
        "{}",
        report.salvaged[0]
    );
    assert_eq!(report.last_lsn, 6);
    assert_eq!(replay_all(&wal, 1), numbered(&records[..2], 1));
    assert_eq!(wal.next_lsn(), 7, "LSNs 3..=6 may have been acknowledged");
    let (lsn, pos) = rt()
        .block_on(wal.append(1, Bytes::from_static(b"new")))
        .unwrap();
    assert_eq!(
        (lsn, pos.segment),
        (7, 7),
        "continues in a new segment after the gap"
    );
    drop(wal);

    let (wal, report) = open(opts(tmp.path(), 1 << 20));
    assert!(report.salvaged.is_empty());
    let mut expected = numbered(&records[..2], 1);
    expected.push((7, 1, b"new".to_vec()));
    assert_eq!(replay_all(&wal, 1), expected);
}

#[test]
fn without_a_manifest_damage_to_the_final_record_cannot_be_told_from_a_torn_write_and_is_truncated()
{
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(4, 40);
    let positions = {
        let (wal, _) = open(opts(tmp.path(), 1 << 20));
        append_all(&wal, &records)
    };
    let (_, last) = positions[3];
    flip_bit(
        &segment_path(tmp.path(), 1),
        last.offset + RECORD_HEADER_LEN as u64 + 1,
        1,
    );
    let (wal, report) = open(opts(tmp.path(), 1 << 20));
    assert_eq!(
        report.truncated_bytes,
        RECORD_HEADER_LEN as u64 + u64::from(last.len)
    );
    assert_eq!(replay_all(&wal, 1), numbered(&records[..3], 1));
}

#[test]
fn a_missing_middle_segment_is_an_lsn_gap_that_only_salvage_accepts() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(15, 40);
    {
        let (wal, _) = open(opts(tmp.path(), 300));
        append_all(&wal, &records);
    }
    let files = segment_files(tmp.path());
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();
    let (segment, offset, reason) = expect_corrupt(Wal::open(opts(tmp.path(), 300)));
    assert_eq!((segment, offset), (files[2].clone(), 0));
    assert!(reason.contains("LSN gap"), "{reason}");

    let (wal, report) = open(salvage(tmp.path(), 300));
    assert_eq!(report.salvaged.len(), 1, "{:?}", report.salvaged);
    let replayed = replay_all(&wal, 1);
    assert_eq!(replayed.last().unwrap().0, 15);
    assert!(
        replayed.windows(2).any(|w| w[1].0 > w[0].0 + 1),
        "the gap is visible in the LSNs"
    );
    drop(wal);
    let (_, report) = open(opts(tmp.path(), 300));
    assert!(report.salvaged.is_empty(), "the accepted gap is remembered");
}

#[test]
fn a_corrupt_segment_header_is_refused_and_salvage_sets_the_segment_aside() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(10, 40);
    {
        let (wal, _) = open(opts(tmp.path(), 300));
        append_all(&wal, &records);
    }
    let files = segment_files(tmp.path());
    let last = files.last().unwrap().clone();
    flip_bit(&last, 3, 2);
    let (segment, offset, reason) = expect_corrupt(Wal::open(opts(tmp.path(), 300)));
    assert_eq!((segment, offset), (last.clone(), 0));
    assert!(reason.contains("magic"), "{reason}");

    let (wal, report) = open(salvage(tmp.path(), 300));
    assert_eq!(
        report.salvaged.len(),
        2,
        "set aside + gap: {:?}",
        report.salvaged
    );
    let mut aside = last.clone().into_os_string();
    aside.push(".corrupt");
    assert!(Path::new(&aside).exists());
    assert!(!last.exists());
    assert_eq!(
        wal.next_lsn(),
        11,
        "the set-aside records' LSNs are not reused"
    );
    let replayed = replay_all(&wal, 1);
    assert!(replayed
        .iter()
        .all(|(lsn, _, p)| *p == records[*lsn as usize - 1].1));
}

#[test]
fn leftover_temporaries_are_removed_and_foreign_files_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(
        tmp.path().join("00000000000000000005.wal.tmp"),
        b"half a header",
    )
    .unwrap();
    fs::write(tmp.path().join("README"), b"not a segment").unwrap();
    let (wal, report) = open(opts(tmp.path(), 4096));
    assert_eq!(report.segments, 1);
    assert!(!tmp.path().join("00000000000000000005.wal.tmp").exists());
    assert!(tmp.path().join("README").exists());
    assert_eq!(wal.next_lsn(), 1);
}

#[test]
fn a_record_larger_than_segment_size_gets_a_segment_of_its_own() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 100));
    let records = vec![
        (1, vec![1u8; 10]),
        (2, vec![2u8; 500]),
        (3, vec![3u8; 10]),
        (4, vec![4u8; 10]),
    ];
    let positions = append_all(&wal, &records);
    let segments: Vec<u64> = positions.iter().map(|(_, p)| p.segment).collect();
    assert_eq!(segments, vec![1, 2, 3, 3]);
    assert_eq!(positions[1].1.offset, SEGMENT_HEADER_LEN);
    assert_eq!(segment_files(tmp.path()).len(), 3);
    assert_eq!(replay_all(&wal, 1), numbered(&records, 1));
    let on_disk: u64 = segment_files(tmp.path())
        .iter()
        .map(|f| fs::metadata(f).unwrap().len())
        .sum();
    assert_eq!(wal.disk_bytes(), on_disk);
}

#[test]
fn read_returns_a_record_by_position_and_detects_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 1 << 20));
    let positions = append_all(&wal, &sample(3, 100));
    let (lsn, pos) = positions[1];
    let rec = wal.read(pos).unwrap();
    assert_eq!((rec.lsn, rec.kind, rec.pos), (lsn, 2, pos));
    assert_eq!(rec.payload.to_vec(), payload(2, 102));

    let wrong = RecordPos {
        len: pos.len + 1,
        ..pos
    };
    assert!(
        matches!(wal.read(wrong), Err(WalError::Corrupt { offset, .. }) if offset == pos.offset)
    );
    flip_bit(
        &segment_path(tmp.path(), 1),
        pos.offset + RECORD_HEADER_LEN as u64 + 50,
        4,
    );
    match wal.read(pos) {
        Err(WalError::Corrupt {
            segment,
            offset,
            reason,
        }) => {
            assert_eq!((segment, offset), (segment_path(tmp.path(), 1), pos.offset));
            assert!(reason.contains("CRC"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let missing = RecordPos {
        segment: 999,
        ..pos
    };
    assert!(matches!(wal.read(missing), Err(WalError::Io { .. })));
}

#[test]
fn replay_from_the_middle_yields_exactly_the_suffix() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(25, 20);
    let (wal, _) = open(opts(tmp.path(), 256));
    append_all(&wal, &records);
    for from in [0, 1, 2, 7, 13, 25, 26, 100] {
        let skip = (from.max(1) - 1) as usize;
        let expected: Vec<_> = numbered(&records, 1).into_iter().skip(skip).collect();
        assert_eq!(replay_all(&wal, from), expected, "from {from}");
    }
}

#[test]
fn replay_reports_damage_it_meets_and_then_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 1 << 20));
    let positions = append_all(&wal, &sample(5, 30));
    let (_, pos) = positions[3];
    flip_bit(
        &segment_path(tmp.path(), 1),
        pos.offset + RECORD_HEADER_LEN as u64,
        0,
    );
    let results: Vec<_> = wal.replay(1).unwrap().collect();
    assert_eq!(results.len(), 4, "three records, one error, then nothing");
    assert!(results[..3].iter().all(|r| r.is_ok()));
    assert!(matches!(&results[3], Err(WalError::Corrupt { offset, .. }) if *offset == pos.offset));
}

#[test]
fn release_below_deletes_whole_segments_and_the_rest_still_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let records = sample(30, 40);
    let (wal, _) = open(opts(tmp.path(), 300));
    let positions = append_all(&wal, &records);
    let before = segment_files(tmp.path());
    assert!(before.len() >= 5);

    let low = 14;
    // Exactly the segments whose successor starts at or below `low` can go.
    let firsts: Vec<u64> = before
        .iter()
        .map(|p| {
            super::segment::parse_segment_name(p.file_name().unwrap().to_str().unwrap()).unwrap()
        })
        .collect();
    let deletable = firsts.windows(2).filter(|w| w[1] <= low).count();
    assert_eq!(wal.release_below(low).unwrap(), deletable);
    let after = segment_files(tmp.path());
    assert_eq!(after, before[deletable..].to_vec());
    let first_kept = firsts[deletable];
    assert!(first_kept <= low, "a segment holding LSN {low} was deleted");

    assert_eq!(
        replay_all(&wal, low),
        numbered(&records, 1).split_off(low as usize - 1)
    );
    assert_eq!(
        replay_all(&wal, 1),
        numbered(&records, 1).split_off(first_kept as usize - 1)
    );
    let on_disk: u64 = after.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    assert_eq!(wal.disk_bytes(), on_disk);
    assert!(
        matches!(wal.read(positions[0].1), Err(WalError::Io { .. })),
        "the released record is gone"
    );
    assert_eq!(
        wal.release_below(low).unwrap(),
        0,
        "releasing again deletes nothing"
    );
    drop(wal);

    let (wal, report) = open(opts(tmp.path(), 300));
    assert_eq!(report.segments, after.len());
    assert_eq!(
        replay_all(&wal, low),
        numbered(&records, 1).split_off(low as usize - 1)
    );
}

#[test]
fn release_below_never_deletes_the_active_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 300));
    append_all(&wal, &sample(20, 40));
    let active = segment_files(tmp.path()).pop().unwrap();
    assert!(wal.release_below(u64::MAX).unwrap() > 0);
    assert_eq!(segment_files(tmp.path()), vec![active]);
    let tail = replay_all(&wal, 1);
    assert_eq!(
        tail.last().unwrap().0,
        20,
        "the active segment's records remain"
    );
    let (lsn, _) = rt()
        .block_on(wal.append(0, Bytes::from_static(b"more")))
        .unwrap();
    assert_eq!(lsn, 21);
}

#[test]
fn concurrent_appenders_share_fdatasyncs() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 1 << 20));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (tasks, per_task) = (64u64, 16u64);
    let results = runtime.block_on(async {
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let wal = wal.clone();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for i in 0..per_task {
                        let body = format!("task {t} record {i}");
                        let (lsn, _) = wal
                            .append(t as u8, Bytes::from(body.clone()))
                            .await
                            .expect("append");
                        out.push((lsn, body));
                    }
                    out
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.expect("task"));
        }
        all
    });
    let records = tasks * per_task;
    let syncs = wal.sync_count();
    assert!(
        syncs * 4 <= records,
        "{syncs} fdatasyncs for {records} records: no grouping"
    );
    let mut lsns: Vec<u64> = results.iter().map(|(l, _)| *l).collect();
    lsns.sort_unstable();
    assert_eq!(lsns, (1..=records).collect::<Vec<_>>());
    let replayed = replay_all(&wal, 1);
    for (lsn, body) in &results {
        assert_eq!(replayed[*lsn as usize - 1].2, body.as_bytes());
    }
}

#[test]
fn appends_after_close_fail_with_closed() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 4096));
    let rt = rt();
    rt.block_on(wal.append(1, Bytes::from_static(b"kept")))
        .unwrap();
    rt.block_on(wal.close()).unwrap();
    rt.block_on(wal.close()).unwrap();
    assert!(matches!(
        rt.block_on(wal.append(1, Bytes::from_static(b"late"))),
        Err(WalError::Closed)
    ));
    assert_eq!(replay_all(&wal, 1), vec![(1, 1, b"kept".to_vec())]);
}

#[test]
fn an_oversized_record_is_rejected_without_touching_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(tmp.path(), 4096));
    let big = Bytes::from(vec![0u8; MAX_RECORD_PAYLOAD + 1]);
    match rt().block_on(wal.append(1, big)) {
        Err(WalError::RecordTooLarge { len, max }) => {
            assert_eq!((len, max), (MAX_RECORD_PAYLOAD + 1, MAX_RECORD_PAYLOAD))
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!((wal.next_lsn(), wal.disk_bytes()), (1, SEGMENT_HEADER_LEN));
}

#[test]
fn empty_payloads_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let records = vec![(3u8, Vec::new()), (4u8, b"x".to_vec()), (5u8, Vec::new())];
    {
        let (wal, _) = open(opts(tmp.path(), 4096));
        append_all(&wal, &records);
    }
    let (wal, report) = open(opts(tmp.path(), 4096));
    assert_eq!(report.records, 3);
    assert_eq!(replay_all(&wal, 1), numbered(&records, 1));
}

/// One step of the model test.
#[derive(Clone, Debug)]
enum Op {
    Append(u8, Vec<u8>),
    /// Drop the WAL without closing; optionally leave a torn unsynced write at the tail.
    Crash(Option<Torn>),
    /// Close cleanly and open again.
    Reopen,
    /// Release below a point given as a fraction of the next LSN (in 1/16ths).
    Release(u8),
}

#[derive(Clone, Debug)]
enum Torn {
    Garbage(Vec<u8>),
    /// The first `cut` bytes (fewer than all) of a real record with the next LSN.
    Prefix {
        cut: usize,
        payload: Vec<u8>,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let torn = prop_oneof![
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Torn::Garbage),
        (0usize..200, prop::collection::vec(any::<u8>(), 0..60))
            .prop_map(|(cut, payload)| Torn::Prefix { cut, payload }),
    ];
    prop_oneof![
        8 => (any::<u8>(), prop::collection::vec(any::<u8>(), 0..120)).prop_map(|(k, p)| Op::Append(k, p)),
        2 => prop::option::of(torn).prop_map(Op::Crash),
        1 => Just(Op::Reopen),
        1 => (0u8..=16).prop_map(Op::Release),
    ]
}

fn tear(dir: &Path, next_lsn: Lsn, torn: &Torn) -> u64 {
    let last = segment_files(dir).pop().expect("a segment");
    let bytes = match torn {
        Torn::Garbage(g) => g.clone(),
        Torn::Prefix { cut, payload } => {
            let mut rec =
                encode_header(payload.len() as u32, next_lsn, 1, &payload_hasher(payload)).to_vec();
            rec.extend_from_slice(payload);
            rec.truncate((*cut).min(rec.len() - 1).max(1));
            rec
        }
    };
    let mut data = fs::read(&last).expect("read");
    data.extend_from_slice(&bytes);
    fs::write(&last, data).expect("write");
    bytes.len() as u64
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_wal_behaves_like_a_vec_across_appends_crashes_reopens_and_releases(
        ops in prop::collection::vec(op(), 1..40)
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let o = opts(tmp.path(), 256);
        let rt = rt();
        let mut model: Vec<(Lsn, u8, Vec<u8>)> = Vec::new();
        let mut released: Lsn = 1;
        let mut wal = Some(open(o.clone()).0);
        for op in ops {
            let w = wal.take().expect("open");
            match op {
                Op::Append(kind, p) => {
                    let (lsn, pos) = rt.block_on(w.append(kind, Bytes::from(p.clone()))).unwrap();
                    prop_assert_eq!(lsn, model.len() as u64 + 1);
                    let back = w.read(pos).unwrap();
                    prop_assert_eq!((back.lsn, back.kind, back.payload.to_vec()), (lsn, kind, p.clone()));
                    model.push((lsn, kind, p));
                    wal = Some(w);
                }
                Op::Crash(torn) => {
                    drop(w);
                    let torn_bytes = torn.map_or(0, |t| tear(tmp.path(), model.len() as u64 + 1, &t));
                    let (w, report) = open(o.clone());
                    prop_assert_eq!(report.truncated_bytes, torn_bytes);
                    prop_assert!(report.salvaged.is_empty());
                    prop_assert_eq!(report.last_lsn, model.len() as u64);
                    wal = Some(w);
                }
                Op::Reopen => {
                    rt.block_on(w.close()).unwrap();
                    drop(w);
                    let (w, report) = open(o.clone());
                    prop_assert_eq!(report.truncated_bytes, 0);
                    wal = Some(w);
                }
                Op::Release(sixteenths) => {
                    let low = (w.next_lsn() * u64::from(sixteenths)) / 16;
                    w.release_below(low).unwrap();
                    released = released.max(low);
                    let on_disk: u64 = segment_files(tmp.path()).iter().map(|f| fs::metadata(f).unwrap().len()).sum();
                    prop_assert_eq!(w.disk_bytes(), on_disk);
                    wal = Some(w);
                }
            }
            let w = wal.as_ref().expect("open");
            prop_assert_eq!(w.next_lsn(), model.len() as u64 + 1);
            for from in [released, released + 1, (model.len() as u64).max(1)] {
                let suffix: Vec<_> = model.iter().filter(|(l, _, _)| *l >= from).cloned().collect();
                prop_assert_eq!(replay_all(w, from), suffix, "replay from {}", from);
            }
            // Everything still on disk is a contiguous suffix reaching at least down to `released`.
            let all = replay_all(w, 1);
            let start = all.first().map_or(model.len() as u64 + 1, |r| r.0);
            prop_assert!(start <= released.max(1).min(model.len() as u64 + 1));
            prop_assert_eq!(&all[..], &model[start as usize - 1..]);
        }
    }
}

#[cfg(feature = "failpoints")]
mod failpoints {
    use super::*;

    fn arm(name: &str, dir: &Path) {
        fail::cfg(name, &format!("return({})", dir.display())).expect("configure failpoint");
    }

    #[test]
    fn a_failed_fdatasync_fails_its_group_and_every_later_append_and_is_never_retried() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = open(opts(tmp.path(), 4096));
        let rt = rt();
        rt.block_on(wal.append(1, Bytes::from_static(b"before")))
            .unwrap();
        let syncs = wal.sync_count();
        arm("wal::sync::before", tmp.path());
        let err = rt
            .block_on(wal.append(1, Bytes::from_static(b"unsynced")))
            .unwrap_err();
        fail::remove("wal::sync::before");
        assert!(
            matches!(
                &err,
                WalError::Io {
                    op: "fdatasync",
                    ..
                }
            ),
            "{err}"
        );
        match rt.block_on(wal.append(1, Bytes::from_static(b"later"))) {
            Err(WalError::Failed(msg)) => assert!(msg.contains("injected"), "{msg}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert_eq!(
            wal.sync_count(),
            syncs,
            "the failed sync must not be retried"
        );
        drop(wal);
        let (wal, _) = open(opts(tmp.path(), 4096));
        let replayed = replay_all(&wal, 1);
        assert_eq!(replayed[0], (1, 1, b"before".to_vec()));
        assert!(
            replayed.len() <= 2,
            "the unacknowledged record may or may not survive"
        );
        assert_eq!(wal.next_lsn(), replayed.len() as u64 + 1);
    }

    #[test]
    fn an_error_after_the_sync_leaves_the_unacknowledged_record_durable() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = open(opts(tmp.path(), 4096));
        arm("wal::sync::after", tmp.path());
        let result = rt().block_on(wal.append(2, Bytes::from_static(b"synced, not acked")));
        fail::remove("wal::sync::after");
        assert!(result.is_err());
        drop(wal);
        let (wal, _) = open(opts(tmp.path(), 4096));
        assert_eq!(
            replay_all(&wal, 1),
            vec![(1, 2, b"synced, not acked".to_vec())]
        );
    }

    #[test]
    fn the_writer_never_starts_a_segment_before_the_previous_one_is_synced() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = open(opts(tmp.path(), 100));
        arm("wal::sync::before", tmp.path());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let results = runtime.block_on(async {
            let tasks: Vec<_> = (0..8u8)
                .map(|i| {
                    let wal = wal.clone();
                    tokio::spawn(async move { wal.append(i, Bytes::from(vec![i; 60])).await })
                })
                .collect();
            let mut results = Vec::new();
            for t in tasks {
                results.push(t.await.unwrap());
            }
            results
        });
        fail::remove("wal::sync::before");
        assert!(
            results.iter().all(|r| r.is_err()),
            "nothing was synced, nothing may be acknowledged"
        );
        // Every record needs a segment of its own, but the first one was never synced.
        assert_eq!(segment_files(tmp.path()).len(), 1);
    }

    #[test]
    fn a_failed_rotation_fails_the_append_and_the_log_reopens_intact() {
        let tmp = tempfile::tempdir().unwrap();
        let (wal, _) = open(opts(tmp.path(), 100));
        let rt = rt();
        rt.block_on(wal.append(1, Bytes::from(vec![1u8; 60])))
            .unwrap();
        arm("wal::rotate::before", tmp.path());
        let err = rt
            .block_on(wal.append(1, Bytes::from(vec![2u8; 60])))
            .unwrap_err();
        fail::remove("wal::rotate::before");
        assert!(
            matches!(
                err,
                WalError::Io {
                    op: "create segment",
                    ..
                }
            ),
            "{err}"
        );
        drop(wal);
        let (wal, report) = open(opts(tmp.path(), 100));
        assert_eq!((report.segments, report.records), (1, 1));
        assert_eq!(
            rt.block_on(wal.append(1, Bytes::from(vec![3u8; 60])))
                .unwrap()
                .0,
            2
        );
    }
}

#[test]
fn a_log_recovered_without_a_writer_replays_and_reads_what_open_would_and_refuses_appends() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = open(opts(dir.path(), 1 << 20));
    let rt = rt();
    let mut positions = Vec::new();
    for i in 0..3u8 {
        positions.push(rt.block_on(wal.append(1, Bytes::from(vec![i; 5]))).unwrap());
    }
    rt.block_on(wal.close()).unwrap();
    drop(wal);
    // A torn tail, as a crash leaves it: recovery truncates it whichever way the log is opened.
    let seg = segment_path(dir.path(), 1);
    let full = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[7; 9])
        .unwrap();

    let (recovered, report) = Wal::recover(opts(dir.path(), 1 << 20)).unwrap();
    assert_eq!(
        (report.records, report.last_lsn, report.truncated_bytes),
        (3, 3, 9)
    );
    assert_eq!(
        fs::metadata(&seg).unwrap().len(),
        full,
        "the torn tail is cut"
    );
    let records: Vec<Record> = recovered.replay(0).unwrap().map(Result::unwrap).collect();
    assert_eq!(records.iter().map(|r| r.lsn).collect::<Vec<_>>(), [1, 2, 3]);
    for (rec, (lsn, pos)) in records.iter().zip(&positions) {
        assert_eq!((rec.lsn, rec.pos), (*lsn, *pos));
        assert_eq!(recovered.read(*pos).unwrap().payload, rec.payload);
    }
    assert_eq!(recovered.next_lsn(), 4);
    let refused = rt.block_on(recovered.append(1, Bytes::from_static(b"x")));
    assert!(matches!(refused, Err(WalError::Closed)), "{refused:?}");
    assert!(
        matches!(
            Wal::open(opts(dir.path(), 1 << 20)),
            Err(WalError::InUse { .. })
        ),
        "a recovered handle holds the directory's lock as an open log does"
    );
    rt.block_on(recovered.close()).unwrap();
    drop(recovered);

    let (wal, again) = open(opts(dir.path(), 1 << 20));
    assert_eq!((again.records, again.truncated_bytes), (3, 0));
    assert_eq!(
        rt.block_on(wal.append(1, Bytes::from_static(b"x")))
            .unwrap()
            .0,
        4
    );
}
