//! The local-directory [`Output`]: object_store's `LocalFileSystem` for the files, POSIX for the
//! atomic publish.
//!
//! # Why both
//!
//! The design sends output through `object_store` so that the local backend and the remote ones share
//! one write path. Staged files are therefore written with [`LocalFileSystem`] rooted at the output
//! directory (its `put` itself writes to a temporary name and renames, so a staged file is never
//! half-written under its final name). But object stores have no directories and no directory
//! rename, and publishing a batch needs exactly that: one atomic step that makes every file of the
//! batch visible at once. A POSIX `rename(2)` of a directory within one file system is atomic, so
//! publish uses it directly.
//!
//! # Durability
//!
//! `LocalFileSystem::put` does not fsync by default, and fsyncing each put separately would also
//! fsync the staging directory once per file. Instead `publish` does, on a blocking thread:
//! make every staged file durable (on Linux one `syncfs(2)`, elsewhere `sync_all` per file),
//! `sync_all` the staging directory (so the entries exist),
//! rename, then `sync_all` the output directory and the owner's staging directory (so the rename
//! itself is durable).
//! Only then is the outcome `Published`, and only then may the caller write its commit record.
//!
//! # Never overwrite
//!
//! On Linux the rename is `renameat2(…, RENAME_NOREPLACE)`: it fails with `EEXIST` if the destination
//! exists, even an empty directory (plain `rename` would silently replace an empty one). On file
//! systems or kernels without it (`EINVAL`/`ENOSYS`) and on other platforms, the destination is
//! checked first and a plain `rename` follows; a non-empty destination makes that rename fail with
//! `ENOTEMPTY`/`EEXIST` anyway, so only an empty directory created in the instant between the check
//! and the rename could be replaced. Either way an existing destination means an earlier run
//! published the batch: the staging is discarded and the outcome is `AlreadyPublished`.
//!
//! # Blocking calls
//!
//! Every `std::fs` call runs in `tokio::task::spawn_blocking`; `object_store` does the same for its
//! own file I/O.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};

use super::{
    failpoint, staging_epoch_dir, validate_batch_dir, validate_component, Output, PublishOutcome,
    SinkError, StagedBatch, StagedFile, STAGING_DIR,
};

/// Batches published into a local directory.
#[derive(Debug, Clone)]
pub struct LocalOutput {
    root: PathBuf,
    url: String,
    store: Arc<LocalFileSystem>,
    /// Whose staging this output writes: `_temporary/<owner>/e<epoch>/`.
    owner: String,
    /// Held by a publish (sync, rename) while it runs, and tried by `stage` before it removes the
    /// stale staging of its batch: an attempt abandoned at `batch.commit_timeout` may still be in its
    /// rename on another thread, and a retry must not delete what that rename is about to publish.
    publishing: Arc<std::sync::Mutex<()>>,
}

impl LocalOutput {
    /// Opens (creating it if needed) the output directory `root`. The path is canonicalized, so
    /// [`LocalOutput::root`] and [`Output::describe`] are absolute.
    pub fn new(root: impl AsRef<Path>) -> Result<Self, SinkError> {
        let given = root.as_ref();
        let display = format!("file://{}", given.display());
        std::fs::create_dir_all(given).map_err(|source| SinkError::Io {
            output: display.clone(),
            path: given.display().to_string(),
            op: "create the output directory",
            source,
        })?;
        let root = std::fs::canonicalize(given).map_err(|source| SinkError::Io {
            output: display.clone(),
            path: given.display().to_string(),
            op: "canonicalize the output directory",
            source,
        })?;
        let url = format!("file://{}", root.display());
        let store =
            LocalFileSystem::new_with_prefix(&root).map_err(|source| SinkError::ObjectStore {
                output: url.clone(),
                path: root.display().to_string(),
                op: "open the output directory",
                source: Box::new(source),
            })?;
        Ok(LocalOutput {
            root,
            url,
            store: Arc::new(store),
            owner: super::DEFAULT_STAGING_OWNER.to_owned(),
            publishing: Arc::default(),
        })
    }

    /// Stages under `_temporary/<owner>/` (the writing node's name): this output then never touches
    /// another owner's staging (see the module doc of [`crate::sink`]).
    pub fn with_owner(mut self, owner: &str) -> Result<Self, SinkError> {
        validate_component("staging owner", owner)?;
        self.owner = owner.to_owned();
        Ok(self)
    }

