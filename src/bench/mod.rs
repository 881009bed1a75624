//! `hdfs-ingest bench`: what the benchmarks measure, and how.
//!
//! Each bench runs the real pieces — a node as a child process of this executable (`run --config`),
//! the library's sender ([`crate::send::push`]), the real output and checkpoint stores — and prints
//! Markdown tables that can go into the README as they are.
//!
//! - [`ingest`](mod@ingest) (`bench ingest`): end-to-end ingest through a real node process. Starts
//!   `hdfs-ingest run` on a scratch directory, pushes `--total` bytes of images framed over
//!   loopback, and prints images/s, MB/s, ack latency p50/p99 and the node's resident memory as the
//!   stream grows (sampled from /proc), so a memory leak shows as a column that keeps climbing.
//! - [`hdfs`](mod@hdfs) (`bench hdfs`): every output layout (`files`, `sequencefile`, `parquet`) at
//!   every image size against plain hdfs-native writing the same bytes as one file, in interleaved
//!   rounds so that drift hits all alike, with the NameNode objects each layout creates per 10,000
//!   images; and checkpoint write/read latency on HDFS and on sled.
//! - [`recovery`] (`bench recovery`): every strategy on one seeded workload, its primary killed
//!   with SIGKILL mid-stream (or, `--fault partition`, cut off from everyone by a real network
//!   partition), measured side by side; the module documents every figure.
//!
//! # Layout
//!
//! One room per command. Below them: [`stats`], the one place for percentiles and for how figures
//! are printed (`send push` and the demo print their latencies with it too), and `child`, what /proc
//! says of a node process and the SIGTERM that stops it; `net`, hosts as Linux network namespaces for
//! `--fault partition` (and the partition tests). The benches import only the library's lower
//! modules (`send`, `verify`, `ha`, `config`, `images`, `size`, `sink`, …) and the `strategies`
//! crate, never the commands (`cli`, `demo`): the commands call the benches, not the reverse. Inside,
//! a file imports only the files below it; this one wires them.

mod child;
pub mod hdfs;
pub mod ingest;
pub mod net;
pub mod recovery;
pub mod stats;

pub use child::rss_of;
pub use hdfs::{hdfs, HdfsArgs};
pub use ingest::{ingest, IngestArgs};
