//! A node whose WAL is damaged in its middle refuses to start and says where; told to salvage, it starts,
//! and what was before the damage is still delivered.

use std::sync::Arc;

use hdfs_ingest::images::ImageSet;
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, PushOptions};
use it::{bin, free_port, write_config, NodeProc};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_wal_segment_stops_the_start_with_its_name_and_offset_unless_salvaging(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    // No batch ever runs (1h), so everything stays in the WAL: several 1 MiB segments.
    let config = write_config(
        dir.path(),
        &format!("[wal]\nsegment_size = \"1 MiB\"\n[batch]\ninterval = \"1h\"\n[[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n"),
    )?;
    let node = NodeProc::start(&config, &[])?;
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let r = push(
        PushOptions {
            targets: vec![format!("127.0.0.1:{port}")],
            count: 120,
            concurrency: 1,
            window: 1,
            source_prefix: "w".into(),
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 40_000,
            seed: 5,
        },
        Some(m.clone()),
    )
    .await?;
    assert_eq!(r.acked, 120);
    node.kill9()?;

    let wal = dir.path().join("data/wal");
    let mut segs: Vec<_> = std::fs::read_dir(&wal)?
        .flatten()
        .map(|e| e.path())
        .collect();
    segs.sort();
    assert!(segs.len() >= 3, "expected several segments, got {segs:?}");
    let victim = &segs[0];
    let mut bytes = std::fs::read(victim)?;
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(victim, &bytes)?;

    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()?;
    assert!(!out.status.success(), "the node must refuse a corrupt WAL");
    let err = String::from_utf8_lossy(&out.stderr);
    let name = victim.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name) && err.contains("offset"),
        "the error names the segment and offset: {err}"
    );

    // Salvage: starts, and every image outside the damaged segment's tail is delivered.
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["run", "--salvage-wal", "--config"])
        .arg(&config)
        .stdout(std::process::Stdio::null());
    let mut child = cmd.spawn()?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    it::signal(child.id(), "TERM")?;
    assert!(child.wait()?.success());
    m.flush()?;
    let v = hdfs_ingest::verify::verify(
        &read_manifest(&mpath)?,
        &dir.path().join("data/output"),
        false,
    )?;
    assert!(
        v.duplicated.is_empty() && v.corrupt.is_empty(),
        "{}",
        v.summary()
    );
    assert!(
        !v.lost.is_empty() && v.lost.len() < 120,
        "salvage drops only part of the damaged segment: {}",
        v.summary()
    );
    Ok(())
}