    /// The absolute output directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `_temporary/<owner>`: every epoch's staging of this owner.
    fn staging_root(&self) -> PathBuf {
        self.root.join(STAGING_DIR).join(&self.owner)
    }

    /// `_temporary/<owner>/e<epoch>`: what this owner stages for `epoch`.
    fn epoch_root(&self, epoch: u64) -> PathBuf {
        self.staging_root().join(staging_epoch_dir(epoch))
    }
}

/// Runs a blocking closure on tokio's blocking pool. A panic in the closure is re-raised here; a
/// cancelled task (runtime shutting down) becomes an I/O error naming `op` and `path`.
async fn blocking<T, F>(output: &str, path: &Path, op: &'static str, f: F) -> Result<T, SinkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, SinkError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
        Err(join) => Err(SinkError::Io {
            output: output.to_owned(),
            path: path.display().to_string(),
            op,
            source: io::Error::other(join.to_string()),
        }),
    }
}

fn io_err(output: &str, path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> SinkError {
    let output = output.to_owned();
    let path = path.display().to_string();
    move |source| SinkError::Io {
        output,
        path,
        op,
        source,
    }
}

/// Every directory [`sync_dir`] synced, for the tests that check a publish is made durable.
#[cfg(test)]
pub(crate) static SYNCED_DIRS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

fn sync_dir(output: &str, dir: &Path) -> Result<(), SinkError> {
    #[cfg(test)]
    SYNCED_DIRS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(dir.to_path_buf());
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(output, dir, "fsync directory"))
}

/// Removes `dir` and everything in it; a missing `dir` is not an error. Returns whether it existed.
/// Makes `path`'s entry durable: fsyncs its parent and every directory above it up to and including
/// the output `root` (a partitioned batch's `dt=…` and `hour=…` may be as new as the batch).
fn sync_ancestors(output: &str, root: &Path, path: &Path) -> Result<(), SinkError> {
    let mut dir = path.parent();
    while let Some(d) = dir {
        sync_dir(output, d)?;
        if d == root || !d.starts_with(root) {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

fn remove_tree(output: &str, dir: &Path) -> Result<bool, SinkError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(output, dir, "remove staging directory")(e)),
    }
}

/// Removes `dir` (an epoch's or an owner's staging directory), then its parents up to and including
/// `_temporary`, each if it is empty; a missing or non-empty one is left alone (another batch may be
/// staging) and stops the walk, other failures are logged, since the caller's work is already done.
fn remove_staging_root_if_empty(output: &str, dir: &Path) {
    let mut dir = Some(dir);
    while let Some(d) = dir {
        if !remove_dir_if_empty(output, d) {
            return;
        }
        if d.file_name().is_some_and(|n| n == STAGING_DIR) {
            return;
        }
        dir = d.parent();
    }
}

/// Whether `dir` is gone now (removed, or missing already).
fn remove_dir_if_empty(output: &str, dir: &Path) -> bool {
    match std::fs::remove_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) if e.kind() == io::ErrorKind::DirectoryNotEmpty => false,
        Err(e) => {
            tracing::warn!(
                output,
                path = %dir.display(),
                error = %e,
                "could not remove the empty staging directory"
            );
            false
        }
    }
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing an existing `to`.
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;

    let from_c = CString::new(from.as_os_str().as_bytes())?;
    let to_c = CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both pointers come from live, NUL-terminated CStrings that outlive the call; AT_FDCWD
    // makes the (absolute) paths resolve as with rename(2).
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from_c.as_ptr(),
            libc::AT_FDCWD,
            to_c.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        // The file system or kernel does not support RENAME_NOREPLACE.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => rename_checked(from, to),
        _ => Err(err),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    rename_checked(from, to)
}

fn rename_checked(from: &Path, to: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", to.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::rename(from, to),
        Err(e) => Err(e),
    }
}

#[async_trait::async_trait]
impl Output for LocalOutput {
    fn describe(&self) -> String {
        self.url.clone()
    }

