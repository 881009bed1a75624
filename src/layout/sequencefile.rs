//! Hadoop SequenceFiles of `(org.apache.hadoop.io.Text name, org.apache.hadoop.io.BytesWritable image)`:
//! the codec of the `sequencefile` output layout.
//!
//! A batch directory in this layout holds part files `part-00000.seq`, … — the pair the classic
//! Spark image pipeline writes with `saveAsNewAPIHadoopFiles(…, Text, BytesWritable, …)` — so
//! Hadoop's own `SequenceFile.Reader`, `hadoop fs -text` and Spark's `sequenceFile` read them
//! unchanged. [`Writer`] produces the bytes, [`Reader`] reads them back and checks everything the
//! format lets it check.
//!
//! # The format on the wire
//!
//! All integers are big-endian (Java `DataOutput`); a *vint* is Hadoop's `WritableUtils.writeVInt`
//! (see below); a *Text* is a vint byte count followed by that many bytes of UTF-8.
//!
//! ```text
//! header   "SEQ" 0x06                          magic and version 6 (the version with metadata)
//!          Text "org.apache.hadoop.io.Text"    key class
//!          Text "org.apache.hadoop.io.BytesWritable"   value class
//!          0x00                                compression = false
//!          0x00                                blockCompression = false
//!          i32 n, then n × (Text name, Text value)     metadata, sorted by name
//!          16 bytes                            the sync marker
//! body     record | sync, repeated
//! record   i32 record length                   key bytes + value bytes
//!          i32 key length                      vint + UTF-8 bytes of the name
//!          vint n, n bytes of UTF-8            the key (a serialized Text)
//!          i32 m, m bytes                      the value (a serialized BytesWritable)
//! sync     i32 -1, then the 16-byte marker     the "sync escape"
//! ```
//!
//! **Where syncs go.** Exactly where Hadoop's `SequenceFile.Writer` puts them: before appending a
//! record, if the file position is at least [`SYNC_INTERVAL`] (5 × 1024 × 20 = 102,400) bytes past
//! the end of the last sync, a sync is written first. The "last sync" starts at offset 0, not at
//! the header's marker, so the first one comes before the first record starting at or past
//! offset 102,400. Nothing follows the last record (no trailing sync). Syncs let a reader that
//! starts in the middle of a file (a split of a MapReduce or Spark job) find the next record
//! boundary by scanning for the marker.
//!
//! **Metadata.** Hadoop keeps it in a `TreeMap<Text, Text>`, so its writer emits the pairs
//! sorted by name (Text compares bytes, as `str` does) and a name set twice keeps its last value;
//! [`Writer::new`] does the same, so the header is the one Hadoop would write for that metadata.
//!
//! **Vints.** A value in −112..=127 is one byte. Otherwise the first byte says the sign and the
//! count of bytes that follow (−113 − k for k positive bytes, −121 − k for k bytes of a negative
//! value's one's complement), then the magnitude big-endian in as few bytes as it needs.
//!
//! # Why uncompressed
//!
//! The values are JPEG/PNG/… images, compressed already: deflating them again costs CPU and gains
//! almost nothing. Uncompressed records also keep a record's bytes a plain function of the image
//! (no codec version in the output), keep the writer at one record of memory (block compression
//! buffers a megabyte of records), and keep the reader free of codecs. The reader refuses
//! compressed files rather than guessing.
//!
//! # Why a deterministic sync marker
//!
//! Hadoop draws the marker from an MD5 of a UID and the clock. A batch is published exactly once,
//! but it may be *written* more than once (a crash before the rename, a takeover): the sink's rule is
//! that a re-run of a batch computes exactly the same names, and with [`sync_marker`] — the first
//! 16 bytes of SHA-256 of a seed such as the part file's path — it computes the same bytes too.
//! Two runs can then be compared byte for byte, and a checksum of a part file identifies its
//! content. The marker only has to be unlikely inside the data, which 128 bits of a hash are.
//!
//! # Limits
//!
//! - A record (key and value with their lengths) is at most [`MAX_RECORD`] (1 GiB) — the format's
//!   own limit is `i32::MAX`; [`Writer::try_append`] refuses larger ones, [`Writer::append`] panics.
//! - [`Reader`] never allocates by a length it read: lengths are capped ([`ReaderOptions::max_record`],
//!   class names at 4 KiB) and data is read in growing chunks, so a length that claims more than
//!   the input holds ends in [`SequenceFileError::Truncated`] after allocating about what the input
//!   had.
//! - Every error names the byte offset of the field that was wrong and what was wrong with it; the
//!   reader never panics on any input (the corruption tests and the `sequencefile` fuzz target).
//! - [`Writer`] holds the header, then at most one record (plus a sync) until [`Writer::take`]
//!   drains it.

use std::collections::BTreeMap;
use std::io::{self, Read};

use sha2::{Digest, Sha256};

/// The key class every file of ours declares.
pub const KEY_CLASS: &str = "org.apache.hadoop.io.Text";
/// The value class every file of ours declares.
pub const VALUE_CLASS: &str = "org.apache.hadoop.io.BytesWritable";
/// The first three bytes of a SequenceFile.
pub const MAGIC: [u8; 3] = *b"SEQ";
/// The version written and read: 6, the first with metadata (and the current one).
pub const VERSION: u8 = 6;
/// The record "length" that announces a sync marker.
pub const SYNC_ESCAPE: i32 = -1;
/// Bytes in a sync marker.
pub const SYNC_HASH_SIZE: usize = 16;
/// Bytes of a sync in the body: the escape and the marker.
pub const SYNC_SIZE: usize = 4 + SYNC_HASH_SIZE;
/// Hadoop's `SequenceFile.SYNC_INTERVAL`: a sync precedes a record once this many bytes passed since
/// the last one.
pub const SYNC_INTERVAL: u64 = 5 * 1024 * SYNC_SIZE as u64;
/// The largest record written or read: 1 GiB.
pub const MAX_RECORD: usize = 1 << 30;
/// The longest class name [`Reader`] reads (ours are 25 and 34 bytes).
const MAX_CLASS_NAME: usize = 4096;

/// A deterministic sync marker for a part file: the first 16 bytes of SHA-256 of `seed`.
pub fn sync_marker(seed: &str) -> [u8; SYNC_HASH_SIZE] {
    let digest = Sha256::digest(seed.as_bytes());
    let mut marker = [0u8; SYNC_HASH_SIZE];
    marker.copy_from_slice(&digest[..SYNC_HASH_SIZE]);
    marker
}

/// Bytes a record of this key and value takes in the body (the two length fields included, a sync
/// before it not).
pub fn record_size(key: &str, value: &[u8]) -> u64 {
    8 + record_length(key, value)
}

/// The record length field: the serialized Text key plus the serialized BytesWritable value.
fn record_length(key: &str, value: &[u8]) -> u64 {
    let key_len = vint_size(key.len() as i64) + key.len();
    key_len as u64 + 4 + value.len() as u64
}

