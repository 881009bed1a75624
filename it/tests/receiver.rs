//! The receivers: raw (listen and connect) and framed, under many senders and bad input.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use hdfs_ingest::config::SourceConfig;
use hdfs_ingest::images::ImageSet;
use hdfs_ingest::protocol::{block_header, AckLevel, ErrorCode, Hello, ServerFrame, VERSION};
use hdfs_ingest::send::manifest::{read_manifest, ManifestWriter};
use hdfs_ingest::send::push::{push, Protocol, PushOptions};
use hdfs_ingest::verify::verify;
use it::hostile::error_code;
use it::{bin, free_port, start_in_process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn raw_listen() -> SourceConfig {
    SourceConfig::RawListen {
        address: "127.0.0.1:0".into(),
        source: "raw".into(),
    }
}
fn framed_listen(token: Option<&str>) -> SourceConfig {
    SourceConfig::FramedListen {
        address: "127.0.0.1:0".into(),
        token: token.map(String::from),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_raw_senders_at_once_all_land_exactly_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = start_in_process(dir.path(), vec![raw_listen()], |_| {}).await?;
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    let r = push(
        PushOptions {
            targets: vec![n.addresses[0].clone()],
            protocol: Protocol::Raw,
            count: 320,
            concurrency: 64,
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 8 * 1024,
            seed: 64,
        },
        Some(m.clone()),
    )
    .await?;
    assert_eq!(r.sent, 320);
    let output = n.stop().await?;
    m.flush()?;
    let v = verify(&read_manifest(&mpath)?, &output, true)?;
    assert!(
        v.ok() && v.found == 320 && v.unexpected.is_empty(),
        "{}",
        v.summary()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zero_length_or_oversized_raw_connection_stores_nothing_and_the_node_goes_on(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = start_in_process(dir.path(), vec![raw_listen()], |c| {
        c.receiver.max_block_size = hdfs_ingest::size::ByteSize::kib(16)
    })
    .await?;
    let addr = n.addresses[0].clone();
    // Empty: connect and close.
    drop(TcpStream::connect(&addr).await?);
    // Oversized: 64 KiB against a 16 KiB limit.
    let mut s = TcpStream::connect(&addr).await?;
    let _ = s.write_all(&vec![7u8; 64 * 1024]).await;
    let _ = s.shutdown().await;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink).await;
    // A good one afterwards.
    let mut s = TcpStream::connect(&addr).await?;
    s.write_all(b"GIF89a-good-image").await?;
    s.shutdown().await?;
    s.read_to_end(&mut sink).await?;
    let node = n.node.clone();
    tokio::time::timeout(Duration::from_secs(5), async {
        while node.stats().blocks.load(Ordering::Relaxed) < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    assert_eq!(
        node.stats().rejected.load(Ordering::Relaxed),
        1,
        "the oversized image was refused"
    );
    let output = n.stop().await?;
    let files: Vec<_> = walk(&output);
    assert_eq!(
        files,
        vec!["raw-0.gif".to_string()],
        "only the good image is stored"
    );
    Ok(())
}

fn walk(output: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for (_, b) in it::batch_paths(output) {
        for f in std::fs::read_dir(b).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if !name.starts_with('_') {
                out.push(name);
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pulling_from_a_classic_image_server_gets_every_image_it_serves() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let mpath = dir.path().join("served.jsonl");
    // The sender is a real process, serving 30 images, rebinding its port for each.
    let mut server = std::process::Command::new(bin())
        .args([
            "send",
            "serve",
            "--address",
            &format!("127.0.0.1:{port}"),
            "--count",
            "30",
            "--pause",
            "20ms",
            "--size",
            "4KiB",
            "--manifest",
        ])
        .arg(&mpath)
        .spawn()?;
    let n = start_in_process(
        dir.path(),
        vec![SourceConfig::RawConnect {
            address: format!("127.0.0.1:{port}"),
            source: "cam-1".into(),
            backoff_max: Duration::from_millis(50),
        }],
        |_| {},
    )
    .await?;
    let st = tokio::task::spawn_blocking(move || server.wait()).await??;
    assert!(st.success());
    let node = n.node.clone();
    tokio::time::timeout(Duration::from_secs(10), async {
        while node.stats().blocks.load(Ordering::Relaxed) < 30 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await?;
    let output = n.stop().await?;
    let v = verify(&read_manifest(&mpath)?, &output, true)?;
    assert!(v.ok() && v.found == 30, "{}", v.summary());
    Ok(())
}

/// A framed connection driven by hand.
struct Raw {
    s: TcpStream,
}

impl Raw {
    async fn open(addr: &str, hello: &[u8]) -> Raw {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(hello).await.unwrap();
        Raw { s }
    }
    async fn block(&mut self, seq: u64, data: &[u8]) {
        let _ = self.s.write_all(&block_header(seq, data)).await;
        let _ = self.s.write_all(data).await;
    }
    async fn frames(&mut self) -> Vec<ServerFrame> {
        let _ = self.s.shutdown().await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.s.read_to_end(&mut buf)).await;
        let mut r = &buf[..];
        let mut out = Vec::new();
        while let Ok(Some(f)) = ServerFrame::read(&mut r).await {
            out.push(f);
        }
        out
    }
}

fn hello(source: &str, token: Option<&str>) -> Vec<u8> {
    Hello {
        version: VERSION,
        source: source.into(),
        token: token.map(String::from),
    }
    .encode()
    .to_vec()
}

fn durable(frames: &[ServerFrame]) -> Vec<u64> {
    let mut v = it::hostile::durable(frames);
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_frames_get_an_error_naming_the_reason_and_cost_nobody_else_anything(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = start_in_process(dir.path(), vec![framed_listen(Some("tok"))], |c| {
        c.receiver.max_block_size = hdfs_ingest::size::ByteSize::kib(64)
    })
    .await?;
    let addr = n.addresses[0].clone();
    let mpath = dir.path().join("m.jsonl");
    let m = Arc::new(ManifestWriter::create(&mpath)?);
    // A well-behaved sender runs through all of it.
    let good = tokio::spawn(push(
        PushOptions {
            targets: vec![addr.clone()],
            count: 300,
            concurrency: 4,
            rate: Some(600.0),
            token: Some("tok".into()),
            source_prefix: "good".into(),
            ..PushOptions::default()
        },
        ImageSet::Generated {
            size: 4096,
            seed: 3,
        },
        Some(m.clone()),
    ));

    let mut bad_magic = hello("x", Some("tok"));
    bad_magic[0] = b'J';
    let f = Raw::open(&addr, &bad_magic).await.frames().await;
    assert_eq!(error_code(&f), Some(ErrorCode::BadMagic), "{f:?}");

    let mut bad_version = hello("x", Some("tok"));
    bad_version[4] = 9;
    let f = Raw::open(&addr, &bad_version).await.frames().await;
    assert_eq!(error_code(&f), Some(ErrorCode::UnsupportedVersion), "{f:?}");

    let f = Raw::open(&addr, &hello("x", Some("wrong")))
        .await
        .frames()
        .await;
    assert_eq!(error_code(&f), Some(ErrorCode::Unauthorized), "{f:?}");
    let f = Raw::open(&addr, &hello("x", None)).await.frames().await;
    assert_eq!(error_code(&f), Some(ErrorCode::Unauthorized), "{f:?}");

    // Two good blocks, then one whose CRC is wrong: the good ones are acknowledged, then the error.
    let mut c = Raw::open(&addr, &hello("crc", Some("tok"))).await;
    c.block(0, b"GIF89a-zero").await;
    c.block(1, b"GIF89a-one").await;
    let mut frame = block_header(2, b"GIF89a-two").to_vec();
    frame.extend_from_slice(b"GIF89a-twX");
    c.s.write_all(&frame).await?;
    let f = c.frames().await;
    assert_eq!(durable(&f), vec![0, 1], "{f:?}");
    assert_eq!(error_code(&f), Some(ErrorCode::CrcMismatch), "{f:?}");

    // Oversized: refused from its header.
    let mut c = Raw::open(&addr, &hello("big", Some("tok"))).await;
    c.block(0, &vec![1u8; 65 * 1024]).await;
    let f = c.frames().await;
    assert_eq!(error_code(&f), Some(ErrorCode::BlockTooLarge), "{f:?}");

    // Garbage instead of a frame.
    let mut c = Raw::open(&addr, &hello("junk", Some("tok"))).await;
    c.s.write_all(b"\x42garbage").await?;
    let f = c.frames().await;
    assert_eq!(error_code(&f), Some(ErrorCode::Malformed), "{f:?}");

    let r = good.await??;
    assert_eq!(r.acked, 300);
    let output = n.stop().await?;
    m.flush()?;
    let v = verify(&read_manifest(&mpath)?, &output, true)?;
    assert!(v.ok() && v.found == 300, "{}", v.summary());
    let names = walk(&output);
    assert!(
        names.contains(&"crc-0.gif".to_string()) && names.contains(&"crc-1.gif".to_string()),
        "{names:?}"
    );
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("crc-2") || n.starts_with("big-") || n.starts_with("junk-")),
        "{names:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_duplicate_source_and_seq_is_acknowledged_again_but_stored_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let n = start_in_process(dir.path(), vec![framed_listen(None)], |_| {}).await?;
    let addr = n.addresses[0].clone();
    let mut c = Raw::open(&addr, &hello("dup", None)).await;
    c.block(5, b"GIF89a-five").await;
    c.block(5, b"GIF89a-five").await;
    let f = c.frames().await;
    assert_eq!(durable(&f), vec![5, 5], "both copies acknowledged: {f:?}");
    // Again on a new connection, once it is committed: durable and committed acks at once. (The
    // commit comes at the next batch interval; a loaded machine may take a few.)
    let committed = ServerFrame::Ack {
        level: AckLevel::Committed,
        seq: 5,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut c = Raw::open(&addr, &hello("dup", None)).await;
        c.block(5, b"GIF89a-five").await;
        let f = c.frames().await;
        assert_eq!(durable(&f), vec![5]);
        if f.contains(&committed) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a re-send after the commit gets the committed ack: {f:?}"
        );
    }
    let output = n.stop().await?;
    assert_eq!(walk(&output), vec!["dup-5.gif".to_string()]);
    let mut b = BytesMut::new();
    b.extend_from_slice(&std::fs::read(
        it::batch_paths(&output)[0].1.join("dup-5.gif"),
    )?);
    assert_eq!(&b[..], b"GIF89a-five");
    Ok(())
}

/// Reads server frames from `s` for `d`.
async fn frames_for(s: &mut TcpStream, d: Duration) -> Vec<ServerFrame> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    let mut chunk = [0u8; 1024];
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let mut r = &buf[..];
    let mut out = Vec::new();
    while let Ok(Some(f)) = ServerFrame::read(&mut r).await {
        out.push(f);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_version_2_connection_gets_keepalives_and_a_version_1_connection_gets_none(
) -> anyhow::Result<()> {
    use hdfs_ingest::protocol::{VERSION_1, VERSION_2};
    let dir = tempfile::tempdir()?;
    let n = start_in_process(dir.path(), vec![framed_listen(None)], |c| {
        c.receiver.keepalive_interval = Duration::from_millis(50);
    })
    .await?;
    let open = |version: u8, source: &str| {
        let hello = Hello {
            version,
            source: source.into(),
            token: None,
        }
        .encode();
        let addr = n.addresses[0].clone();
        async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(&hello).await.unwrap();
            s
        }
    };
    let mut v2 = open(VERSION_2, "ka-2").await;
    let mut v1 = open(VERSION_1, "ka-1").await;
    let (f2, f1) = tokio::join!(
        frames_for(&mut v2, Duration::from_millis(600)),
        frames_for(&mut v1, Duration::from_millis(600))
    );
    let roles = f2
        .iter()
        .filter(|f| matches!(f, ServerFrame::Role { .. }))
        .count();
    assert!(
        roles >= 4,
        "the first ROLE and then one per 50 ms of silence: {f2:?}"
    );
    assert!(matches!(f2[0], ServerFrame::Welcome { .. }), "{f2:?}");
    assert_eq!(f1.len(), 1, "only the WELCOME: {f1:?}");
    n.stop().await?;
    Ok(())
}
