//! Reading a published output back, whatever its layout: which directories are batches, and the
//! images of a part file. `verify`, `compact`, benchmarks and tests read through here.
//!
//! A reader does not need the writer's `output.path`: a *batch directory* is a directory, not
//! starting with `_` or `.`, that holds at least one file; a directory that holds only directories is
//! a partition (`dt=…`, `hour=…`) and is descended. In a batch, `part-NNNNN.seq` and
//! `part-NNNNN.parquet` are part files ([`Format::of_part_name`]), any other name not starting with
//! `_` or `.` is one image.

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use super::{sequencefile, Format};

/// Every batch directory under a local output root, as paths relative to it (`/`-separated), sorted.
pub fn local_batch_dirs(root: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    walk(root, String::new(), &mut out)?;
    out.sort();
    Ok(out)
}

fn walk(dir: &Path, rel: String, out: &mut Vec<String>) -> io::Result<()> {
    let mut subdirs = Vec::new();
    let mut has_file = false;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound && !rel.is_empty() => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("list {}: {e}", dir.display()),
            ))
        }
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            if !name.starts_with('_') {
                subdirs.push(name);
            }
        } else {
            has_file = true;
        }
    }
    if has_file && !rel.is_empty() {
        out.push(rel);
        return Ok(());
    }
    for name in subdirs {
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        walk(&dir.join(&name), child, out)?;
    }
    Ok(())
}

/// [`local_batch_dirs`] on HDFS: every batch directory under the absolute directory `root`, relative
/// to it, with the names of its entries (files and directories, `_`-files included), sorted. A
/// missing `root` is an error (`FileNotFound`); a directory that vanishes during the walk (renamed
/// or removed) is skipped.
pub async fn hdfs_batch_dirs(
    client: &hdfs_native::Client,
    root: &str,
) -> Result<Vec<(String, Vec<String>)>, hdfs_native::HdfsError> {
    let mut out = Vec::new();
    let mut dirs = vec![String::new()];
    while let Some(rel) = dirs.pop() {
        let path = if rel.is_empty() {
            root.to_owned()
        } else {
            format!("{root}/{rel}")
        };
        let listing = match client.list_status(&path, false).await {
            Ok(l) => l,
            Err(hdfs_native::HdfsError::FileNotFound(_)) if !rel.is_empty() => continue,
            Err(e) => return Err(e),
        };
        let name = |p: &str| p.rsplit('/').next().unwrap_or("").to_owned();
        if !rel.is_empty() && listing.iter().any(|e| !e.isdir) {
            out.push((rel, listing.iter().map(|e| name(&e.path)).collect()));
            continue;
        }
        for e in listing.iter().filter(|e| e.isdir) {
            let n = name(&e.path);
            if !n.starts_with(['_', '.']) {
                dirs.push(if rel.is_empty() {
                    n
                } else {
                    format!("{rel}/{n}")
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Every image file or part file of a local batch directory (not `_`- or `.`-files), sorted by name.
pub fn local_batch_files(batch: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(batch)?
        .filter_map(|e| e.ok())
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            !n.starts_with('_') && !n.starts_with('.') && e.file_type().is_ok_and(|t| t.is_file())
        })
        .map(|e| e.path())
        .collect();
    files.sort();
    Ok(files)
}

/// The images of a part file of `format`, as `(name, bytes)` in file order. A SequenceFile record
/// whose value disagrees with the size or CRC-32 its key records is an error naming the image.
pub fn decode_part(format: Format, data: Bytes) -> Result<Vec<(String, Bytes)>, String> {
    match format {
        Format::Files => Err("a files batch has no part files".into()),
        Format::SequenceFile => {
            let mut reader =
                sequencefile::Reader::new(io::Cursor::new(data)).map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            while let Some((key, value)) = reader.next_record().map_err(|e| e.to_string())? {
                let key = super::RecordKey::parse(&key)?;
                key.check(&value)?;
                out.push((key.name.to_owned(), Bytes::from(value)));
            }
            Ok(out)
        }
        Format::Parquet => {
            let builder =
                ParquetRecordBatchReaderBuilder::try_new(data).map_err(|e| e.to_string())?;
            let schema = builder.parquet_schema();
            let index = |name: &str| {
                (0..schema.num_columns())
                    .find(|&i| schema.column(i).name() == name)
                    .ok_or_else(|| format!("no column {name:?}"))
            };
            let (name_col, bytes_col) = (index("name")?, index("bytes")?);
            let mask = ProjectionMask::leaves(schema, [name_col, bytes_col]);
            let reader = builder
                .with_projection(mask)
                .build()
                .map_err(|e| e.to_string())?;
            let mut out = Vec::new();
            for batch in reader {
                let batch = batch.map_err(|e| e.to_string())?;
                let names = batch
                    .column_by_name("name")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::StringArray>())
                    .ok_or("column name is not a string column")?;
                let bytes = batch
                    .column_by_name("bytes")
                    .and_then(|c| c.as_any().downcast_ref::<arrow_array::BinaryArray>())
                    .ok_or("column bytes is not a binary column")?;
                for i in 0..batch.num_rows() {
                    out.push((
                        names.value(i).to_owned(),
                        Bytes::copy_from_slice(bytes.value(i)),
                    ));
                }
            }
            Ok(out)
        }
    }
}
