//! `hdfs-ingest bench hdfs`: the output layouts into HDFS against one plain large file of the same
//! bytes, the NameNode objects each layout costs, and checkpoint write/read latency on HDFS and on sled.
//!
//! # Output layouts
//!
//! For every image size of `--sizes` and every layout of `--formats` (`files`, `sequencefile`,
//! `parquet`), one batch per round goes through the node's own output path: [`sink::write_batch_claimed`]
//! into an [`HdfsOutput`] (staging directory, part files rolled at `--max-file-size`, written with
//! HDFS block size `--block-size`, one rename), under the node's default `output.path`
//! (`dt={date}/hour={hour}/{prefix}-{batch_ms}`), with `_analysis.jsonl` as a node writes it by
//! default. Beside them, the baseline: plain hdfs-native writing the same bytes as **one** file
//! (create, write every image, close), the most HDFS takes from one writer.
//!
//! A batch is what a node commits every 2 s at a few thousand images/s: `--batch-images` (default
//! 4,096: 2 s at 2,048 images/s), but at most `--batch-bytes` (default 256 MiB: 2 s at 128 MB/s, about
//! what one writer gets into a 3-replica cluster), so 4,096 images at 16 and 64 KiB and 1,024 at
//! 256 KiB. `files` pays a create and a complete round trip per image (about 150 a second), so its
//! batches stop at `--files-images` (default 400) to keep a run at a few minutes; its images/s does not
//! depend on the batch size.
//!
//! Rounds are interleaved: round `r` writes every size and, within a size, every layout and the
//! baseline in turn, starting at a different one each round, so drift on the cluster (a DataNode's
//! disk flushing, the JVM collecting garbage) hits all alike. The figures are the p50 over rounds of
//! images/s and MB/s (image bytes, 10⁶ bytes/s); each layout's images/s is compared with `files`' at
//! the same size and its bandwidth with the baseline's, both measured in the same run.
//!
//! After each batch (outside the timing) the batch directory is listed recursively: its files, its
//! blocks (`ceil(length / blocksize)` for each file, from the NameNode's own `FileStatus`) and its
//! directories, normalised per 10,000 images — what the layout costs the NameNode's heap. Partition
//! directories (`dt=…`, `hour=…`) are shared by an hour of batches and not counted. Then every batch
//! is read back (part files decoded with [`crate::layout::read::decode_part`]) and compared image by
//! image with what was written, and deleted so the cluster's disks hold one batch at a time.
//!
//! # Checkpoints
//!
//! `--checkpoints` snapshots of `--sources` sources written and read back through each store, p50
//! and p99 of both (`--checkpoints 0` skips them).
//!
//! # Results
//!
//! The tables go to stdout and to `<out>/hdfs.md` (with the command line and the machine); every
//! batch's figures and the summary go to `<out>/hdfs.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context};
use bytes::Bytes;
use hdfs_native::{Client, WriteOptions};
use serde::Serialize;
use strategies::checkpoint::Checkpointer;
use strategies::snapshot::{SeqSet, Snapshot};
use strategies::store::hdfs::{build_client, HdfsOptions, HdfsStore};
use strategies::store::sled::SledStore;
use strategies::store::CheckpointStore;

use crate::bench::stats::{fmt_ms, machine, percentiles, spread, Machine, Spread};
use crate::images::bmp_of_size;
use crate::layout::{read::decode_part, Format, Layout, PathTemplate};
use crate::sink::{self, hdfs::HdfsOutput, BatchBlock};
use crate::size::ByteSize;

