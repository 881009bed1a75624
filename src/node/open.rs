//! Opening a node: its checkpoint store (a sled store on a full disk is waited for, with a message
//! naming the path and the free space), its WAL (checked against its manifest and against the newest
//! checkpoint this node made from it: a WAL that lost records that may have been acknowledged is
//! refused unless `wal.salvage`; one that cannot open for lack of space is waited for) and its output,
//! as a standby that rebuilds the durable set from the WAL and counts what is committed — then, for a
//! primary, the takeover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strategies::checkpoint::Checkpointer;
use strategies::store::CheckpointStore;
use tokio::sync::{watch, Semaphore};

use tracing::{error, info, warn};

use super::state::State;
use super::{Inner, Node, NodeError, Stats};
use crate::config::{Config, StoreConfig};
use crate::protocol::{Role, RoleInfo};
use crate::sink::{self, Output};
use crate::size::ByteSize;
use crate::wal::{free_space, RecoveryReport, Wal, WalError, WalOptions};

/// How often a start blocked by a full disk tries again.
const FULL_DISK_RETRY: Duration = Duration::from_secs(2);

/// Opens the checkpoint store; a sled store that cannot open while its disk is under `wal.min_free`
/// (sled writes as it opens) is retried until space is freed, with a message saying where and how much.
async fn open_store_waiting(cfg: &Config) -> Result<Arc<dyn CheckpointStore>, NodeError> {
    let mut waited = false;
    loop {
        let err = match open_store(cfg).await {
            Ok(store) => {
                if waited {
                    info!("checkpoint store opened: disk space was freed");
                }
                return Ok(store);
            }
            Err(e) => e,
        };
        let Some(path) = cfg.sled_path() else {
            return Err(err);
        };
        let free = free_space(&path).unwrap_or(u64::MAX);
        let why = super::error::chain(&err);
        let no_space = why.contains("os error 28") || why.contains("os error 122");
        // Waiting helps only when the disk is what is short (sled reports ENOSPC as text).
        if !no_space && free >= 64 << 10 {
            return Err(err);
        }
        if !waited {
            warn!(path = %path.display(), free = %ByteSize(free), min_free = %cfg.wal.min_free,
                  error = %why,
                  "cannot open the checkpoint store: its disk is full; waiting for free space (retrying every 2s)");
        }
        waited = true;
        tokio::time::sleep(FULL_DISK_RETRY).await;
    }
}

/// Opens the WAL; an open that fails for lack of space (a new segment or manifest to write) is retried
/// until space is freed, with a message saying where and how much.
async fn open_wal_waiting(
    opts: WalOptions,
    min_free: ByteSize,
) -> Result<(Wal, RecoveryReport), NodeError> {
    let mut waited = false;
    loop {
        let o = opts.clone();
        match tokio::task::spawn_blocking(move || Wal::open(o)).await? {
            Ok(opened) => return Ok(opened),
            Err(e @ WalError::NoSpace { .. }) => {
                let free = free_space(&opts.dir).unwrap_or(0);
                if !waited {
                    warn!(dir = %opts.dir.display(), free = %ByteSize(free), %min_free, error = %e,
                          "cannot open the WAL: its disk is full; waiting for free space (retrying every 2s)");
                }
                waited = true;
                tokio::time::sleep(FULL_DISK_RETRY).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

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
                .with_owner(&cfg.node.name)?
                .with_block_size(cfg.output.block_size.map(|b| b.0)),
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
        // The store first: the newest checkpoint made from this node's WAL says how far the WAL must reach.
        let store = open_store_waiting(&cfg).await?;
        let checkpointer = Checkpointer::new(store.clone());
        let low_water = checkpointer
            .latest()
            .await?
            .filter(|s| s.node == cfg.node.name)
            .map(|s| s.wal_low_water);
        let dir = cfg.wal_dir();
        let opts = WalOptions {
            manifest: Some(WalOptions::manifest_beside(&dir)),
            dir,
            segment_size: cfg.wal.segment_size.as_u64(),
            salvage: cfg.wal.salvage,
            checkpoint_low_water: low_water,
        };
        let (wal, report) = open_wal_waiting(opts, cfg.wal.min_free).await?;
        info!(dir = %wal.dir().display(), segments = report.segments, records = report.records,
              truncated_bytes = report.truncated_bytes, "WAL opened");
        if !report.salvaged.is_empty() {
            error!(dir = %wal.dir().display(), drops = report.salvaged.len(), lsns = report.salvaged_lsns,
                   dropped = %report.salvaged.join("; "),
                   "started with --salvage-wal: WAL records that may have been acknowledged were dropped");
        }
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
                low_disk: std::sync::atomic::AtomicBool::new(false),
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
