//! Reading packed output back with readers the project did not write: Hadoop's own
//! `SequenceFile.Reader`, the code path of `hadoop fs -text`, and parquet-mr.
//!
//! # Why these readers
//!
//! The packed layouts (`part-NNNNN.seq`, a Hadoop SequenceFile of `Text` image names and
//! `BytesWritable` image bytes; `part-NNNNN.parquet`, one row per image) exist to be read by the
//! Hadoop ecosystem. A reader of our own would share our writer's misreadings of the formats (a
//! header field, the sync-marker escape, a record length, a Parquet annotation) and pass. So the
//! tests read with the code the data is for: Hadoop 3.5.0's `SequenceFile.Reader` (what MapReduce,
//! Spark and Hive use), `FsShell -text` (what an operator runs, `hadoop fs -text`, which picks the
//! reader by the file's magic and prints every record as `key<TAB>value.toString()`), and parquet-mr
//! 1.18.2's `ParquetReader` with its example `GroupReadSupport` (after a check of the footer's
//! schema against the image schema, type, repetition and annotation of every column).
//!
//! # Design
//!
//! The Java side is a Maven project of ours, `it/readers/` (Java 17), whose one `main` takes a mode
//! and paths ([`ensure_built`] builds it; see its Javadoc for the exact output). Every function here
//! runs it once as a child process and parses its stdout, one tab-separated line per record:
//! `file name length crc32` (and for Parquet the other columns after them). Values are not shipped
//! back whole, only their length and CRC-32 (computed in Java over the bytes the reader returned):
//! that is what a test compares with what it sent, and it keeps a 100 MB part file from becoming
//! 200 MB of hex on a pipe. [`crc32`] gives a test the same checksum of its expected bytes.
//!
//! Paths are `hdfs://host:port/...` URLs (the Java side configures its `FileSystem` from the URL, so
//! pass [`crate::minidfs::MiniDfs::url`] followed by the path) or local paths. A directory means every
//! `*.seq` or `*.parquet` file below it, at any depth, in path order, except below names starting
//! with `_` or `.` (staging `_temporary`, checksum files), which Hadoop's input formats skip too; a
//! directory without any is an error, so a test cannot pass on output that was never written. A file
//! named directly is always read. A record's `file` is the URL of an
//! HDFS file and the absolute path of a local one.
//!
//! Failure is loud: a file a reader refuses (not a SequenceFile, a truncated record, a key class that
//! is not `Text`, a line of `hadoop fs -text` that does not parse back, a Parquet footer that does not
//! read or a schema that is not the image schema) makes the tool print `ERROR <file>: <reason>` and
//! exit 1, and the function returns an error with that line.
//!
//! # Building and running
//!
//! As for the MiniDFS harness ([`crate::minidfs`]): `mvn package` once (offline first, online only on a
//! cold `~/.m2`; serialized across test processes by a `flock` on `it/readers/target/.build.lock`;
//! redone when `pom.xml` or a source is newer than the jar, or a class-path entry is gone), then plain
//! `java -cp <jar>:<classpath>` with C1 only for each call. With a warm `~/.m2` (the MiniDFS harness's
//! Hadoop jars) the build downloads only parquet-mr and Hadoop's MapReduce core (which parquet-mr's
//! reader needs at class-load time).
//!
//! Measured on the 2-core build machine: empty `~/.m2` — online build 27 s (129 MB into
//! `~/.m2/repository`); warm `~/.m2` but no jar — offline build 6-8 s (11 s beside other builds);
//! warm — no Maven at all. One call then takes 1-2 s for a local file and 1.5-3.5 s against MiniDFS,
//! with the other tests of `hadoop_readers` running beside it.
//!
//! The calls block (process I/O); from async tests, use a multi-thread runtime.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long one run of the tool may take. Generous: a JVM on two cores shared with a build, and a
/// Hadoop client that retries a NameNode it cannot reach.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);
/// JVM flags: C1 only (a short run never pays for C2), a small heap, IPv4 loopback.
const JVM_FLAGS: &[&str] = &[
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
    "-Xmx768m",
    "-Djava.net.preferIPv4Stack=true",
];

/// One SequenceFile record as Hadoop's reader (or `hadoop fs -text`) returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqRecord {
    /// The file it came from: its URL on HDFS, its absolute path locally.
    pub file: String,
    /// The key (`Text`).
    pub name: String,
    /// The value's length in bytes (`BytesWritable`).
    pub length: u64,
    /// The IEEE CRC-32 of the value's bytes.
    pub crc32: u32,
}