/// Writes a SequenceFile into memory, drained by the caller after each record (so a part file streams out
/// and the writer holds at most one record).
pub struct Writer {
    out: Vec<u8>,
    sync: [u8; SYNC_HASH_SIZE],
    /// Bytes handed out by [`Writer::take`] so far.
    drained: u64,
    /// File offset just past the last sync escape and marker (0 before the first, as in Hadoop).
    last_sync: u64,
}

impl Writer {
    /// Starts a file: the header, with `metadata` sorted by name (a name given twice keeps its last
    /// value, as in Hadoop's `Metadata`), is produced at once.
    ///
    /// # Panics
    ///
    /// If a metadata string is longer than `i32::MAX` bytes, which the format cannot express.
    pub fn new(sync: [u8; SYNC_HASH_SIZE], metadata: &[(String, String)]) -> Writer {
        let sorted: BTreeMap<&str, &str> = metadata
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        write_text(&mut out, KEY_CLASS);
        write_text(&mut out, VALUE_CLASS);
        out.push(0); // compression
        out.push(0); // blockCompression
        let count = i32::try_from(sorted.len()).expect("metadata has at most i32::MAX pairs");
        out.extend_from_slice(&count.to_be_bytes());
        for (name, value) in sorted {
            write_text(&mut out, name);
            write_text(&mut out, value);
        }
        out.extend_from_slice(&sync);
        Writer {
            out,
            sync,
            drained: 0,
            last_sync: 0,
        }
    }

    /// Appends one record, preceded by a sync when one is due.
    ///
    /// # Panics
    ///
    /// If the record is larger than [`MAX_RECORD`]; [`Writer::try_append`] returns an error instead.
    pub fn append(&mut self, key: &str, value: &[u8]) {
        if let Err(e) = self.try_append(key, value) {
            panic!("{e}");
        }
    }

    /// Appends one record, preceded by a sync when one is due, or refuses a record larger than
    /// [`MAX_RECORD`] (and then writes nothing).
    pub fn try_append(&mut self, key: &str, value: &[u8]) -> Result<(), SequenceFileError> {
        let length = record_length(key, value);
        if length > MAX_RECORD as u64 {
            return Err(SequenceFileError::TooLarge {
                offset: self.position(),
                what: "record",
                length,
                max: MAX_RECORD as u64,
            });
        }
        if self.position() >= self.last_sync + SYNC_INTERVAL {
            self.out.extend_from_slice(&SYNC_ESCAPE.to_be_bytes());
            self.out.extend_from_slice(&self.sync);
            self.last_sync = self.position();
        }
        // Both fit in an i32: the record is at most MAX_RECORD.
        let key_len = vint_size(key.len() as i64) + key.len();
        self.out.reserve(8 + length as usize);
        self.out.extend_from_slice(&(length as i32).to_be_bytes());
        self.out.extend_from_slice(&(key_len as i32).to_be_bytes());
        write_text(&mut self.out, key);
        self.out
            .extend_from_slice(&(value.len() as i32).to_be_bytes());
        self.out.extend_from_slice(value);
        Ok(())
    }

    /// The bytes produced since the last `take` (the header, at first).
    pub fn take(&mut self) -> Vec<u8> {
        let out = std::mem::take(&mut self.out);
        self.drained += out.len() as u64;
        out
    }

    /// Total bytes produced so far, taken or not: the file's length once all is taken.
    pub fn position(&self) -> u64 {
        self.drained + self.out.len() as u64
    }
}

/// How strictly [`Reader`] checks a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// The largest record (and metadata string) accepted.
    pub max_record: usize,
    /// Also require what Hadoop's writer (with its default sync interval) always does: syncs
    /// exactly where they are due and nowhere else, none at the end, metadata names strictly
    /// ascending. Without it, syncs may be anywhere between records (their markers are still
    /// checked) and metadata in any order, as Hadoop's reader allows.
    pub strict: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            max_record: MAX_RECORD,
            strict: true,
        }
    }
}

/// Reads a SequenceFile of (Text, BytesWritable), checking everything it can.
pub struct Reader<R: std::io::Read> {
    input: R,
    /// Bytes consumed from `input`: the file offset of what comes next.
    offset: u64,
    sync: [u8; SYNC_HASH_SIZE],
    metadata: Vec<(String, String)>,
    options: ReaderOptions,
    /// File offset just past the last sync (0 before the first).
    last_sync: u64,
    finished: bool,
    /// Offset of the error that stopped reading: later calls fail too.
    failed: Option<u64>,
}

impl<R: std::io::Read> Reader<R> {
    /// Parses and checks the header, strictly and with [`MAX_RECORD`] (see [`ReaderOptions`]).
    pub fn new(input: R) -> Result<Reader<R>, SequenceFileError> {
        Self::with_options(input, ReaderOptions::default())
    }

    /// Parses and checks the header.
    pub fn with_options(input: R, options: ReaderOptions) -> Result<Reader<R>, SequenceFileError> {
        let mut reader = Reader {
            input,
            offset: 0,
            sync: [0; SYNC_HASH_SIZE],
            metadata: Vec::new(),
            options,
            last_sync: 0,
            finished: false,
            failed: None,
        };
        reader.read_header()?;
        Ok(reader)
    }

    /// The header's metadata, in file order.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The header's sync marker.
    pub fn sync_marker(&self) -> [u8; SYNC_HASH_SIZE] {
        self.sync
    }

    /// The next `(name, value)`, `None` at a clean end of the file (after a whole record), or the
    /// first thing wrong; after an error every call fails.
    pub fn next_record(&mut self) -> Result<Option<(String, Vec<u8>)>, SequenceFileError> {
        if let Some(offset) = self.failed {
            return Err(SequenceFileError::AfterError { offset });
        }
        if self.finished {
            return Ok(None);
        }
        match self.read_record() {
            Ok(None) => {
                self.finished = true;
                Ok(None)
            }
            Ok(record) => Ok(record),
            Err(e) => {
                self.failed = Some(e.offset());
                Err(e)
            }
        }
    }

    fn read_header(&mut self) -> Result<(), SequenceFileError> {
        let magic: [u8; 3] = self.read_array("the magic \"SEQ\"")?;
        if magic != MAGIC {
            return Err(SequenceFileError::BadMagic {
                offset: 0,
                found: magic,
            });
        }
        let [version] = self.read_array("the version")?;
        if version != VERSION {
            return Err(SequenceFileError::UnsupportedVersion {
                offset: 3,
                found: version,
            });
        }
        for (what, expected) in [("key", KEY_CLASS), ("value", VALUE_CLASS)] {
            let at = self.offset;
            let found = self.read_text("a class name", MAX_CLASS_NAME)?;
            if found != expected {
                return Err(SequenceFileError::WrongClass {
                    offset: at,
                    what,
                    found,
                    expected,
                });
            }
        }
        for flag in ["compression", "blockCompression"] {
            let at = self.offset;
            match self.read_array("a compression flag")? {
                [0] => {}
                [1] => return Err(SequenceFileError::Compressed { offset: at, flag }),
                [found] => {
                    return Err(SequenceFileError::BadBoolean {
                        offset: at,
                        flag,
                        found,
                    })
                }
            }
        }
        let at = self.offset;
        let count = self.read_i32("the metadata count")?;
        if count < 0 {
            return Err(SequenceFileError::BadLength {
                offset: at,
                what: "metadata count",
                length: count.into(),
                problem: "negative".into(),
            });
        }
        // No reservation by `count`: each pair is read (at least 2 bytes) before it is kept.
        for _ in 0..count {
            let at = self.offset;
            let name = self.read_text("a metadata name", self.options.max_record)?;
            let value = self.read_text("a metadata value", self.options.max_record)?;
            if self.options.strict {
                if let Some((previous, _)) = self.metadata.last() {
                    if *previous >= name {
                        return Err(SequenceFileError::UnsortedMetadata {
                            offset: at,
                            name,
                            previous: previous.clone(),
                        });
                    }
                }
            }
            self.metadata.push((name, value));
        }
        self.sync = self.read_array("the header's sync marker")?;
        Ok(())
    }

