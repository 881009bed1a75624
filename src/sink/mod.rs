//! Batch output: every batch interval's durable blocks become one directory of image files,
//! published atomically.
//!
//! # Layout
//!
//! A batch lands as `<output>/<prefix>-<batch ms>/<source>-<seq>.<ext>` (the `saveAsNewAPIHadoopFiles`
//! convention), plus `<batch dir>/_analysis.jsonl` when analysis is on: one JSON [`ImageReport`]
//! line per image, in block order. The extension comes from [`ImageFormat::sniff`], so every name
//! is a pure function of the block (`source`, `seq`, bytes) and the batch (`prefix`, `batch ms`):
//! a re-run of the same batch computes exactly the same names.
//!
//! # Exactly once: stage, sync, one rename
//!
//! A batch is written into `<output>/_temporary/<owner>/e<epoch>/<batch dir>--<random>/`
//! ([`STAGING_DIR`]; the owner is the writing node's name, the epoch the one it writes for — see
//! [`staging_epoch_dir`]; HDFS separates the random part with `~`) and published with
//! **one** atomic rename of that directory to `<output>/<batch dir>`. Readers therefore see either
//! no batch directory or a complete one, never a partial batch. The sequence is:
//!
//! 1. [`Output::is_published`]: if `<batch dir>` already exists, an earlier run published it and
//!    [`write_batch`] returns [`PublishOutcome::AlreadyPublished`] without consuming a single block.
//! 2. [`Output::stage`]: removes any stale staging of this batch *of its own owner and epoch* (a
//!    crash mid-staging) and creates an empty staging directory.
//! 3. [`StagedBatch::put`] for every image, then `_analysis.jsonl` (packed layouts: part files made
//!    with [`StagedBatch::create`], each closed in a task of its own while the next part or
//!    `_analysis.jsonl` is written; every close has returned before step 4, and a batch that fails
//!    aborts the closes still running).
//! 4. [`StagedBatch::publish`]: makes every staged file durable (fsync each file, then the staging
//!    directory), renames the staging directory to its final name **without replacing** an existing
//!    destination (Linux `renameat2(RENAME_NOREPLACE)`; elsewhere an existence check, and a
//!    non-empty destination makes the rename fail anyway), then fsyncs the output directory so the
//!    rename itself survives a power loss. If the destination appeared in the meantime, the staging
//!    is discarded and the outcome is `AlreadyPublished`: a published batch is never overwritten.
//! 5. `_temporary/<owner>/e<epoch>`, `_temporary/<owner>` and `_temporary` are removed once empty,
//!    so a quiet output holds only batch directories.
//!
//! # Whose staging is whose
//!
//! Staging is owned by the node that writes it *and the epoch it writes for*:
//! `_temporary/<node name>/e<epoch>/`. A node touches only its own — `stage` and
//! [`Output::clean_staging`] never list, delete or write another owner's directory, and `stage`
//! only clears stale staging of its own epoch, so even the same node name, primary again at a newer
//! epoch while a superseded writer of its older epoch may still be finishing, never deletes what
//! that writer is about to rename.
//! That matters because a node that was replaced may still be alive (a primary cut off from its
//! standby, not killed) and in the middle of writing or renaming its staging: deleting it under that
//! node could fail halfway (a directory that fills while it is emptied) or empty a directory the old
//! node renames into place at that moment. A superseded node's staging is inert — its publish either
//! lands under a name the batch log already voided or counted, or finds the name taken — and is
//! cleared by its owner at that owner's next start that opens the output (as primary, or as an
//! active standby; a passive one opens it when it takes over), when nothing of the old process can
//! be in flight (one process per node name: it holds that node's WAL).
//!
//! A crash at any point leaves either nothing visible (a stale staging directory, cleaned by the next
//! `stage` of that batch or by [`Output::clean_staging`] at start-up) or the complete batch. Re-running
//! the batch then duplicates nothing, overwrites nothing and leaves no temporary files behind. The
//! batch's commit record (in the checkpoint store) is the caller's step after `publish` returns;
//! `AlreadyPublished` tells it the rename had happened before the crash and only the record is left.
//!
//! # Memory
//!
//! [`write_batch`] takes the blocks as a [`futures::Stream`] and pulls the next block only after the
//! previous one has been handed to [`StagedBatch::put`] and its write has completed, so at most one
//! image is held by the sink at a time (the local backend writes it to the staging file and drops
//! it). The only per-batch state that grows with the number of images is small: the names already
//! written (to skip a duplicated `(source, seq)`), the names to fsync at publish, and the analysis
//! lines (about 200 bytes per image) that are written as one file at the end.
//!
//! # Names
//!
//! Source ids and prefixes become path components, so they are validated: `[A-Za-z0-9._-]`, 1 to 128
//! characters, not starting with `.` or `_` (`_` is reserved for `_temporary` and `_analysis.jsonl`,
//! `.` for hidden files and `..`). Anything else is [`SinkError::InvalidName`], never a path
//! escaping the output directory.
//!
//! # Failpoints
//!
//! With the `failpoints` feature: `sink::put::fault` (before a staged file is written or a part
//! file created), `sink::part::fault` (before each write into a part file; its `return(…)` names
//! `<batch dir>/<part file>`), `sink::part::after_write` (aborts the process after a write into a
//! part file: `return` there kills it in the middle of the batch's first part) and `sink::publish::fault` (after the staged files are durable,
//! before the rename). `return` injects an
//! I/O error; `return(<batch dir>)` injects it only for that batch; `panic`, `sleep` and `pause`
//! behave as in the `fail` crate.