    async fn is_published(&self, batch_dir: &str) -> Result<bool, SinkError> {
        validate_batch_dir(batch_dir)?;
        let dest = self.root.join(batch_dir);
        let output = self.url.clone();
        let root = self.root.clone();
        blocking(
            &self.url,
            &dest.clone(),
            "stat batch directory",
            move || match std::fs::metadata(&dest) {
                // Published, and durably so: the run that renamed it may have died before it
                // fsynced the output root, and what is found here is about to be acknowledged.
                Ok(meta) if meta.is_dir() => {
                    sync_ancestors(&output, &root, &dest)?;
                    Ok(true)
                }
                Ok(_) => Err(SinkError::NotADirectory {
                    output,
                    path: dest.display().to_string(),
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err(&output, &dest, "stat batch directory")(e)),
            },
        )
        .await
    }

    async fn is_void(&self, batch_dir: &str) -> Result<bool, SinkError> {
        validate_batch_dir(batch_dir)?;
        let marker = self.root.join(batch_dir).join(super::VOID_FILE);
        let output = self.url.clone();
        blocking(
            &self.url,
            &marker.clone(),
            "stat void marker",
            move || match std::fs::metadata(&marker) {
                Ok(_) => Ok(true),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
                Err(e) => Err(io_err(&output, &marker, "stat void marker")(e)),
            },
        )
        .await
    }

    async fn stage(&self, batch_dir: &str, epoch: u64) -> Result<Box<dyn StagedBatch>, SinkError> {
        validate_batch_dir(batch_dir)?;
        // Every attempt stages in its own directory, so two writers of one batch name (a fenced node
        // and the node voiding its claim) never put files into each other's staging.
        let flat = super::staging_name(batch_dir);
        let staging_name = format!("{flat}--{:016x}", rand::random::<u64>());
        let epoch_dir = staging_epoch_dir(epoch);
        let staging = self.epoch_root(epoch).join(&staging_name);
        let output = self.url.clone();
        let dir = staging.clone();
        let batch = flat;
        let staging_root = self.epoch_root(epoch);
        let publishing = Arc::clone(&self.publishing);
        blocking(&self.url, &staging, "create staging directory", move || {
            // A publish still running here is an abandoned attempt's (one commit at a time per node):
            // its staging must stay until its rename is done. The retry comes at the next interval.
            let _publishing = match publishing.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    return Err(io_err(&output, &dir, "stage batch")(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "an abandoned attempt is still publishing into this output (its file system is not answering)",
                    )))
                }
            };
            let stale_prefix = format!("{batch}--");
            if let Ok(entries) = std::fs::read_dir(&staging_root) {
                for entry in entries.flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name == batch || name.starts_with(&stale_prefix) {
                        let path = entry.path();
                        if remove_tree(&output, &path)? {
                            tracing::warn!(output, batch, path = %path.display(), "removed stale staging of this batch");
                        }
                    }
                }
            }
            std::fs::create_dir_all(&dir).map_err(io_err(&output, &dir, "create staging directory"))
        })
        .await?;
        tracing::debug!(output = %self.url, batch = batch_dir, "batch staged");
        Ok(Box::new(LocalStagedBatch {
            store: Arc::clone(&self.store),
            output: self.url.clone(),
            root: self.root.clone(),
            batch: batch_dir.to_owned(),
            staging_location: ObjectPath::from_iter([
                STAGING_DIR,
                self.owner.as_str(),
                epoch_dir.as_str(),
                staging_name.as_str(),
            ]),
            staging,
            files: Vec::new(),
            publishing: Arc::clone(&self.publishing),
        }))
    }

    async fn clean_staging(&self) -> Result<usize, SinkError> {
        let output = self.url.clone();
        let root = self.root.clone();
        let staging_root = self.staging_root();
        blocking(
            &self.url,
            &staging_root.clone(),
            "clean staging",
            move || {
                let entries = match std::fs::read_dir(&staging_root) {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
                    Err(e) => {
                        return Err(io_err(&output, &staging_root, "list staging directory")(e))
                    }
                };
                let mut removed = 0;
                for entry in entries {
                    let entry =
                        entry.map_err(io_err(&output, &staging_root, "list staging directory"))?;
                    let path = entry.path();
                    let file_type =
                        entry
                            .file_type()
                            .map_err(io_err(&output, &path, "stat staging entry"))?;
                    if !file_type.is_dir() {
                        std::fs::remove_file(&path).map_err(io_err(
                            &output,
                            &path,
                            "remove staging entry",
                        ))?;
                        tracing::warn!(output, path = %path.display(), "removed leftover staging");
                        removed += 1;
                        continue;
                    }
                    // An epoch's directory: count the batches it held, then remove it whole.
                    let batches = std::fs::read_dir(&path)
                        .map_err(io_err(&output, &path, "list staging directory"))?
                        .count();
                    remove_tree(&output, &path)?;
                    tracing::warn!(output, path = %path.display(), batches, "removed leftover staging");
                    removed += batches;
                }
                remove_staging_root_if_empty(&output, &staging_root);
                sync_dir(&output, &root)?;
                Ok(removed)
            },
        )
        .await
    }
}

