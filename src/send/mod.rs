//! The upstream: `hdfs-ingest send`. It serves images the classic way ([`serve`]) or pushes them raw or
//! framed ([`push`]) to one node or fails over between several, keeping a retention log of what the
//! nodes have not yet released; it writes a manifest ([`manifest`]) that `hdfs-ingest verify` checks an
//! output against, and optionally a [`timeline`] of every block for benchmarks.
//!
//! - [`push`]: options, report, the raw worker, and the design (modes, release levels, retention).
//! - `options`, `report`: what a push is told, and what it did.
//! - `shared`: what every worker of one push shares, and the admission of the next image.
//! - `stream`: one framed stream's state machine (failover and mirror); `raw`: one raw worker.
//! - `link`: one connection to one node (connect + hello, reader, writer).
//! - [`interrupt`]: what SIGINT and SIGTERM do to `send push`.
//! - `retention`: the bounds on what all streams keep, shared.

pub mod interrupt;
mod link;
pub mod manifest;
mod options;
pub mod push;
mod raw;
mod report;
mod retention;
pub mod serve;
mod shared;
mod stream;
#[cfg(test)]
mod tests;
pub mod timeline;