/// One row of a packed Parquet file as parquet-mr returned it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParquetRow {
    /// The file it came from: its URL on HDFS, its absolute path locally.
    pub file: String,
    /// Column `name`.
    pub name: String,
    /// The length of column `bytes`.
    pub length: u64,
    /// The IEEE CRC-32 of column `bytes`, computed by the reader tool.
    pub crc32: u32,
    /// Column `source`.
    pub source: String,
    /// Column `seq`.
    pub seq: i64,
    /// Column `batch_ms`.
    pub batch_ms: i64,
    /// Column `format`.
    pub format: String,
    /// Column `width` (nullable).
    pub width: Option<i32>,
    /// Column `height` (nullable).
    pub height: Option<i32>,
    /// Column `crc32`, as stored (the writer's claim; compare it with [`ParquetRow::crc32`]).
    pub crc32_column: i64,
}

/// What Hadoop's reader says about a SequenceFile as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqFileInfo {
    /// The file: its URL on HDFS, its absolute path locally.
    pub file: String,
    /// `none`, `record` or `block`.
    pub compression: String,
    /// The sync markers the reader passed between records (Hadoop's writer puts one about every
    /// 100 KB of records).
    pub syncs: u64,
    /// The header's metadata.
    pub metadata: BTreeMap<String, String>,
}

/// `it/readers/`, the Maven project.
pub fn project_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("readers")
}

/// Builds `it/readers` if needed (see the module docs) and returns the class path to run it with.
/// Once per process; across processes the build is serialized by a file lock.
pub fn ensure_built() -> anyhow::Result<String> {
    static CLASSPATH: OnceLock<String> = OnceLock::new();
    if let Some(cp) = CLASSPATH.get() {
        return Ok(cp.clone());
    }
    let cp = crate::minidfs::ensure_maven_built(&project_dir(), "readers.jar", "Hadoop readers")?;
    Ok(CLASSPATH.get_or_init(|| cp).clone())
}

/// Every record of these SequenceFiles (or of the `*.seq` files under these directories), read with
/// Hadoop's `SequenceFile.Reader` (key `Text`, value `BytesWritable`), in file order, then record order.
pub fn read_sequence_files(paths: &[String]) -> anyhow::Result<Vec<SeqRecord>> {
    run("seq", paths)?.iter().map(|l| parse_seq(l)).collect()
}

/// The same records as [`read_sequence_files`], read the way `hadoop fs -text` reads them (Hadoop's
/// `FsShell -text`, in the tool's JVM): its output lines `key<TAB>hex bytes` parsed back.
pub fn read_with_fs_text(paths: &[String]) -> anyhow::Result<Vec<SeqRecord>> {
    run("text", paths)?.iter().map(|l| parse_seq(l)).collect()
}

/// Every row of these Parquet files (or of the `*.parquet` files under these directories), read with
/// parquet-mr's `ParquetReader` and `GroupReadSupport`, all columns, after checking each file's schema
/// is the image schema.
pub fn read_parquet_files(paths: &[String]) -> anyhow::Result<Vec<ParquetRow>> {
    run("parquet", paths)?
        .iter()
        .map(|l| parse_parquet(l))
        .collect()
}

/// Hadoop's view of each SequenceFile's header and sync markers (one entry per file).
pub fn sequence_file_info(paths: &[String]) -> anyhow::Result<Vec<SeqFileInfo>> {
    run("seq-meta", paths)?
        .iter()
        .map(|l| parse_seq_info(l))
        .collect()
}

/// Writes a reference SequenceFile with Hadoop's own `SequenceFile.Writer` (uncompressed, metadata
/// `written-by`): `n` records, key [`sample_name`]`(i)`, value [`sample_bytes`]`(i)`. Fails if `path`
/// exists.
pub fn write_sequence_file(path: &str, n: usize) -> anyhow::Result<()> {
    run("write-seq", &[path.to_string(), n.to_string()]).map(drop)
}

/// Writes a reference Parquet file of the image schema with parquet-mr's example writer: `n` rows,
/// name [`sample_name`]`(i)`, bytes [`sample_bytes`]`(i)`, source `src-<i % 3>`, seq `i`, batch_ms
/// `1_700_000_000_000 + i`, format `bin`, width `i` and height `2 i` for even `i` (null for odd),
/// crc32 the CRC-32 of the bytes. Fails if `path` exists.
pub fn write_parquet_file(path: &str, n: usize) -> anyhow::Result<()> {
    run("write-parquet", &[path.to_string(), n.to_string()]).map(drop)
}

/// The key of reference record `i`: `img-<i>.bin`.
pub fn sample_name(i: usize) -> String {
    format!("img-{i}.bin")
}

/// The value of reference record `i`: `i` bytes, each `i % 251`.
pub fn sample_bytes(i: usize) -> Vec<u8> {
    vec![(i % 251) as u8; i]
}

/// The IEEE CRC-32 (as `java.util.zip.CRC32` and zlib compute it) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, e) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *e = c;
        }
        t
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