    fn read_record(&mut self) -> Result<Option<(String, Vec<u8>)>, SequenceFileError> {
        let mut at = self.offset;
        let Some(mut length) = self.read_length_or_end()? else {
            return Ok(None);
        };
        let due = self.last_sync + SYNC_INTERVAL;
        if length == SYNC_ESCAPE {
            if self.options.strict && at < due {
                return Err(SequenceFileError::UnexpectedSync { offset: at, due });
            }
            let marker: [u8; SYNC_HASH_SIZE] = self.read_array("a sync marker")?;
            if marker != self.sync {
                return Err(SequenceFileError::BadSync {
                    offset: at + 4,
                    found: marker,
                    expected: self.sync,
                });
            }
            self.last_sync = self.offset;
            let sync_at = at;
            at = self.offset;
            match self.read_length_or_end()? {
                None if self.options.strict => {
                    return Err(SequenceFileError::TrailingSync { offset: sync_at })
                }
                None => return Ok(None),
                Some(SYNC_ESCAPE) => return Err(SequenceFileError::RepeatedSync { offset: at }),
                Some(next) => length = next,
            }
        } else if self.options.strict && at >= due {
            return Err(SequenceFileError::MissingSync { offset: at, due });
        }

        // The smallest record: an empty Text (1 byte) and an empty BytesWritable (4 bytes).
        if length < 5 {
            return Err(SequenceFileError::BadLength {
                offset: at,
                what: "record length",
                length: length.into(),
                problem: if length < 0 {
                    "negative, and not the sync escape (-1)".into()
                } else {
                    "shorter than the smallest record (5 bytes: an empty Text and an empty BytesWritable)".into()
                },
            });
        }
        if length as usize > self.options.max_record {
            return Err(SequenceFileError::TooLarge {
                offset: at,
                what: "record",
                length: length as u64,
                max: self.options.max_record as u64,
            });
        }

        let key_len_at = self.offset;
        let key_len = self.read_i32("a key length")?;
        if key_len < 1 || key_len > length - 4 {
            return Err(SequenceFileError::BadLength {
                offset: key_len_at,
                what: "key length",
                length: key_len.into(),
                problem: format!(
                    "a record of {length} bytes holds a key of 1..={} bytes and a 4-byte value size",
                    length - 4
                ),
            });
        }
        let key_at = self.offset;
        let mut key = self.read_bytes(key_len as usize, "a key")?;
        let (text_len, vint_len) =
            decode_vint_prefix(&key).map_err(|problem| SequenceFileError::BadVInt {
                offset: key_at,
                what: "a key's Text length",
                problem,
            })?;
        if text_len < 0 || vint_len as i64 + i64::from(text_len) != i64::from(key_len) {
            return Err(SequenceFileError::BadLength {
                offset: key_at,
                what: "key Text length",
                length: text_len.into(),
                problem: format!(
                    "the key length field says {key_len} bytes: {} after the {vint_len}-byte Text length",
                    key_len as usize - vint_len
                ),
            });
        }
        key.drain(..vint_len);
        let name = String::from_utf8(key).map_err(|e| SequenceFileError::NotUtf8 {
            offset: key_at + (vint_len + e.utf8_error().valid_up_to()) as u64,
            what: "a key",
        })?;

        let size_at = self.offset;
        let size = self.read_i32("a value size")?;
        let expected = length - key_len - 4;
        if size != expected {
            return Err(SequenceFileError::BadLength {
                offset: size_at,
                what: "value size",
                length: size.into(),
                problem: format!(
                    "the record length ({length}) less the key ({key_len}) and this field leaves {expected} bytes"
                ),
            });
        }
        let value = self.read_bytes(size as usize, "a value")?;
        Ok(Some((name, value)))
    }

    /// Reads up to `buf.len()` bytes, fewer only at the end of the input; returns how many.
    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<usize, SequenceFileError> {
        let mut got = 0;
        while got < buf.len() {
            match self.input.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(SequenceFileError::Io {
                        offset: self.offset + got as u64,
                        what,
                        source,
                    })
                }
            }
        }
        self.offset += got as u64;
        Ok(got)
    }

    fn read_array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<[u8; N], SequenceFileError> {
        let at = self.offset;
        let mut buf = [0u8; N];
        if self.fill(&mut buf, what)? < N {
            return Err(SequenceFileError::Truncated {
                offset: at,
                what,
                end: self.offset,
            });
        }
        Ok(buf)
    }

    fn read_i32(&mut self, what: &'static str) -> Result<i32, SequenceFileError> {
        self.read_array(what).map(i32::from_be_bytes)
    }

    /// A record length, or `None` if the input ends exactly here.
    fn read_length_or_end(&mut self) -> Result<Option<i32>, SequenceFileError> {
        let at = self.offset;
        let what = "a record length";
        let mut buf = [0u8; 4];
        match self.fill(&mut buf, what)? {
            0 => Ok(None),
            4 => Ok(Some(i32::from_be_bytes(buf))),
            _ => Err(SequenceFileError::Truncated {
                offset: at,
                what,
                end: self.offset,
            }),
        }
    }

    /// Reads `len` bytes into a buffer that grows with what arrives, so a length that promises more
    /// than the input has costs no more memory than the input had.
    fn read_bytes(&mut self, len: usize, what: &'static str) -> Result<Vec<u8>, SequenceFileError> {
        let at = self.offset;
        let mut buf = Vec::new();
        let result = self.input.by_ref().take(len as u64).read_to_end(&mut buf);
        self.offset += buf.len() as u64;
        if let Err(source) = result {
            return Err(SequenceFileError::Io {
                offset: self.offset,
                what,
                source,
            });
        }
        if buf.len() < len {
            return Err(SequenceFileError::Truncated {
                offset: at,
                what,
                end: self.offset,
            });
        }
        Ok(buf)
    }

    fn read_vint(&mut self, what: &'static str) -> Result<i32, SequenceFileError> {
        let at = self.offset;
        let [first] = self.read_array(what)?;
        let mut buf = [0u8; 9];
        buf[0] = first;
        let size = vint_size_from_first(first);
        if self.fill(&mut buf[1..size], what)? < size - 1 {
            return Err(SequenceFileError::Truncated {
                offset: at,
                what,
                end: self.offset,
            });
        }
        decode_vint(&buf[..size]).map_err(|problem| SequenceFileError::BadVInt {
            offset: at,
            what,
            problem,
        })
    }

    fn read_text(&mut self, what: &'static str, max: usize) -> Result<String, SequenceFileError> {
        let at = self.offset;
        let len = self.read_vint(what)?;
        if len < 0 {
            return Err(SequenceFileError::BadLength {
                offset: at,
                what,
                length: len.into(),
                problem: "negative".into(),
            });
        }
        if len as usize > max {
            return Err(SequenceFileError::TooLarge {
                offset: at,
                what,
                length: len as u64,
                max: max as u64,
            });
        }
        let text_at = self.offset;
        let bytes = self.read_bytes(len as usize, what)?;
        String::from_utf8(bytes).map_err(|e| SequenceFileError::NotUtf8 {
            offset: text_at + e.utf8_error().valid_up_to() as u64,
            what,
        })
    }
}

