//! The harnesses behind the libFuzzer targets in `fuzz_targets/`: one function per target, each
//! taking the fuzzer's bytes. They live in a library so that the targets are one line each, and the
//! seed writer (`examples/seeds.rs`) and the tests here use the same input formats.
//!
//! Every harness feeds hostile bytes to one decoder through its public API and checks, beyond "no
//! panic, no hang, no runaway allocation", what the decoder promises:
//!
//! | target         | decoder                                          | also checked |
//! |----------------|--------------------------------------------------|--------------|
//! | `framed`       | `protocol::read_hello`, `read_block`, `ServerFrame::read` | what decodes re-encodes to the bytes it came from |
//! | `wal_record`   | WAL records of one segment: recovery's scan, replay, `Wal::read`, `node::decode` | see [`check_wal`] |
//! | `wal_recovery` | a directory of up to 8 fuzzed segment files: `Wal::open` with and without salvage | see [`check_wal`] |
//! | `checkpoint`   | `Checkpointer::latest` (snapshot JSON), `claims::list_from`, `plan_takeover`, carried-block objects | a snapshot re-encodes to itself; a carried object re-encodes byte for byte |
//! | `config`       | `Config::parse` (TOML, then `validate`)          | an accepted config prints (`hdfs-ingest config`) as TOML that parses back to the same text |
//!
//! Checksums are the one thing a fuzzer cannot guess, so the WAL harnesses recompute the CRCs of
//! what the input frames as records (and segment headers) unless a flag bit says to leave them:
//! the fuzzer then explores lengths, LSNs, kinds and payloads behind valid checksums, and damaged
//! checksums as well.

pub mod seeds;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::{Bytes, BytesMut};
use hdfs_ingest::config::{Config, NodeRole};
use hdfs_ingest::protocol::{self, ServerFrame};
use hdfs_ingest::wal::{Record, Wal, WalError, WalOptions};
use strategies::store::CheckpointStore;
use strategies::{paths, Checkpointer, ObjectStoreBackend, Snapshot, Strategy};

/// Size of a WAL segment header.
pub const SEGMENT_HEADER_LEN: usize = 32;
/// Size of a WAL record header.
pub const RECORD_HEADER_LEN: usize = hdfs_ingest::wal::RECORD_HEADER_LEN;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime")
    })
}

// ---------------------------------------------------------------------------------------------
// framed

/// `framed` input: `mode u8 | stream`. `mode % 3`: 0 = a sender's stream (HELLO, then BLOCKs), as a
/// node reads it; 1 = BLOCKs only; 2 = a node's stream (WELCOME, ACK, ROLE, ERROR), as a sender reads
/// it. `max_block_size` is `1 KiB << ((mode / 3) % 11)` (1 KiB to 1 MiB).
pub fn framed(data: &[u8]) {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let max = 1024u64 << ((mode / 3) % 11);
    futures::executor::block_on(async {
        match mode % 3 {
            0 => {
                let mut r = stream;
                match protocol::read_hello(&mut r).await {
                    Ok(hello) => {
                        let used = &stream[..stream.len() - r.len()];
                        assert_eq!(&hello.encode()[..], used, "a HELLO re-encodes to its bytes");
                        blocks(r, max).await;
                    }
                    Err(e) => described(&e),
                }
            }
            1 => blocks(stream, max).await,
            _ => server_frames(stream).await,
        }
    });
}

fn described(e: &protocol::ProtocolError) {
    assert!(!e.to_string().is_empty());
    let _ = e.code();
}

async fn blocks(mut r: &[u8], max: u64) {
    loop {
        let start = r;
        match protocol::read_block(&mut r, max).await {
            Ok(None) => {
                assert!(start.is_empty(), "a clean EOF only between frames");
                return;
            }
            Ok(Some(block)) => {
                let used = &start[..start.len() - r.len()];
                assert!(!block.data.is_empty() && block.data.len() as u64 <= max);
                let mut again = protocol::block_header(block.seq, &block.data).to_vec();
                again.extend_from_slice(&block.data);
                assert_eq!(again, used, "a BLOCK re-encodes to its bytes");
            }
            Err(e) => {
                if let protocol::ProtocolError::BlockTooLarge { len, max: m, .. } = e {
                    assert!(len > m);
                }
                return described(&e);
            }
        }
    }
}

