//! The upstream: `hdfs-ingest send`. It serves images the classic way ([`serve`]) or pushes them raw or
//! framed ([`push`]), and writes a manifest ([`manifest`]) that `hdfs-ingest verify` checks an output against.

pub mod manifest;
pub mod push;
pub mod serve;