#[derive(clap::Args, Debug, Clone)]
pub struct HdfsArgs {
    /// Where to write: `hdfs://namenode:port/dir` (a fresh subdirectory is used and removed).
    #[arg(long)]
    pub url: String,
    /// Rounds; each writes one batch of every size in every layout and the baseline, interleaved.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Image sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "16KiB,64KiB,256KiB")]
    pub sizes: Vec<ByteSize>,
    /// Layouts, comma-separated: files, sequencefile, parquet.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "files,sequencefile,parquet"
    )]
    pub formats: Vec<Format>,
    /// Images per batch (default: 2 s at 2,048 images/s), at most --batch-bytes of them.
    #[arg(long, default_value_t = 4096)]
    pub batch_images: usize,
    /// Bytes of images per batch at most (default: 2 s at 128 MB/s).
    #[arg(long, default_value = "256MiB")]
    pub batch_bytes: ByteSize,
    /// Images per `files` batch at most (one create and complete per image: slow).
    #[arg(long, default_value_t = 400)]
    pub files_images: usize,
    /// HDFS block size of the part files and of the baseline's file (`output.block_size`).
    #[arg(long, default_value = "128MiB")]
    pub block_size: ByteSize,
    /// `output.max_file_size` of the packed layouts.
    #[arg(long, default_value = "128MiB")]
    pub max_file_size: ByteSize,
    /// Leave out `_analysis.jsonl` (a node writes it by default).
    #[arg(long)]
    pub no_analysis: bool,
    /// Checkpoints written and read per store for the latency figures (0: none).
    #[arg(long, default_value_t = 200)]
    pub checkpoints: usize,
    /// Sources in each checkpoint (its size grows with them).
    #[arg(long, default_value_t = 64)]
    pub sources: usize,
    /// Where the results go (hdfs.md, hdfs.json).
    #[arg(long, default_value = "./hdfs-ingest-data/bench-hdfs")]
    pub out: PathBuf,
}

/// What is measured side by side: a layout through the sink, or the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Writer {
    Layout(Format),
    /// Plain hdfs-native, the same bytes as one file.
    Plain,
}

impl Writer {
    fn name(self) -> &'static str {
        match self {
            Writer::Layout(f) => f.name(),
            Writer::Plain => "plain",
        }
    }
}

/// One batch written, as measured.
#[derive(Clone, Debug, Serialize)]
struct Batch {
    writer: &'static str,
    size: u64,
    round: usize,
    images: usize,
    /// Image bytes.
    bytes: u64,
    secs: f64,
    /// What the NameNode holds for it: files, blocks and directories.
    files: u64,
    blocks: u64,
    dirs: u64,
    /// Part files (packed layouts).
    parts: usize,
}

/// One row of the table: a writer at one size, over the rounds.
#[derive(Clone, Debug, Serialize)]
struct Row {
    writer: &'static str,
    size: u64,
    images_per_batch: usize,
    batch_ms: Option<Spread>,
    images_per_s: Option<Spread>,
    mb_per_s: Option<Spread>,
    /// p50 images/s over `files`' p50 at this size.
    images_per_s_vs_files: Option<f64>,
    /// p50 MB/s over the baseline's p50 at this size.
    mb_per_s_vs_plain: Option<f64>,
    /// NameNode files + blocks per 10,000 images.
    objects_per_10k: f64,
    dirs_per_10k: f64,
    /// Every batch was read back and matched what was written.
    verified: bool,
}

#[derive(Serialize)]
struct CheckpointRow {
    store: &'static str,
    write_p50_ms: f64,
    write_p99_ms: f64,
    read_p50_ms: f64,
    read_p99_ms: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    command: &'a str,
    machine: &'a Machine,
    block_size: u64,
    max_file_size: u64,
    analysis: bool,
    summary: &'a [Row],
    batches: &'a [Batch],
    checkpoints: &'a [CheckpointRow],
}

