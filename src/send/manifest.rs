//! The sender's manifest: one JSON line per image sent, with its SHA-256, and whether the node
//! acknowledged it. `hdfs-ingest verify` checks an output against it.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// Where the image came from (a file path, or `generated:<n>`).
    pub path: String,
    pub size: u64,
    pub sha256: String,
    /// `raw` or `framed`.
    pub protocol: String,
    /// The stream and sequence number (framed only: raw images are numbered by the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// The node acknowledged it (framed, at the level the sender waited for). Raw images are never acked.
    pub acked: bool,
    /// When the sender released it (Unix milliseconds; framed only): what failover tests time the
    /// pause of a pipeline by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_unix_ms: Option<u64>,
}

impl ManifestEntry {
    /// A raw image: sent, never acknowledged (the raw protocol has no acks), numbered by the node.
    pub fn raw(path: String, data: &[u8]) -> ManifestEntry {
        ManifestEntry {
            path,
            size: data.len() as u64,
            sha256: sha256_hex(data),
            protocol: "raw".into(),
            source: None,
            seq: None,
            acked: false,
            released_unix_ms: None,
        }
    }
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Appends entries to a manifest file; shared by a sender's tasks.
pub struct ManifestWriter {
    out: Mutex<BufWriter<File>>,
}

impl ManifestWriter {
    pub fn create(path: &Path) -> std::io::Result<ManifestWriter> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        Ok(ManifestWriter {
            out: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    pub fn append(&self, e: &ManifestEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(e).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.out
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write_all(&line)
    }

    pub fn flush(&self) -> std::io::Result<()> {
        self.out.lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

impl Drop for ManifestWriter {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Reads a manifest; a bad line is an error naming its line number.
pub fn read_manifest(path: &Path) -> std::io::Result<Vec<ManifestEntry>> {
    let f = File::open(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot open manifest {}: {e}", path.display()),
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let e = serde_json::from_str(&line).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}:{}: {e}", path.display(), i + 1),
            )
        })?;
        out.push(e);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manifest_round_trips_and_a_bad_line_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.jsonl");
        let e = ManifestEntry {
            path: "a.jpg".into(),
            size: 3,
            sha256: sha256_hex(b"abc"),
            protocol: "framed".into(),
            source: Some("s".into()),
            seq: Some(1),
            acked: true,
            released_unix_ms: Some(1_700_000_000_000),
        };
        {
            let w = ManifestWriter::create(&p).unwrap();
            w.append(&e).unwrap();
        }
        assert_eq!(read_manifest(&p).unwrap(), vec![e]);
        std::fs::write(&p, "{}\n").unwrap();
        let err = read_manifest(&p).unwrap_err().to_string();
        assert!(err.contains(":1:"), "{err}");
    }
}
