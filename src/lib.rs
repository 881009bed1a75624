//! hdfs-ingest: lands streams of images on HDFS or a local directory exactly once.
//!
//! # Layout
//!
//! - [`receiver`]: how images come in — the classic raw protocol (one image per connection, as a
//!   listener or pulling from a sender) and the framed protocol with sequence numbers and acks.
//! - [`wal`]: the write-ahead log every block goes through before it is acknowledged: segments, a
//!   CRC32 per record, group commit with fdatasync, recovery that truncates a torn tail.
//! - [`node`]: a running node — recovery, ingest with de-duplication, sealing batches, committing them
//!   through the sink and checkpointing through the `strategies` crate's checkpoint store.
//! - [`ha`]: roles at run time — heartbeats, failure detection, a standby taking over.
//! - [`sink`]: batch output — deterministic names, staging and one atomic rename, the analysis step.
//! - [`send`]: the upstream (`hdfs-ingest send`): the classic image server, a raw/framed pusher, manifests.
//! - [`verify`]: checks an output against a manifest: lost, duplicated, corrupt, unexpected.
//! - [`config`]: the TOML configuration, its defaults and its validation; [`size`]: `"64 MiB"` sizes.
//! - [`images`]: real JPEG and BMP images made on the spot for the demo, benchmarks and tests.
//! - [`cli`], [`demo`], [`bench`](mod@bench): the commands of the `hdfs-ingest` binary (`main` only calls [`cli::main`]).
//!
//! The fault-tolerance strategies, the checkpoint store and its backends live in the `strategies` crate,
//! which knows nothing of sockets or files: this crate depends on it, never the reverse.

pub mod bench;
pub mod cli;
pub mod config;
pub mod demo;
pub mod ha;
pub mod images;
pub mod node;
pub mod protocol;
pub mod receiver;
pub mod send;
pub mod sink;
pub mod size;
pub mod verify;
pub mod wal;