/// `hdfs-ingest bench hdfs`: see the module docs.
pub async fn hdfs(a: HdfsArgs) -> anyhow::Result<ExitCode> {
    ensure!(a.rounds > 0, "--rounds must be at least 1");
    ensure!(!a.sizes.is_empty(), "--sizes names no size");
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let m = machine();
    let (base, root) = crate::config::split_hdfs_url(&a.url).map_err(anyhow::Error::msg)?;
    let run = format!("{root}/bench-{}", std::process::id());
    let opts = HdfsOptions::default();
    let client = build_client(&base, &opts)?;
    let analysis = !a.no_analysis;
    let mut formats = a.formats.clone();
    formats.dedup();
    let mut writers: Vec<Writer> = formats.iter().map(|&f| Writer::Layout(f)).collect();
    writers.push(Writer::Plain);

    // Per size: a pool of distinct images, sent round-robin, and the batch's image count per writer.
    struct SizePlan {
        size: usize,
        pool: Vec<Bytes>,
        packed: usize,
        files: usize,
    }
    let plans: Vec<SizePlan> = a
        .sizes
        .iter()
        .map(|s| {
            let size = s.as_usize().max(64);
            let pool: Vec<Bytes> = (0..64).map(|i| Bytes::from(bmp_of_size(size, i))).collect();
            let packed = a.batch_images.min(a.batch_bytes.as_usize() / size).max(1);
            SizePlan {
                size,
                pool,
                packed,
                files: packed.min(a.files_images.max(1)),
            }
        })
        .collect();
    println!(
        "bench hdfs: {} rounds; sizes {}; writers {}; block size {}, max file size {}, analysis {}; to {base}{run}",
        a.rounds,
        plans
            .iter()
            .map(|p| format!("{} ({} images, files {})", ByteSize(p.size as u64), p.packed, p.files))
            .collect::<Vec<_>>()
            .join(", "),
        writers.iter().map(|w| w.name()).collect::<Vec<_>>().join(", "),
        ByteSize(a.block_size.as_u64()),
        ByteSize(a.max_file_size.as_u64()),
        if analysis { "on" } else { "off" },
    );

    // One output per (writer, size), each its own root, as one node's output would be.
    let mut outputs: BTreeMap<(usize, usize), HdfsOutput> = BTreeMap::new();
    for (pi, p) in plans.iter().enumerate() {
        for (wi, w) in writers.iter().enumerate() {
            if let Writer::Layout(_) = w {
                let url = format!("{base}{run}/{}-{}", w.name(), p.size);
                let out = HdfsOutput::connect(&url, opts.clone())
                    .await?
                    .with_block_size(Some(a.block_size.as_u64()));
                outputs.insert((pi, wi), out);
            }
        }
    }
    let start_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_millis() as u64;
    let mut batches = Vec::new();
    let mut verified: BTreeMap<(usize, usize), bool> = BTreeMap::new();
    for round in 0..a.rounds {
        for (pi, p) in plans.iter().enumerate() {
            for k in 0..writers.len() {
                let wi = (k + round) % writers.len();
                let w = writers[wi];
                let images = if w == Writer::Layout(Format::Files) {
                    p.files
                } else {
                    p.packed
                };
                let blocks = move |i: usize| BatchBlock {
                    source: "bench".into(),
                    seq: i as u64,
                    bytes: p.pool[i % p.pool.len()].clone(),
                };
                let bytes: u64 = (0..images).map(|i| blocks(i).bytes.len() as u64).sum();
                let (secs, counted, parts) = match w {
                    Writer::Layout(format) => {
                        let output = &outputs[&(pi, wi)];
                        let layout = Layout {
                            path: PathTemplate::parse(PathTemplate::DEFAULT)?,
                            max_file_size: a.max_file_size.as_u64(),
                            ..Layout::flat("images").with_format(format)
                        };
                        // Batches 2 s apart, as a node's are.
                        let batch_ms = start_ms + 2000 * round as u64;
                        let stream = futures::stream::iter(
                            (0..images).map(|i| Ok::<_, std::io::Error>(blocks(i))),
                        );
                        let t = Instant::now();
                        let summary = sink::write_batch_claimed(
                            output,
                            &layout,
                            batch_ms,
                            0,
                            analysis,
                            stream,
                            || async { Ok(()) },
                        )
                        .await?;
                        let secs = t.elapsed().as_secs_f64();
                        ensure!(
                            summary.files == images,
                            "{}: wrote {} images of {images}",
                            w.name(),
                            summary.files
                        );
                        let dir = format!("{}/{}", output.root(), layout.batch_dir(batch_ms));
                        let counted = count_objects(&client, &dir).await?;
                        let ok = verify_batch(&client, &dir, format, &p.pool, images).await?;
                        *verified.entry((pi, wi)).or_insert(true) &= ok;
                        client.delete(&dir, true).await?;
                        (secs, counted, summary.parts)
                    }
                    Writer::Plain => {
                        let path = format!("{run}/plain-{}-{round}", p.size);
                        let t = Instant::now();
                        let mut f = client
                            .create(
                                &path,
                                WriteOptions::default().block_size(a.block_size.as_u64()),
                            )
                            .await?;
                        for i in 0..images {
                            f.write_bytes(blocks(i).bytes).await?;
                        }
                        f.close().await?;
                        let secs = t.elapsed().as_secs_f64();
                        let counted = count_objects(&client, &path).await?;
                        let len = client.get_file_info(&path).await?.length as u64;
                        *verified.entry((pi, wi)).or_insert(true) &= len == bytes;
                        client.delete(&path, false).await?;
                        (secs, counted, 0)
                    }
                };
                let b = Batch {
                    writer: w.name(),
                    size: p.size as u64,
                    round: round + 1,
                    images,
                    bytes,
                    secs,
                    files: counted.files,
                    blocks: counted.blocks,
                    dirs: counted.dirs,
                    parts,
                };
                println!(
                    "bench hdfs: round {} {} {:>12}: {images} images in {:.0} ms, {:.0} images/s, {:.1} MB/s, {} files + {} blocks, {} dirs",
                    round + 1,
                    ByteSize(p.size as u64),
                    w.name(),
                    secs * 1e3,
                    images as f64 / secs.max(1e-9),
                    bytes as f64 / 1e6 / secs.max(1e-9),
                    b.files,
                    b.blocks,
                    b.dirs
                );
                batches.push(b);
            }
        }
    }

    let rows = summarize(
        &plans.iter().map(|p| p.size as u64).collect::<Vec<_>>(),
        &writers,
        &batches,
        &verified,
    );
    let table = layout_table(&rows);
    let targets = target_lines(&rows);
    println!("\n{table}\n{targets}");

    let checkpoints = if a.checkpoints > 0 {
        checkpoint_latency(&a, &base, &run, &opts).await?
    } else {
        Vec::new()
    };
    let ck_table = checkpoint_table(&checkpoints, a.sources);
    if !checkpoints.is_empty() {
        println!("\n{ck_table}");
    }
    client.delete(&run, true).await?;

    let md = format!(
        "# bench hdfs\n\n`{command}`\n\nMachine: {} cores ({}), Linux {}, {}.\n\n\
         Block size {} for part files and the plain file, max file size {}, analysis {}; \
         p50 / p99 over {} rounds; objects = NameNode files + blocks.\n\n{table}\n{targets}\n{}",
        m.cores,
        m.cpu,
        m.kernel,
        m.date,
        ByteSize(a.block_size.as_u64()),
        ByteSize(a.max_file_size.as_u64()),
        if analysis { "on" } else { "off" },
        a.rounds,
        if checkpoints.is_empty() {
            String::new()
        } else {
            format!("\n{ck_table}\n")
        },
    );
    std::fs::write(a.out.join("hdfs.md"), md)?;
    let json = serde_json::to_string_pretty(&Report {
        command: &command,
        machine: &m,
        block_size: a.block_size.as_u64(),
        max_file_size: a.max_file_size.as_u64(),
        analysis,
        summary: &rows,
        batches: &batches,
        checkpoints: &checkpoints,
    })?;
    std::fs::write(a.out.join("hdfs.json"), json)?;
    println!(
        "bench hdfs: wrote {} and hdfs.json",
        a.out.join("hdfs.md").display()
    );
    let all_verified = rows.iter().all(|r| r.verified);
    ensure!(
        all_verified,
        "a batch read back did not match what was written"
    );
    Ok(ExitCode::SUCCESS)
}

