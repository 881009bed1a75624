//! The repository's docker-compose.yml for real: real containers (Hadoop 3.4.1 NameNode, three
//! DataNodes, the connector), real `docker kill`, the commands the README's "A real HDFS with docker"
//! section gives. Each test brings up its own compose project and takes it down with its volumes.
//! Skipped (with the exact error) where no Docker daemon answers, except with `IT_REQUIRE_DOCKER=1`.

use std::time::Duration;

use anyhow::{ensure, Context};
use it::compose::Compose;

const NONE_CONFIG: &str = "/etc/hdfs-ingest/docker-none.toml";
const NONE_OUTPUT: &str = "hdfs://namenode:9000/ingest/output";
const HA_CONFIG: &str = "/etc/hdfs-ingest/docker-active-standby.toml";
const HA_OUTPUT: &str = "hdfs://namenode:9000/ingest-ha/output";
const SENDER_DONE: Duration = Duration::from_secs(300);

/// Waits for the `none` pipeline's sender to finish cleanly, then stops the node (SIGTERM: it
/// commits what is durable) and verifies the HDFS output against the sender's manifest.
fn finish_and_verify(c: &Compose, manifest: &str) -> anyhow::Result<String> {
    let code = c.wait_exit("sender", SENDER_DONE)?;
    ensure!(code == 0, "sender exited {code}:\n{}", c.logs("sender"));
    c.run(&["stop", "node"])?;
    let report = c.verify("sender", manifest, NONE_OUTPUT, NONE_CONFIG)?;
    ensure!(report.ends_with("OK"), "verify: {report}");
    Ok(report)
}

#[test]
fn compose_up_pushes_images_and_verify_over_hdfs_is_clean() -> anyhow::Result<()> {
    let Some(c) = Compose::up(
        "hdfsingest-up",
        Some("none"),
        &[("SENDER_COUNT", "300"), ("SENDER_RATE", "100")],
    )?
    else {
        return Ok(());
    };
    let report = finish_and_verify(&c, "/data/sent.jsonl")?;
    assert!(
        report.contains("300 expected, 300 found, 0 lost"),
        "{report}"
    );
    // hdfs-native loads libgssapi_krb5.so.2 when a cluster asks for Kerberos: the image must have it.
    let libs = c.run(&[
        "run",
        "--rm",
        "--no-deps",
        "--entrypoint",
        "sh",
        "sender",
        "-c",
        "ldconfig -p",
    ])?;
    assert!(
        libs.contains("libgssapi_krb5.so.2"),
        "the connector image lacks libgssapi_krb5.so.2 (Kerberos):\n{libs}"
    );
    Ok(())
}

/// Files (directories, files, bytes) under the output, as `hdfs dfs -count` prints them.
fn output_count(c: &Compose) -> anyhow::Result<(u64, u64)> {
    let out = c.run(&[
        "exec",
        "-T",
        "namenode",
        "hdfs",
        "dfs",
        "-count",
        "/ingest/output",
    ])?;
    let n: Vec<u64> = out
        .split_whitespace()
        .take(3)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("hdfs dfs -count: {out}"))?;
    Ok((n[1], n[2]))
}

#[test]
fn restarting_the_namenode_or_the_whole_hdfs_keeps_every_image_and_ingest_resumes(
) -> anyhow::Result<()> {
    let Some(c) = Compose::up(
        "hdfsingest-restart",
        Some("none"),
        &[("SENDER_COUNT", "200"), ("SENDER_RATE", "100")],
    )?
    else {
        return Ok(());
    };
    let code = c.wait_exit("sender", SENDER_DONE)?;
    ensure!(code == 0, "sender exited {code}:\n{}", c.logs("sender"));
    // The node commits each batch within its interval; give it two.
    std::thread::sleep(Duration::from_secs(5));
    let cluster = c.cluster_id()?;
    let before = output_count(&c)?;
    assert!(
        before.1 > 0,
        "nothing committed before the restart: {before:?}"
    );

    c.run(&["restart", "namenode"])?;
    c.wait_healthy("namenode", Duration::from_secs(180))?;
    assert_eq!(
        c.cluster_id()?,
        cluster,
        "the NameNode was formatted again by a restart"
    );
    assert!(
        output_count(&c)? >= before,
        "files lost by a NameNode restart"
    );

    c.run(&["stop", "namenode", "datanode1", "datanode2", "datanode3"])?;
    c.run(&[
        "up",
        "-d",
        "namenode",
        "datanode1",
        "datanode2",
        "datanode3",
    ])?;
    c.wait_healthy("namenode", Duration::from_secs(180))?;
    assert_eq!(
        c.cluster_id()?,
        cluster,
        "the NameNode was formatted again by stop/up"
    );
    assert!(
        output_count(&c)? >= before,
        "files lost by stop/up of the HDFS"
    );

    // Ingest resumes on the same node: a second push, then both manifests verify.
    c.run(&[
        "run",
        "--rm",
        "--no-deps",
        "sender",
        "send",
        "push",
        "--address",
        "node:9998",
        "--count",
        "100",
        "--rate",
        "100",
        "--source-prefix",
        "resumed",
        "--manifest",
        "/data/resumed.jsonl",
    ])?;
    c.run(&["stop", "node"])?;
    for manifest in ["/data/sent.jsonl", "/data/resumed.jsonl"] {
        let report = c.verify("sender", manifest, NONE_OUTPUT, NONE_CONFIG)?;
        assert!(report.ends_with("OK"), "{manifest}: {report}");
    }
    Ok(())
}

