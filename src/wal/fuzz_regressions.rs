//! Inputs the `wal_recovery` fuzz target (fuzz/) found, as tests.

use std::path::Path;

use bytes::Bytes;

use super::segment::{segment_path, SegmentHeader};
use super::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A log that has no LSN left to hand out must be refused at open (naming the segment) or refuse
/// the append with an error that says so — never give out LSN u64::MAX and wrap the counter.
fn assert_no_lsn_wraps(dir: &Path, salvage: bool) {
    let opts = WalOptions {
        salvage,
        manifest: None,
        ..WalOptions::new(dir, 1 << 20)
    };
    let wal = match Wal::open(opts) {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("18446744073709551615"), "{msg}");
            return;
        }
        Ok((wal, _)) => wal,
    };
    let rt = rt();
    let mut lsns = Vec::new();
    for _ in 0..2 {
        match rt.block_on(wal.append(1, Bytes::from_static(b"x"))) {
            Ok((lsn, _)) => lsns.push(lsn),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("LSN")
                        && !msg.contains("panicked")
                        && !msg.contains("stopped unexpectedly"),
                    "the append must be refused for want of LSNs, not by a dead writer: {msg}"
                );
                return;
            }
        }
    }
    assert!(lsns[0] < lsns[1], "LSNs went backwards: {lsns:?}");
}

#[test]
fn a_segment_that_starts_at_the_last_lsn_does_not_wrap_the_lsn_counter() {
    // A valid, empty segment 18446744073709551615: recovery accepts it and the next LSN is
    // u64::MAX. Today the first append panics the writer thread ("attempt to add with overflow"
    // at src/wal/writer.rs:296:25); a release build wraps the counter to 0.
    let dir = tempfile::tempdir().unwrap();
    let header = SegmentHeader {
        first_lsn: u64::MAX,
        flags: 0,
    };
    std::fs::write(segment_path(dir.path(), u64::MAX), header.encode()).unwrap();
    assert_no_lsn_wraps(dir.path(), false);
}

#[test]
fn salvage_setting_aside_a_segment_named_after_the_last_lsn_does_not_wrap_the_lsn_counter() {
    // The fuzzer's input (fuzz/artifacts/wal_recovery/crash-3a63516d…), reduced: an empty segment
    // file, and a damaged one named 18446744073709551615.wal. Salvage sets both aside and takes
    // the name as the floor of the next LSN, so the next LSN is u64::MAX and the first append
    // panics the writer thread ("attempt to add with overflow" at src/wal/writer.rs:296:25).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(segment_path(dir.path(), 1_405_617_392_705), b"").unwrap();
    let damaged: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x18, 0xfa, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];
    std::fs::write(segment_path(dir.path(), u64::MAX), damaged).unwrap();
    assert_no_lsn_wraps(dir.path(), true);
}

#[test]
fn salvage_setting_aside_a_segment_that_holds_a_record_with_the_last_lsn_does_not_overflow() {
    // The fuzzer's input (fuzz/artifacts/wal_recovery/crash-f30ca418…), reduced: a segment
    // 18446744073709551615.wal with a damaged header and, after it, a CRC-clean empty record
    // carrying LSN u64::MAX. Salvage sets the segment aside and raises the LSN floor past the
    // highest LSN found in it: "attempt to add with overflow" at src/wal/recovery.rs:228:38.
    let dir = tempfile::tempdir().unwrap();
    let mut seg = vec![0xffu8; 32];
    let lsn = u64::MAX;
    let header = super::record::encode_header(0, lsn, 0xff, &super::record::payload_hasher(b""));
    seg.extend_from_slice(&header);
    std::fs::write(segment_path(dir.path(), u64::MAX), &seg).unwrap();
    let opts = WalOptions {
        salvage: true,
        manifest: None,
        ..WalOptions::new(dir.path(), 1 << 20)
    };
    // Whatever it decides (refuse: no LSN is left above the one found; or open), it must not
    // panic, and an open log must not wrap the counter.
    let opened = std::panic::catch_unwind(|| Wal::open(opts.clone()).map(|(_, r)| r));
    let report = opened.expect("recovery panicked");
    if report.is_ok() {
        assert_no_lsn_wraps(dir.path(), false);
    }
}