/// What the NameNode holds for a path, recursively.
#[derive(Clone, Copy, Debug, Default)]
struct Objects {
    files: u64,
    blocks: u64,
    dirs: u64,
}

/// Files, blocks (`ceil(length / blocksize)` per file) and directories at `path`, itself included.
async fn count_objects(client: &Client, path: &str) -> anyhow::Result<Objects> {
    let top = client.get_file_info(path).await?;
    let mut all = vec![top.clone()];
    if top.isdir {
        all.extend(client.list_status(path, true).await?);
    }
    let mut o = Objects::default();
    for s in all {
        if s.isdir {
            o.dirs += 1;
        } else {
            o.files += 1;
            let bs = s.blocksize.unwrap_or(128 << 20).max(1);
            o.blocks += (s.length as u64).div_ceil(bs);
        }
    }
    Ok(o)
}

/// Reads a published batch back: every image once, with the bytes written (`bench-<seq>.bmp`, image
/// `seq % pool.len()` of the pool).
async fn verify_batch(
    client: &Client,
    dir: &str,
    format: Format,
    pool: &[Bytes],
    images: usize,
) -> anyhow::Result<bool> {
    let mut seen = vec![false; images];
    let mut check = |name: &str, bytes: &[u8]| -> bool {
        let seq = name
            .strip_prefix("bench-")
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<usize>().ok());
        match seq {
            Some(s) if s < images && !seen[s] => {
                seen[s] = true;
                bytes == pool[s % pool.len()].as_ref()
            }
            _ => false,
        }
    };
    for s in client.list_status(dir, false).await? {
        let name = s.path.rsplit('/').next().unwrap_or("").to_owned();
        if s.isdir || name.starts_with('_') || name.starts_with('.') {
            continue;
        }
        let data = client.read(&s.path).await?.read_range(0, s.length).await?;
        match format {
            Format::Files => {
                if !check(&name, &data) {
                    return Ok(false);
                }
            }
            _ => {
                let decoded = decode_part(format, data).map_err(anyhow::Error::msg)?;
                for (n, b) in decoded {
                    if !check(&n, &b) {
                        return Ok(false);
                    }
                }
            }
        }
    }
    Ok(seen.iter().all(|&s| s))
}