/// Makes every staged file durable. On Linux that is one `syncfs(2)` of the output's file system: one
/// journal commit for the whole batch instead of one per file (per-file fsyncs measured ~3.4 ms per
/// image, capping output at ~18 MiB/s for 64 KiB images). Elsewhere, every file is fsynced.
fn sync_staged_files(output: &str, staging: &Path, files: &[String]) -> Result<(), SinkError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let _ = files;
        let dir =
            File::open(staging).map_err(io_err(output, staging, "open staging for syncfs"))?;
        // SAFETY: syncfs only reads the descriptor, which `dir` keeps open for the call.
        if unsafe { libc::syncfs(dir.as_raw_fd()) } != 0 {
            return Err(io_err(output, staging, "syncfs staged files")(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        for name in files {
            let path = staging.join(name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err(output, &path, "fsync staged file"))?;
        }
        Ok(())
    }
}

/// A batch staged under `<output>/_temporary/<owner>/e<epoch>/<batch dir>--<random>/`.
#[derive(Debug)]
struct LocalStagedBatch {
    store: Arc<LocalFileSystem>,
    output: String,
    root: PathBuf,
    batch: String,
    /// `_temporary/<owner>/e<epoch>/<batch>--<random>`, relative to the output: this attempt's directory (a
    /// batch name never ends in `-`).
    staging_location: ObjectPath,
    staging: PathBuf,
    /// Names put so far, in order, without duplicates: the files to fsync at publish.
    files: Vec<String>,
    /// The output's publish lock (see [`LocalOutput`]).
    publishing: Arc<std::sync::Mutex<()>>,
}

#[async_trait::async_trait]
impl StagedBatch for LocalStagedBatch {
    async fn put(&mut self, file_name: &str, bytes: Bytes) -> Result<(), SinkError> {
        validate_component("file name", file_name)?;
        let location = self.staging_location.clone().join(file_name);
        failpoint("sink::put::fault", &self.batch).map_err(io_err(
            &self.output,
            &self.staging.join(file_name),
            "put staged file",
        ))?;
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|source| SinkError::ObjectStore {
                output: self.output.clone(),
                path: location.to_string(),
                op: "put staged file",
                source: Box::new(source),
            })?;
        if !self.files.iter().any(|f| f == file_name) {
            self.files.push(file_name.to_owned());
        }
        Ok(())
    }

    async fn create(&mut self, file_name: &str) -> Result<Box<dyn StagedFile>, SinkError> {
        validate_component("file name", file_name)?;
        let path = self.staging.join(file_name);
        failpoint("sink::put::fault", &self.batch).map_err(io_err(
            &self.output,
            &path,
            "create staged file",
        ))?;
        let output = self.output.clone();
        let p = path.clone();
        let file = blocking(&self.output, &path, "create staged file", move || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&p)
                .map_err(io_err(&output, &p, "create staged file"))
        })
        .await?;
        if !self.files.iter().any(|f| f == file_name) {
            self.files.push(file_name.to_owned());
        }
        Ok(Box::new(LocalStagedFile {
            output: self.output.clone(),
            batch: self.batch.clone(),
            path,
            file: Some(file),
        }))
    }

    async fn publish(self: Box<Self>) -> Result<PublishOutcome, SinkError> {
        let LocalStagedBatch {
            output,
            root,
            batch,
            staging,
            files,
            publishing,
            ..
        } = *self;
        let dest = root.join(&batch);
        let staging_for_err = staging.clone();
        let log_output = output.clone();
        let log_batch = batch.clone();
        let file_count = files.len();
        let outcome = blocking(&log_output, &staging_for_err, "publish batch", move || {
            let _publishing = publishing.lock().unwrap_or_else(|p| p.into_inner());
            sync_staged_files(&output, &staging, &files)?;
            sync_dir(&output, &staging)?;
            failpoint("sink::publish::fault", &batch).map_err(io_err(
                &output,
                &dest,
                "publish batch",
            ))?;

            let staging_root = staging.parent().unwrap_or(&root).to_path_buf();
            // A partitioned layout's parents (`dt=…/hour=…`) come first, each durable in its parent.
            if let Some(parent) = dest.parent().filter(|p| *p != root) {
                if !parent.is_dir() {
                    std::fs::create_dir_all(parent).map_err(io_err(
                        &output,
                        parent,
                        "create partition directory",
                    ))?;
                    sync_ancestors(&output, &root, parent)?;
                }
            }
            match rename_noreplace(&staging, &dest) {
                Ok(()) => {
                    sync_dir(&output, dest.parent().unwrap_or(&root))?;
                    sync_dir(&output, &staging_root)?;
                    remove_staging_root_if_empty(&output, &staging_root);
                    Ok(PublishOutcome::Published)
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::AlreadyExists | io::ErrorKind::DirectoryNotEmpty
                    ) =>
                {
                    if !dest.is_dir() {
                        return Err(SinkError::NotADirectory {
                            output,
                            path: dest.display().to_string(),
                        });
                    }
                    remove_tree(&output, &staging)?;
                    remove_staging_root_if_empty(&output, &staging_root);
                    // The earlier run may have died between its rename and this fsync.
                    sync_ancestors(&output, &root, &dest)?;
                    Ok(PublishOutcome::AlreadyPublished)
                }
                Err(e) => Err(io_err(&output, &dest, "rename staging to batch directory")(
                    e,
                )),
            }
        })
        .await?;
        match outcome {
            PublishOutcome::Published => {
                tracing::info!(output = %log_output, batch = %log_batch, files = file_count, "batch published")
            }
            PublishOutcome::AlreadyPublished => {
                tracing::warn!(output = %log_output, batch = %log_batch, "batch was already published; staging discarded")
            }
        }
        Ok(outcome)
    }
}

