//! `send serve`: serves images the way the classic Java image sender does, for a node's `raw-connect`
//! source: bind the port, accept one connection, write one image, close, unbind, pause, repeat.
//! Between images the port is closed, so the node sees "connection refused" and retries.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::debug;

use super::manifest::{ManifestEntry, ManifestWriter};
use crate::images::ImageSet;

#[derive(Clone, Debug)]
pub struct ServeOptions {
    pub address: String,
    pub count: u64,
    pub pause: Duration,
}

/// Serves `count` images; returns how many were written to a connection.
pub async fn serve(
    opts: ServeOptions,
    images: ImageSet,
    manifest: Option<Arc<ManifestWriter>>,
) -> std::io::Result<u64> {
    let mut served = 0;
    for i in 0..opts.count {
        let listener = TcpListener::bind(&opts.address).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot bind {}: {e}", opts.address))
        })?;
        let (mut sock, peer) = listener.accept().await?;
        drop(listener);
        let (label, data) = images.get(i);
        let sent = async {
            sock.write_all(&data).await?;
            sock.shutdown().await
        }
        .await;
        match sent {
            Ok(()) => {
                served += 1;
                debug!(peer = %peer, image = %label, bytes = data.len(), "served");
                if let Some(m) = &manifest {
                    m.append(&ManifestEntry::raw(label, &data))?;
                }
            }
            Err(e) => debug!(peer = %peer, error = %e, "connection failed while serving an image"),
        }
        if !opts.pause.is_zero() {
            tokio::time::sleep(opts.pause).await;
        }
    }
    if let Some(m) = &manifest {
        m.flush()?;
    }
    Ok(served)
}
