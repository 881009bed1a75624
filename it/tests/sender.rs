//! The sender process (`hdfs-ingest send push`) against a real node process: what it leaves behind
//! when it is interrupted, and what it says when its source ids were used before.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdfs_ingest::send::manifest::read_manifest;
use it::{bin, free_port, signal, write_config, NodeProc};

/// A node with one framed listener and short batches; returns it, its address and its output dir.
fn start_node(dir: &Path) -> anyhow::Result<(NodeProc, String, std::path::PathBuf)> {
    let port = free_port();
    let config = write_config(
        dir,
        &format!(
            "[batch]\ninterval = \"100ms\"\n\
             [[receiver.sources]]\nkind = \"framed-listen\"\naddress = \"127.0.0.1:{port}\"\n"
        ),
    )?;
    let node = NodeProc::start(&config, &[])?;
    Ok((node, format!("127.0.0.1:{port}"), dir.join("data/output")))
}

fn push_command(to: &str, prefix: &str, count: u64, manifest: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(["send", "push", "--to", to, "--source-prefix", prefix])
        .args(["--count", &count.to_string(), "--size", "8KiB"])
        .arg("--manifest")
        .arg(manifest)
        .env("RUST_LOG", "warn");
    cmd
}

fn wait_exit(child: &mut Child, within: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait()? {
            return Ok(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the sender did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `pushed N images (M acked, …)` from the sender's summary line.
fn summary_counts(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout.lines().find(|l| l.contains("pushed "))?;
    let rest = line.split("pushed ").nth(1)?;
    let sent = rest.split_whitespace().next()?.parse().ok()?;
    let acked = rest
        .split('(')
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((sent, acked))
}

fn verify_json(manifest: &Path, output: &Path) -> anyhow::Result<serde_json::Value> {
    let out = Command::new(bin())
        .args(["verify", "--json", "--manifest"])
        .arg(manifest)
        .arg("--output")
        .arg(output)
        .output()?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "verify printed no JSON report (exit {}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A sender pushing at a steady rate is sent `sig` mid-stream; then the node commits and stops.
fn interrupted_mid_stream(sig: &str, expected_code: i32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, to, output) = start_node(dir.path())?;
    let manifest = dir.path().join("manifest.jsonl");
    let mut sender = push_command(&to, "sig", 100_000, &manifest)
        .args(["--rate", "400", "--concurrency", "4"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        sender.try_wait()?.is_none(),
        "the sender is still pushing when it is interrupted"
    );
    signal(sender.id(), sig)?;
    let status = wait_exit(&mut sender, Duration::from_secs(30))?;
    let Output { stdout, stderr, .. } = sender.wait_with_output()?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr),
    );
    println!("sender {status}\nstdout: {stdout}\nstderr: {stderr}");
    // The node commits everything durable, then verify checks the output against the manifest.
    node.stop()?;

    let entries = read_manifest(&manifest).context("every manifest line parses")?;
    let acked = entries.iter().filter(|e| e.acked).count() as u64;
    println!("manifest: {} lines, {acked} acked", entries.len());
    assert!(acked > 100, "the sender got well into the stream: {acked}");
    let v = verify_json(&manifest, &output)?;
    let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
    println!(
        "verify: {} found, {} lost, {} duplicated, {} unexpected, {} unconfirmed and missing; first unexpected: {}",
        v["found"],
        count("lost"),
        count("duplicated"),
        count("unexpected"),
        v["unconfirmed_missing"],
        v["unexpected"][0]
    );
    assert_eq!(
        v["lost"].as_array().map(Vec::len),
        Some(0),
        "every line acked is in the output"
    );
    assert_eq!(
        v["duplicated"].as_array().map(Vec::len),
        Some(0),
        "nothing is stored twice"
    );
    assert_eq!(
        v["unexpected"].as_array().map(Vec::len),
        Some(0),
        "the manifest is not short: every image the node stored has its line"
    );
    let (sent, reported_acked) = summary_counts(&stdout)
        .with_context(|| format!("the sender prints what it did; stdout: {stdout}"))?;
    assert_eq!(
        (entries.len() as u64, acked),
        (sent, reported_acked),
        "one line per image sent, acked exactly as reported"
    );
    assert!(
        stderr.contains("interrupted"),
        "the sender says it was interrupted: {stderr}"
    );
    assert_eq!(
        status.code(),
        Some(expected_code),
        "an interrupted push exits with 128 + the signal's number"
    );
    Ok(())
}

#[test]
fn a_sender_interrupted_by_sigint_leaves_a_line_for_every_image_it_sent_and_exits_130(
) -> anyhow::Result<()> {
    interrupted_mid_stream("INT", 130)
}

#[test]
fn a_sender_stopped_by_sigterm_leaves_a_line_for_every_image_it_sent_and_exits_143(
) -> anyhow::Result<()> {
    interrupted_mid_stream("TERM", 143)
}

#[test]
fn a_second_push_with_the_same_source_prefix_fails_naming_the_source_and_a_fresh_one_or_resume_succeeds(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, to, output) = start_node(dir.path())?;
    let run_with = |prefix: &str, name: &str, extra: &[&str]| -> anyhow::Result<Output> {
        let out = push_command(&to, prefix, 50, &dir.path().join(name))
            .args(["--concurrency", "1"])
            .args(extra)
            .output()?;
        println!(
            "{prefix} ({name}): {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(out)
    };
    let run = |prefix: &str, name: &str| run_with(prefix, name, &[]);
    let first = run("cam", "first.jsonl")?;
    assert!(first.status.success(), "the first run succeeds");

    let again = run("cam", "again.jsonl")?;
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        !again.status.success(),
        "a second run with the same --source-prefix does not report success"
    );
    assert!(
        stderr.contains("cam-0") && stderr.contains("--source-prefix"),
        "the error names the source and what to do: {stderr}"
    );
    assert!(
        stderr.contains("already held seq"),
        "the error names the seqs the node already held: {stderr}"
    );

    let again_lines = read_manifest(&dir.path().join("again.jsonl"))?;
    assert!(
        !again_lines.is_empty() && again_lines.iter().all(|e| !e.acked),
        "no image of the failed run is marked acknowledged: {} lines, {} acked",
        again_lines.len(),
        again_lines.iter().filter(|e| e.acked).count()
    );

    // A run that says it continues the first one (a sender killed and started again) re-sends.
    let resumed = run_with("cam", "resumed.jsonl", &["--resume"])?;
    assert!(
        resumed.status.success(),
        "--resume takes held blocks as re-sends"
    );

    let fresh = run("cam2", "fresh.jsonl")?;
    assert!(fresh.status.success(), "a fresh prefix succeeds");
    node.stop()?;
    let entries = read_manifest(&dir.path().join("fresh.jsonl"))?;
    assert_eq!(entries.iter().filter(|e| e.acked).count(), 50);
    let v = verify_json(&dir.path().join("fresh.jsonl"), &output)?;
    assert_eq!(v["found"], 50, "the fresh run's images are stored: {v}");
    assert_eq!(v["lost"].as_array().map(Vec::len), Some(0), "{v}");
    Ok(())
}