async fn server_frames(mut r: &[u8]) {
    loop {
        let start = r;
        match ServerFrame::read(&mut r).await {
            Ok(None) => return assert!(start.is_empty(), "a clean EOF only between frames"),
            Ok(Some(frame)) => {
                let used = &start[..start.len() - r.len()];
                let mut enc = BytesMut::new();
                frame.encode(&mut enc);
                let mut back = &enc[..];
                let again = ServerFrame::read(&mut back).await;
                assert!(
                    matches!(&again, Ok(Some(f)) if *f == frame),
                    "{frame:?} decodes back as {again:?}"
                );
                if !matches!(frame, ServerFrame::Error { .. }) {
                    // An ERROR's unknown code reads as Internal and its text lossily: not byte-exact.
                    assert_eq!(&enc[..], used, "{frame:?} re-encodes to its bytes");
                }
            }
            Err(e) => return described(&e),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// WAL

/// Recomputes the CRC of every record that `body` (the bytes after a segment header) frames, from
/// the start while each record's length fits.
pub fn fix_record_crcs(body: &mut [u8]) {
    let mut p = 0usize;
    while p + RECORD_HEADER_LEN <= body.len() {
        let len = u32::from_le_bytes(body[p..p + 4].try_into().expect("4 bytes")) as usize;
        let Some(end) = (p + RECORD_HEADER_LEN).checked_add(len) else {
            return;
        };
        if end > body.len() {
            return;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&body[p..p + 4]);
        h.update(&body[p + 8..end]);
        body[p + 4..p + 8].copy_from_slice(&h.finalize().to_le_bytes());
        p = end;
    }
}

/// A segment header: `b"HIWALSEG" | version 1 | flags | first LSN | 0 | crc32`.
pub fn segment_header(first_lsn: u64, flags: u32) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    h[0..8].copy_from_slice(b"HIWALSEG");
    h[8..12].copy_from_slice(&1u32.to_le_bytes());
    h[12..16].copy_from_slice(&flags.to_le_bytes());
    h[16..24].copy_from_slice(&first_lsn.to_le_bytes());
    fix_header_crc(&mut h);
    h
}

fn fix_header_crc(segment: &mut [u8]) {
    if segment.len() >= SEGMENT_HEADER_LEN {
        let crc = crc32fast::hash(&segment[..28]);
        segment[28..32].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A scratch directory for this process and thread, emptied before each input (on tmpfs when there
/// is one: recovery fsyncs). The directory and the WAL's lock file stay from one input to the next
/// (what an input's log finds there is the same: an empty directory but for an unlocked `LOCK`);
/// the rest is deleted.
fn scratch_dir() -> PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    let base = DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            tempfile::Builder::new()
                .prefix("hdfs-ingest-fuzz")
                .tempdir_in(shm)
        } else {
            tempfile::Builder::new()
                .prefix("hdfs-ingest-fuzz")
                .tempdir()
        }
        .expect("a scratch directory")
    });
    // One per thread: the tests run in parallel (libFuzzer runs one input at a time).
    let dir = base
        .path()
        .join(format!("wal-{:?}", std::thread::current().id()));
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.expect("list the scratch directory");
                if entry.file_name() == hdfs_ingest::wal::LOCK_FILE {
                    continue;
                }
                let path = entry.path();
                if entry.file_type().expect("file type").is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                }
                .unwrap_or_else(|e| {
                    panic!("empty the scratch directory ({}): {e}", path.display())
                });
            }
        }
        Err(_) => std::fs::create_dir(&dir).expect("create the scratch directory"),
    }
    dir
}

/// The file name of segment `first_lsn`.
pub fn segment_name(first_lsn: u64) -> String {
    format!("{first_lsn:020}.wal")
}

/// `wal_record` input: `flags u8 | record bytes`. The records are written after a valid header of
/// segment 1 as the only segment of a log. Flags: bit 0 leaves the record CRCs as they are (else
/// they are recomputed), bit 1 opens with salvage.
pub fn wal_record(data: &[u8]) {
    if let Some((dir, salvage)) = write_record_dir(data) {
        check_wal(&dir, salvage, appends_to(data));
    }
}

/// One input in this many (by its CRC32, so that a crash replays) also goes through the writer:
/// see [`check_wal`].
pub const APPEND_EVERY: u32 = 16;