/// What was wrong with a SequenceFile, and at which byte offset (of the field, unless said otherwise).
#[derive(Debug, thiserror::Error)]
pub enum SequenceFileError {
    #[error("offset {offset}: the input ends at offset {end}, inside {what}")]
    Truncated {
        offset: u64,
        what: &'static str,
        end: u64,
    },
    #[error("offset {offset}: reading {what} failed: {source}")]
    Io {
        offset: u64,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("offset {offset}: not a SequenceFile: the magic is {found:02x?}, not \"SEQ\"")]
    BadMagic { offset: u64, found: [u8; 3] },
    #[error(
        "offset {offset}: SequenceFile version {found} is not supported (only version {VERSION})"
    )]
    UnsupportedVersion { offset: u64, found: u8 },
    #[error("offset {offset}: the {what} class is {found:?}, not {expected}")]
    WrongClass {
        offset: u64,
        what: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("offset {offset}: {flag} is true; only uncompressed files are supported")]
    Compressed { offset: u64, flag: &'static str },
    #[error("offset {offset}: {flag} is the byte {found:#04x}, not a boolean (0 or 1)")]
    BadBoolean {
        offset: u64,
        flag: &'static str,
        found: u8,
    },
    #[error("offset {offset}: {what} is not a valid vint: {problem}")]
    BadVInt {
        offset: u64,
        what: &'static str,
        problem: &'static str,
    },
    #[error("offset {offset}: {what} {length} is wrong: {problem}")]
    BadLength {
        offset: u64,
        what: &'static str,
        length: i64,
        problem: String,
    },
    #[error("offset {offset}: {what} of {length} bytes is over the limit of {max}")]
    TooLarge {
        offset: u64,
        what: &'static str,
        length: u64,
        max: u64,
    },
    #[error("offset {offset}: {what} is not UTF-8")]
    NotUtf8 { offset: u64, what: &'static str },
    #[error("offset {offset}: metadata name {name:?} does not sort after {previous:?}")]
    UnsortedMetadata {
        offset: u64,
        name: String,
        previous: String,
    },
    #[error("offset {offset}: the sync marker is {found:02x?}, not the header's {expected:02x?}")]
    BadSync {
        offset: u64,
        found: [u8; SYNC_HASH_SIZE],
        expected: [u8; SYNC_HASH_SIZE],
    },
    #[error("offset {offset}: a sync, but none is due before offset {due}")]
    UnexpectedSync { offset: u64, due: u64 },
    #[error("offset {offset}: a record without the sync that is due since offset {due}")]
    MissingSync { offset: u64, due: u64 },
    #[error("offset {offset}: a sync escape directly after a sync marker")]
    RepeatedSync { offset: u64 },
    #[error("offset {offset}: the file ends with a sync, which no record follows")]
    TrailingSync { offset: u64 },
    #[error("offset {offset}: reading stopped at an earlier error")]
    AfterError { offset: u64 },
}

impl SequenceFileError {
    /// The byte offset the error names.
    pub fn offset(&self) -> u64 {
        use SequenceFileError::*;
        match self {
            Truncated { offset, .. }
            | Io { offset, .. }
            | BadMagic { offset, .. }
            | UnsupportedVersion { offset, .. }
            | WrongClass { offset, .. }
            | Compressed { offset, .. }
            | BadBoolean { offset, .. }
            | BadVInt { offset, .. }
            | BadLength { offset, .. }
            | TooLarge { offset, .. }
            | NotUtf8 { offset, .. }
            | UnsortedMetadata { offset, .. }
            | BadSync { offset, .. }
            | UnexpectedSync { offset, .. }
            | MissingSync { offset, .. }
            | RepeatedSync { offset }
            | TrailingSync { offset }
            | AfterError { offset } => *offset,
        }
    }
}

/// Bytes that follow a vint's first byte, plus one.
fn vint_size_from_first(first: u8) -> usize {
    match first as i8 {
        b if b >= -112 => 1,
        b if b < -120 => (-119 - i32::from(b)) as usize,
        b => (-111 - i32::from(b)) as usize,
    }
}

/// Bytes needed for the magnitude of a value outside −112..=127 (its one's complement if negative).
fn magnitude_bytes(value: i64) -> usize {
    let magnitude = if value < 0 { !value } else { value };
    (64 - magnitude.leading_zeros() as usize).div_ceil(8)
}

/// Bytes Hadoop's `writeVLong` uses for `value`.
fn vint_size(value: i64) -> usize {
    if (-112..=127).contains(&value) {
        1
    } else {
        1 + magnitude_bytes(value)
    }
}

/// Hadoop's `WritableUtils.writeVInt` (which is `writeVLong` of the same value).
fn write_vint(out: &mut Vec<u8>, value: i32) {
    let value = i64::from(value);
    if (-112..=127).contains(&value) {
        out.push(value as i8 as u8);
        return;
    }
    let n = magnitude_bytes(value);
    let (base, magnitude) = if value < 0 {
        (-120, !value)
    } else {
        (-112, value)
    };
    out.push((base - n as i64) as i8 as u8);
    out.extend_from_slice(&magnitude.to_be_bytes()[8 - n..]);
}

/// Decodes a whole vint (`bytes` is exactly its encoding), refusing what Hadoop's writer never
/// produces: a value outside i32, or an encoding longer than needed.
fn decode_vint(bytes: &[u8]) -> Result<i32, &'static str> {
    let first = bytes[0];
    let value = if bytes.len() == 1 {
        i64::from(first as i8)
    } else {
        let magnitude = bytes[1..]
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) as i64;
        let negative = (first as i8) < -120;
        if negative {
            !magnitude
        } else {
            magnitude
        }
    };
    let value = i32::try_from(value).map_err(|_| "the value does not fit in 32 bits")?;
    if vint_size(value.into()) != bytes.len() {
        return Err("the encoding is longer than the value needs");
    }
    Ok(value)
}

