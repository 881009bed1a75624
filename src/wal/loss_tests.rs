//! Tests of the WAL with its manifest: lost segments, damaged synced records, a log younger than its
//! checkpoint — refused unless salvaging, and new LSNs always above what was lost.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::RECORD_HEADER_LEN;
use super::segment::segment_path;
use super::tests::{
    append_all, expect_corrupt, flip_bit, numbered, replay_all, rt, sample, segment_files,
};
use super::*;

/// A log in `<root>/wal` with its manifest beside it.
fn with_manifest(root: &Path, segment_size: u64) -> WalOptions {
    WalOptions::new(root.join("wal"), segment_size)
}

fn salvaging(o: &WalOptions) -> WalOptions {
    WalOptions {
        salvage: true,
        ..o.clone()
    }
}

fn expect_missing(result: Result<(Wal, RecoveryReport), WalError>) -> String {
    match result {
        Err(e @ WalError::Missing { .. }) => e.to_string(),
        Err(other) => panic!("expected Missing, got {other}"),
        Ok((_, r)) => panic!("expected Missing, the WAL opened: {r:?}"),
    }
}

/// A log of several segments holding `n` records; returns them and the segment files.
fn several_segments(o: &WalOptions, n: usize) -> (Vec<(u8, Vec<u8>)>, Vec<PathBuf>) {
    let records = sample(n, 40);
    {
        let (wal, _) = Wal::open(o.clone()).unwrap();
        append_all(&wal, &records);
    }
    let segs = segment_files(&o.dir);
    assert!(segs.len() >= 3, "{segs:?}");
    (records, segs)
}

fn name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn a_new_log_records_its_manifest_beside_its_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 1 << 20);
    assert_eq!(
        o.manifest.as_deref(),
        Some(tmp.path().join("wal.manifest").as_path())
    );
    let (wal, _) = Wal::open(o.clone()).unwrap();
    append_all(&wal, &sample(3, 10));
    drop(wal);
    assert_eq!(
        fs::metadata(tmp.path().join("wal.manifest")).unwrap().len(),
        192
    );
    let (wal, report) = Wal::open(o).unwrap();
    assert_eq!((report.records, wal.next_lsn()), (3, 4));
}

#[test]
fn damage_to_the_final_synced_record_is_refused_not_truncated_as_a_torn_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 1 << 20);
    let records = sample(4, 40);
    let positions = {
        let (wal, _) = Wal::open(o.clone()).unwrap();
        append_all(&wal, &records)
    };
    let (_, last) = positions[3];
    let seg = segment_path(&o.dir, 1);
    flip_bit(&seg, last.offset + RECORD_HEADER_LEN as u64 + 1, 1);
    let (segment, offset, reason) = expect_corrupt(Wal::open(o.clone()));
    assert_eq!((segment, offset), (seg.clone(), last.offset));
    assert!(
        reason.contains("durable mark") && reason.contains("not a torn tail"),
        "{reason}"
    );

    let (wal, report) = Wal::open(salvaging(&o)).unwrap();
    assert_eq!(report.salvaged_lsns, 1);
    assert_eq!(replay_all(&wal, 1), numbered(&records[..3], 1));
    assert_eq!(
        wal.next_lsn(),
        5,
        "the dropped LSN is never handed out again"
    );
}

#[test]
fn synced_records_cut_off_at_a_record_boundary_are_missing_not_a_clean_end() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 1 << 20);
    let positions = {
        let (wal, _) = Wal::open(o.clone()).unwrap();
        append_all(&wal, &sample(4, 40))
    };
    let seg = segment_path(&o.dir, 1);
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(positions[2].1.offset)
        .unwrap();
    let msg = expect_missing(Wal::open(o.clone()));
    assert!(
        msg.contains("up to LSN 4") && msg.contains("ends at LSN 2"),
        "{msg}"
    );
    let (wal, report) = Wal::open(salvaging(&o)).unwrap();
    assert_eq!((report.salvaged_lsns, wal.next_lsn()), (2, 5));
}

#[test]
fn an_unsynced_tail_above_the_durable_mark_is_still_truncated_as_torn() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 1 << 20);
    let records = sample(3, 40);
    {
        let (wal, _) = Wal::open(o.clone()).unwrap();
        append_all(&wal, &records);
    }
    let seg = segment_path(&o.dir, 1);
    let mut bytes = fs::read(&seg).unwrap();
    bytes.extend_from_slice(&[7u8; 30]);
    fs::write(&seg, bytes).unwrap();
    let (wal, report) = Wal::open(o).unwrap();
    assert_eq!(report.truncated_bytes, 30);
    assert_eq!(replay_all(&wal, 1), numbered(&records, 1));
}

#[test]
fn a_deleted_last_segment_is_refused_naming_it_and_salvage_continues_above_it() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 256);
    let (_, segs) = several_segments(&o, 12);
    let last = segs.last().unwrap();
    fs::remove_file(last).unwrap();
    let msg = expect_missing(Wal::open(o.clone()));
    assert!(
        msg.contains(&name(last)) && msg.contains("--salvage-wal"),
        "{msg}"
    );
    let (wal, report) = Wal::open(salvaging(&o)).unwrap();
    assert!(report.salvaged_lsns >= 1);
    assert_eq!(wal.next_lsn(), 13, "above every synced LSN");
    drop(wal);
    let (wal, report) = Wal::open(o).unwrap();
    assert!(
        report.salvaged.is_empty(),
        "a salvaged log opens again without salvage"
    );
    assert_eq!(wal.next_lsn(), 13);
}