/// Whether [`check_wal`] appends to the log `data` makes (one input in [`APPEND_EVERY`]).
pub fn appends_to(data: &[u8]) -> bool {
    crc32fast::hash(data).is_multiple_of(APPEND_EVERY)
}

fn write_record_dir(data: &[u8]) -> Option<(PathBuf, bool)> {
    let (&flags, records) = data.split_first()?;
    let dir = scratch_dir();
    let mut seg = segment_header(1, 0).to_vec();
    seg.extend_from_slice(records);
    if flags & 1 == 0 {
        fix_record_crcs(&mut seg[SEGMENT_HEADER_LEN..]);
    }
    std::fs::write(dir.join(segment_name(1)), &seg).expect("write segment");
    Some((dir, flags & 2 != 0))
}

/// The most segment files a `wal_recovery` input makes.
pub const MAX_SEGMENTS: usize = 8;

/// `wal_recovery` input: `flags u8 | (name_lsn u64 LE | len u16 LE | len bytes)*` — up to
/// [`MAX_SEGMENTS`] files `<name_lsn:020>.wal` with those bytes (the last one gets what is left if it
/// is short). Flags: bit 0 opens with salvage; bit 1 leaves segment header CRCs as they are (else
/// they are recomputed); bit 2 leaves record CRCs as they are; bit 3 adds a leftover
/// `<name>.wal.tmp` of the first segment's bytes (a crash during segment creation).
pub fn wal_recovery(data: &[u8]) {
    if let Some((dir, salvage)) = write_recovery_dir(data) {
        check_wal(&dir, salvage, appends_to(data));
    }
}

fn write_recovery_dir(data: &[u8]) -> Option<(PathBuf, bool)> {
    let (&flags, mut rest) = data.split_first()?;
    let dir = scratch_dir();
    let mut first = None;
    for _ in 0..MAX_SEGMENTS {
        if rest.len() < 10 {
            break;
        }
        let name = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let len = u16::from_le_bytes([rest[8], rest[9]]) as usize;
        rest = &rest[10..];
        let take = len.min(rest.len());
        let mut seg = rest[..take].to_vec();
        rest = &rest[take..];
        if flags & 2 == 0 {
            fix_header_crc(&mut seg);
        }
        if flags & 4 == 0 && seg.len() > SEGMENT_HEADER_LEN {
            fix_record_crcs(&mut seg[SEGMENT_HEADER_LEN..]);
        }
        std::fs::write(dir.join(segment_name(name)), &seg).expect("write segment");
        first.get_or_insert((name, seg));
    }
    if let (true, Some((name, seg))) = (flags & 8 != 0, first) {
        std::fs::write(dir.join(format!("{name:020}.wal.tmp")), seg).expect("write temporary");
    }
    Some((dir, flags & 1 != 0))
}

fn all_records(wal: &Wal) -> Vec<Record> {
    wal.replay(0)
        .expect("replay starts")
        .collect::<Result<Vec<_>, _>>()
        .unwrap_or_else(|e| panic!("replay refuses a log recovery accepted: {e}"))
}