#[test]
fn a_datanode_killed_while_batches_are_written_loses_nothing() -> anyhow::Result<()> {
    let Some(c) = Compose::up(
        "hdfsingest-dnkill",
        Some("none"),
        &[("SENDER_COUNT", "600"), ("SENDER_RATE", "50")],
    )?
    else {
        return Ok(());
    };
    std::thread::sleep(Duration::from_secs(4));
    c.kill("datanode2")?;
    let code = c.wait_exit("sender", SENDER_DONE)?;
    ensure!(code == 0, "sender exited {code}:\n{}", c.logs("sender"));
    // The write pipeline through the dead DataNode stalls until the client's ack timeout (60 s in
    // hdfs-native), then goes on with the other two; every acknowledged image is committed after it.
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let report = loop {
        match c.verify("sender", "/data/sent.jsonl", NONE_OUTPUT, NONE_CONFIG) {
            Ok(r) if r.ends_with("OK") => break r,
            other => ensure!(
                std::time::Instant::now() < deadline,
                "still not clean after the DataNode kill: {other:?}\n{}",
                c.logs("node")
            ),
        }
        std::thread::sleep(Duration::from_secs(10));
    };
    assert!(
        report.contains("600 expected, 600 found, 0 lost"),
        "{report}"
    );
    Ok(())
}

#[test]
fn active_standby_takes_over_a_killed_primary_which_rejoins_and_verify_is_clean(
) -> anyhow::Result<()> {
    let Some(c) = Compose::up(
        "hdfsingest-ha",
        Some("active-standby"),
        &[("SENDER_COUNT", "600"), ("SENDER_RATE", "50")],
    )?
    else {
        return Ok(());
    };
    ensure!(
        c.run(&["ps", "-q", "node"])?.trim().is_empty(),
        "--profile active-standby started the none pipeline"
    );
    std::thread::sleep(Duration::from_secs(3));
    c.kill("primary")?;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !c.logs("standby").contains("takeover {") {
        ensure!(
            std::time::Instant::now() < deadline,
            "no takeover:\n{}",
            c.logs("standby")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The README's rejoin command: the same service (and network alias), now as a standby.
    c.run_with(
        &["--profile", "active-standby", "up", "-d", "primary"],
        &[("PRIMARY_FLAGS", "--standby")],
    )?;
    c.wait_healthy("primary", Duration::from_secs(120))?;
    let code = c.wait_exit("sender-ha", SENDER_DONE)?;
    ensure!(
        code == 0,
        "sender-ha exited {code}:\n{}",
        c.logs("sender-ha")
    );
    c.run(&["--profile", "active-standby", "stop", "standby", "primary"])?;
    let report = c.verify("sender-ha", "/data/sent.jsonl", HA_OUTPUT, HA_CONFIG)?;
    assert!(
        report.contains("600 expected, 600 found, 0 lost"),
        "{report}"
    );
    assert!(report.ends_with("OK"), "{report}");
    Ok(())
}

/// The HDFS integration tests against the compose cluster, as the README tells users: from the host,
/// with `HDFS_URL=hdfs://namenode:9000` and the compose host names resolving to 127.0.0.1.
/// (hdfs_store is left out: its multi-block test assumes the harness's small block size.)
#[test]
fn the_hdfs_integration_tests_pass_against_the_compose_cluster() -> anyhow::Result<()> {
    let resolves = std::net::ToSocketAddrs::to_socket_addrs(&("datanode3", 9886))
        .map(|mut a| a.any(|a| a.ip().is_loopback()))
        .unwrap_or(false);
    if !resolves {
        ensure!(
            !std::env::var("IT_REQUIRE_DOCKER").is_ok_and(|v| v == "1"),
            "IT_REQUIRE_DOCKER=1 but datanode3 does not resolve to 127.0.0.1 (/etc/hosts)"
        );
        eprintln!("skipping: the compose host names do not resolve to 127.0.0.1 (/etc/hosts)");
        return Ok(());
    }
    let Some(c) = Compose::up("hdfsingest-tests", None, &[])? else {
        return Ok(());
    };
    // `up -d` of HDFS alone waits for no health check: the NameNode is ready with 3 DataNodes live.
    c.wait_healthy("namenode", Duration::from_secs(180))?;
    // `up -d` without a profile is HDFS only, as the README says: the NameNode and three DataNodes.
    let running = c.run(&["ps", "-q"])?;
    assert_eq!(
        running.lines().filter(|l| !l.trim().is_empty()).count(),
        4,
        "`up -d` without a profile started other services:\n{}",
        c.run(&["ps"])?
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = std::process::Command::new(cargo)
        .args(["test", "-p", "it", "--test", "hdfs_output"])
        .env("HDFS_URL", "hdfs://namenode:9000")
        .status()?;
    assert!(st.success(), "HDFS integration tests against compose: {st}");
    Ok(())
}
