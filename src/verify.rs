//! `hdfs-ingest verify`: checks an output directory against a sender's manifest.
//!
//! The output may be in any layout (`files`, `sequencefile`, `parquet`; flat or partitioned): every
//! image of every batch directory is read, from its own file or from a part file.
//!
//! - Framed images are matched by name (`<source>-<seq>.<ext>`, in any batch directory) and content hash.
//! - Raw images carry no name the sender knows (the node numbers them), so they are matched by content
//!   hash, counting copies: more copies in the output than were sent is a duplicate.
//!
//! **Lost**: an acknowledged image (or, with `expect_all`, any image sent) that is not in the output.
//! **Duplicated**: an image in the output more than once. **Corrupt**: the right name, other bytes.
//! **Unexpected**: in the output, not in the manifest (e.g. a block the node stored but whose ack never
//! reached the sender) — reported, not an error.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::layout::Format;
use crate::send::manifest::ManifestEntry;

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct VerifyReport {
    pub manifest_entries: usize,
    pub expected: usize,
    pub found: usize,
    pub output_files: usize,
    pub lost: Vec<String>,
    pub duplicated: Vec<String>,
    pub corrupt: Vec<String>,
    pub unexpected: Vec<String>,
    /// Sent but not acknowledged, and not in the output (allowed: no ack, no promise).
    pub unconfirmed_missing: usize,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.lost.is_empty() && self.duplicated.is_empty() && self.corrupt.is_empty()
    }

    pub fn summary(&self) -> String {
        format!(
            "verify: {} expected, {} found, {} lost, {} duplicated, {} corrupt, {} unexpected, {} unconfirmed and missing ({} files in output) — {}",
            self.expected,
            self.found,
            self.lost.len(),
            self.duplicated.len(),
            self.corrupt.len(),
            self.unexpected.len(),
            self.unconfirmed_missing,
            self.output_files,
            if self.ok() { "OK" } else { "FAILED" }
        )
    }
}

struct OutFile {
    path: PathBuf,
    sha256: String,
    claimed: bool,
}

/// `<source>-<seq>.<ext>` → (source, seq).
pub fn parse_image_name(name: &str) -> Option<(&str, u64)> {
    let stem = name.rsplit_once('.').map(|(s, _)| s).unwrap_or(name);
    let (source, seq) = stem.rsplit_once('-')?;
    Some((source, seq.parse().ok()?))
}

/// One image found in the output: its name and its content hash; `path` says where (a file, or
/// `<part file>#<name>` for an image in a packed part file).
fn out_file(name: String, path: String, data: &[u8]) -> (String, OutFile) {
    (
        name,
        OutFile {
            path: PathBuf::from(path),
            sha256: hex::encode(Sha256::digest(data)),
            claimed: false,
        },
    )
}

/// The images of one file of a batch directory: the file itself, or every image of a part file.
fn images_of(
    name: &str,
    path: &str,
    data: bytes::Bytes,
    out: &mut Vec<(String, OutFile)>,
) -> std::io::Result<()> {
    match Format::of_part_name(name) {
        Some(format) => {
            let images = crate::layout::read::decode_part(format, data).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("part file {path} does not decode as {}: {e}", format.name()),
                )
            })?;
            for (image, bytes) in images {
                let at = format!("{path}#{image}");
                out.push(out_file(image, at, &bytes));
            }
        }
        None => out.push(out_file(name.to_owned(), path.to_owned(), &data)),
    }
    Ok(())
}

/// Every image in a local output, in any layout: the files and part files of every batch directory
/// ([`crate::layout::read::local_batch_dirs`]), skipping `_`-prefixed names (`_temporary`,
/// `_analysis.jsonl`) and dot-files.
fn scan_output(output: &Path) -> std::io::Result<Vec<(String, OutFile)>> {
    let mut out = Vec::new();
    let batches = crate::layout::read::local_batch_dirs(output).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read output {}: {e}", output.display()),
        )
    })?;
    for batch in batches {
        for path in crate::layout::read::local_batch_files(&output.join(&batch))? {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let data = read_file(&path)?;
            images_of(&name, &path.display().to_string(), data, &mut out)?;
        }
    }
    Ok(out)
}

fn read_file(path: &Path) -> std::io::Result<bytes::Bytes> {
    let mut f = File::open(path)?;
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    Ok(bytes::Bytes::from(data))
}

