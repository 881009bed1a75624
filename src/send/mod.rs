//! The upstream: `hdfs-ingest send`. It serves images the classic way ([`serve`]) or pushes them raw or
//! framed ([`push`]) to one node or fails over between several, keeping a retention log of what the
//! nodes have not yet released; it writes a manifest ([`manifest`]) that `hdfs-ingest verify` checks an
//! output against, and optionally a [`timeline`] of every block for benchmarks.
//!
//! - [`push`]: options, report, the raw worker, and the design (modes, release levels, retention).
//! - `stream`: one framed stream's state machine (failover and mirror).
//! - `link`: one connection to one node (connect + hello, reader, writer).
//! - `retention`: the bounds on what all streams keep, shared.

mod link;
pub mod manifest;
pub mod push;
mod retention;
pub mod serve;
mod stream;
#[cfg(test)]
mod tests;
pub mod timeline;