pub mod analysis;
pub mod format;
pub mod hdfs;
#[cfg(test)]
mod layout_tests;
pub mod local;
#[cfg(test)]
mod test_images;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::pin::pin;

use bytes::Bytes;
use futures::{Stream, StreamExt};

pub use crate::layout::{Format, Layout, PathTemplate};
pub use analysis::{analyze, ImageReport};
pub use format::ImageFormat;
pub use local::LocalOutput;

/// Name of the per-batch analysis file (one JSON line per image).
pub const ANALYSIS_FILE: &str = "_analysis.jsonl";
/// The one file of a *void* batch: a batch name claimed by a node that was replaced before it
/// published; the node that replaced it published this instead, so the name can never be used.
pub const VOID_FILE: &str = "_VOID";
/// Directory under the output root that holds batches being staged.
pub const STAGING_DIR: &str = "_temporary";

/// Whose staging an output writes when nobody named the writer ([`local::LocalOutput::with_owner`],
/// [`hdfs::HdfsOutput::with_owner`]): tools and tests. A node names itself.
pub const DEFAULT_STAGING_OWNER: &str = "default";
/// Longest accepted source id or prefix.
pub const MAX_NAME_LEN: usize = 128;

/// `"e<epoch>"`: the directory under `_temporary/<owner>/` that holds what the owner stages for
/// `epoch`.
pub fn staging_epoch_dir(epoch: u64) -> String {
    format!("e{epoch}")
}

/// `"<prefix>-<batch_ms>"`.
pub fn batch_dir_name(prefix: &str, batch_ms: u64) -> String {
    format!("{prefix}-{batch_ms}")
}

/// Checks a batch directory path (relative to the output root, `/`-separated, as
/// [`Layout::batch_dir`] renders it): every part a safe component (`[A-Za-z0-9._=-]`, not starting
/// with `.` or `_`, at most 255 bytes), no empty part.
pub fn validate_batch_dir(batch_dir: &str) -> Result<(), SinkError> {
    for part in batch_dir.split('/') {
        check_component_with("batch directory", part, 255, b"._=-").map_err(|e| match e {
            SinkError::InvalidName { kind, reason, .. } => SinkError::InvalidName {
                kind,
                name: batch_dir.to_owned(),
                reason,
            },
            other => other,
        })?;
    }
    Ok(())
}

/// The name of a batch's staging directory entry under `_temporary/<owner>/e<epoch>/`: the batch
/// directory with `/` as `+`, which no batch path part may contain, so distinct batches never share it.
pub fn staging_name(batch_dir: &str) -> String {
    batch_dir.replace('/', "+")
}

/// `"<source>-<seq>.<ext>"`.
pub fn image_file_name(source: &str, seq: u64, ext: &str) -> String {
    format!("{source}-{seq}.{ext}")
}

/// Checks that `name` (a source id or a prefix, named `kind` in the error) is safe as a path
/// component: `[A-Za-z0-9._-]{1,128}`, not starting with `.` or `_`.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), SinkError> {
    check_component(kind, name, MAX_NAME_LEN)
}