/// Recovers the log in `dir` and checks what the WAL promises about it:
///
/// - without salvage, a refusal is [`WalError::Corrupt`] (it names segment and offset), or
///   [`WalError::LsnExhausted`] (no LSN left to go on with); with salvage, the log opens unless
///   no LSN is left;
/// - replay yields every record recovery counted, in LSN order, with no error, and
///   [`Wal::read`] gives each one back from its position; `node::decode` takes every payload
///   without panicking;
/// - the next LSN is above every record's;
/// - the recovered log recovers again without salvage to the same records (LSNs, positions and
///   payloads), with nothing truncated or salvaged ("a salvaged log opens again without salvage");
/// - with `append`: the log opens with its writer ([`Wal::open`]), an append to it gets the next
///   LSN, and after a close it is there, at the position the append gave, on one more recovery.
///
/// Every input gets all but the last. Recovery is [`Wal::recover`]: the same recovery as
/// [`Wal::open`] on the same files, without starting a writer and a syncer thread, whose start,
/// hand-offs and join dominate an open on a busy machine. The writer path (`append`) is the same
/// for every recovered log but for where its active segment starts, so the fuzz targets take it
/// on one input in [`APPEND_EVERY`] ([`appends_to`]); the tests here take it on every seed.
///
/// Returns how many records the log held, or `None` if it was refused.
pub fn check_wal(dir: &Path, salvage: bool, append: bool) -> Option<u64> {
    // No manifest: the target fuzzes what recovery makes of the segments alone.
    let opts = |salvage| WalOptions {
        salvage,
        manifest: None,
        ..WalOptions::new(dir, 1 << 20)
    };
    let (wal, report) = match Wal::recover(opts(salvage)) {
        Ok(opened) => opened,
        Err(e) => {
            assert!(
                (!salvage && matches!(e, WalError::Corrupt { .. }))
                    || matches!(e, WalError::LsnExhausted { .. }),
                "open (salvage {salvage}) fails with something other than a named corruption or an LSN range at its end: {e}"
            );
            assert!(!e.to_string().is_empty());
            return None;
        }
    };
    let records = all_records(&wal);
    assert_eq!(
        records.len() as u64,
        report.records,
        "replay and recovery count the same records"
    );
    for pair in records.windows(2) {
        assert!(pair[0].lsn < pair[1].lsn, "replay is in LSN order");
    }
    for rec in &records {
        let back = wal.read(rec.pos).unwrap_or_else(|e| {
            panic!("a replayed record does not read back at {:?}: {e}", rec.pos)
        });
        assert_eq!(
            (back.lsn, back.kind, &back.payload),
            (rec.lsn, rec.kind, &rec.payload)
        );
        let _ = hdfs_ingest::node::decode(rec.kind, rec.payload.clone());
    }
    let next = wal.next_lsn();
    assert_eq!(report.last_lsn.checked_add(1), Some(next));
    if let Some(last) = records.last() {
        assert!(
            last.lsn < next,
            "the next LSN {next} is above every record's"
        );
    }
    drop(wal);

    let (wal, again) = Wal::recover(opts(false))
        .unwrap_or_else(|e| panic!("a recovered log (salvage {salvage}) does not open again: {e}"));
    assert_eq!(
        again.records, report.records,
        "the same records on a second open"
    );
    assert_eq!(again.last_lsn, report.last_lsn);
    assert_eq!(
        again.truncated_bytes, 0,
        "nothing left to truncate on a second open"
    );
    assert!(again.salvaged.is_empty(), "nothing left to salvage");
    let same = all_records(&wal);
    assert!(
        same.len() == records.len()
            && same
                .iter()
                .zip(&records)
                .all(|(a, b)| (a.lsn, a.pos, &a.payload) == (b.lsn, b.pos, &b.payload)),
        "a second open replays the same records"
    );
    drop(wal);
    if !append {
        return Some(report.records);
    }

    let (wal, _) = Wal::open(opts(false))
        .unwrap_or_else(|e| panic!("a recovered log does not open with its writer: {e}"));
    let appended =
        runtime().block_on(wal.append(1, Bytes::from_static(b"\x03cam\0\0\0\0\0\0\0\x01after")));
    if next >= hdfs_ingest::wal::MAX_NEXT_LSN {
        // Records stop below the highest next LSN recovery goes on from.
        assert!(
            matches!(appended, Err(WalError::LsnExhausted { .. })),
            "an append at LSN {next} is refused for want of LSNs: {appended:?}"
        );
        runtime().block_on(wal.close()).expect("close");
        return Some(report.records);
    }
    let appended = appended.unwrap_or_else(|e| panic!("an append to a recovered log fails: {e}"));
    assert_eq!(appended.0, next, "an append gets the next LSN");
    runtime().block_on(wal.close()).expect("close");
    drop(wal);
    let (wal, third) = Wal::recover(opts(false))
        .unwrap_or_else(|e| panic!("a log appended to after recovery does not open: {e}"));
    assert_eq!(third.records, report.records + 1);
    let last = all_records(&wal).pop().expect("the appended record");
    assert_eq!((last.lsn, last.pos), (appended.0, appended.1));
    Some(report.records)
}

// ---------------------------------------------------------------------------------------------
// checkpoint