/// Compares an output directory with a manifest. `expect_all`: every image sent must be there,
/// acknowledged or not (for runs without failures, and for raw senders).
pub fn verify(
    manifest: &[ManifestEntry],
    output: &Path,
    expect_all: bool,
) -> std::io::Result<VerifyReport> {
    Ok(verify_files(manifest, scan_output(output)?, expect_all))
}

/// [`verify`] for an output on HDFS (`hdfs://namenode:port/dir`), read through hdfs-native.
pub async fn verify_hdfs(
    manifest: &[ManifestEntry],
    url: &str,
    options: &strategies::store::hdfs::HdfsOptions,
    expect_all: bool,
) -> std::io::Result<VerifyReport> {
    Ok(verify_files(
        manifest,
        scan_hdfs_output(url, options).await?,
        expect_all,
    ))
}

async fn scan_hdfs_output(
    url: &str,
    options: &strategies::store::hdfs::HdfsOptions,
) -> std::io::Result<Vec<(String, OutFile)>> {
    let err = |what: String| std::io::Error::other(format!("cannot read output {url}: {what}"));
    let (base, root) = crate::config::split_hdfs_url(url).map_err(err)?;
    let client =
        strategies::store::hdfs::build_client(&base, options).map_err(|e| err(e.to_string()))?;
    let mut out = Vec::new();
    let batches = crate::layout::read::hdfs_batch_dirs(&client, &root)
        .await
        .map_err(|e| err(e.to_string()))?;
    for (batch, names) in batches {
        for name in names.iter().filter(|n| !n.starts_with(['_', '.'])) {
            let path = format!("{root}/{batch}/{name}");
            let reader = client
                .read(&path)
                .await
                .map_err(|e| err(format!("{path}: {e}")))?;
            let data = reader
                .read_range(0, reader.file_length())
                .await
                .map_err(|e| err(format!("{path}: {e}")))?;
            images_of(name, &format!("{base}{path}"), data, &mut out)?;
        }
    }
    Ok(out)
}

