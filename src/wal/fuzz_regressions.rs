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