/// `checkpoint` input: either a carried-block object (it starts with `HICB`), or a snapshot's
/// JSON followed by up to 4 batch claims' JSON, separated by NUL bytes (which JSON cannot hold).
///
/// The snapshot is stored under the key its own epoch and id name (or checkpoint 1 of epoch 1 if it
/// does not decode), the claims as the batches after its `last_batch_n`, in an in-memory store; then
/// `Checkpointer::latest`, `claims::list_from` and `plan_takeover` (every strategy, as the node that
/// wrote it and as another) run as a node taking over runs them.
pub fn checkpoint(data: &[u8]) {
    if data.starts_with(b"HICB") {
        return carried(data);
    }
    let mut parts = data.split(|&b| b == 0);
    let snap_json = parts.next().unwrap_or_default();
    let claims: Vec<&[u8]> = parts.take(4).collect();
    runtime().block_on(async {
        let store = Arc::new(ObjectStoreBackend::memory());
        let direct = serde_json::from_slice::<Snapshot>(snap_json);
        let key = match &direct {
            Ok(s) => paths::checkpoint(s.epoch, s.id),
            Err(_) => paths::checkpoint(1, 1),
        };
        put(&*store, &key, snap_json).await;
        let base = direct.as_ref().map_or(0, |s| s.last_batch_n);
        for (i, claim) in claims.iter().enumerate() {
            if let Some(n) = base.checked_add(1 + i as u64) {
                put(&*store, &paths::batch(n), claim).await;
            }
        }
        let cp = Checkpointer::new(store.clone());
        let snap = match cp.latest().await {
            Ok(Some(snap)) => snap,
            Ok(None) => panic!("a stored checkpoint is not found"),
            Err(e) => {
                assert!(direct.is_err() || !e.to_string().is_empty());
                return;
            }
        };
        let json = serde_json::to_vec(&snap).expect("a decoded snapshot encodes");
        let back: Snapshot = serde_json::from_slice(&json).expect("an encoded snapshot decodes");
        assert_eq!(back, snap, "a snapshot survives a round trip");
        // What the node's takeover does with it (node::takeover::become_primary).
        let from = snap
            .last_batch_n
            .checked_add(1)
            .expect("a checkpoint a node accepts leaves room for the next batch number");
        let claims = match strategies::claims::list_from(&*store, from).await {
            Ok(claims) => claims,
            Err(e) => return assert!(!e.to_string().is_empty()),
        };
        for strategy in [
            Strategy::None,
            Strategy::PassiveStandby,
            Strategy::ActiveStandby,
            Strategy::UpstreamBackup,
        ] {
            for me in [snap.node.as_str(), "another-node"] {
                let plan = strategies::plan_takeover(strategy, Some(&snap), &claims, me);
                assert!(
                    plan.replay_own_wal_from >= 1,
                    "a replay starts at LSN 1 or later"
                );
                assert!(plan.fence_at > snap.last_batch_n);
                let published: Vec<u64> = plan.resolve.iter().map(|(n, _)| *n).collect();
                for set in plan.committed_with(&published).values() {
                    assert!(!set.contains(set.first_missing()));
                    if let Some(h) = set.highest() {
                        assert!(set.contains(h));
                    }
                    let _ = (set.len(), set.next_after_highest());
                }
            }
        }
    });
}

async fn put(store: &dyn CheckpointStore, key: &str, value: &[u8]) {
    store
        .put(key, Bytes::copy_from_slice(value))
        .await
        .expect("an in-memory put");
}

/// A carried-block object (`passive-standby`): decodes, or is refused with a reason; what decodes
/// re-encodes byte for byte.
fn carried(data: &[u8]) {
    match hdfs_ingest::node::decode_carried(&Bytes::copy_from_slice(data)) {
        Ok(blocks) => {
            let mut enc = hdfs_ingest::node::CarriedEncoder::default();
            for b in &blocks {
                enc.push(&b.source, b.seq, &b.bytes);
            }
            assert_eq!(
                enc.finish(),
                data,
                "a carried object re-encodes to its bytes"
            );
        }
        Err(reason) => assert!(!reason.is_empty()),
    }
}

// ---------------------------------------------------------------------------------------------
// config

/// `config` input: TOML text (not UTF-8: skipped). `Config::parse` (which validates) returns Ok or
/// an Err with a message. An accepted config: each role's view of it (`for_role`) is valid too, the
/// path helpers answer, and what `hdfs-ingest config` prints for it parses back and prints the same.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse(text) {
        Ok(cfg) => cfg,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    for role in [NodeRole::Primary, NodeRole::Standby] {
        if let Ok(view) = cfg.for_role(role) {
            if let Err(e) = view.validate() {
                panic!("the {role:?} view of a valid config is invalid: {e}");
            }
            let _ = (view.wal_dir(), view.output_dir(), view.sled_path());
        }
    }
    let _ = (cfg.send_targets(), cfg.hdfs_output());
    let printed = toml::to_string_pretty(&cfg).expect("a valid config prints as TOML");
    let reparsed = Config::parse(&printed)
        .unwrap_or_else(|e| panic!("the printed config does not parse back: {e}\n{printed}"));
    let again = toml::to_string_pretty(&reparsed).expect("prints again");
    assert_eq!(again, printed, "the printed config is a fixed point");
}

