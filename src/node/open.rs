//! Opening a node: its WAL (a torn tail truncated), its checkpoint store and its output, as a
//! standby that rebuilds the durable set from the WAL and counts what is committed — then, for a
//! primary, the takeover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strategies::checkpoint::Checkpointer;
use strategies::store::CheckpointStore;
use tokio::sync::{watch, Semaphore};
use tracing::{info, warn};

use super::state::State;
use super::{Inner, Node, NodeError, Stats};
use crate::config::{Config, StoreConfig};
use crate::protocol::{Role, RoleInfo};
use crate::sink::{self, Output};
use crate::wal::{Wal, WalOptions};

/// The HDFS client settings of a configuration.
pub fn hdfs_options(cfg: &Config) -> strategies::store::hdfs::HdfsOptions {
    strategies::store::hdfs::HdfsOptions {
        user: cfg.hdfs.user.clone(),
        hadoop_conf_dir: cfg.hdfs.hadoop_conf_dir.clone(),
        config: cfg
            .hdfs
            .client
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

/// Opens the checkpoint store a configuration names.
pub async fn open_store(cfg: &Config) -> Result<Arc<dyn CheckpointStore>, NodeError> {
    use strategies::store::{hdfs::HdfsStore, object::ObjectStoreBackend, sled::SledStore};
    let store: Arc<dyn CheckpointStore> = match &cfg.checkpoint.store {
        StoreConfig::Sled { .. } => {
            let path = cfg.sled_path().expect("sled store has a path");
            Arc::new(tokio::task::spawn_blocking(move || SledStore::open(&path)).await??)
        }
        StoreConfig::Local { path } => Arc::new(ObjectStoreBackend::local(path)?),
        StoreConfig::Memory => Arc::new(ObjectStoreBackend::memory()),
        StoreConfig::Hdfs { url } => {
            let (base, root) = crate::config::split_hdfs_url(url).map_err(|reason| {
                NodeError::Config(crate::config::ConfigError::Invalid {
                    key: "checkpoint.store.url".into(),
                    reason,
                })
            })?;
            Arc::new(HdfsStore::connect(&base, &root, hdfs_options(cfg)).await?)
        }
    };
    Ok(store)
}

/// Opens the output a configuration names: a local directory, or a directory on HDFS.
pub async fn open_output(cfg: &Config) -> Result<Arc<dyn Output>, NodeError> {
    Ok(match cfg.hdfs_output() {
        Some(url) => Arc::new(
            sink::hdfs::HdfsOutput::connect(url, hdfs_options(cfg))
                .await?
                .with_owner(&cfg.node.name)?,
        ),
        None => {
            Arc::new(sink::local::LocalOutput::new(cfg.output_dir())?.with_owner(&cfg.node.name)?)
        }
    })
}

impl Node {
    /// Opens the node as the primary: recovers and becomes the committer (see [`Node::become_primary`]).
    pub async fn open(cfg: Config) -> Result<Node, NodeError> {
        let node = Node::open_standby(cfg).await?;
        node.become_primary().await?;
        Ok(node)
    }

    /// Opens the WAL, the checkpoint store and the output without claiming anything: the state of an
    /// `active-standby` standby, which receives blocks and never commits until [`Node::become_primary`].
    pub async fn open_standby(cfg: Config) -> Result<Node, NodeError> {
        let opts = WalOptions {
            dir: cfg.wal_dir(),
            segment_size: cfg.wal.segment_size.as_u64(),
            salvage: cfg.wal.salvage,
        };
        let (wal, report) = tokio::task::spawn_blocking(move || Wal::open(opts)).await??;
        info!(dir = %wal.dir().display(), segments = report.segments, records = report.records,
              truncated_bytes = report.truncated_bytes, "WAL opened");
        let store = open_store(&cfg).await?;
        let checkpointer = Checkpointer::new(store.clone());
        let output = open_output(&cfg).await?;
        // This node's own leftover staging (an earlier process of it crashed mid-batch): nothing of
        // that process can still write, since this one holds its WAL. Other nodes' staging is theirs.
        // A failure costs disk, not the start.
        match output.clean_staging().await {
            Ok(0) => {}
            Ok(cleaned) => {
                info!(output = %output.describe(), cleaned, "removed staging left by a crash")
            }
            Err(e) => {
                warn!(output = %output.describe(), error = %e, "could not remove this node's leftover staging; going on")
            }
        }
        let (stop, _) = watch::channel(None);
        let (role, _) = watch::channel(RoleInfo {
            role: Role::Standby,
            epoch: 0,
        });
        let budget_units = cfg
            .receiver
            .inflight_budget
            .as_usize()
            .div_ceil(crate::receiver::BUDGET_UNIT);
        let node = Node {
            inner: Arc::new(Inner {
                wal,
                output,
                store,
                checkpointer,
                strategy: cfg.strategy.kind,
                epoch: AtomicU64::new(0),
                role,
                state: Mutex::new(State::default()),
                inflight: Arc::new(Semaphore::new(budget_units)),
                last_block_lsn: AtomicU64::new(0),
                next_conn_id: AtomicU64::new(1),
                stats: Stats::default(),
                stop,
                wal_freed: tokio::sync::Notify::new(),
                over_budget: std::sync::atomic::AtomicBool::new(false),
                ckpt_lock: tokio::sync::Mutex::new(None),
                cfg,
            }),
        };
        let (st, last_block) = node.scan_wal(State::default(), 1).await?;
        *node.state() = st;
        node.inner
            .last_block_lsn
            .fetch_max(last_block, Ordering::AcqRel);
        node.refresh_committed().await?;
        Ok(node)
    }
}
