//! Output layouts: where a batch directory goes ([`template`]) and how its images are stored in it
//! ([`Format`]). [`Layout`] is the one place that builds every output path of a batch.
//!
//! # Formats
//!
//! - [`Format::Files`]: one file per image, `<source>-<seq>.<ext>` (the default for a local
//!   directory, and what Spark's `saveAsNewAPIHadoopFiles` of single images looks like).
//! - [`Format::SequenceFile`]: Hadoop SequenceFiles `part-NNNNN.seq` of `(Text key, BytesWritable
//!   image)` ([`sequencefile`]), the pair the classic Spark image pipeline writes. A SequenceFile's
//!   metadata is in its header, written before its images are known, so what a reader needs to check
//!   an image is in its key ([`record_key`]): `<source>-<seq>.<ext>#format=jpeg&size=65536&crc32=0a1b2c3d`
//!   — the `files` layout's name, then, after `#` (like a URL fragment; `key.split('#')` gives the
//!   name), the analysis format, the byte length and the CRC-32 (IEEE, 8 hex digits) of the value.
//!   [`read::decode_part`] checks both against the value.
//! - [`Format::Parquet`]: Parquet files `part-NNNNN.parquet` ([`parquet`]), one row per image with its
//!   name, source, seq, batch time, format, width, height, CRC-32 and bytes.
//!
//! HDFS is built for few large files: every file and every block costs NameNode heap, and every
//! file costs a create and a complete round trip. A packed batch is one part file per
//! `output.max_file_size` (default 128 MiB, one HDFS block at the default block size) or
//! `output.max_images_per_file`, whichever is reached first, instead of one file per image.
//! `_analysis.jsonl` is written for every format when analysis is on.
//!
//! # Exactly once is unchanged
//!
//! A packed batch is staged, claimed and published exactly like a `files` batch: its part files are
//! written into the batch's staging directory, which one rename publishes. A reader that lists the
//! output sees no part file until the whole batch is complete. Part names are a pure function of the
//! batch and the order of its blocks (`part-00000`, `part-00001`, …), so a retry writes the same names.
//!
//! # Memory
//!
//! A part file streams out: a SequenceFile part holds at most one image in memory, a Parquet part one
//! row group (at most [`parquet::ROW_GROUP_BYTES`] of encoded rows) before it is written.

pub mod parquet;
pub mod read;
pub mod sequencefile;
pub mod template;

use serde::{Deserialize, Serialize};

pub use template::{PathTemplate, TemplateError};

/// How the images of a batch are stored (`output.format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One file per image.
    #[default]
    Files,
    /// Hadoop SequenceFiles of `(Text, BytesWritable)`.
    SequenceFile,
    /// Parquet files, one row per image.
    Parquet,
}

impl Format {
    /// Every format, for tests and benchmarks that run each.
    pub const ALL: [Format; 3] = [Format::Files, Format::SequenceFile, Format::Parquet];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Files => "files",
            Format::SequenceFile => "sequencefile",
            Format::Parquet => "parquet",
        }
    }

    /// The extension of a part file, or `None` for one file per image.
    pub fn part_ext(self) -> Option<&'static str> {
        match self {
            Format::Files => None,
            Format::SequenceFile => Some("seq"),
            Format::Parquet => Some("parquet"),
        }
    }

    /// The format whose part files end in `.<ext>`, if any.
    pub fn of_part_name(name: &str) -> Option<Format> {
        let ext = name.strip_prefix("part-")?.rsplit_once('.')?.1;
        [Format::SequenceFile, Format::Parquet]
            .into_iter()
            .find(|f| f.part_ext() == Some(ext))
    }
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Format, String> {
        Format::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                format!("unknown output format {s:?} (known: files, sequencefile, parquet)")
            })
    }
}

/// Default `output.max_file_size`: one HDFS block at the default `dfs.blocksize`.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 128 << 20;
/// Default `output.max_images_per_file`.
pub const DEFAULT_MAX_IMAGES_PER_FILE: u64 = 1 << 20;

/// Everything that decides a batch's paths and part files.
#[derive(Clone, Debug)]
pub struct Layout {
    pub format: Format,
    pub path: PathTemplate,
    /// `node.pipeline`: `{pipeline}` in the template, and the pipeline recorded in part files.
    pub pipeline: String,
    /// `batch.prefix`: `{prefix}` in the template.
    pub prefix: String,
    /// A part file is closed before an image would take it past this size (a part holds one image
    /// at least).
    pub max_file_size: u64,
    /// A part file holds at most this many images.
    pub max_images_per_file: u64,
}

