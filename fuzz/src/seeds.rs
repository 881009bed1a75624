//! The seed corpus of every target, made by the real encoders: frames by `protocol`, segments by a
//! real [`Wal`] (appends, rotation, close), checkpoints and batch claims by `Checkpointer::write` and
//! `claims::claim` into a store, carried objects by the node's encoder, configurations from the
//! repository's `config/*.toml`. `examples/seeds.rs` writes them to `fuzz/corpus/<target>/`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hdfs_ingest::node::{encode_block, encode_seal, CarriedEncoder, KIND_BLOCK, KIND_SEAL};
use hdfs_ingest::protocol::{self, AckLevel, ErrorCode, Hello, Role, ServerFrame};
use hdfs_ingest::wal::{Wal, WalOptions};
use strategies::claims::{BatchClaim, ClaimKind};
use strategies::store::CheckpointStore;
use strategies::{paths, CarriedRef, Checkpointer, ObjectStoreBackend, SeqSet, Snapshot};

use super::{runtime, SEGMENT_HEADER_LEN};

/// One seed: its file name in the corpus and its bytes.
pub type Seed = (String, Vec<u8>);

/// The targets, in the order `fuzz/run.sh` runs them.
pub const TARGETS: [&str; 5] = [
    "framed",
    "wal_record",
    "wal_recovery",
    "checkpoint",
    "config",
];

/// The seeds of `target`.
pub fn for_target(target: &str) -> Vec<Seed> {
    match target {
        "framed" => framed(),
        "wal_record" => wal_record(),
        "wal_recovery" => wal_recovery(),
        "checkpoint" => checkpoint(),
        "config" => config(),
        other => panic!("no target {other}"),
    }
}

fn seed(name: &str, bytes: impl Into<Vec<u8>>) -> Seed {
    (name.to_string(), bytes.into())
}

fn block(seq: u64, data: &[u8]) -> Vec<u8> {
    let mut b = protocol::block_header(seq, data).to_vec();
    b.extend_from_slice(data);
    b
}

fn framed() -> Vec<Seed> {
    let jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF\0\x01\x01\0\0\x01\0\x01\0\0\xff\xd9";
    let hello = |version, token: Option<&str>| {
        Hello {
            version,
            source: "cam-1".into(),
            token: token.map(str::to_string),
        }
        .encode()
        .to_vec()
    };
    let mut v1 = vec![0u8];
    v1.extend(hello(protocol::VERSION_1, None));
    for seq in 0..3 {
        v1.extend(block(seq, jpeg));
    }
    let mut v2 = vec![3u8]; // mode 0, max_block_size 2 KiB
    v2.extend(hello(protocol::VERSION_2, Some("s3cret")));
    v2.extend(block(7, b"BM\x1e\0\0\0\0\0\0\0\x1a\0\0\0"));
    v2.extend(block(u64::MAX - 1, jpeg));
    let mut only_blocks = vec![1u8];
    only_blocks.extend(block(0, jpeg));
    only_blocks.extend(block(1, &[0x5a; 40]));
    let mut server = BytesMut::new();
    for frame in [
        ServerFrame::Welcome {
            version: protocol::VERSION_2,
            max_block_size: 32 << 20,
        },
        ServerFrame::Role {
            role: Role::Primary,
            epoch: 3,
        },
        ServerFrame::Ack {
            level: AckLevel::Durable,
            seq: 0,
        },
        ServerFrame::Ack {
            level: AckLevel::Checkpointed,
            seq: 0,
        },
        ServerFrame::Ack {
            level: AckLevel::Committed,
            seq: 0,
        },
        ServerFrame::Held { seq: 1 },
        ServerFrame::Error {
            code: ErrorCode::BlockTooLarge,
            message: "block 1 is 40000000 bytes, over max_block_size 33554432".into(),
        },
    ] {
        frame.encode(&mut server);
    }
    let mut server_seed = vec![2u8];
    server_seed.extend_from_slice(&server);
    vec![
        seed("hello-v1-three-blocks", v1),
        seed("hello-v2-token-two-blocks", v2),
        seed("blocks-only", only_blocks),
        seed("server-frames", server_seed),
    ]
}

