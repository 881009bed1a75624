//! A node's life cycle as a process runs it: start the receivers and the batcher of an opened node,
//! serve until told to stop or until the node fails, then stop in order — receivers first (blocks
//! already read are finished), the batch commit in progress, a last commit of what is durable, the WAL.

use std::time::Duration;

use tracing::info;

use super::Node;
use crate::config::Config;

/// Runs a node until `shutdown` resolves or the node fails; commits what is durable before returning.
/// Prints `ready <addresses>` on stdout once every listener is bound and recovery is done.
pub async fn run_node(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    // Polled once first, so that a signal handler it installs on its first poll is in place before
    // recovery and the `ready` line: a SIGTERM right after `ready` is a shutdown, not the default kill.
    tokio::pin!(shutdown);
    let early = futures::poll!(&mut shutdown).is_ready();
    let running = start_node(Node::open(cfg).await?).await?;
    println!("ready {}", running.addresses.join(" "));
    if early {
        running.node.request_stop("shutdown requested");
    }
    tokio::select! {
        _ = &mut shutdown, if !early => running.node.request_stop("shutdown requested"),
        _ = running.node.stopped() => {}
    }
    running.stop().await
}

/// A node serving: its receivers and its batcher.
pub struct RunningNode {
    pub node: Node,
    /// The receivers' addresses, in configuration order (port 0 resolved).
    pub addresses: Vec<String>,
    receivers: tokio::task::JoinSet<()>,
    batcher: tokio::task::JoinHandle<()>,
}

/// Starts the receivers and the batcher of an opened node.
pub async fn start_node(node: Node) -> anyhow::Result<RunningNode> {
    let mut receivers = tokio::task::JoinSet::new();
    let addresses = crate::receiver::start(&node, &mut receivers).await?;
    let batcher = {
        let node = node.clone();
        tokio::spawn(async move {
            // The batcher in a task of its own, so that a panic in it stops the node (fatal, named)
            // instead of leaving one that heartbeats and takes blocks but never commits them.
            let inner = tokio::spawn({
                let node = node.clone();
                async move { node.run_batcher().await }
            });
            if let Err(e) = inner.await {
                if e.is_panic() {
                    let what = panic_message(e.into_panic());
                    node.fail_even_if_stopping(format!("the batcher panicked: {what}"));
                }
            }
        })
    };
    info!(addresses = ?addresses, "node ready");
    Ok(RunningNode {
        node,
        addresses,
        receivers,
        batcher,
    })
}

impl RunningNode {
    /// Stops the receivers (blocks already read are finished), lets a batch commit in progress finish —
    /// never aborted, or its batch could be cut twice — commits what is durable and closes the WAL.
    /// An error if the node failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.node.request_stop("stopping");
        let drain = async { while self.receivers.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .is_err()
        {
            self.receivers.shutdown().await;
        }
        let _ = self.batcher.await;
        let reason = self.node.stop_reason().unwrap_or_default();
        self.node.shutdown().await?;
        if reason.starts_with("fatal") {
            anyhow::bail!("{reason}");
        }
        info!("node stopped");
        Ok(())
    }
}

/// The text of a panic's payload (`panic!` with a message gives a `&str` or a `String`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_else(|| "a panic without a message".into()),
    }
}
