//! WAL append throughput against the disk's own write + fdatasync bandwidth.
//!
//! For each record size, many tokio tasks append concurrently so group commit can work
//! (`wal/<size>`); then a plain file in the same directory gets chunks of the WAL's mean group
//! size, each followed by fdatasync (`disk/<size>`). Both report payload bytes per second; at
//! the end the run prints WAL/disk for both sizes and records/s for 8 KiB.
//!
//! `cargo bench --bench wal -j 2` (a few seconds per case). The files live in a temporary
//! directory under the target dir (`CARGO_TARGET_TMPDIR`), not /tmp, which may be tmpfs.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use hdfs_ingest::wal::{Wal, WalOptions, RECORD_HEADER_LEN};

const SEGMENT_SIZE: u64 = 128 * 1024 * 1024;

struct Case {
    name: &'static str,
    record: usize,
    appenders: usize,
}

const CASES: [Case; 2] = [
    Case {
        name: "8KiB",
        record: 8 * 1024,
        appenders: 256,
    },
    Case {
        name: "256KiB",
        record: 256 * 1024,
        appenders: 64,
    },
];

#[derive(Default, Clone, Copy)]
struct Totals {
    records: u64,
    payload_bytes: u64,
    elapsed: Duration,
    syncs: u64,
}

impl Totals {
    fn add(&mut self, records: u64, payload_bytes: u64, elapsed: Duration, syncs: u64) {
        self.records += records;
        self.payload_bytes += payload_bytes;
        self.elapsed += elapsed;
        self.syncs += syncs;
    }

    fn bytes_per_sec(&self) -> f64 {
        self.payload_bytes as f64 / self.elapsed.as_secs_f64()
    }

    fn records_per_sec(&self) -> f64 {
        self.records as f64 / self.elapsed.as_secs_f64()
    }
}

/// Appends `iters` records of `case.record` bytes from `case.appenders` tasks.
fn run_wal(rt: &tokio::runtime::Runtime, wal: &Wal, case: &Case, iters: u64) -> Duration {
    let payload = Bytes::from(vec![0x5au8; case.record]);
    let appenders = case.appenders as u64;
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..appenders)
            .map(|t| {
                let n = iters / appenders + u64::from(t < iters % appenders);
                let wal = wal.clone();
                let payload = payload.clone();
                tokio::spawn(async move {
                    for _ in 0..n {
                        wal.append(1, payload.clone()).await.expect("append");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("appender task");
        }
        start.elapsed()
    });
    wal.release_below(wal.next_lsn()).expect("release");
    elapsed
}

/// Writes `total` bytes to a new file in `dir` in chunks of `chunk`, fdatasync after each.
fn run_disk(dir: &Path, chunk: &[u8], total: u64) -> Duration {
    let path = dir.join("disk-baseline.bin");
    let mut file = File::create(&path).expect("create baseline file");
    let start = Instant::now();
    let mut written = 0u64;
    while written < total {
        let n = (chunk.len() as u64).min(total - written) as usize;
        file.write_all(&chunk[..n]).expect("write");
        file.sync_data().expect("fdatasync");
        written += n as u64;
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).expect("remove baseline file");
    elapsed
}

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(base).expect("bench dir");
    let tmp = tempfile::Builder::new()
        .prefix("wal-bench")
        .tempdir_in(base)
        .expect("tempdir");
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime"),
    );

    let mut summary = Vec::new();
    for case in &CASES {
        let dir = tmp.path().join(case.name);
        // As the node opens it: with its manifest, so every group also records the durable mark.
        let (wal, _) = Wal::open(WalOptions::new(dir.clone(), SEGMENT_SIZE)).expect("open WAL");
        let mut wal_totals = Totals::default();
        let mut disk_totals = Totals::default();

        let mut group = c.benchmark_group("wal_append");
        group.throughput(Throughput::Bytes(case.record as u64));
        group.bench_function(format!("wal/{}", case.name), |b| {
            b.iter_custom(|iters| {
                let syncs = wal.sync_count();
                let elapsed = run_wal(&rt, &wal, case, iters);
                wal_totals.add(
                    iters,
                    iters * case.record as u64,
                    elapsed,
                    wal.sync_count() - syncs,
                );
                elapsed
            })
        });
        // The baseline writes what the WAL wrote per fdatasync, on average.
        let group_bytes = (wal_totals.records * (case.record + RECORD_HEADER_LEN) as u64)
            / wal_totals.syncs.max(1);
        let chunk = vec![0x5au8; group_bytes.max(1) as usize];
        group.bench_function(format!("disk/{}", case.name), |b| {
            b.iter_custom(|iters| {
                let total = iters * case.record as u64;
                let elapsed = run_disk(&dir, &chunk, total);
                let syncs = total.div_ceil(chunk.len() as u64);
                disk_totals.add(iters, total, elapsed, syncs);
                elapsed
            })
        });
        group.finish();
        rt.block_on(wal.close()).expect("close");
        summary.push((case, wal_totals, disk_totals, group_bytes));
    }
    c.final_summary();

    println!(
        "\nWAL vs. disk (payload bytes, same directory {})",
        tmp.path().display()
    );
    for (case, wal, disk, group_bytes) in &summary {
        println!(
            "{:>6} records x {:>3} appenders: WAL {:8.1} MiB/s, disk write+fdatasync {:8.1} MiB/s, WAL/disk {:5.1}% \
             (mean group {:.0} KiB, {:.1} records/sync)",
            case.name,
            case.appenders,
            wal.bytes_per_sec() / (1024.0 * 1024.0),
            disk.bytes_per_sec() / (1024.0 * 1024.0),
            100.0 * wal.bytes_per_sec() / disk.bytes_per_sec(),
            *group_bytes as f64 / 1024.0,
            wal.records as f64 / wal.syncs.max(1) as f64,
        );
        if case.record == 8 * 1024 {
            println!(
                "{:>6} records: {:.0} records/s through the WAL",
                case.name,
                wal.records_per_sec()
            );
        }
    }
}