/// A real log: `records` node records appended to a fresh WAL with `segment_size`, then closed.
/// Returns its segment files, oldest first, as (first LSN, bytes).
fn real_log(segment_size: u64, records: &[(u8, Bytes)]) -> Vec<(u64, Vec<u8>)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = WalOptions {
        manifest: None,
        ..WalOptions::new(dir.path(), segment_size)
    };
    let (wal, _) = Wal::open(opts).expect("open a new WAL");
    runtime().block_on(async {
        for (kind, payload) in records {
            wal.append(*kind, payload.clone()).await.expect("append");
        }
        wal.close().await.expect("close");
    });
    drop(wal);
    let mut files: Vec<(u64, Vec<u8>)> = std::fs::read_dir(dir.path())
        .expect("list")
        .filter_map(|e| {
            let e = e.expect("entry");
            let name = e.file_name().into_string().expect("utf-8 name");
            if name == hdfs_ingest::wal::LOCK_FILE {
                return None;
            }
            let lsn = name
                .strip_suffix(".wal")
                .and_then(|d| d.parse().ok())
                .expect("a segment name");
            Some((lsn, std::fs::read(e.path()).expect("read segment")))
        })
        .collect();
    files.sort();
    files
}

fn node_records() -> Vec<(u8, Bytes)> {
    vec![
        (
            KIND_BLOCK,
            encode_block("cam-1", 0, b"\xff\xd8jpeg-0\xff\xd9"),
        ),
        (
            KIND_BLOCK,
            encode_block("cam-1", 1, b"\xff\xd8jpeg-1\xff\xd9"),
        ),
        (KIND_BLOCK, encode_block("raw", 0, b"BM-bitmap")),
        (KIND_SEAL, encode_seal(1_700_000_000_000)),
        (
            KIND_BLOCK,
            encode_block("cam-1", 3, b"\xff\xd8jpeg-3\xff\xd9"),
        ),
        (KIND_SEAL, encode_seal(1_700_000_000_500)),
    ]
}

fn wal_record() -> Vec<Seed> {
    let log = real_log(1 << 20, &node_records());
    assert_eq!(log.len(), 1, "one segment");
    let body = &log[0].1[SEGMENT_HEADER_LEN..];
    let mut clean = vec![0u8];
    clean.extend_from_slice(body);
    // A torn tail: the last record cut short, as a crash mid-write leaves it.
    let torn = clean[..clean.len() - 5].to_vec();
    // A bit flip in the second record, CRCs left as they are, opened with salvage.
    let mut flipped = clean.clone();
    flipped[0] = 1 | 2;
    let second = 1 + super::RECORD_HEADER_LEN + node_records()[0].1.len();
    flipped[second + super::RECORD_HEADER_LEN + 3] ^= 0x40;
    vec![
        seed("six-records", clean),
        seed("torn-tail", torn),
        seed("bit-flip-salvage", flipped),
    ]
}