/// A log of three records in segment 1 under `dir/wal`, closed, with its manifest at
/// `dir/manifest`; returns the options that open it (salvage as given).
fn three_records_with_a_manifest(dir: &Path, salvage: bool) -> WalOptions {
    let opts = WalOptions {
        salvage,
        manifest: Some(dir.join("manifest")),
        ..WalOptions::new(dir.join("wal"), 1 << 20)
    };
    let (wal, _) = Wal::open(opts.clone()).expect("a new log opens");
    let rt = rt();
    for _ in 0..3 {
        rt.block_on(wal.append(1, Bytes::from_static(b"x")))
            .expect("append");
    }
    rt.block_on(wal.close()).expect("close");
    opts
}

/// Rewrites the manifest's durable mark to say records up to LSN `lsn` were synced.
fn mark_synced_up_to(opts: &WalOptions, lsn: Lsn) {
    let path = opts.manifest.as_deref().expect("a manifest");
    let found = manifest::read(path).expect("read").expect("a manifest");
    let extent = found.extent.expect("an extent");
    let mark = manifest::Mark {
        lsn,
        ..found.mark.expect("a mark")
    };
    manifest::Manifest::create(path, extent, mark).expect("rewrite the manifest");
}

/// Recovery must refuse (naming u64::MAX, the LSN no log gets to) rather than overflow or open.
fn assert_refused_naming_the_last_lsn(opts: &WalOptions) {
    let opened = std::panic::catch_unwind(|| Wal::open(opts.clone()).map(|(_, r)| r));
    match opened.expect("recovery panicked") {
        Ok(report) => panic!("a log whose mark says LSN u64::MAX was synced opened: {report:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("18446744073709551615"), "{msg}");
        }
    }
}

#[test]
fn a_durable_mark_at_the_last_lsn_is_refused_without_salvage_instead_of_overflowing() {
    // A manifest whose durable mark says records up to LSN u64::MAX were synced, over a log of
    // three: recovery counts the records it lacks and raises the next LSN past the mark's, which
    // overflowed ("attempt to add with overflow" in Recovery::missing).
    let dir = tempfile::tempdir().unwrap();
    let opts = three_records_with_a_manifest(dir.path(), false);
    mark_synced_up_to(&opts, u64::MAX);
    assert_refused_naming_the_last_lsn(&opts);
}

#[test]
fn a_durable_mark_at_the_last_lsn_is_refused_with_salvage_instead_of_overflowing() {
    // The same with salvage, which would accept the loss and go on above the mark: no LSN is left
    // there, so it must refuse too.
    let dir = tempfile::tempdir().unwrap();
    let opts = three_records_with_a_manifest(dir.path(), true);
    mark_synced_up_to(&opts, u64::MAX);
    assert_refused_naming_the_last_lsn(&opts);
}

#[test]
fn salvaging_a_damaged_tail_under_a_durable_mark_at_the_last_lsn_refuses_before_touching_the_segment(
) {
    // The last segment's second record is damaged and the mark says LSN u64::MAX was synced:
    // salvage raised the floor past the mark's LSN (overflow in Recovery::segment). It must refuse
    // before it truncates anything.
    let dir = tempfile::tempdir().unwrap();
    let opts = three_records_with_a_manifest(dir.path(), true);
    mark_synced_up_to(&opts, u64::MAX);
    let seg = segment_path(&opts.dir, 1);
    let mut bytes = std::fs::read(&seg).unwrap();
    let second = super::segment::SEGMENT_HEADER_LEN as usize + RECORD_HEADER_LEN + 1;
    bytes[second + RECORD_HEADER_LEN] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    assert_refused_naming_the_last_lsn(&opts);
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "the segment was changed"
    );
}

