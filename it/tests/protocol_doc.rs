//! docs/PROTOCOL.md is precise enough to write a client from: its Python example, run verbatim,
//! gets its image acknowledged and stored.

use hdfs_ingest::config::SourceConfig;
use it::start_in_process;

fn python_example() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/PROTOCOL.md"))
        .unwrap();
    let start = doc
        .find("```python\n")
        .expect("a python block in PROTOCOL.md")
        + "```python\n".len();
    let end = start + doc[start..].find("```").unwrap();
    doc[start..end].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_client_in_the_protocol_doc_works() -> anyhow::Result<()> {
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("python3 is needed for this test (it runs the protocol doc's example client)");
    }
    let dir = tempfile::tempdir()?;
    let n = start_in_process(
        dir.path(),
        vec![SourceConfig::FramedListen {
            address: "127.0.0.1:0".into(),
            token: None,
        }],
        |_| {},
    )
    .await?;
    let (host, port) = n.addresses[0].rsplit_once(':').unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, python_example())?;
    let img = dir.path().join("cat.jpg");
    std::fs::write(&img, hdfs_ingest::images::jpeg(32, 32, 7))?;
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .args([host, port])
        .arg(&img)
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.lines().any(|l| l == "durable 0"), "{stdout}");
    let output = n.stop().await?;
    let stored: Vec<_> = hdfs_ingest::layout::read::local_batch_dirs(&output)?
        .into_iter()
        .map(|b| output.join(b).join("cam-7-0.jpg"))
        .filter(|p| p.exists())
        .collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(std::fs::read(&stored[0])?, std::fs::read(&img)?);
    Ok(())
}
