//! Fault-tolerance building blocks for hdfs-ingest: the checkpoint store, the checkpoint
//! format, epoch fencing and the recovery decisions.
//!
//! # Layout
//!
//! ```text
//! store/           CheckpointStore: a small, byte-level, async, object-safe key/value trait
//!   mod.rs         the trait, its contract, StoreError and key validation
//!   sled.rs        SledStore: the embedded default (one process per database)
//!   object.rs      ObjectStoreBackend: any object_store (local directory, memory, ...)
//!   conformance.rs the one shared test suite every backend runs
//! snapshot.rs      Snapshot and SeqSet: what a checkpoint records (serde, JSON)
//! paths.rs         the one place that builds and parses every key in the store
//! checkpoint.rs    Checkpointer: immutable checkpoint objects; the newest is the greatest
//! epoch.rs         fencing: claim a new epoch with create-if-absent, detect a newer one
//! claims.rs        the batch log: a batch is claimed by number before it is published
//! takeover.rs      pure function: from a checkpoint and the batch log to what a starting node does
//! strategy/        Strategy: none, passive_standby, active_standby, upstream_backup (one file each)
//! ```
//!
//! # How the parts fit
//!
//! The crate never sees sockets or files of the data path. A node hands it snapshots and WAL
//! positions; the crate decides what is durable where.
//!
//! * A node that takes over first claims a new epoch ([`epoch::claim_next`]). Every later
//!   checkpoint carries that epoch; a node that sees a newer epoch ([`epoch::is_fenced`])
//!   stops writing. Claiming relies on one primitive only — atomic create-if-absent — so
//!   there is no home-made consensus.
//! * A checkpoint is written as an immutable object under a key that encodes `(epoch, id)`
//!   ([`paths::checkpoint`]), created whole or not at all; the newest checkpoint is the greatest
//!   `(epoch, id)` among them, so there is no pointer a superseded writer could move back, and a
//!   late write of an older epoch is never the newest.
//! * On start or takeover, [`takeover::plan_takeover`] combines the newest snapshot with the batch
//!   log ([`claims`]) into what to resolve, where to fence, and where the blocks come from.
//!
//! Every backend passes the same [`store::conformance`] suite, so the strategies can rely on
//! the contract written on [`store::CheckpointStore`] and nothing more.

pub mod checkpoint;
pub mod claims;
pub mod epoch;
pub mod paths;
pub mod snapshot;
pub mod store;
pub mod strategy;
pub mod takeover;

pub use checkpoint::{CheckpointError, Checkpointer};
pub use epoch::EpochError;
pub use snapshot::{CarriedRef, Lsn, SeqSet, Snapshot};
pub use store::object::ObjectStoreBackend;
pub use store::sled::SledStore;
pub use store::{CheckpointStore, StoreError};
pub use strategy::{Release, StandbyMode, Strategy};
pub use takeover::{plan_takeover, TakeoverPlan};