impl Layout {
    /// One file per image, every batch directly under the root as `<prefix>-<batch ms>`: the layout
    /// tools and tests use when they write outside a node.
    pub fn flat(prefix: &str) -> Layout {
        Layout {
            format: Format::Files,
            path: PathTemplate::parse(PathTemplate::FLAT).expect("the flat template parses"),
            pipeline: "default".into(),
            prefix: prefix.to_owned(),
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_images_per_file: DEFAULT_MAX_IMAGES_PER_FILE,
        }
    }

    /// This layout with another format.
    pub fn with_format(mut self, format: Format) -> Layout {
        self.format = format;
        self
    }

    /// The batch directory of the batch at `batch_ms`, relative to the output root.
    pub fn batch_dir(&self, batch_ms: u64) -> String {
        self.path.render(&self.pipeline, &self.prefix, batch_ms)
    }

    /// The name of part file `index` of a packed batch (`None` for [`Format::Files`]).
    pub fn part_name(&self, index: u32) -> Option<String> {
        self.format
            .part_ext()
            .map(|ext| format!("part-{index:05}.{ext}"))
    }
}

/// What a packed part file records of one image.
#[derive(Debug, Clone)]
pub struct PackedImage<'a> {
    /// `<source>-<seq>.<ext>`, the name the `files` layout gives it.
    pub name: &'a str,
    pub source: &'a str,
    pub seq: u64,
    pub batch_ms: u64,
    /// `jpeg`, `png`, …, `unknown` (the analysis report's name).
    pub format: &'a str,
    pub width: Option<u64>,
    pub height: Option<u64>,
    pub crc32: u32,
    pub bytes: &'a [u8],
}

/// The key of image `image`'s SequenceFile record (see the module doc).
pub fn record_key(image: &PackedImage<'_>) -> String {
    format!(
        "{}#format={}&size={}&crc32={:08x}",
        image.name,
        image.format,
        image.bytes.len(),
        image.crc32
    )
}

/// A SequenceFile record key read back: the image's name and what the key says of its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordKey<'a> {
    pub name: &'a str,
    pub format: Option<&'a str>,
    pub size: Option<u64>,
    pub crc32: Option<u32>,
}

