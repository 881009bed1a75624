//! A full disk means backpressure, never an exit: the node's data directory on a small tmpfs (mounted by
//! the test, so it runs as root; skipped with a reason otherwise), filled with a file by the test.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use hdfs_ingest::images::ImageSet;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, PushOptions};
use it::{free_port, LoggedNode};

/// A tmpfs mounted for one test; unmounted when dropped.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "8m") at `dir`, or None (with the reason printed) if not root.
    fn mount(dir: &Path, size: &str) -> anyhow::Result<Option<Tmpfs>> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIPPED: mounting a tmpfs needs root (CI runs these tests as root)");
            return Ok(None);
        }
        std::fs::create_dir_all(dir)?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()?;
        anyhow::ensure!(st.success(), "mount -t tmpfs at {} failed", dir.display());
        Ok(Some(Tmpfs {
            dir: dir.to_path_buf(),
        }))
    }

    fn free(&self) -> u64 {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bavail as u64 * s.f_frsize as u64
    }

    /// Writes a file that leaves about `leave` bytes free (0: until the disk is full).
    fn fill(&self, leave: u64) -> anyhow::Result<PathBuf> {
        let path = self.dir.join("filler");
        let mut f = std::fs::File::create(&path)?;
        let chunk = vec![0x5au8; 64 << 10];
        loop {
            let free = self.free();
            if free <= leave {
                break;
            }
            let n = (free - leave).min(chunk.len() as u64) as usize;
            match f.write_all(&chunk[..n]) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(e.into()),
            }
        }
        f.sync_all()?;
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn write_config(
    root: &Path,
    data: &Path,
    port: u16,
    min_free: &str,
    extra: &str,
) -> anyhow::Result<PathBuf> {
    let path = root.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\ndata_dir = {:?}\n[wal]\nsegment_size = \"1 MiB\"\ndisk_budget = \"4 MiB\"\nmin_free = \"{min_free}\"\n[batch]\ninterval = \"200ms\"\n[analysis]\nenabled = false\n[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n{extra}",
            data.display().to_string()
        ),
    )?;
    Ok(path)
}