/// The harness of `target` (one of [`seeds::TARGETS`]).
pub fn harness(target: &str) -> fn(&[u8]) {
    match target {
        "framed" => framed,
        "wal_record" => wal_record,
        "wal_recovery" => wal_recovery,
        "checkpoint" => checkpoint,
        "config" => config,
        other => panic!("no target {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness of `target`, the WAL ones taking the writer path on every input.
    fn run(target: &str, data: &[u8]) {
        let dir = match target {
            "wal_record" => write_record_dir(data),
            "wal_recovery" => write_recovery_dir(data),
            _ => return harness(target)(data),
        };
        if let Some((dir, salvage)) = dir {
            check_wal(&dir, salvage, true);
        }
    }

    #[test]
    fn every_seed_runs_through_its_harness() {
        for target in seeds::TARGETS {
            for (name, data) in seeds::for_target(target) {
                eprintln!("{target}/{name}");
                run(target, &data);
            }
        }
    }

    #[test]
    fn every_committed_corpus_file_runs_through_its_harness() {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        for target in seeds::TARGETS {
            let files = std::fs::read_dir(corpus.join(target)).expect("a corpus per target");
            for f in files {
                let path = f.expect("entry").path();
                eprintln!("{}", path.display());
                run(target, &std::fs::read(&path).expect("read"));
            }
        }
    }

    #[test]
    fn a_size_that_is_no_whole_number_of_a_unit_prints_back_as_the_same_config() {
        // fuzz/artifacts/config/crash-006cc1036c0d40e8fea5afa6110034f9417c6e94: printed as
        // "876.0 MiB", which reads back as another size and prints "876 MiB".
        config(b"[wal]\nsegment_size = \"000918525215\"\n");
    }

    #[test]
    fn a_log_recovered_at_the_last_lsn_it_may_go_on_from_refuses_an_append_and_opens_again() {
        // fuzz/artifacts/wal_recovery/crash-949d8511f5b38ef921de07efc2173e9970b330b7: segments
        // that recovery goes on from at MAX_NEXT_LSN took an append there, and the log no longer
        // opened; the append is refused now. Run with the writer path, as the target did.
        let data: &[u8] = &[
            0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
            0xff, 0xfe, 0xff, 0xff, 0xff, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00,
            0x00, 0x00, 0x00, 0x45, 0x47, 0x08, 0x00, 0x00, 0x00, 0x86, 0x08, 0xf4, 0x00, 0x00,
            0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xc4, 0x51, 0xc6, 0xde, 0x03, 0x00,
        ];
        run("wal_recovery", data);
    }

    #[test]
    fn the_wal_seeds_are_what_their_names_say() {
        let opened = |target: &str, name: &str| {
            let (_, data) = seeds::for_target(target)
                .into_iter()
                .find(|(n, _)| n == name)
                .expect("a seed of that name");
            if target == "wal_record" {
                let (dir, salvage) = write_record_dir(&data).expect("an input");
                check_wal(&dir, salvage, true)
            } else {
                let (dir, salvage) = write_recovery_dir(&data).expect("an input");
                check_wal(&dir, salvage, true)
            }
        };
        assert_eq!(opened("wal_record", "six-records"), Some(6));
        assert_eq!(opened("wal_record", "torn-tail"), Some(5));
        assert_eq!(opened("wal_record", "bit-flip-salvage"), Some(1));
        assert_eq!(opened("wal_recovery", "rotated-log"), Some(6));
        assert_eq!(
            opened("wal_recovery", "three-segments-and-a-leftover-tmp"),
            Some(4)
        );
        assert_eq!(
            opened("wal_recovery", "missing-middle-segment-salvage"),
            Some(3)
        );
        assert_eq!(opened("wal_recovery", "bit-flip-in-a-sealed-segment"), None);
    }
}