/// Like [`validate_name`], for names the sink builds itself (batch directories, file names): same
/// alphabet and leading-character rule, up to 255 bytes (a file-name component's limit). The
/// analysis file is the one reserved name allowed.
fn validate_component(kind: &'static str, name: &str) -> Result<(), SinkError> {
    if name == ANALYSIS_FILE || name == VOID_FILE {
        return Ok(());
    }
    check_component(kind, name, 255)
}

fn check_component(kind: &'static str, name: &str, max: usize) -> Result<(), SinkError> {
    check_component_with(kind, name, max, b"._-")
}

fn check_component_with(
    kind: &'static str,
    name: &str,
    max: usize,
    punctuation: &[u8],
) -> Result<(), SinkError> {
    let invalid = |reason: &'static str| SinkError::InvalidName {
        kind,
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(invalid("is empty"));
    }
    if name.len() > max {
        return Err(invalid("is too long"));
    }
    if name.starts_with('.') || name.starts_with('_') {
        return Err(invalid("starts with '.' or '_'"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || punctuation.contains(&b))
    {
        return Err(invalid(if punctuation.contains(&b'=') {
            "has a character outside [A-Za-z0-9._=-]"
        } else {
            "has a character outside [A-Za-z0-9._-]"
        }));
    }
    Ok(())
}

/// What [`StagedBatch::publish`] (and [`write_batch`]) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PublishOutcome {
    /// This call renamed the staged batch into place.
    Published,
    /// The batch directory already existed (an earlier run published it); nothing was written.
    AlreadyPublished,
}

