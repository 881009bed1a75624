//! The `parquet` layout's part files, written with the arrow-rs `parquet` crate.
//!
//! # Schema
//!
//! One row per image:
//!
//! | column | type | |
//! |---|---|---|
//! | `name` | string | `<source>-<seq>.<ext>`, the name the `files` layout gives the image |
//! | `source` | string | the source id |
//! | `seq` | int64 | the block's sequence number |
//! | `batch_ms` | int64 | the batch time, Unix milliseconds |
//! | `format` | string | `jpeg`, `png`, `bmp`, `gif`, `webp`, `tiff` or `unknown` |
//! | `width`, `height` | int32, null when the header does not parse | from the image header |
//! | `crc32` | int64 | CRC-32 (IEEE) of `bytes` |
//! | `bytes` | binary | the image, byte for byte |
//!
//! Signed 64-bit integers throughout: Spark, Hive and Trino read them without unsigned-type support.
//! The file's key-value metadata names the pipeline and the batch directory.
//!
//! # Encoding choices
//!
//! Uncompressed (images are compressed already, and the metadata columns are tiny). The `bytes`
//! column has no dictionary and no statistics: a dictionary of unique images only costs memory, and
//! min/max statistics of image bytes would copy image prefixes into every page header and the footer.
//!
//! # Memory
//!
//! Rows are buffered up to [`PENDING_BYTES`] and handed to the writer, which encodes them into the
//! current row group; a row group is flushed to the output at [`ROW_GROUP_BYTES`]. So a part holds at
//! most about `PENDING_BYTES + ROW_GROUP_BYTES` in memory, whatever its size on disk.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, Int32Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use super::{PackedImage, PartEncoder};

/// Rows buffered before they go to the writer.
pub const PENDING_BYTES: usize = 4 << 20;
/// A row group is written out once its encoded rows reach this size.
pub const ROW_GROUP_BYTES: usize = 32 << 20;
/// Rows buffered before they go to the writer, whatever their size.
const PENDING_ROWS: usize = 256;

/// The schema of every part file.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("seq", DataType::Int64, false),
        Field::new("batch_ms", DataType::Int64, false),
        Field::new("format", DataType::Utf8, false),
        Field::new("width", DataType::Int32, true),
        Field::new("height", DataType::Int32, true),
        Field::new("crc32", DataType::Int64, false),
        Field::new("bytes", DataType::Binary, false),
    ]))
}

/// One Parquet part file being written.
pub struct ParquetPart {
    writer: ArrowWriter<Vec<u8>>,
    rows: Rows,
}

#[derive(Default)]
struct Rows {
    name: StringBuilder,
    source: StringBuilder,
    seq: Int64Builder,
    batch_ms: Int64Builder,
    format: StringBuilder,
    width: Int32Builder,
    height: Int32Builder,
    crc32: Int64Builder,
    bytes: BinaryBuilder,
    count: usize,
    image_bytes: usize,
}

fn as_i32(v: Option<u64>) -> Option<i32> {
    v.and_then(|v| i32::try_from(v).ok())
}

impl ParquetPart {
    /// A part file whose footer carries `metadata`.
    pub fn new(metadata: &[(String, String)]) -> ParquetPart {
        let bytes = ColumnPath::from("bytes");
        let props = WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .set_column_dictionary_enabled(bytes.clone(), false)
            .set_column_statistics_enabled(bytes, EnabledStatistics::None)
            .set_key_value_metadata(Some(
                metadata
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .set_created_by(format!("hdfs-ingest {}", env!("CARGO_PKG_VERSION")))
            .build();
        let writer = ArrowWriter::try_new(Vec::new(), schema(), Some(props))
            .expect("a fixed schema with fixed properties is valid");
        ParquetPart {
            writer,
            rows: Rows::default(),
        }
    }

    fn write_pending(&mut self) -> Result<(), String> {
        if self.rows.count == 0 {
            return Ok(());
        }
        let r = std::mem::take(&mut self.rows);
        let mut r = r;
        let columns: Vec<ArrayRef> = vec![
            Arc::new(r.name.finish()),
            Arc::new(r.source.finish()),
            Arc::new(r.seq.finish()),
            Arc::new(r.batch_ms.finish()),
            Arc::new(r.format.finish()),
            Arc::new(r.width.finish()),
            Arc::new(r.height.finish()),
            Arc::new(r.crc32.finish()),
            Arc::new(r.bytes.finish()),
        ];
        let batch = RecordBatch::try_new(schema(), columns).map_err(|e| e.to_string())?;
        self.writer.write(&batch).map_err(|e| e.to_string())?;
        if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.writer.flush().map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl PartEncoder for ParquetPart {
    fn append(&mut self, image: &PackedImage<'_>) -> Result<(), String> {
        let r = &mut self.rows;
        r.name.append_value(image.name);
        r.source.append_value(image.source);
        r.seq.append_value(image.seq as i64);
        r.batch_ms.append_value(image.batch_ms as i64);
        r.format.append_value(image.format);
        r.width.append_option(as_i32(image.width));
        r.height.append_option(as_i32(image.height));
        r.crc32.append_value(i64::from(image.crc32));
        r.bytes.append_value(image.bytes);
        r.count += 1;
        r.image_bytes += image.bytes.len();
        if r.count >= PENDING_ROWS || r.image_bytes >= PENDING_BYTES {
            self.write_pending()?;
        }
        Ok(())
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(self.writer.inner_mut())
    }

    fn size(&self) -> u64 {
        (self.writer.bytes_written() + self.writer.in_progress_size() + self.rows.image_bytes)
            as u64
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, String> {
        self.write_pending()?;
        self.writer.into_inner().map_err(|e| e.to_string())
    }
}