fn verify_files(
    manifest: &[ManifestEntry],
    mut files: Vec<(String, OutFile)>,
    expect_all: bool,
) -> VerifyReport {
    let mut r = VerifyReport {
        manifest_entries: manifest.len(),
        output_files: files.len(),
        ..Default::default()
    };

    // Any name twice is a duplicate, whoever sent it.
    let mut by_name: HashMap<(String, u64), Vec<usize>> = HashMap::new();
    for (i, (name, _)) in files.iter().enumerate() {
        if let Some((s, q)) = parse_image_name(name) {
            by_name.entry((s.to_string(), q)).or_default().push(i);
        }
    }
    for ((s, q), idx) in &by_name {
        if idx.len() > 1 {
            let paths: Vec<String> = idx
                .iter()
                .map(|&i| files[i].1.path.display().to_string())
                .collect();
            r.duplicated.push(format!(
                "{s}-{q}: {} copies ({})",
                idx.len(),
                paths.join(", ")
            ));
        }
    }

    let mut raw_sent: BTreeMap<&str, (usize, Vec<&str>)> = BTreeMap::new();
    for e in manifest {
        let must = e.acked || expect_all;
        if must {
            r.expected += 1;
        }
        match (&e.source, e.seq) {
            (Some(source), Some(seq)) => match by_name.get(&(source.clone(), seq)) {
                None if must => r.lost.push(format!("{source}-{seq} ({})", e.path)),
                None => r.unconfirmed_missing += 1,
                Some(idx) => {
                    for &i in idx {
                        files[i].1.claimed = true;
                    }
                    let f = &files[idx[0]].1;
                    if f.sha256 != e.sha256 {
                        r.corrupt.push(format!(
                            "{}: content differs from {} (sha256 {} vs {})",
                            f.path.display(),
                            e.path,
                            f.sha256,
                            e.sha256
                        ));
                    } else if must {
                        r.found += 1;
                    }
                }
            },
            _ => {
                let slot = raw_sent.entry(e.sha256.as_str()).or_default();
                slot.0 += 1;
                slot.1.push(e.path.as_str());
            }
        }
    }
    // Raw: match by content, counting copies.
    let mut unclaimed_by_hash: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, (_, f)) in files.iter().enumerate() {
        if !f.claimed {
            unclaimed_by_hash
                .entry(f.sha256.clone())
                .or_default()
                .push(i);
        }
    }
    for (hash, (sent, paths)) in raw_sent {
        let have = unclaimed_by_hash.get(hash).map(|v| v.len()).unwrap_or(0);
        if have > sent {
            r.duplicated.push(format!(
                "raw image {} (sha256 {hash}): sent {sent}, {have} in output",
                paths[0]
            ));
        }
        let needed = if expect_all { sent } else { 0 };
        let matched = have.min(sent);
        if needed > matched {
            r.lost.extend(
                paths
                    .iter()
                    .skip(matched)
                    .take(needed - matched)
                    .map(|p| format!("raw image {p} (sha256 {hash})")),
            );
        } else if sent > matched {
            r.unconfirmed_missing += sent - matched;
        }
        r.found += matched.min(needed);
        if let Some(v) = unclaimed_by_hash.get(hash) {
            for &i in v.iter().take(have) {
                files[i].1.claimed = true;
            }
        }
    }
    for (name, f) in &files {
        if !f.claimed {
            r.unexpected.push(format!("{name} ({})", f.path.display()));
        }
    }
    r.lost.sort();
    r.duplicated.sort();
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::send::manifest::sha256_hex;

    fn entry(source: Option<&str>, seq: Option<u64>, data: &[u8], acked: bool) -> ManifestEntry {
        ManifestEntry {
            path: format!("img-{}", sha256_hex(data)),
            size: data.len() as u64,
            sha256: sha256_hex(data),
            protocol: if source.is_some() { "framed" } else { "raw" }.into(),
            source: source.map(String::from),
            seq,
            acked,
            released_unix_ms: None,
        }
    }

    fn put(dir: &Path, batch: &str, name: &str, data: &[u8]) {
        std::fs::create_dir_all(dir.join(batch)).unwrap();
        std::fs::write(dir.join(batch).join(name), data).unwrap();
    }

    #[test]
    fn a_complete_output_verifies_clean() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "images-1000", "s-0.jpg", b"a");
        put(d.path(), "images-1000", "_analysis.jsonl", b"{}");
        put(d.path(), "images-2000", "s-1.bmp", b"b");
        put(d.path(), "images-2000", "raw-0.bin", b"r");
        let m = vec![
            entry(Some("s"), Some(0), b"a", true),
            entry(Some("s"), Some(1), b"b", true),
            entry(None, None, b"r", false),
        ];
        let r = verify(&m, d.path(), true).unwrap();
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.found, 3);
        assert!(r.unexpected.is_empty());
    }

    #[test]
    fn a_missing_acked_image_is_lost_and_a_second_copy_is_a_duplicate() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "images-1000", "s-0.jpg", b"a");
        put(d.path(), "images-2000", "s-0.jpg", b"a");
        let m = vec![
            entry(Some("s"), Some(0), b"a", true),
            entry(Some("s"), Some(1), b"b", true),
        ];
        let r = verify(&m, d.path(), false).unwrap();
        assert!(!r.ok());
        assert_eq!(r.lost.len(), 1, "{r:?}");
        assert_eq!(r.duplicated.len(), 1, "{r:?}");
    }

    #[test]
    fn other_bytes_under_the_right_name_are_corrupt() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "images-1000", "s-0.jpg", b"x");
        let r = verify(&[entry(Some("s"), Some(0), b"a", true)], d.path(), false).unwrap();
        assert_eq!(r.corrupt.len(), 1);
        assert!(!r.ok());
    }

    #[test]
    fn an_unacked_image_may_be_missing_but_an_extra_raw_copy_is_a_duplicate() {
        let d = tempfile::tempdir().unwrap();
        put(d.path(), "images-1000", "raw-0.bin", b"r");
        put(d.path(), "images-1000", "raw-1.bin", b"r");
        let m = vec![
            entry(None, None, b"r", false),
            entry(Some("s"), Some(0), b"z", false),
        ];
        let r = verify(&m, d.path(), false).unwrap();
        assert_eq!(r.duplicated.len(), 1, "{r:?}");
        assert_eq!(r.unconfirmed_missing, 1);
        assert!(r.lost.is_empty());
    }

    #[test]
    fn image_names_parse_with_dashes_in_the_source() {
        assert_eq!(
            parse_image_name("send-17-3-42.jpg"),
            Some(("send-17-3", 42))
        );
        assert_eq!(parse_image_name("nodash.jpg"), None);
    }
}
