#![no_main]
//! See [`hdfs_ingest_fuzz::config`] for what this target feeds and checks.

libfuzzer_sys::fuzz_target!(|data: &[u8]| hdfs_ingest_fuzz::config(data));