/// A staged file written in pieces; made durable with the rest of the batch at publish.
struct LocalStagedFile {
    output: String,
    batch: String,
    path: PathBuf,
    /// Moved into the blocking task of each write and back.
    file: Option<File>,
}

impl LocalStagedFile {
    /// `<batch dir>/<file name>`: what `return(…)` of `sink::part::fault` names.
    fn part_key(&self) -> String {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        format!("{}/{}", self.batch, name.unwrap_or_default())
    }
}

#[async_trait::async_trait]
impl StagedFile for LocalStagedFile {
    async fn write(&mut self, bytes: Bytes) -> Result<(), SinkError> {
        use std::io::Write as _;
        failpoint("sink::part::fault", &self.part_key()).map_err(io_err(
            &self.output,
            &self.path,
            "write staged file",
        ))?;
        let Some(mut file) = self.file.take() else {
            return Err(io_err(&self.output, &self.path, "write staged file")(
                io::Error::other("an earlier write of this file failed"),
            ));
        };
        let (output, path) = (self.output.clone(), self.path.clone());
        let file = blocking(&self.output, &self.path, "write staged file", move || {
            file.write_all(&bytes)
                .map_err(io_err(&output, &path, "write staged file"))?;
            Ok(file)
        })
        .await?;
        self.file = Some(file);
        Ok(())
    }

    async fn close(self: Box<Self>) -> Result<(), SinkError> {
        match self.file {
            Some(_) => Ok(()),
            None => Err(io_err(&self.output, &self.path, "close staged file")(
                io::Error::other("an earlier write of this file failed"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_portable_rename_refuses_an_existing_destination_and_moves_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("staged");
        std::fs::create_dir(&from).unwrap();
        std::fs::write(from.join("f"), b"new").unwrap();
        let taken = dir.path().join("taken");
        std::fs::create_dir(&taken).unwrap();

        let err = rename_checked(&from, &taken).expect_err("destination exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(from.join("f").exists() && !taken.join("f").exists());

        let free = dir.path().join("free");
        rename_checked(&from, &free).unwrap();
        assert_eq!(std::fs::read(free.join("f")).unwrap(), b"new");
        assert!(!from.exists());
    }

    #[test]
    fn the_noreplace_rename_refuses_an_existing_empty_directory() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("staged");
        std::fs::create_dir(&from).unwrap();
        let to = dir.path().join("published");
        std::fs::create_dir(&to).unwrap();

        let err = rename_noreplace(&from, &to).expect_err("destination exists");
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(from.is_dir() && to.is_dir());
    }
}