/// Decodes the vint at the start of `bytes`: its value and its size.
fn decode_vint_prefix(bytes: &[u8]) -> Result<(i32, usize), &'static str> {
    let Some(&first) = bytes.first() else {
        return Err("no bytes");
    };
    let size = vint_size_from_first(first);
    if bytes.len() < size {
        return Err("it is longer than the bytes that hold it");
    }
    decode_vint(&bytes[..size]).map(|value| (value, size))
}

/// A serialized Text: the vint byte count, then the UTF-8 bytes.
fn write_text(out: &mut Vec<u8>, text: &str) {
    let len = i32::try_from(text.len()).expect("a Text is at most i32::MAX bytes");
    write_vint(out, len);
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The header of a file without metadata: "SEQ" 6, the two class Texts (1 + 25, 1 + 34
    /// bytes), two flags, the metadata count and the marker.
    const BARE_HEADER_LEN: usize = 4 + 26 + 35 + 2 + 4 + 16;

    fn marker() -> [u8; 16] {
        sync_marker("part-00000.seq")
    }

    /// A whole file, written and drained record by record.
    fn file_of(metadata: &[(String, String)], records: &[(String, Vec<u8>)]) -> Vec<u8> {
        let mut writer = Writer::new(marker(), metadata);
        let mut file = writer.take();
        for (key, value) in records {
            writer.append(key, value);
            file.extend(writer.take());
        }
        assert_eq!(writer.position(), file.len() as u64);
        file
    }

    /// A file's metadata and records.
    type Contents = (Vec<(String, String)>, Vec<(String, Vec<u8>)>);

    /// Every record of `file`, or the first error.
    fn read_all(file: &[u8], options: ReaderOptions) -> Result<Contents, SequenceFileError> {
        let mut reader = Reader::with_options(file, options)?;
        let mut records = Vec::new();
        while let Some(record) = reader.next_record()? {
            records.push(record);
        }
        Ok((reader.metadata().to_vec(), records))
    }

    fn strict() -> ReaderOptions {
        ReaderOptions::default()
    }

    fn be(value: i32) -> [u8; 4] {
        value.to_be_bytes()
    }

    /// A header of our classes, no metadata, flags as given: `(bytes, offset of the first flag)`.
    fn header_with(version: u8, key_class: &str, compression: u8, block: u8) -> (Vec<u8>, u64) {
        let mut out = b"SEQ".to_vec();
        out.push(version);
        out.push(key_class.len() as u8);
        out.extend_from_slice(key_class.as_bytes());
        out.push(34);
        out.extend_from_slice(b"org.apache.hadoop.io.BytesWritable");
        let flags_at = out.len() as u64;
        out.extend_from_slice(&[compression, block]);
        out.extend_from_slice(&be(0));
        out.extend_from_slice(&marker());
        (out, flags_at)
    }

    /// Values that cannot contain a marker by accident (a slow ramp) and differ per record.
    fn value_of(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                // xorshift64
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect()
    }

    #[test]
    fn vints_are_encoded_as_hadoops_write_vint_encodes_them() {
        // writeVLong: -112..=127 is the byte itself; otherwise a first byte of -112 - k (positive,
        // k magnitude bytes) or -120 - k (negative: the magnitude is the one's complement), then
        // the magnitude big-endian.
        let cases: [(i32, &[u8]); 10] = [
            (-113, &[0x87, 0x70]), // !-113 = 112, one byte: -121 = 0x87
            (-112, &[0x90]),
            (127, &[0x7f]),
            (128, &[0x8f, 0x80]), // one byte: -113 = 0x8f
            (255, &[0x8f, 0xff]),
            (256, &[0x8e, 0x01, 0x00]), // two bytes: -114 = 0x8e
            (65535, &[0x8e, 0xff, 0xff]),
            (-1, &[0xff]),
            (i32::MIN, &[0x84, 0x7f, 0xff, 0xff, 0xff]), // !MIN = MAX, four bytes: -124
            (i32::MAX, &[0x8c, 0x7f, 0xff, 0xff, 0xff]), // four bytes: -116 = 0x8c
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_vint(&mut out, value);
            assert_eq!(out, expected, "writeVInt({value})");
            assert_eq!(vint_size(value.into()), expected.len(), "size of {value}");
            assert_eq!(
                vint_size_from_first(expected[0]),
                expected.len(),
                "size from first byte of {value}"
            );
            assert_eq!(
                decode_vint(expected),
                Ok(value),
                "readVInt of {expected:02x?}"
            );
            assert_eq!(decode_vint_prefix(expected), Ok((value, expected.len())));
        }
    }

    #[test]
    fn vints_that_hadoop_would_not_write_are_refused() {
        // 5 in two bytes, -1 in two bytes, 2^32 in five bytes (beyond i32), a prefix cut short.
        assert!(decode_vint(&[0x8f, 0x05]).is_err());
        assert!(decode_vint(&[0x87, 0x00]).is_err());
        assert!(decode_vint(&[0x8b, 0x01, 0x00, 0x00, 0x00, 0x00]).is_err());
        assert!(decode_vint_prefix(&[0x8e, 0x01]).is_err());
        assert!(decode_vint_prefix(&[]).is_err());
    }

    #[test]
    fn the_header_is_byte_for_byte_the_one_hadoop_writes() {
        let sync: [u8; 16] = std::array::from_fn(|i| 0xa0 + i as u8);
        let writer = Writer::new(sync, &[("origin".into(), "cam-1".into())]);
        let mut expected = Vec::new();
        expected.extend_from_slice(b"SEQ\x06");
        expected.push(25);
        expected.extend_from_slice(b"org.apache.hadoop.io.Text");
        expected.push(34);
        expected.extend_from_slice(b"org.apache.hadoop.io.BytesWritable");
        expected.extend_from_slice(&[0x00, 0x00]); // compression, blockCompression
        expected.extend_from_slice(&[0x00, 0x00, 0x00, 0x01]); // one metadata pair
        expected.push(6);
        expected.extend_from_slice(b"origin");
        expected.push(5);
        expected.extend_from_slice(b"cam-1");
        expected.extend_from_slice(&[
            0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad,
            0xae, 0xaf,
        ]);
        let mut writer = writer;
        assert_eq!(writer.position(), expected.len() as u64);
        assert_eq!(writer.take(), expected);
        assert_eq!(Writer::new(sync, &[]).take().len(), BARE_HEADER_LEN);
    }

    #[test]
    fn a_record_is_its_lengths_then_a_text_then_a_bytes_writable() {
        let mut writer = Writer::new(marker(), &[]);
        writer.take();
        writer.append("a", &[1, 2, 3]);
        let name = "n".repeat(200); // a Text length of two vint bytes
        writer.append(&name, &[]);
        let mut expected = vec![
            0, 0, 0, 9, // record: key 2 + value 7
            0, 0, 0, 2, // key: vint 1 + "a"
            1, b'a', //
            0, 0, 0, 3, 1, 2, 3, // BytesWritable
            0, 0, 0, 206, // record: key 202 + value 4
            0, 0, 0, 202, // key: vint 0x8f 0xc8 + 200 bytes
            0x8f, 200,
        ];
        expected.extend_from_slice(name.as_bytes());
        expected.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(writer.take(), expected);
        assert_eq!(record_size("a", &[1, 2, 3]), 17);
    }

    #[test]
    fn metadata_is_written_sorted_by_name_and_a_repeated_name_keeps_its_last_value(
    ) -> anyhow::Result<()> {
        let given: Vec<(String, String)> =
            [("zeta", "1"), ("alpha", "2"), ("Zeta", "3"), ("alpha", "4")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        let file = file_of(&given, &[]);
        let (metadata, records) = read_all(&file, strict())?;
        let expected: Vec<(String, String)> = [("Zeta", "3"), ("alpha", "4"), ("zeta", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(metadata, expected);
        assert!(records.is_empty());
        Ok(())
    }

    #[test]
    fn sync_markers_are_deterministic_and_differ_by_seed() {
        assert_eq!(
            sync_marker("a/part-00000.seq"),
            sync_marker("a/part-00000.seq")
        );
        assert_ne!(
            sync_marker("a/part-00000.seq"),
            sync_marker("a/part-00001.seq")
        );
        // SHA-256("abc") starts ba7816bf 8f01cfea 414140de 5dae2223.
        assert_eq!(
            sync_marker("abc"),
            [
                0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40, 0xde, 0x5d, 0xae,
                0x22, 0x23
            ]
        );
    }

    #[test]
    fn a_sync_precedes_exactly_the_first_record_at_or_past_each_interval() {
        let records: Vec<(String, Vec<u8>)> = (0..80)
            .map(|i| (format!("cam-1/{i:05}.jpg"), value_of(10 * 1024, i)))
            .collect();
        let file = file_of(&[], &records);
        let sync = marker();

        // Walk the raw bytes: a record length, or -1 and the marker.
        let i32_at = |pos: usize| i32::from_be_bytes(file[pos..pos + 4].try_into().unwrap());
        let mut pos = BARE_HEADER_LEN;
        let mut last_sync_end = 0usize; // Hadoop's lastSyncPos starts at 0
        let mut syncs = Vec::new();
        let mut record_count = 0;
        while pos < file.len() {
            let starts_at = pos;
            let synced = i32_at(pos) == -1;
            if synced {
                assert_eq!(file[pos + 4..pos + 20], sync, "the marker at {pos}");
                syncs.push(pos);
                pos += 20;
                last_sync_end = pos;
            }
            let length = i32_at(pos);
            assert!(length > 0, "a record length at {pos}");
            if synced {
                // The sync was due: at least an interval since the previous one ended.
                let previous_end = syncs.len().checked_sub(2).map_or(0, |i| syncs[i] + 20);
                assert!(
                    starts_at >= previous_end + 102_400,
                    "sync at {starts_at} too early"
                );
            } else {
                assert!(
                    starts_at < last_sync_end + 102_400,
                    "no sync before the record at {starts_at}, due since {}",
                    last_sync_end + 102_400
                );
            }
            pos += 8 + length as usize;
            record_count += 1;
        }
        assert_eq!(pos, file.len());
        assert_eq!(record_count, records.len());
        assert!(
            syncs.len() >= 7,
            "only {} syncs in {} bytes",
            syncs.len(),
            file.len()
        );
        // The first is before the first record starting at or past 102,400.
        let first_record = BARE_HEADER_LEN;
        let stride = 8 + records[0].0.len() + 1 + 4 + 10 * 1024;
        let k = (102_400 - first_record).div_ceil(stride);
        assert_eq!(syncs[0], first_record + k * stride);
        // And the marker appears nowhere else: once in the header, once per sync.
        let occurrences = file.windows(16).filter(|w| *w == sync).count();
        assert_eq!(occurrences, 1 + syncs.len());
    }

    /// Hands out at most `chunk` bytes per read, as a socket or a pipe may.
    struct Trickle<'a> {
        data: &'a [u8],
        chunk: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(self.chunk).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        #[test]
        fn files_round_trip_their_names_values_and_metadata(
            names in prop::collection::vec("\\PC{0,40}", 0..8),
            sizes in prop::collection::vec((0usize..=200 * 1024, any::<u64>()), 8),
            metadata in prop::collection::btree_map("\\PC{0,12}", "\\PC{0,30}", 0..4),
            chunk in 1usize..4096,
        ) {
            let records: Vec<(String, Vec<u8>)> = names
                .into_iter()
                .zip(sizes)
                .map(|(name, (len, seed))| (name, value_of(len, seed)))
                .collect();
            let metadata: Vec<(String, String)> = metadata.into_iter().collect();
            let file = file_of(&metadata, &records);
            let expected_len: u64 = BARE_HEADER_LEN as u64
                + metadata.iter().map(|(k, v)| (vint_size(k.len() as i64) + k.len() + vint_size(v.len() as i64) + v.len()) as u64).sum::<u64>()
                + records.iter().map(|(k, v)| record_size(k, v)).sum::<u64>();
            // The file is the header, the records and 20 bytes per sync.
            prop_assert_eq!((file.len() as u64 - expected_len) % SYNC_SIZE as u64, 0);

            let mut reader = Reader::new(Trickle { data: &file, chunk }).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(reader.metadata(), &metadata[..]);
            prop_assert_eq!(reader.sync_marker(), marker());
            for (name, value) in &records {
                let record = reader.next_record().map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(record.as_ref().map(|(n, _)| n), Some(name));
                prop_assert!(record.as_ref().is_some_and(|(_, v)| v == value), "the value of {:?}", name);
            }
            prop_assert!(reader.next_record().map_err(|e| TestCaseError::fail(e.to_string()))?.is_none());
            prop_assert!(reader.next_record().map_err(|e| TestCaseError::fail(e.to_string()))?.is_none());
        }
    }

    /// A file without syncs with short and two-byte-vint keys, an empty value, metadata; and the
    /// offsets where its records start (and where it ends).
    fn small_file() -> (Vec<u8>, Vec<usize>) {
        let records = [
            ("a.jpg".to_string(), value_of(10, 1)),
            ("b.png".to_string(), Vec::new()),
            ("c".repeat(150), value_of(300, 2)),
        ];
        let mut writer = Writer::new(marker(), &[("origin".into(), "test".into())]);
        let mut file = writer.take();
        let mut boundaries = vec![file.len()];
        for (key, value) in &records {
            writer.append(key, value);
            file.extend(writer.take());
            boundaries.push(file.len());
        }
        (file, boundaries)
    }

    /// Three records of 50 KiB: a sync before the third; `(file, offset of the sync)`.
    fn file_with_a_sync() -> (Vec<u8>, usize) {
        let mut writer = Writer::new(marker(), &[]);
        let mut file = writer.take();
        for i in 0..2 {
            writer.append(&format!("{i}.jpg"), &value_of(50 * 1024, i));
            file.extend(writer.take());
        }
        let sync_at = file.len();
        writer.append("2.jpg", &value_of(50 * 1024, 2));
        file.extend(writer.take());
        assert_eq!(
            i32::from_be_bytes(file[sync_at..sync_at + 4].try_into().unwrap()),
            -1
        );
        (file, sync_at)
    }

    #[test]
    fn a_file_cut_at_any_offset_is_an_error_unless_cut_between_records() -> anyhow::Result<()> {
        let (file, boundaries) = small_file();
        let (_, all) = read_all(&file, strict())?;
        assert_eq!(all.len(), 3);
        for cut in 0..file.len() {
            match read_all(&file[..cut], strict()) {
                Ok((_, records)) => {
                    let whole = boundaries.iter().position(|&b| b == cut);
                    assert_eq!(
                        whole,
                        Some(records.len()),
                        "a file cut at {cut} read as whole"
                    );
                    assert_eq!(records[..], all[..records.len()]);
                }
                Err(SequenceFileError::Truncated { offset, end, .. }) => {
                    assert!(!boundaries.contains(&cut), "cut at a record boundary {cut}");
                    assert_eq!(end, cut as u64);
                    assert!(offset <= end);
                }
                Err(e) => panic!("a file cut at {cut}: not a truncation: {e}"),
            }
        }
        Ok(())
    }

    #[test]
    fn a_file_cut_around_a_sync_is_an_error_unless_cut_before_it() -> anyhow::Result<()> {
        let (file, sync_at) = file_with_a_sync();
        for cut in sync_at - 8..sync_at + 30 {
            let result = read_all(&file[..cut], strict());
            if cut == sync_at {
                assert_eq!(result?.1.len(), 2);
            } else if cut == sync_at + 20 {
                // A sync that ends the file: Hadoop's reader accepts it, our writer never writes it.
                assert!(
                    matches!(result, Err(SequenceFileError::TrailingSync { offset }) if offset == sync_at as u64)
                );
                let lenient = ReaderOptions {
                    strict: false,
                    ..strict()
                };
                assert_eq!(read_all(&file[..cut], lenient)?.1.len(), 2);
            } else {
                assert!(
                    matches!(result, Err(SequenceFileError::Truncated { end, .. }) if end == cut as u64),
                    "cut at {cut}: {result:?}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn a_flipped_bit_in_any_length_field_is_an_error() {
        let (file, boundaries) = small_file();
        let mut fields = Vec::new(); // byte ranges of the length fields
        for &start in &boundaries[..3] {
            let key_len =
                i32::from_be_bytes(file[start + 4..start + 8].try_into().unwrap()) as usize;
            let vint = vint_size_from_first(file[start + 8]);
            fields.push(start..start + 8); // record length, key length
            fields.push(start + 8..start + 8 + vint); // the key's Text length
            fields.push(start + 8 + key_len..start + 12 + key_len); // the value size
        }
        for field in fields {
            for byte in field {
                for bit in 0..8 {
                    let mut damaged = file.clone();
                    damaged[byte] ^= 1 << bit;
                    let result = read_all(&damaged, strict());
                    assert!(
                        result.is_err(),
                        "bit {bit} of byte {byte} flipped: {result:?}"
                    );
                    let lenient = read_all(
                        &damaged,
                        ReaderOptions {
                            strict: false,
                            ..strict()
                        },
                    );
                    assert!(
                        lenient.is_err(),
                        "bit {bit} of byte {byte} flipped, lenient: {lenient:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_either_sync_marker_is_a_bad_sync_at_the_marker() {
        let (file, sync_at) = file_with_a_sync();
        let header_marker = BARE_HEADER_LEN - 16;
        for start in [header_marker, sync_at + 4] {
            for byte in start..start + 16 {
                for bit in 0..8 {
                    let mut damaged = file.clone();
                    damaged[byte] ^= 1 << bit;
                    let result = read_all(&damaged, strict());
                    assert!(
                        matches!(result, Err(SequenceFileError::BadSync { offset, .. }) if offset == sync_at as u64 + 4),
                        "bit {bit} of byte {byte} flipped: {result:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn syncs_out_of_place_are_errors_when_strict_and_checked_markers_when_not() -> anyhow::Result<()>
    {
        let (file, sync_at) = file_with_a_sync();
        // Without the sync the third record comes when one is due.
        let mut missing = file[..sync_at].to_vec();
        missing.extend_from_slice(&file[sync_at + 20..]);
        assert!(matches!(
            read_all(&missing, strict()),
            Err(SequenceFileError::MissingSync { offset, due: 102_400 }) if offset == sync_at as u64
        ));
        let lenient = ReaderOptions {
            strict: false,
            ..strict()
        };
        assert_eq!(read_all(&missing, lenient)?.1.len(), 3);

        // A sync before the first record, long before one is due.
        let mut early = file[..BARE_HEADER_LEN].to_vec();
        early.extend_from_slice(&be(-1));
        early.extend_from_slice(&marker());
        early.extend_from_slice(&file[BARE_HEADER_LEN..]);
        assert!(matches!(
            read_all(&early, strict()),
            Err(SequenceFileError::UnexpectedSync { offset, .. }) if offset == BARE_HEADER_LEN as u64
        ));
        assert_eq!(read_all(&early, lenient)?.1.len(), 3);

        // Two syncs in a row: Hadoop's reader would take the second for the end of the file.
        let mut twice = file[..sync_at + 20].to_vec();
        twice.extend_from_slice(&file[sync_at..]);
        assert!(matches!(
            read_all(&twice, lenient),
            Err(SequenceFileError::RepeatedSync { offset }) if offset == sync_at as u64 + 20
        ));
        Ok(())
    }

    #[test]
    fn compressed_files_are_refused_at_their_flag() {
        for (compression, block, flag, at) in [
            (1, 0, "compression", 0),
            (1, 1, "compression", 0),
            (0, 1, "blockCompression", 1),
        ] {
            let (bytes, flags_at) = header_with(6, KEY_CLASS, compression, block);
            let result = Reader::new(&bytes[..]);
            assert!(
                matches!(&result, Err(SequenceFileError::Compressed { offset, flag: f }) if *offset == flags_at + at && *f == flag),
                "{compression} {block}: {:?}",
                result.err()
            );
        }
        let (bytes, flags_at) = header_with(6, KEY_CLASS, 2, 0);
        assert!(
            matches!(Reader::new(&bytes[..]), Err(SequenceFileError::BadBoolean { offset, found: 2, .. }) if offset == flags_at)
        );
    }

    #[test]
    fn other_classes_versions_and_magics_are_refused() {
        let (bytes, _) = header_with(6, "org.apache.hadoop.io.LongWritable", 0, 0);
        assert!(matches!(
            Reader::new(&bytes[..]),
            Err(SequenceFileError::WrongClass { offset: 4, what: "key", ref found, .. }) if found == "org.apache.hadoop.io.LongWritable"
        ));
        let (mut bytes, _) = header_with(6, KEY_CLASS, 0, 0);
        bytes[30] = 33; // the value class Text is now "…BytesWritabl" and a stray "e"
        assert!(matches!(
            Reader::new(&bytes[..]),
            Err(SequenceFileError::WrongClass {
                offset: 30,
                what: "value",
                ..
            })
        ));
        for version in [0, 4, 5, 7] {
            let (bytes, _) = header_with(version, KEY_CLASS, 0, 0);
            assert!(
                matches!(Reader::new(&bytes[..]), Err(SequenceFileError::UnsupportedVersion { offset: 3, found }) if found == version)
            );
        }
        let (mut bytes, _) = header_with(6, KEY_CLASS, 0, 0);
        bytes[..3].copy_from_slice(b"PAR");
        assert!(
            matches!(Reader::new(&bytes[..]), Err(SequenceFileError::BadMagic { offset: 0, found }) if &found == b"PAR")
        );
    }

    #[test]
    fn a_negative_metadata_count_and_unsorted_metadata_are_refused() {
        let (mut bytes, flags_at) = header_with(6, KEY_CLASS, 0, 0);
        let count_at = flags_at as usize + 2;
        bytes[count_at..count_at + 4].copy_from_slice(&be(-5));
        assert!(
            matches!(Reader::new(&bytes[..]), Err(SequenceFileError::BadLength { offset, .. }) if offset == count_at as u64)
        );

        let (header, _) = header_with(6, KEY_CLASS, 0, 0);
        let mut bytes = header[..count_at].to_vec();
        bytes.extend_from_slice(&be(2));
        bytes.extend_from_slice(b"\x01b\x00\x01a\x00");
        bytes.extend_from_slice(&marker());
        assert!(matches!(
            Reader::new(&bytes[..]),
            Err(SequenceFileError::UnsortedMetadata { offset, .. }) if offset == count_at as u64 + 7
        ));
        let lenient = Reader::with_options(
            &bytes[..],
            ReaderOptions {
                strict: false,
                ..strict()
            },
        );
        assert_eq!(lenient.map(|r| r.metadata().len()).ok(), Some(2));
    }

    #[test]
    fn lengths_over_the_limit_or_the_input_are_errors_without_reading_them() {
        let header = Writer::new(marker(), &[]).take();
        let at = header.len() as u64;
        let mut huge = header.clone();
        huge.extend_from_slice(&be(MAX_RECORD as i32 + 1));
        huge.extend_from_slice(&[0; 64]);
        assert!(
            matches!(read_all(&huge, strict()), Err(SequenceFileError::TooLarge { offset, .. }) if offset == at)
        );

        // 1 GiB promised, 20 bytes there: a truncation, after allocating about 20 bytes.
        let mut promised = header.clone();
        promised.extend_from_slice(&be(MAX_RECORD as i32));
        promised.extend_from_slice(&be(MAX_RECORD as i32 - 4));
        promised.extend_from_slice(&[0; 20]);
        assert!(matches!(
            read_all(&promised, strict()),
            Err(SequenceFileError::Truncated { offset, end, what: "a key" }) if offset == at + 8 && end == at + 28
        ));

        // A limit of our own.
        let file = file_of(&[], &[("big".into(), vec![7; 5000])]);
        let small = ReaderOptions {
            max_record: 4096,
            ..strict()
        };
        assert!(
            matches!(read_all(&file, small), Err(SequenceFileError::TooLarge { offset, length: 5008, .. }) if offset == at)
        );
    }

    #[test]
    fn records_whose_lengths_disagree_name_the_field() {
        let header = Writer::new(marker(), &[]).take();
        let at = header.len() as u64;
        let with_record = |fields: &[&[u8]]| {
            let mut file = header.clone();
            for f in fields {
                file.extend_from_slice(f);
            }
            read_all(&file, strict())
        };
        // A record too short to hold anything.
        assert!(
            matches!(with_record(&[&be(4), &be(1), &[0, 0, 0, 0]]), Err(SequenceFileError::BadLength { offset, what: "record length", .. }) if offset == at)
        );
        // A key longer than its record leaves room for.
        assert!(
            matches!(with_record(&[&be(6), &be(3), &[2, b'a', b'b', 0, 0, 0]]), Err(SequenceFileError::BadLength { offset, what: "key length", .. }) if offset == at + 4)
        );
        // A Text whose length does not fill the key.
        assert!(
            matches!(with_record(&[&be(7), &be(3), &[1, b'a', b'b'], &be(0)]), Err(SequenceFileError::BadLength { offset, what: "key Text length", .. }) if offset == at + 8)
        );
        // A value size that does not match the record.
        assert!(
            matches!(with_record(&[&be(8), &be(2), &[1, b'a'], &be(1), &[9, 9]]), Err(SequenceFileError::BadLength { offset, what: "value size", .. }) if offset == at + 10)
        );
        // A key Text length in a longer vint than needed.
        assert!(
            matches!(with_record(&[&be(8), &be(3), &[0x8f, 1, b'a'], &be(1), &[9]]), Err(SequenceFileError::BadVInt { offset, .. }) if offset == at + 8)
        );
        // The record is whole and right: a baseline for the cases above.
        assert_eq!(
            with_record(&[&be(7), &be(2), &[1, b'a'], &be(1), &[9]])
                .map(|(_, r)| r)
                .ok(),
            Some(vec![("a".to_string(), vec![9])])
        );
    }

    #[test]
    fn a_key_that_is_not_utf8_is_an_error_at_its_first_bad_byte() {
        let mut file = Writer::new(marker(), &[]).take();
        let at = file.len() as u64;
        file.extend_from_slice(&be(4 + 4));
        file.extend_from_slice(&be(4));
        file.extend_from_slice(&[3, b'o', 0xc3, 0x28]); // "o", then a lead byte and no continuation
        file.extend_from_slice(&be(0));
        assert!(matches!(
            read_all(&file, strict()),
            Err(SequenceFileError::NotUtf8 { offset, what: "a key" }) if offset == at + 8 + 2
        ));
    }

    #[test]
    fn after_an_error_the_reader_keeps_failing() -> anyhow::Result<()> {
        let (file, boundaries) = small_file();
        let mut reader = Reader::new(&file[..boundaries[1] + 3])?;
        assert!(reader.next_record()?.is_some());
        assert!(matches!(
            reader.next_record(),
            Err(SequenceFileError::Truncated { .. })
        ));
        assert!(
            matches!(reader.next_record(), Err(SequenceFileError::AfterError { offset }) if offset == boundaries[1] as u64)
        );
        Ok(())
    }

    #[test]
    fn take_drains_what_position_counts_and_oversized_records_are_refused() {
        let mut writer = Writer::new(marker(), &[]);
        let header = writer.take();
        assert_eq!(writer.position(), header.len() as u64);
        assert!(writer.take().is_empty());
        writer.append("k", b"v");
        assert_eq!(writer.position(), (header.len() + 8 + 2 + 4 + 1) as u64);
        assert_eq!(writer.take().len(), 15);
        // Just over the limit: refused, nothing written. A zeroed allocation is mapped lazily, so
        // the 1 GiB value costs no memory until touched, and the writer never touches it.
        let value = vec![0u8; MAX_RECORD];
        let err = writer.try_append("k", &value);
        assert!(matches!(
            err,
            Err(SequenceFileError::TooLarge { what: "record", .. })
        ));
        assert_eq!(writer.position(), (header.len() + 15) as u64);
    }
}