fn summarize(
    sizes: &[u64],
    writers: &[Writer],
    batches: &[Batch],
    verified: &BTreeMap<(usize, usize), bool>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for (pi, &size) in sizes.iter().enumerate() {
        let of = |w: Writer| -> Vec<&Batch> {
            batches
                .iter()
                .filter(|b| b.size == size && b.writer == w.name())
                .collect()
        };
        let p50 = |w: Writer, f: &dyn Fn(&Batch) -> f64| {
            spread(of(w).iter().map(|b| f(b)).collect()).map(|s| s.p50)
        };
        let ips = |b: &Batch| b.images as f64 / b.secs.max(1e-9);
        let mbps = |b: &Batch| b.bytes as f64 / 1e6 / b.secs.max(1e-9);
        let files_ips = p50(Writer::Layout(Format::Files), &ips);
        let plain_mbps = p50(Writer::Plain, &mbps);
        for (wi, &w) in writers.iter().enumerate() {
            let bs = of(w);
            let images: usize = bs.iter().map(|b| b.images).sum();
            let objects: u64 = bs.iter().map(|b| b.files + b.blocks).sum();
            let dirs: u64 = bs.iter().map(|b| b.dirs).sum();
            let per_10k = |n: u64| n as f64 * 1e4 / images.max(1) as f64;
            let row_ips = spread(bs.iter().map(|b| ips(b)).collect());
            let row_mbps = spread(bs.iter().map(|b| mbps(b)).collect());
            rows.push(Row {
                writer: w.name(),
                size,
                images_per_batch: bs.first().map_or(0, |b| b.images),
                batch_ms: spread(bs.iter().map(|b| b.secs * 1e3).collect()),
                images_per_s: row_ips,
                mb_per_s: row_mbps,
                images_per_s_vs_files: match (row_ips, files_ips) {
                    (Some(x), Some(f)) if f > 0.0 => Some(x.p50 / f),
                    _ => None,
                },
                mb_per_s_vs_plain: match (row_mbps, plain_mbps) {
                    (Some(x), Some(p)) if p > 0.0 => Some(x.p50 / p),
                    _ => None,
                },
                objects_per_10k: per_10k(objects),
                dirs_per_10k: per_10k(dirs),
                verified: verified.get(&(pi, wi)).copied().unwrap_or(false),
            });
        }
    }
    rows
}

fn layout_table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| size | layout | images/batch | batch p50 / p99 | images/s p50 / p99 | MB/s p50 / p99 | × files images/s | × plain MB/s | NN objects / 10k images | dirs / 10k images | read back |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let cell = |s: Option<Spread>, d: usize| match s {
        Some(s) => format!("{:.d$} / {:.d$}", s.p50, s.p99, d = d),
        None => "-".into(),
    };
    let ratio = |r: Option<f64>| r.map_or("-".into(), |r| format!("×{r:.2}"));
    for r in rows {
        let name = if r.writer == "plain" {
            "plain hdfs-native, one file"
        } else {
            r.writer
        };
        t.push_str(&format!(
            "| {} | {name} | {} | {} ms | {} | {} | {} | {} | {:.1} | {:.1} | {} |\n",
            ByteSize(r.size),
            r.images_per_batch,
            cell(r.batch_ms, 0),
            cell(r.images_per_s, 0),
            cell(r.mb_per_s, 1),
            ratio(r.images_per_s_vs_files),
            ratio(r.mb_per_s_vs_plain),
            r.objects_per_10k,
            r.dirs_per_10k,
            if r.verified { "OK" } else { "MISMATCH" },
        ));
    }
    t
}