/// Runs the tool in `mode` over `args`; its stdout lines, or an error with its `ERROR` lines.
fn run(mode: &str, args: &[String]) -> anyhow::Result<Vec<String>> {
    if args.is_empty() {
        bail!("hadoop readers {mode}: no path given");
    }
    let classpath = ensure_built()?;
    let started = Instant::now();
    let mut child = Command::new(crate::minidfs::java())
        .args(JVM_FLAGS)
        .arg("-cp")
        .arg(&classpath)
        .arg("hdfsingest.readers.Main")
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn java for the Hadoop readers (is a JDK 17 on PATH?)")?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for the Hadoop readers")? {
            break status;
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            bail!("hadoop readers {mode} {args:?}: no answer within {RUN_TIMEOUT:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        let errors: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix("ERROR "))
            .collect();
        let why = if errors.is_empty() {
            let all: Vec<&str> = stderr.lines().collect();
            all[all.len().saturating_sub(20)..].join("\n")
        } else {
            errors.join("\n")
        };
        bail!("hadoop readers {mode} failed ({status}): {why}");
    }
    eprintln!(
        "hadoop readers {mode}: {} line(s) in {:.1} s",
        stdout.lines().count(),
        started.elapsed().as_secs_f64()
    );
    Ok(stdout.lines().map(String::from).collect())
}

/// Splits a line into exactly `n` tab-separated fields.
fn fields(line: &str, n: usize) -> anyhow::Result<Vec<&str>> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != n {
        bail!("a reader line has {} fields, not {n}: {line:?}", f.len());
    }
    Ok(f)
}

/// Undoes the tool's escaping of `\`, tab, newline and carriage return.
fn unescape(s: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => bail!("a bad escape \\{other:?} in {s:?}"),
        }
    }
    Ok(out)
}

fn parse_crc(s: &str) -> anyhow::Result<u32> {
    if s.len() != 8
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        bail!("a CRC-32 of 8 lowercase hex digits expected, not {s:?}");
    }
    Ok(u32::from_str_radix(s, 16)?)
}

fn parse_optional(s: &str) -> anyhow::Result<Option<i32>> {
    Ok(match s {
        "-" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("an int32 or -, not {n:?}"))?,
        ),
    })
}

fn parse_seq(line: &str) -> anyhow::Result<SeqRecord> {
    let f = fields(line, 4)?;
    Ok(SeqRecord {
        file: f[0].to_string(),
        name: unescape(f[1])?,
        length: f[2]
            .parse()
            .with_context(|| format!("length in {line:?}"))?,
        crc32: parse_crc(f[3]).with_context(|| format!("in {line:?}"))?,
    })
}

fn parse_parquet(line: &str) -> anyhow::Result<ParquetRow> {
    let f = fields(line, 11)?;
    let ctx = || format!("in {line:?}");
    Ok(ParquetRow {
        file: f[0].to_string(),
        name: unescape(f[1])?,
        length: f[2].parse().with_context(ctx)?,
        crc32: parse_crc(f[3]).with_context(ctx)?,
        source: unescape(f[4])?,
        seq: f[5].parse().with_context(ctx)?,
        batch_ms: f[6].parse().with_context(ctx)?,
        format: unescape(f[7])?,
        width: parse_optional(f[8]).with_context(ctx)?,
        height: parse_optional(f[9]).with_context(ctx)?,
        crc32_column: f[10].parse().with_context(ctx)?,
    })
}

fn parse_seq_info(line: &str) -> anyhow::Result<SeqFileInfo> {
    let f = fields(line, 4)?;
    let mut metadata = BTreeMap::new();
    if f[3] != "-" {
        for pair in unescape(f[3])?.split(';') {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("metadata {pair:?} is not key=value in {line:?}"))?;
            metadata.insert(k.to_string(), v.to_string());
        }
    }
    Ok(SeqFileInfo {
        file: f[0].to_string(),
        compression: f[1].to_string(),
        syncs: f[2].parse().with_context(|| format!("syncs in {line:?}"))?,
        metadata,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_checksum_java_prints() {
        // The values the tool printed for img-1.bin and img-2.bin (bytes [1] and [2, 2]).
        assert_eq!(crc32(&[]), 0);
        assert_eq!(crc32(&[1]), 0xa505_df1b);
        assert_eq!(crc32(&[2, 2]), 0x9de1_1151);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn reader_lines_parse_back_with_escapes_and_nulls() {
        let r = parse_seq("hdfs://h:1/a.seq\ta\\tb\\\\c\t3\t0000abcd").unwrap();
        assert_eq!(r.name, "a\tb\\c");
        assert_eq!((r.length, r.crc32), (3, 0xabcd));
        let p = parse_parquet("/x.parquet\tn\t2\tffffffff\ts\t7\t9\tjpeg\t-\t4\t-1").unwrap();
        assert_eq!((p.width, p.height, p.crc32_column), (None, Some(4), -1));
        assert!(parse_seq("too\tfew\tfields").is_err());
        assert!(parse_seq("f\tn\t1\tABCDEF01").is_err(), "uppercase hex");
    }
}