#[test]
fn a_deleted_first_segment_is_refused_unless_it_lies_below_the_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 256);
    let (records, segs) = several_segments(&o, 12);
    let second: Lsn = name(&segs[1])[..20].parse().unwrap();
    fs::remove_file(&segs[0]).unwrap();
    let msg = expect_missing(Wal::open(o.clone()));
    assert!(
        msg.contains(&name(&segs[0])) && msg.contains(&format!("LSNs 1 to {}", second - 1)),
        "{msg}"
    );

    // Committed (below the checkpoint's low-water mark): nothing is lost, a warning is enough.
    let committed = WalOptions {
        checkpoint_low_water: Some(second),
        ..o.clone()
    };
    let (wal, report) = Wal::open(committed).unwrap();
    assert_eq!(report.missing_committed.len(), 1, "{report:?}");
    assert_eq!(
        replay_all(&wal, second),
        numbered(&records[second as usize - 1..], second)
    );
}

#[test]
fn every_segment_deleted_is_refused_and_salvage_continues_above_the_durable_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 256);
    let (_, segs) = several_segments(&o, 12);
    for s in &segs {
        fs::remove_file(s).unwrap();
    }
    let msg = expect_missing(Wal::open(o.clone()));
    assert!(msg.contains("every segment is missing"), "{msg}");
    let (wal, report) = Wal::open(salvaging(&o)).unwrap();
    assert_eq!((report.salvaged_lsns, wal.next_lsn()), (12, 13));
}

#[test]
fn a_log_younger_than_its_checkpoint_is_refused_and_salvage_starts_at_the_low_water_mark() {
    let tmp = tempfile::tempdir().unwrap();
    // The directory and its manifest both gone: only the checkpoint remembers the log.
    let o = WalOptions {
        checkpoint_low_water: Some(201),
        ..with_manifest(tmp.path(), 1 << 20)
    };
    let msg = expect_missing(Wal::open(o.clone()));
    assert!(
        msg.contains("younger than its checkpoint") && msg.contains("LSN 201"),
        "{msg}"
    );
    let (wal, _) = Wal::open(salvaging(&o)).unwrap();
    assert_eq!(wal.next_lsn(), 201);
    let (lsn, _) = rt()
        .block_on(wal.append(1, Bytes::from_static(b"new")))
        .unwrap();
    assert_eq!(lsn, 201, "never an LSN the checkpoint counts as committed");
}

#[test]
fn a_log_from_before_manifests_gets_one_and_opens_as_before() {
    let tmp = tempfile::tempdir().unwrap();
    let bare = WalOptions {
        manifest: None,
        ..with_manifest(tmp.path(), 256)
    };
    let (records, _) = several_segments(&bare, 12);
    let (wal, report) = Wal::open(with_manifest(tmp.path(), 256)).unwrap();
    assert!(report.salvaged.is_empty());
    assert_eq!(replay_all(&wal, 1), numbered(&records, 1));
    assert!(tmp.path().join("wal.manifest").exists());
}

#[test]
fn releasing_segments_moves_the_manifest_so_a_reopen_finds_nothing_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 256);
    let (records, _) = several_segments(&o, 12);
    let (wal, _) = Wal::open(o.clone()).unwrap();
    assert!(wal.release_below(8).unwrap() >= 1);
    drop(wal);
    let (wal, report) = Wal::open(o).unwrap();
    assert!(report.salvaged.is_empty() && report.missing_committed.is_empty());
    assert_eq!(replay_all(&wal, 8), numbered(&records[7..], 8));
}

#[test]
fn a_damaged_manifest_is_refused_and_salvage_rebuilds_it() {
    let tmp = tempfile::tempdir().unwrap();
    let o = with_manifest(tmp.path(), 1 << 20);
    let records = sample(3, 10);
    {
        let (wal, _) = Wal::open(o.clone()).unwrap();
        append_all(&wal, &records);
    }
    let path = o.manifest.clone().unwrap();
    fs::write(&path, vec![0u8; 192]).unwrap();
    match Wal::open(o.clone()) {
        Err(WalError::Manifest { path: p, .. }) => assert_eq!(p, path),
        Err(e) => panic!("expected Manifest, got {e}"),
        Ok(_) => panic!("expected Manifest, the WAL opened"),
    }
    let (wal, _) = Wal::open(salvaging(&o)).unwrap();
    assert_eq!(replay_all(&wal, 1), numbered(&records, 1));
}

#[cfg(feature = "failpoints")]
#[test]
fn opening_a_log_fdatasyncs_its_recovered_tail_before_anything_counts_as_durable() {
    let tmp = tempfile::tempdir().unwrap();
    let o = super::tests::opts(tmp.path(), 1 << 20);
    {
        let (wal, _) = Wal::open(o.clone()).unwrap();
        append_all(&wal, &sample(2, 10));
    }
    fail::cfg(
        "wal::open::sync",
        &format!("return({})", tmp.path().display()),
    )
    .unwrap();
    let result = Wal::open(o.clone());
    fail::remove("wal::open::sync");
    match result {
        Err(WalError::Io { op, .. }) => assert_eq!(op, "fdatasync the recovered tail"),
        Err(e) => panic!("expected the tail's fdatasync to fail the open, got {e}"),
        Ok(_) => panic!("the open did not fdatasync the recovered tail"),
    }
    let (wal, _) = Wal::open(o).unwrap();
    assert_eq!(wal.next_lsn(), 3);
}