/// Errors of the sink. Every variant names the output and the path or name involved.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// A file-system operation failed.
    #[error("{op} {path} failed (output {output})")]
    Io {
        output: String,
        path: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// An object_store operation failed.
    #[error("{op} {path} failed (output {output})")]
    ObjectStore {
        output: String,
        path: String,
        op: &'static str,
        /// Boxed: `object_store::Error` is large and would bloat every `Result` of the sink.
        #[source]
        source: Box<object_store::Error>,
    },
    /// A source id, prefix or file name cannot be used as a path component.
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        kind: &'static str,
        name: String,
        reason: &'static str,
    },
    /// Something that is not a batch directory occupies a batch directory's name.
    #[error("{path} exists but is not a directory (output {output})")]
    NotADirectory { output: String, path: String },
    /// The stream of blocks handed to [`write_batch`] failed; nothing of the batch was published.
    #[error("reading the blocks of batch {batch} failed (output {output})")]
    Blocks {
        output: String,
        batch: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A packed part file could not be encoded.
    #[error("encoding part file {file} of batch {batch} failed: {reason}")]
    Part {
        batch: String,
        file: String,
        reason: String,
    },
    /// An analysis report could not be encoded.
    #[error("encoding the analysis of {file} in batch {batch} failed")]
    Encode {
        batch: String,
        file: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Where batches are published.
#[async_trait::async_trait]
pub trait Output: Send + Sync + std::fmt::Debug {
    /// A URL-like description for logs, e.g. `file:///abs/out`.
    fn describe(&self) -> String;
    /// Whether `<output>/<batch_dir>` exists (an earlier run published it), durably: a `true` is
    /// acknowledged as committed, so a backend whose rename is not durable by itself (a local file
    /// system: the directory entry needs an fsync of its parent) makes it durable before it answers.
    async fn is_published(&self, batch_dir: &str) -> Result<bool, SinkError>;
    /// Whether the published `<batch_dir>` is a void batch (holds [`VOID_FILE`]).
    async fn is_void(&self, batch_dir: &str) -> Result<bool, SinkError>;
    /// Starts a batch written for `epoch` (0 for tools that write outside any epoch): removes any
    /// stale staging of this batch by this owner at this epoch first, then creates
    /// `_temporary/<owner>/e<epoch>/<batch dir><sep><random>`.
    async fn stage(&self, batch_dir: &str, epoch: u64) -> Result<Box<dyn StagedBatch>, SinkError>;
    /// Removes every leftover staging directory of this output's owner, of every epoch (called at
    /// start-up, when nothing of this owner's can be in flight); other owners' staging is left
    /// alone. Returns how many batch staging entries were removed.
    async fn clean_staging(&self) -> Result<usize, SinkError>;
}

/// A batch being written into the staging area. Dropping it without [`StagedBatch::publish`] leaves
/// the staging behind (as a crash would); the owner's next `stage` of the batch or `clean_staging`
/// removes it.
#[async_trait::async_trait]
pub trait StagedBatch: Send {
    /// Writes one file of the batch into the staging directory (replacing a file of the same name).
    async fn put(&mut self, file_name: &str, bytes: Bytes) -> Result<(), SinkError>;
    /// Creates one file of the batch in the staging directory, to be written in pieces (a packed part
    /// file); it must be [closed](StagedFile::close) before [`StagedBatch::publish`]. The name must be
    /// new in this batch.
    async fn create(&mut self, file_name: &str) -> Result<Box<dyn StagedFile>, SinkError>;
    /// Makes every staged file durable, then publishes with one atomic rename. If the destination already
    /// exists (an earlier run published it), discards the staging and returns AlreadyPublished.
    async fn publish(self: Box<Self>) -> Result<PublishOutcome, SinkError>;
}

/// A staged file written in pieces ([`StagedBatch::create`]). Dropped without [`StagedFile::close`],
/// it is incomplete, and the batch must not be published.
#[async_trait::async_trait]
pub trait StagedFile: Send {
    /// Appends `bytes`.
    async fn write(&mut self, bytes: Bytes) -> Result<(), SinkError>;
    /// Completes the file (durable by publish at the latest).
    async fn close(self: Box<Self>) -> Result<(), SinkError>;
}

/// One durable block of a batch.
#[derive(Debug, Clone)]
pub struct BatchBlock {
    pub source: String,
    pub seq: u64,
    pub bytes: Bytes,
}

/// What [`write_batch`] wrote.
#[derive(Debug, Clone, Default)]
pub struct BatchSummary {
    /// Images written (0 when the batch was already published): one file each in the `files`
    /// layout.
    pub files: usize,
    /// Part files written (packed layouts; 0 for `files`).
    pub parts: usize,
    /// Image bytes written.
    pub bytes: u64,
    /// Images whose analysis found them invalid (always 0 without analysis).
    pub invalid: usize,
    pub outcome: Option<PublishOutcome>,
}

/// Writes one batch in the flat `files` layout ([`Layout::flat`]): `<prefix>-<batch ms>/`, one file
/// per image.
///
/// `is_published` first: if the batch directory exists, returns `AlreadyPublished` without pulling
/// a single block from `blocks` and without writing anything. Otherwise stages the batch, puts every
/// image (named [`image_file_name`] with the sniffed extension) and, if `analysis`, `_analysis.jsonl`,
/// then publishes.
///
/// `blocks` is pulled one block at a time; a block is written to the staging area before the next
/// one is requested, so the batch is never in memory at once (see the module docs). A block whose
/// `(source, seq)` was already written in this batch is skipped (logged at warn), so a block that
/// reached the batch twice lands once. An error from the stream aborts the batch before publishing
/// ([`SinkError::Blocks`]); the staging it leaves is removed by the next attempt.
///
/// Stages at epoch 0: for tools and tests that write outside any epoch; a node uses
/// [`write_batch_claimed`] with its layout and the epoch it commits for.
pub async fn write_batch<S, E>(
    output: &dyn Output,
    prefix: &str,
    batch_ms: u64,
    analysis: bool,
    blocks: S,
) -> Result<BatchSummary, SinkError>
where
    S: Stream<Item = Result<BatchBlock, E>> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    validate_name("prefix", prefix)?;
    write_batch_claimed(
        output,
        &Layout::flat(prefix),
        batch_ms,
        0,
        analysis,
        blocks,
        || async { Ok(()) },
    )
    .await
}

/// A part file being written.
struct OpenPart {
    name: String,
    encoder: Box<dyn crate::layout::PartEncoder>,
    file: Box<dyn StagedFile>,
    images: u64,
}

impl OpenPart {
    async fn drain(&mut self) -> Result<(), SinkError> {
        let chunk = self.encoder.take();
        if !chunk.is_empty() {
            self.file.write(Bytes::from(chunk)).await?;
            // Tests kill the process here: a part file begun and not complete.
            fail::fail_point!("sink::part::after_write", |_| std::process::abort());
        }
        Ok(())
    }

    /// Closes the part in a task of its own: a close waits for the last packets' acknowledgements and
    /// the NameNode's `complete` (a round trip or more on HDFS), which need not hold up the next part
    /// or `_analysis.jsonl`. The batch is published only once every close has returned.
    fn close_behind(self, batch: &str) -> tokio::task::JoinHandle<Result<(), SinkError>> {
        let batch = batch.to_owned();
        tokio::spawn(async move { self.close(&batch).await })
    }

    async fn close(self, batch: &str) -> Result<(), SinkError> {
        let OpenPart {
            name,
            encoder,
            mut file,
            ..
        } = self;
        let rest = encoder.finish().map_err(|reason| SinkError::Part {
            batch: batch.to_owned(),
            file: name,
            reason,
        })?;
        if !rest.is_empty() {
            file.write(Bytes::from(rest)).await?;
            // A Parquet part's first write may be its last (one row group): written, not closed.
            fail::fail_point!("sink::part::after_write", |_| std::process::abort());
        }
        file.close().await
    }
}

/// The closes of a batch's finished parts, each in its task. A batch that fails (or whose writer is
/// dropped, as a commit timeout does) aborts those still running: no I/O of an abandoned attempt
/// outlives it, and nothing of it is published.
#[derive(Default)]
struct Closing(Vec<(String, tokio::task::JoinHandle<Result<(), SinkError>>)>);

impl Drop for Closing {
    fn drop(&mut self) {
        for (_, close) in &self.0 {
            close.abort();
        }
    }
}

/// Bytes a part file's record adds besides the image (its name and framing), for rolling.
const PART_RECORD_OVERHEAD: u64 = 512;

/// Writes one batch in `layout` (see [`write_batch`] for the sequence), with `claim` run after every
/// file is staged and before the rename: the node claims the batch in the batch log there, once its
/// members are known. An error from `claim` abandons the batch unpublished. A batch with no block
/// stages nothing, claims nothing and publishes nothing (`outcome: None`). The batch is staged under
/// `epoch` ([`Output::stage`]).
///
/// In a packed layout the images go into part files of the batch, each closed before an image would
/// take it past `layout.max_file_size` or when it holds `layout.max_images_per_file`; part files
/// stream out (see [`crate::layout`]).
pub async fn write_batch_claimed<S, E, C, F>(
    output: &dyn Output,
    layout: &Layout,
    batch_ms: u64,
    epoch: u64,
    analysis: bool,
    blocks: S,
    claim: C,
) -> Result<BatchSummary, SinkError>
where
    S: Stream<Item = Result<BatchBlock, E>> + Send,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
    C: FnOnce() -> F + Send,
    F: std::future::Future<Output = Result<(), SinkError>> + Send,
{
    let batch = layout.batch_dir(batch_ms);
    validate_batch_dir(&batch)?;
    if output.is_published(&batch).await? {
        tracing::info!(output = %output.describe(), batch = %batch, "batch already published, nothing written");
        return Ok(BatchSummary {
            outcome: Some(PublishOutcome::AlreadyPublished),
            ..BatchSummary::default()
        });
    }

    let packed = layout.format != Format::Files;
    let mut staged: Option<Box<dyn StagedBatch>> = None;
    let mut part: Option<OpenPart> = None;
    // Parts closing behind the writer (see `OpenPart::close_behind`).
    let mut closing = Closing::default();
    let mut next_part = 0u32;
    let mut summary = BatchSummary::default();
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut reports: Vec<u8> = Vec::new();
    let mut blocks = pin!(blocks);
    while let Some(block) = blocks.next().await {
        let block = block.map_err(|e| SinkError::Blocks {
            output: output.describe(),
            batch: batch.clone(),
            source: e.into(),
        })?;
        validate_name("source id", &block.source)?;
        if !seen.insert((block.source.clone(), block.seq)) {
            tracing::warn!(batch = %batch, source = %block.source, seq = block.seq, "block appears twice in the batch; written once");
            continue;
        }
        let file = image_file_name(
            &block.source,
            block.seq,
            ImageFormat::sniff(&block.bytes).ext(),
        );
        let report = if analysis {
            Some(analyze(&file, &block.source, block.seq, &block.bytes))
        } else if packed {
            Some(analysis::inspect(
                &file,
                &block.source,
                block.seq,
                &block.bytes,
            ))
        } else {
            None
        };
        if analysis {
            let report = report.as_ref().expect("made above");
            if !report.valid {
                summary.invalid += 1;
            }
            let line = report.to_json_line().map_err(|source| SinkError::Encode {
                batch: batch.clone(),
                file: file.clone(),
                source,
            })?;
            reports.extend_from_slice(&line);
        }
        summary.files += 1;
        summary.bytes += block.bytes.len() as u64;
        if staged.is_none() {
            staged = Some(output.stage(&batch, epoch).await?);
        }
        let target = staged.as_mut().expect("staged above");
        if !packed {
            target.put(&file, block.bytes).await?;
            continue;
        }
        let len = block.bytes.len() as u64;
        if let Some(p) = &part {
            let full = p.images >= layout.max_images_per_file
                || p.encoder.size() + len + PART_RECORD_OVERHEAD > layout.max_file_size;
            if full {
                let full = part.take().expect("checked");
                closing
                    .0
                    .push((full.name.clone(), full.close_behind(&batch)));
            }
        }
        let p = match &mut part {
            Some(p) => p,
            None => {
                let name = layout.part_name(next_part).expect("a packed format");
                next_part += 1;
                let file = target.create(&name).await?;
                let encoder =
                    crate::layout::encoder(layout, &batch, &name).expect("a packed format");
                summary.parts += 1;
                part.insert(OpenPart {
                    name,
                    encoder,
                    file,
                    images: 0,
                })
            }
        };
        let report = report.as_ref().expect("made above for packed layouts");
        p.encoder
            .append(&crate::layout::PackedImage {
                name: &file,
                source: &block.source,
                seq: block.seq,
                batch_ms,
                format: &report.format,
                width: report.width,
                height: report.height,
                crc32: report.crc32,
                bytes: &block.bytes,
            })
            .map_err(|reason| SinkError::Part {
                batch: batch.clone(),
                file: p.name.clone(),
                reason,
            })?;
        p.images += 1;
        p.drain().await?;
    }
    let Some(mut staged) = staged else {
        tracing::debug!(output = %output.describe(), batch = %batch, "empty batch: nothing staged or published");
        return Ok(summary);
    };
    if let Some(p) = part.take() {
        closing.0.push((p.name.clone(), p.close_behind(&batch)));
    }
    if analysis {
        staged.put(ANALYSIS_FILE, Bytes::from(reports)).await?;
    }
    for (name, close) in std::mem::take(&mut closing.0) {
        close.await.map_err(|e| SinkError::Part {
            batch: batch.clone(),
            file: name,
            reason: format!("its close panicked or was cancelled: {e}"),
        })??;
    }
    claim().await?;
    let outcome = staged.publish().await?;
    if outcome == PublishOutcome::AlreadyPublished {
        // Someone else published between our check and our rename; we wrote nothing visible.
        summary.files = 0;
        summary.bytes = 0;
        summary.invalid = 0;
        summary.parts = 0;
    }
    summary.outcome = Some(outcome);
    tracing::info!(
        output = %output.describe(),
        batch = %batch,
        format = layout.format.name(),
        images = summary.files,
        parts = summary.parts,
        bytes = summary.bytes,
        invalid = summary.invalid,
        outcome = ?outcome,
        "batch written"
    );
    Ok(summary)
}

/// Publishes a *void* batch under `batch_dir` (see [`VOID_FILE`]), never replacing anything. Returns
/// `Published` if the void landed (the name's claimant never published) or `AlreadyPublished` if the
/// directory exists — the claimant's batch, or an earlier void (tell them apart with
/// [`Output::is_void`]). Staged under `epoch`, the voiding node's.
pub async fn void_batch(
    output: &dyn Output,
    batch_dir: &str,
    epoch: u64,
    why: &str,
) -> Result<PublishOutcome, SinkError> {
    if output.is_published(batch_dir).await? {
        return Ok(PublishOutcome::AlreadyPublished);
    }
    let mut staged = output.stage(batch_dir, epoch).await?;
    staged
        .put(VOID_FILE, Bytes::from(format!("{why}\n")))
        .await?;
    staged.publish().await
}

/// Evaluates the failpoint `name`. `return` (or `return(<batch>)` for this batch) gives an injected
/// I/O error; without the `failpoints` feature this compiles to `Ok(())`.
#[allow(unused_variables)]
pub(crate) fn failpoint(name: &'static str, batch: &str) -> Result<(), std::io::Error> {
    fail::fail_point!(name, |arg: Option<String>| {
        match arg.as_deref() {
            Some(only) if !only.is_empty() && only != batch => Ok(()),
            _ => Err(std::io::Error::other(format!(
                "failpoint {name} injected for batch {batch}"
            ))),
        }
    });
    Ok(())
}