/// The targets for the packed layouts at 64 KiB: ≥ 10× `files`' images/s, ≥ 0.8 of the plain file's
/// bandwidth, ≤ 20 NameNode objects per 10,000 images.
fn target_lines(rows: &[Row]) -> String {
    let mut out = String::new();
    for r in rows
        .iter()
        .filter(|r| r.size == 64 << 10 && (r.writer == "sequencefile" || r.writer == "parquet"))
    {
        let mark = |ok: bool| if ok { "met" } else { "MISSED" };
        let vs_files = r.images_per_s_vs_files.unwrap_or(0.0);
        let vs_plain = r.mb_per_s_vs_plain.unwrap_or(0.0);
        out.push_str(&format!(
            "target {} at 64 KiB: ×{vs_files:.1} files' images/s (≥ 10: {}), ×{vs_plain:.2} the plain file's MB/s (≥ 0.8: {}), {:.1} objects per 10k images (≤ 20: {})\n",
            r.writer,
            mark(vs_files >= 10.0),
            mark(vs_plain >= 0.8),
            r.objects_per_10k,
            mark(r.objects_per_10k <= 20.0),
        ));
    }
    out
}

async fn checkpoint_latency(
    a: &HdfsArgs,
    base: &str,
    run: &str,
    opts: &HdfsOptions,
) -> anyhow::Result<Vec<CheckpointRow>> {
    let snapshot = |id: u64| {
        let mut sources = std::collections::BTreeMap::new();
        for s in 0..a.sources {
            let mut set = SeqSet::new();
            for q in 0..1000 {
                set.insert(q);
            }
            set.insert(5000 + id);
            sources.insert(format!("source-{s}"), set);
        }
        Snapshot {
            last_committed_batch_ms: Some(id),
            last_committed_seal_lsn: id,
            wal_low_water: id + 1,
            sources,
            ..Snapshot::empty(1, id, "bench", 0)
        }
    };
    let sled_dir = tempfile::tempdir()?;
    let stores: Vec<(&'static str, Arc<dyn CheckpointStore>)> = vec![
        (
            "hdfs",
            Arc::new(HdfsStore::connect(base, &format!("{run}/ckpt"), opts.clone()).await?),
        ),
        (
            "sled",
            Arc::new(SledStore::open(sled_dir.path().join("ckpt.sled"))?),
        ),
    ];
    let mut rows = Vec::new();
    for (name, store) in stores {
        let ck = Checkpointer::new(store);
        let (mut w, mut r) = (Vec::new(), Vec::new());
        for id in 1..=a.checkpoints as u64 {
            let s = snapshot(id);
            let t = Instant::now();
            ck.write(&s).await?;
            w.push(t.elapsed());
            let t = Instant::now();
            let got = ck.latest().await?;
            r.push(t.elapsed());
            ensure!(
                got.as_ref().map(|g| g.id) == Some(id),
                "{name}: read back the wrong checkpoint"
            );
            if id % 16 == 0 {
                ck.gc(3).await?;
            }
        }
        let ((w50, w99), (r50, r99)) = (percentiles(w), percentiles(r));
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        rows.push(CheckpointRow {
            store: name,
            write_p50_ms: ms(w50),
            write_p99_ms: ms(w99),
            read_p50_ms: ms(r50),
            read_p99_ms: ms(r99),
        });
    }
    Ok(rows)
}

fn checkpoint_table(rows: &[CheckpointRow], sources: usize) -> String {
    let ms = |v: f64| fmt_ms(Some(Duration::from_secs_f64(v / 1e3)));
    let mut t = format!(
        "| checkpoint store ({sources} sources) | write p50 | write p99 | read p50 | read p99 |\n|---|---:|---:|---:|---:|\n"
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            r.store,
            ms(r.write_p50_ms),
            ms(r.write_p99_ms),
            ms(r.read_p50_ms),
            ms(r.read_p99_ms)
        ));
    }
    t
}