#[test]
fn salvage_finding_a_record_at_the_last_lsn_after_damage_in_a_lower_segment_does_not_overflow() {
    // The input class the wal_recovery harness used to skip: a segment named 1, below segment 5,
    // whose second record is damaged and after which a CRC-clean record carries LSN u64::MAX. Salvage looks for
    // valid records after the damage to raise the LSN floor above them; one at u64::MAX is not a
    // plausible successor (more LSNs than bytes away) and must neither be taken nor overflow.
    let dir = tempfile::tempdir().unwrap();
    let mut seg = SegmentHeader {
        first_lsn: 1,
        flags: 0,
    }
    .encode()
    .to_vec();
    let hasher = super::record::payload_hasher;
    seg.extend_from_slice(&super::record::encode_header(1, 1, 1, &hasher(b"a")));
    seg.extend_from_slice(b"a");
    seg.extend_from_slice(&[0xee; RECORD_HEADER_LEN + 1]);
    seg.extend_from_slice(&super::record::encode_header(0, u64::MAX, 1, &hasher(b"")));
    seg.extend_from_slice(&super::record::encode_header(0, u64::MAX, 1, &hasher(b"")));
    std::fs::write(segment_path(dir.path(), 1), &seg).unwrap();
    let next = SegmentHeader {
        first_lsn: 5,
        flags: 0,
    };
    std::fs::write(segment_path(dir.path(), 5), next.encode()).unwrap();
    let opts = WalOptions {
        salvage: true,
        manifest: None,
        ..WalOptions::new(dir.path(), 1 << 20)
    };
    let opened = std::panic::catch_unwind(|| Wal::open(opts.clone()).map(|(_, r)| r));
    let report = opened.expect("recovery panicked").expect("salvage opens");
    assert_eq!((report.records, report.last_lsn), (1, 4));
    assert_no_lsn_wraps(dir.path(), false);
}

#[test]
fn appends_stop_below_the_last_lsn_recovery_accepts_so_the_log_opens_again() {
    // The wal_recovery fuzz target's input (fuzz/artifacts/wal_recovery/crash-949d8511…), reduced:
    // a log that recovery lets go on at MAX_NEXT_LSN took an append there, and its next open
    // refused it ("would number records from 18446744069414584320, past the last LSN it may give
    // out"). Records must stop below MAX_NEXT_LSN, the append past them refused for want of LSNs.
    let dir = tempfile::tempdir().unwrap();
    let first = super::recovery::MAX_NEXT_LSN - 1;
    let header = SegmentHeader {
        first_lsn: first,
        flags: 0,
    };
    std::fs::write(segment_path(dir.path(), first), header.encode()).unwrap();
    let opts = WalOptions {
        manifest: None,
        ..WalOptions::new(dir.path(), 1 << 20)
    };
    let (wal, _) = Wal::open(opts.clone()).expect("a log one LSN short of the end opens");
    let rt = rt();
    let (lsn, _) = rt
        .block_on(wal.append(1, Bytes::from_static(b"x")))
        .expect("the last LSN below MAX_NEXT_LSN is given out");
    assert_eq!(lsn, first);
    let refused = rt.block_on(wal.append(1, Bytes::from_static(b"y")));
    assert!(
        matches!(refused, Err(WalError::LsnExhausted { .. })),
        "{refused:?}"
    );
    rt.block_on(wal.close()).expect("close");
    drop(wal);
    let (wal, report) = Wal::open(opts).expect("the log opens again");
    assert_eq!((report.records, report.last_lsn), (1, first));
    let refused = rt.block_on(wal.append(1, Bytes::from_static(b"z")));
    assert!(
        matches!(refused, Err(WalError::LsnExhausted { .. })),
        "{refused:?}"
    );
}