/// The `wal_recovery` encoding of a directory of segment files.
pub fn pack_segments(flags: u8, segments: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![flags];
    for (lsn, bytes) in segments {
        out.extend_from_slice(&lsn.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

fn wal_recovery() -> Vec<Seed> {
    // Segments of 96 bytes: a header and about one record each, so rotation makes several.
    let log = real_log(96, &node_records());
    assert!(log.len() >= 4, "rotation made several segments");
    let three = &log[..3];
    let mut gap = three.to_vec();
    gap.remove(1);
    let mut flipped = three.to_vec();
    let n = flipped[1].1.len();
    flipped[1].1[n - 2] ^= 0x01;
    vec![
        seed("rotated-log", pack_segments(0, &log)),
        seed("three-segments-and-a-leftover-tmp", pack_segments(8, three)),
        seed("missing-middle-segment-salvage", pack_segments(1, &gap)),
        seed("bit-flip-in-a-sealed-segment", pack_segments(4, &flipped)),
    ]
}

fn set(seqs: &[u64]) -> SeqSet {
    let mut s = SeqSet::new();
    for q in seqs {
        s.insert(*q);
    }
    s
}

fn checkpoint() -> Vec<Seed> {
    runtime().block_on(async {
        let store = Arc::new(ObjectStoreBackend::memory());
        let cp = Checkpointer::new(store.clone());
        let mut out = Vec::new();

        let empty = Snapshot::empty(1, 1, "node-a", 1_700_000_000_000);
        let mut busy = Snapshot::empty(2, 7, "node-a", 1_700_000_100_000);
        busy.last_committed_batch_ms = Some(1_700_000_099_000);
        busy.last_committed_seal_lsn = 41;
        busy.wal_low_water = 42;
        busy.last_batch_n = 5;
        busy.sources
            .insert("cam-1".into(), set(&[0, 1, 2, 3, 9, 12]));
        busy.sources
            .insert("raw".into(), set(&(0..100).collect::<Vec<_>>()));
        busy.carried.push(CarriedRef {
            key: paths::carried(2, 57),
            epoch: 2,
            lo: 43,
            hi: 57,
            blocks: 3,
            bytes: 4096,
        });
        for (name, snap) in [("empty-snapshot", &empty), ("busy-snapshot", &busy)] {
            let key = cp.write(snap).await.expect("checkpoint write");
            let raw = store.get(&key).await.expect("get").expect("written");
            out.push(seed(name, raw.to_vec()));
        }

        // Numbers that once overflowed a takeover (strategies/src/checkpoint.rs tests).
        let mut full_n = busy.clone();
        full_n.last_batch_n = u64::MAX;
        let mut full_ms = busy.clone();
        full_ms.last_committed_batch_ms = Some(u64::MAX);
        for (name, snap) in [
            ("regression-last-batch-n-max", full_n),
            ("regression-last-batch-ms-max", full_ms),
        ] {
            out.push(seed(name, serde_json::to_vec(&snap).expect("encode")));
        }

        // The busy snapshot with the batch log above it: a published batch and a takeover.
        let batch = BatchClaim {
            epoch: 2,
            node: "node-a".into(),
            claimed_unix_ms: 1_700_000_100_500,
            kind: ClaimKind::Batch {
                batch_ms: 1_700_000_100_000,
                members: BTreeMap::from([("cam-1".to_string(), set(&[4, 5, 10]))]),
                dir: None,
            },
        };
        let takeover = BatchClaim {
            epoch: 3,
            node: "node-b".into(),
            claimed_unix_ms: 1_700_000_101_000,
            kind: ClaimKind::Takeover,
        };
        let mut with_claims = out[1].1.clone(); // busy-snapshot
        for (n, claim) in [(6, &batch), (7, &takeover)] {
            strategies::claims::claim(&*store, n, claim)
                .await
                .expect("claim");
            let raw = store
                .get(&paths::batch(n))
                .await
                .expect("get")
                .expect("claimed");
            with_claims.push(0);
            with_claims.extend_from_slice(&raw);
        }
        out.push(seed("busy-snapshot-and-two-claims", with_claims));

        let mut carried = CarriedEncoder::default();
        carried.push("cam-1", 13, b"\xff\xd8jpeg-13\xff\xd9");
        carried.push("cam-2", 0, b"BM-bitmap");
        out.push(seed("carried-two-blocks", carried.finish()));
        // The count that once reserved room for four billion blocks (src/node/carried.rs tests).
        out.push(seed(
            "regression-carried-count-without-blocks",
            &b"HICB\x01\xff\xff\xff\xff\x05cam-1\0\0\0\0\0\0\0\x0d\0\0\0\0"[..],
        ));
        out
    })
}

fn config() -> Vec<Seed> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let mut out: Vec<Seed> = std::fs::read_dir(&dir)
        .expect("the repository's config/")
        .map(|e| {
            let p = e.expect("entry").path();
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read config"))
        })
        .collect();
    out.sort();
    out.push(seed("empty.toml", Vec::new()));
    // Inputs that crashed validation once (src/config.rs tests name them).
    out.push(seed(
        "regression-heartbeat-too-large-to-double.toml",
        "[strategy]\nheartbeat_interval = \"18446744073709551615s\"\n",
    ));
    out.push(seed(
        "regression-segment-size-too-large-to-double.toml",
        "[wal]\nsegment_size = \"18446744073709551615\"\n",
    ));
    out
}