impl<'a> RecordKey<'a> {
    /// Parses `key`; a key without `#` is a bare name (a file packed by another writer). Unknown
    /// fields after `#` are ignored (a later version may add some); a known one that does not parse
    /// is an error naming it.
    pub fn parse(key: &'a str) -> Result<RecordKey<'a>, String> {
        let (name, fields) = key.rsplit_once('#').unwrap_or((key, ""));
        let mut out = RecordKey {
            name,
            format: None,
            size: None,
            crc32: None,
        };
        for field in fields.split('&').filter(|f| !f.is_empty()) {
            let (k, v) = field.split_once('=').unwrap_or((field, ""));
            let bad = || format!("record key {key:?}: field {k} = {v:?} does not parse");
            match k {
                "format" => out.format = Some(v),
                "size" => out.size = Some(v.parse().map_err(|_| bad())?),
                "crc32" if v.len() == 8 => {
                    out.crc32 = Some(u32::from_str_radix(v, 16).map_err(|_| bad())?)
                }
                "crc32" => return Err(bad()),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Checks the value against the key's size and CRC-32: an error says which differs.
    pub fn check(&self, value: &[u8]) -> Result<(), String> {
        if let Some(size) = self.size.filter(|s| *s != value.len() as u64) {
            return Err(format!(
                "image {}: its key says {size} bytes, its value has {}",
                self.name,
                value.len()
            ));
        }
        if let Some(crc) = self.crc32 {
            let actual = crc32fast::hash(value);
            if crc != actual {
                return Err(format!(
                    "image {}: its key says CRC-32 {crc:08x}, its value's is {actual:08x}",
                    self.name
                ));
            }
        }
        Ok(())
    }
}

/// Encodes one part file into memory, drained by the caller after every image so that the part
/// streams out. Errors are the encoder's own (Parquet); the caller adds the path.
pub trait PartEncoder: Send {
    /// Adds one image.
    fn append(&mut self, image: &PackedImage<'_>) -> Result<(), String>;
    /// The bytes produced since the last call.
    fn take(&mut self) -> Vec<u8>;
    /// Bytes produced so far plus those still buffered: the part's size were it closed now.
    fn size(&self) -> u64;
    /// Ends the part: the remaining bytes (a Parquet footer, say).
    fn finish(self: Box<Self>) -> Result<Vec<u8>, String>;
}

/// A new encoder for part file `part` (its name) of batch `batch_dir`.
pub fn encoder(layout: &Layout, batch_dir: &str, part: &str) -> Option<Box<dyn PartEncoder>> {
    let metadata = vec![
        ("hdfs-ingest.pipeline".to_owned(), layout.pipeline.clone()),
        ("hdfs-ingest.batch".to_owned(), batch_dir.to_owned()),
    ];
    match layout.format {
        Format::Files => None,
        Format::SequenceFile => Some(Box::new(SequenceFilePart {
            writer: sequencefile::Writer::new(
                sequencefile::sync_marker(&format!("{batch_dir}/{part}")),
                &metadata,
            ),
        })),
        Format::Parquet => Some(Box::new(parquet::ParquetPart::new(&metadata))),
    }
}

struct SequenceFilePart {
    writer: sequencefile::Writer,
}

impl PartEncoder for SequenceFilePart {
    fn append(&mut self, image: &PackedImage<'_>) -> Result<(), String> {
        self.writer
            .try_append(&record_key(image), image.bytes)
            .map_err(|e| e.to_string())
    }
    fn take(&mut self) -> Vec<u8> {
        self.writer.take()
    }
    fn size(&self) -> u64 {
        self.writer.position()
    }
    fn finish(mut self: Box<Self>) -> Result<Vec<u8>, String> {
        Ok(self.writer.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_names_follow_the_format_and_are_recognised_back() {
        let l = Layout::flat("images").with_format(Format::SequenceFile);
        assert_eq!(l.part_name(3).as_deref(), Some("part-00003.seq"));
        assert_eq!(
            Format::of_part_name("part-00003.seq"),
            Some(Format::SequenceFile)
        );
        assert_eq!(
            Format::of_part_name("part-00000.parquet"),
            Some(Format::Parquet)
        );
        assert_eq!(Format::of_part_name("cam-1-3.jpg"), None);
        assert_eq!(Layout::flat("images").part_name(0), None);
    }

    fn image<'a>(bytes: &'a [u8]) -> PackedImage<'a> {
        PackedImage {
            name: "cam-1-42.jpg",
            source: "cam-1",
            seq: 42,
            batch_ms: 1_000,
            format: "jpeg",
            width: None,
            height: None,
            crc32: crc32fast::hash(bytes),
            bytes,
        }
    }

    #[test]
    fn a_record_key_carries_the_name_format_size_and_crc_and_parses_back() {
        let bytes = b"\xff\xd8 an image";
        let key = record_key(&image(bytes));
        assert_eq!(
            key,
            format!(
                "cam-1-42.jpg#format=jpeg&size=11&crc32={:08x}",
                crc32fast::hash(bytes)
            )
        );
        let parsed = RecordKey::parse(&key).unwrap();
        assert_eq!(parsed.name, "cam-1-42.jpg");
        assert_eq!(parsed.format, Some("jpeg"));
        assert_eq!(parsed.size, Some(11));
        assert_eq!(parsed.check(bytes), Ok(()));
        // A bare name (another writer's file) has nothing to check; unknown fields are ignored.
        let bare = RecordKey::parse("img-3.bin").unwrap();
        assert_eq!(
            (bare.name, bare.size, bare.crc32),
            ("img-3.bin", None, None)
        );
        assert_eq!(bare.check(b"anything"), Ok(()));
        assert_eq!(RecordKey::parse("a.jpg#later=1").unwrap().name, "a.jpg");
    }

    #[test]
    fn a_value_that_disagrees_with_its_key_is_named_with_what_differs() {
        let bytes = b"\xff\xd8 an image";
        let key = record_key(&image(bytes));
        let parsed = RecordKey::parse(&key).unwrap();
        let flipped = b"\xff\xd8 an imagf";
        let e = parsed.check(flipped).unwrap_err();
        assert!(e.contains("cam-1-42.jpg") && e.contains("CRC-32"), "{e}");
        let e = parsed.check(b"short").unwrap_err();
        assert!(e.contains("11 bytes") && e.contains("has 5"), "{e}");
        let e = RecordKey::parse("a.jpg#crc32=xyz").unwrap_err();
        assert!(e.contains("crc32") && e.contains("a.jpg#crc32=xyz"), "{e}");
        assert!(RecordKey::parse("a.jpg#size=ten").is_err());
    }

    #[test]
    fn a_format_name_parses_and_an_unknown_one_names_the_known_ones() {
        assert_eq!("parquet".parse::<Format>(), Ok(Format::Parquet));
        let e = "orc".parse::<Format>().unwrap_err();
        assert!(e.contains("\"orc\"") && e.contains("sequencefile"), "{e}");
    }
}