fn push_options(port: u16, count: u64, prefix: &str) -> PushOptions {
    PushOptions {
        targets: vec![format!("127.0.0.1:{port}")],
        count,
        concurrency: 2,
        window: 4,
        source_prefix: prefix.into(),
        stall_timeout: Duration::from_secs(600),
        give_up_after: Duration::from_secs(600),
        ..PushOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filling_disk_applies_backpressure_keeps_the_node_running_and_commits_every_acked_image_once_space_is_freed(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let Some(disk) = Tmpfs::mount(&root.path().join("disk"), "16m")? else {
        return Ok(());
    };
    let data = disk.dir.join("data");
    let port = free_port();
    // Checkpoints outside the small disk: this test is about the WAL and the output sharing it.
    let store = root.path().join("store");
    let cfg = write_config(
        root.path(),
        &data,
        port,
        "2 MiB",
        &format!(
            "[checkpoint.store]\nkind = \"local\"\npath = {:?}\n",
            store.display().to_string()
        ),
    )?;
    let mut node = LoggedNode::spawn(&cfg, &[])?;
    assert!(node.wait_ready(Duration::from_secs(60)), "{}", node.log());
    // About 3 MiB free: the 160 images of 40 kB (6.4 MB) do not fit in the output.
    let filler = disk.fill(3 << 20)?;

    let mpath = root.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let pusher = tokio::spawn({
        let m = m.clone();
        async move {
            push(
                push_options(port, 160, "full"),
                ImageSet::Generated {
                    size: 40_000,
                    seed: 11,
                },
                Some(m),
            )
            .await
        }
    });
    let promised = "applying backpressure";
    assert!(
        node.wait_log(promised, Duration::from_secs(60)),
        "a filling disk is logged as backpressure; the node logged:\n{}",
        node.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        node.exited().is_none(),
        "the node keeps running on a full disk; it logged:\n{}",
        node.log()
    );
    assert!(!pusher.is_finished(), "the sender is held back, not done");

    std::fs::remove_file(&filler)?;
    let r = tokio::time::timeout(Duration::from_secs(120), pusher).await???;
    assert_eq!(r.acked, 160, "every image is taken once there is room");
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop()?;
    m.flush()?;
    let v = hdfs_ingest::verify::verify(&read_manifest(&mpath)?, &data.join("output"), true)?;
    assert!(v.ok() && v.found == 160, "{}", v.summary());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_on_a_full_disk_waits_with_a_clear_message_and_serves_once_space_is_freed(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let Some(disk) = Tmpfs::mount(&root.path().join("disk"), "8m")? else {
        return Ok(());
    };
    let data = disk.dir.join("data");
    let port = free_port();
    // Everything on the small disk, the sled checkpoint store too.
    let cfg = write_config(root.path(), &data, port, "2 MiB", "")?;
    let mut node = LoggedNode::spawn(&cfg, &[])?;
    assert!(node.wait_ready(Duration::from_secs(60)), "{}", node.log());
    let before = root.path().join("before.jsonl");
    let m = Arc::new(ManifestWriter::create(&before)?);
    let r = push(
        push_options(port, 20, "before"),
        ImageSet::Generated {
            size: 40_000,
            seed: 3,
        },
        Some(m.clone()),
    )
    .await?;
    assert_eq!(r.acked, 20);
    node.stop()?;
    m.flush()?;

    let filler = disk.fill(0)?;
    let mut node = LoggedNode::spawn(&cfg, &[])?;
    let ready = node.wait_ready(Duration::from_secs(10));
    assert!(
        node.exited().is_none(),
        "a node started on a full disk must not exit; it logged:\n{}",
        node.log()
    );
    if !ready {
        let log = node.log();
        assert!(
            log.contains(&data.display().to_string()) && log.contains("free"),
            "a node waiting for disk space says which path and how much is free: {log}"
        );
    }
    std::fs::remove_file(&filler)?;
    assert!(
        node.wait_ready(Duration::from_secs(60)),
        "once space is freed the node serves: {}",
        node.log()
    );
    let after = root.path().join("after.jsonl");
    let m = Arc::new(ManifestWriter::create(&after)?);
    let r = push(
        push_options(port, 20, "after"),
        ImageSet::Generated {
            size: 40_000,
            seed: 4,
        },
        Some(m.clone()),
    )
    .await?;
    assert_eq!(r.acked, 20);
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop()?;
    m.flush()?;
    for manifest in [&before, &after] {
        let v = hdfs_ingest::verify::verify(&read_manifest(manifest)?, &data.join("output"), true)?;
        assert!(v.ok() && v.found == 20, "{}", v.summary());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_reserve_a_wal_write_that_finds_the_disk_full_is_backpressure_not_an_exit(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let Some(disk) = Tmpfs::mount(&root.path().join("disk"), "16m")? else {
        return Ok(());
    };
    let data = disk.dir.join("data");
    let port = free_port();
    let store = root.path().join("store");
    // No reserve: the WAL's own writes and the output's hit ENOSPC.
    let cfg = write_config(
        root.path(),
        &data,
        port,
        "0",
        &format!(
            "[checkpoint.store]\nkind = \"local\"\npath = {:?}\n",
            store.display().to_string()
        ),
    )?;
    let mut node = LoggedNode::spawn(&cfg, &[])?;
    assert!(node.wait_ready(Duration::from_secs(60)), "{}", node.log());
    let filler = disk.fill(3 << 20)?;
    let mpath = root.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let pusher = tokio::spawn({
        let m = m.clone();
        async move {
            push(
                push_options(port, 160, "nospace"),
                ImageSet::Generated {
                    size: 40_000,
                    seed: 12,
                },
                Some(m),
            )
            .await
        }
    });
    assert!(
        node.wait_log("disk full under the WAL", Duration::from_secs(60)),
        "an append that finds the disk full is backpressure; the node logged:\n{}",
        node.log()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        node.exited().is_none(),
        "the node keeps running; it logged:\n{}",
        node.log()
    );
    std::fs::remove_file(&filler)?;
    let r = tokio::time::timeout(Duration::from_secs(120), pusher).await???;
    assert_eq!(r.acked, 160);
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop()?;
    m.flush()?;
    let v = hdfs_ingest::verify::verify(&read_manifest(&mpath)?, &data.join("output"), true)?;
    assert!(v.ok() && v.found == 160, "{}", v.summary());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_fails_for_lack_of_space_logs_the_os_error_and_succeeds_once_space_is_freed(
) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let Some(disk) = Tmpfs::mount(&root.path().join("disk"), "16m")? else {
        return Ok(());
    };
    let port = free_port();
    // Only the output on the small disk, and no reserve: the commit is what meets ENOSPC.
    let data = root.path().join("data");
    let output = disk.dir.join("output");
    let cfg = write_config(
        root.path(),
        &data,
        port,
        "0",
        &format!("[output]\nurl = {:?}\n", output.display().to_string()),
    )?;
    let mut node = LoggedNode::spawn(&cfg, &[])?;
    assert!(node.wait_ready(Duration::from_secs(60)), "{}", node.log());
    let filler = disk.fill(1 << 20)?;
    let mpath = root.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let pusher = tokio::spawn({
        let m = m.clone();
        async move {
            push(
                push_options(port, 60, "commit"),
                ImageSet::Generated {
                    size: 40_000,
                    seed: 13,
                },
                Some(m),
            )
            .await
        }
    });
    assert!(
        node.wait_log("os error 28", Duration::from_secs(60)),
        "a commit that fails for lack of space says why; the node logged:\n{}",
        node.log()
    );
    assert!(node.log().contains("batch commit failed"), "{}", node.log());
    assert!(node.exited().is_none(), "{}", node.log());
    std::fs::remove_file(&filler)?;
    let r = tokio::time::timeout(Duration::from_secs(120), pusher).await???;
    assert_eq!(r.acked, 60);
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.stop()?;
    m.flush()?;
    let v = hdfs_ingest::verify::verify(&read_manifest(&mpath)?, &output, true)?;
    assert!(v.ok() && v.found == 60, "{}", v.summary());
    Ok(())
}
