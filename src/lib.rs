//! hdfs-ingest: lands streams of images on HDFS or a local directory exactly once.
//!
//! # Layout
//!
//! Layers, top to bottom; each room imports only rooms below it (docs/ARCHITECTURE.md has the map and
//! `it/tests/layers.rs` the check):
//!
//! - [`cli`]: the `hdfs-ingest` binary's argument types and dispatch (`main` only calls [`cli::main`]).
//! - Commands: [`demo`]; [`bench`](mod@bench) (`bench ingest`, `bench hdfs`, `bench recovery`);
//!   [`verify`], which checks an output against a manifest (lost, duplicated, corrupt, unexpected);
//!   [`compact`], which rewrites old one-file-per-image batches into packed ones;
//!   [`send`], the upstream (`hdfs-ingest send`): the classic image server, a raw/framed pusher with its
//!   retention log and failover, manifests.
//! - [`ha`]: roles at run time — heartbeats, watching the primary, a standby taking over.
//! - [`node`]: one node — recovery, ingest with de-duplication, sealing and committing batches through
//!   the sink, checkpoints through the `strategies` crate's store, takeover; its run/stop life cycle.
//! - [`receiver`]: how images come in — the raw protocol (one image per connection, as a listener or
//!   pulling from a sender) and the framed one; they hand blocks to a [`receiver::Intake`].
//!   [`sink`]: batch output — deterministic names, staging and one atomic rename, the analysis step.
//!   [`wal`]: the write-ahead log every block goes through before it is acknowledged.
//! - [`protocol`]: the framed wire format; [`config`]: the TOML configuration, its defaults and
//!   validation; [`size`]: `"64 MiB"` sizes; [`images`]: real JPEG and BMP images made on the spot;
//!   [`layout`]: output layouts — the `output.path` template, and the `files`, `sequencefile` and
//!   `parquet` formats, written and read back.
//!
//! The fault-tolerance strategies, the checkpoint store and its backends live in the `strategies` crate,
//! which knows nothing of sockets or files: this crate depends on it, never the reverse.

pub mod bench;
pub mod cli;
pub mod compact;
pub mod config;
pub mod demo;
pub mod ha;
pub mod images;
pub mod layout;
pub mod node;
pub mod protocol;
pub mod receiver;
pub mod send;
pub mod sink;
pub mod size;
pub mod verify;
pub mod wal;
